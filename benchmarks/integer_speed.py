#!/usr/bin/env python
"""Claim: qlib.integer (numpy) runs a zoo model at a speed comparable to LiteRT's reference kernels,
and far slower than the default (XNNPACK) kernels, which are what a phone app uses.

    python benchmarks/integer_speed.py                     # v1_standard, per channel, 1000 images
    python benchmarks/integer_speed.py --models v1_standard v2_standard --images 1000 --threads 1

Same exported .tflite (qlib.export.zoo: W8A8 per channel), the same 1,000 int8 test images, in one
run: qlib.integer.run (reference arithmetic, and with kernels="xnnpack"), LiteRT's reference
kernels (BUILTIN_REF), its optimized kernels without a delegate, and the default kernels (XNNPACK).
Best of 3 timings after a warm-up; one thread for LiteRT unless --threads says otherwise (numpy's
BLAS uses what it finds). Prints milliseconds per image and every time as a ratio to the
reference kernels'. Timings on a shared machine vary; the ratios in one run are what to read.
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qlib import export, integer, tflite  # noqa: E402
from qlib.data import fashion_mnist, preprocess  # noqa: E402


def best_of(fn, n=3):
    fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["v1_standard"])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1, help="LiteRT threads")
    args = ap.parse_args(argv)
    images, _ = fashion_mnist("test")
    x = preprocess(images[:args.images])
    for name in args.models:
        tfl = export.zoo(name, 8, True).tflite
        xq = tflite.quantize_input(tfl, x)
        qlib_model = integer.Model(tfl)
        xnn_model = integer.Model(tfl, kernels="xnnpack")
        runs = {
            "qlib.integer": lambda: qlib_model.run(xq, batch_size=250),
            "qlib.integer (xnnpack arithmetic)": lambda: xnn_model.run(xq, batch_size=250),
            "LiteRT reference": lambda: tflite.invoke(tfl, xq, "reference", batch_size=250, num_threads=args.threads),
            "LiteRT optimized": lambda: tflite.invoke(tfl, xq, "optimized", batch_size=250, num_threads=args.threads),
            "LiteRT default (XNNPACK)": lambda: tflite.invoke(tfl, xq, "default", batch_size=250,
                                                              num_threads=args.threads),
        }
        times = {k: best_of(fn) for k, fn in runs.items()}
        ref = times["LiteRT reference"]
        print(f"{name}, W8A8 per channel, {args.images} images, LiteRT threads {args.threads}:")
        for k, t in times.items():
            print(f"  {k:36s} {1000 * t / args.images:8.3f} ms/image   {t / ref:7.3f} x reference")
        print(f"  qlib.integer / default kernels: {times['qlib.integer'] / times['LiteRT default (XNNPACK)']:.0f} x")
    print(f"cpu count: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
