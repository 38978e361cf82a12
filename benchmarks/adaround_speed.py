#!/usr/bin/env python
"""Claim: AdaRound (500 iterations per layer, 1024 calibration images) takes at most about 5 minutes
per Fashion-MNIST zoo model on 2 CPU cores.

    python benchmarks/adaround_speed.py                         # the four student models, W4 per channel
    python benchmarks/adaround_speed.py --models v1_friendly --iterations 200

For each model, runs qlib.adaround.adaround once and prints one line per layer: its kind, number of
weights, rows, the time spent collecting its inputs (forward passes of the partly quantized model)
and optimising its rounding; then the model's total wall time, its CPU time, the ratio of wall time
to the 300 s budget, and the machine's load average (the 2 cores are shared: a load above 2 means
other processes took part of them, and wall time overstates what AdaRound needs on its own).
What fewer iterations cost in accuracy is measured by scripts/adaround_sweep.py (table "iterations").
"""

import argparse
import os
import sys
import time
from pathlib import Path


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from adaround_sweep import SETTINGS  # noqa: E402
from qlib.adaround import adaround, calibration_subset  # noqa: E402
from qlib.data import fashion_mnist_splits, one_per_class  # noqa: E402
from qlib.zoo import load_model  # noqa: E402

BUDGET_S = 300.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["v1_standard", "v1_friendly", "v2_standard", "v2_friendly"])
    ap.add_argument("--iterations", type=int, default=SETTINGS["iterations"])
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--per-tensor", action="store_true")
    args = ap.parse_args(argv)
    s = fashion_mnist_splits()
    act, _ = one_per_class(s["x_val"], s["y_val"])
    cal = calibration_subset(s["x_val"])
    settings = dict(SETTINGS, iterations=args.iterations)
    print(f"cpu count {os.cpu_count()}, {cal.shape[0]} calibration images, settings {settings}")
    for name in args.models:
        model = load_model(name)
        load0 = os.getloadavg()[0]
        t, c = time.time(), time.process_time()
        q = adaround(model, cal, args.bits, not args.per_tensor, activation_data=act, **settings)
        wall, cpu = time.time() - t, time.process_time() - c
        rep = q.adaround_report
        print(f"\n{name}: {rep}")
        print(f"{'layer':16s} {'kind':9s} {'weights':>8s} {'rows':>6s} {'data s':>7s} {'optimise s':>10s}")
        for layer in rep.layers:
            print(f"{layer.name:16s} {layer.kind:9s} {layer.weights:8d} {layer.rows:6d} {layer.seconds_data:7.2f} "
                  f"{layer.seconds_optimize:10.2f}")
        data = sum(l.seconds_data for l in rep.layers)
        opt = sum(l.seconds_optimize for l in rep.layers)
        print(f"{name}: wall {wall:.1f} s (data {data:.1f} s, optimisation {opt:.1f} s), cpu {cpu:.1f} s, "
              f"ratio to the {BUDGET_S:.0f} s budget {wall / BUDGET_S:.2f}; mean per layer "
              f"{wall / len(rep.layers):.2f} s; load average {load0:.1f} -> {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
