#!/usr/bin/env python
"""Claim: on this host CPU, int8 is smaller (about 2.5-4x) but not faster than float; on a phone it is.

    python benchmarks/latency.py            # every zoo model + the ImageNet MobileNetV2 at 224x224
    python benchmarks/latency.py --quick    # v1_standard only, short runs (a smoke test)

Writes ``data/sweeps/latency.json``. HOST CPU numbers, never phone numbers: single thread
(``num_threads=1``, as LPIRC measured on one big core), LiteRT's interpreter, batch of one real
image (a Fashion-MNIST test image; a 224x224 crop for ImageNet). For each network every variant
is timed in the same run, interleaved round by round (each round times ``--per-round`` single
``invoke()`` calls of every variant in turn), so a busy machine slows them all alike; medians
and quartiles are over all calls, and the float/int8 speed ratios come from one run. Every call
is timed twice: wall clock (``median_ms``...) and the calling thread's CPU time (``cpu_median_ms``...,
the time the kernels computed; on a shared machine the wall clock also counts the waits while
other processes had the core, so the ratios to trust there are ``cpu_float_over_this``). Kernel sets
(``qlib.deploy.KERNELS``): ``default`` (XNNPACK, what an app gets), ``optimized`` (TFLite's own
kernels, no delegate) and ``reference`` (plain loops; few calls).

Variants: float32; the converter's own int8 PTQ per channel and per tensor; the LiteRT
quantizer's W8A8 per channel; and (ISSUE 9, after ``qlib.export`` is merged) qlib's export of
each method: min-max per channel and per tensor, greedy, DFQ. Model sizes are the ``.tflite``
byte counts. The load average before and after each network is recorded: compare ratios, not
absolute times, across runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


from qlib import deploy, results  # noqa: E402
from tools_compared import qlib_quantized, qlib_route  # noqa: E402

ZOO = ["v1_standard", "v1_friendly", "v2_standard", "v2_friendly", "teacher"]
QLIB_METHODS = [("min-max", True), ("min-max", False), ("greedy", True), ("DFQ", False)]


def variants(model, calib) -> dict:
    """``{label: (tflite bytes, dict of fields)}`` for one network."""
    out = {"float32": (deploy.float_tflite(model), dict(tool="TFLite converter", method="float", weight_bits=None))}
    for pc in (True, False):
        out[f"int8 converter per {'channel' if pc else 'tensor'}"] = (
            deploy.converter_int8(model, calib, per_channel=pc),
            dict(tool="TFLite converter", method="PTQ", weight_bits=8, per_channel=pc))
    out["int8 LiteRT quantizer per channel"] = (
        deploy.litert_quantizer(out["float32"][0], calib, 8, True),
        dict(tool="LiteRT quantizer", method="min-max", weight_bits=8, per_channel=True))
    if qlib_route() == "export":  # ISSUE 9: switched on by merging qlib.export
        from qlib.export import to_tflite

        sims: dict = {}
        for method, pc in QLIB_METHODS:
            q = qlib_quantized(model, calib, method, 8, pc, sims)
            out[f"int8 qlib {method} per {'channel' if pc else 'tensor'}"] = (
                to_tflite(q, weight_bits=8, per_channel=pc), dict(tool="qlib", method=method, weight_bits=8, per_channel=pc))
    return out


def time_network(name, model, calib, x, kernel_sets, rounds, per_round, ref_rounds):
    start_load = os.getloadavg()[0]
    vs = variants(model, calib)
    models = {k: b for k, (b, _) in vs.items()}
    records = []
    for kernels in kernel_sets:
        r, p = (ref_rounds, 1) if kernels == "reference" else (rounds, per_round)
        t0 = time.time()
        load0 = os.getloadavg()[0]
        timings = deploy.time_models(models, kernels=kernels, num_threads=1, rounds=r, per_round=p, x=x)
        load1 = os.getloadavg()[0]
        f = timings["float32"]
        for k, t in timings.items():
            records.append(dict(model=name, variant=k, kernels=kernels, size_bytes=len(models[k]), **vs[k][1],
                                **t.as_dict(), float_over_this=f.median_ms / t.median_ms,
                                cpu_float_over_this=f.cpu_median_ms / t.cpu_median_ms,
                                loadavg=[round(load0, 2), round(load1, 2)]))
        line = ", ".join(f"{k} {t.median_ms:.3f} ms (CPU {t.cpu_median_ms:.3f})" for k, t in timings.items())
        print(f"{name} [{kernels}] {line} ({time.time() - t0:.0f} s, load {load0:.1f}->{load1:.1f})", flush=True)
    f, q = len(models["float32"]), len(models["int8 converter per channel"])
    print(f"{name}: {f:,} -> {q:,} bytes ({f / q:.2f}x smaller); load at start {start_load:.1f}", flush=True)
    return records


#: What the load average means here (recorded with every result).
LOAD_NOTE = ("os.getloadavg() (1, 5, 15 minutes) on a 2-core machine shared with other jobs; 'nice' is the "
             "benchmark's niceness (positive: the benchmark yielded the cores to the other jobs, so its wall-clock "
             "times include waits; the CPU-time fields do not, though the other jobs still share the caches and "
             "the memory bus)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=ZOO, choices=ZOO)
    ap.add_argument("--skip-imagenet", action="store_true")
    ap.add_argument("--kernels", nargs="+", default=["default", "optimized", "reference"], choices=list(deploy.KERNELS))
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--per-round", type=int, default=25)
    ap.add_argument("--reference-rounds", type=int, default=5, help="single calls per variant with reference kernels")
    ap.add_argument("--quick", action="store_true", help="v1_standard only, default kernels, short runs")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "sweeps" / "latency.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.skip_imagenet, args.kernels, args.rounds, args.per_round = ["v1_standard"], True, ["default"], 3, 10

    from qlib.data import fashion_mnist_splits, one_per_class
    from qlib.zoo import load_model

    start, load_start = time.time(), os.getloadavg()
    s = fashion_mnist_splits()
    calib, _ = one_per_class(s["x_val"], s["y_val"])
    records = []
    for name in args.models:
        records += time_network(name, load_model(name), calib, s["x_test"][:1], args.kernels, args.rounds,
                                args.per_round, args.reference_rounds)
    if not args.skip_imagenet:
        from qlib.imagenet import mobilenet_v2_imagenet
        from sweep_bits import imagenet_split

        icalib, ix, _, _ = imagenet_split()
        records += time_network("imagenet_mobilenet_v2", mobilenet_v2_imagenet(), icalib, ix[:1], args.kernels,
                                args.rounds, max(1, args.per_round // 5), max(2, args.reference_rounds // 2))
    meta = {"command": " ".join(["python", "benchmarks/latency.py"] + (argv if argv is not None else sys.argv[1:])),
            "what": "HOST CPU, not a phone: single-thread LiteRT invoke() of one image",
            "rounds": args.rounds, "per_round": args.per_round, "reference_rounds": args.reference_rounds,
            "qlib_route": qlib_route(), "seconds": round(time.time() - start, 1),
            "loadavg_start": [round(v, 2) for v in load_start], "loadavg_end": [round(v, 2) for v in os.getloadavg()],
            "nice": os.nice(0), "load_note": LOAD_NOTE,
            "host": deploy.host_info()}
    results.save(args.out, meta, records)
    print(f"wrote {args.out} ({len(records)} records, {meta['seconds']} s)")


if __name__ == "__main__":
    main()
