#!/usr/bin/env python
"""Claim: the whole DFQ pipeline on the ImageNet MobileNetV2 takes under 2 s on 2 CPU cores.

    python benchmarks/dfq_speed.py

Times qlib.dfq.dfq (ReLU6 -> ReLU, BN folding, cross-layer equalization to convergence, high-bias
absorption, analytic bias correction for 8-bit per-tensor weights) on the ported network, best of
5 runs after a warm-up; building the Keras model itself is not part of the pipeline. Prints the
time, its ratio to the 2 s budget, and the time of the float model's BN folding alone for scale.
"""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qlib.dfq import dfq  # noqa: E402
from qlib.folding import fold_batchnorm  # noqa: E402
from qlib.imagenet import mobilenet_v2_imagenet  # noqa: E402


def best_of(fn, n=5):
    fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    model = mobilenet_v2_imagenet()
    t_dfq = best_of(lambda: dfq(model, weight_bits=8))
    t_fold = best_of(lambda: fold_batchnorm(model))
    _, report = dfq(model, weight_bits=8)
    print(report)
    print(f"dfq pipeline: {t_dfq:.2f} s (budget 2 s: ratio {t_dfq / 2.0:.2f}); "
          f"BN folding alone {t_fold:.2f} s (dfq / fold = {t_dfq / t_fold:.1f}x)")
    print(f"cpu count: {os.cpu_count()}")


if __name__ == "__main__":
    main()
