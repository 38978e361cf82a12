#!/usr/bin/env python
"""Claim: the vectorized greedy range search gives the same ranges as the per-channel loop, faster.

    python benchmarks/greedy_speed.py              # v1_standard (the default)
    python benchmarks/greedy_speed.py --model v2_standard --bits 4

``qlib.ranges.greedy_search`` searches every channel of a tensor at once
(``greedy_ranges(..., method="rows")``); the implementation it replaced searched one channel at a
time in Python (kept as ``greedy_ranges(..., method="loop")``). In one run, on the same inputs, this script times both and checks
that they return identical ranges, for:

1. the zoo model's largest pointwise layer, per channel (symmetric, as TFLite weights are);
2. the whole network's per-channel weight setup (``qlib.simulate.quantize_kernel`` with the
   greedy setter on every weighted layer, the work of one per-channel configuration of
   ``scripts/sweep_bits.py``);
3. the activation ranges (one greedy search per quantization point, per tensor, over the
   calibration activations: one image per class), old and new.

Each time is the least process CPU time of ``--repeat`` runs. Prints the times and the ratio
old/new.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from qlib.ranges import greedy_ranges, greedy_search, histogram  # noqa: E402


def greedy_search_loop(x, axis=None, num_bits=8, symmetric=False, bins=512, max_steps=1000):
    """``greedy_search`` as it was: a Python loop over channels, one histogram search each."""
    x = np.asarray(x)
    rows = x.reshape(1, -1) if axis is None else np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    hists = [histogram(row, bins) for row in rows]
    lo, hi = greedy_ranges(np.stack([h[0] for h in hists]), np.stack([h[1] for h in hists]), num_bits, symmetric,
                           int(max_steps), method="loop")
    return (lo.reshape(()), hi.reshape(())) if axis is None else (lo, hi)


def best_of(fn, repeat):
    """Least CPU time of ``repeat`` runs (``time.process_time``: robust to other jobs on a shared
    machine; numpy runs these loops on one thread, so CPU time is the work done)."""
    times, out = [], None
    for _ in range(repeat):
        start = time.process_time()
        out = fn()
        times.append(time.process_time() - start)
    return min(times), out


def report(what, t_old, t_new, same):
    print(f"{what}: loop {t_old:.2f} s, vectorized {t_new:.2f} s (CPU), ratio old/new {t_old / t_new:.1f}x, "
          f"identical ranges: {same}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="v1_standard")
    ap.add_argument("--bits", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    from qlib.data import fashion_mnist_splits, one_per_class
    from qlib.layers import WEIGHTED, kind
    from qlib.simulate import Simulator, quantize_kernel
    from qlib.zoo import load_model

    model = load_model(args.model)
    layers = [l for l in model.layers if isinstance(l, WEIGHTED)]
    pointwise = [l for l in layers if kind(l) == "conv2d" and l.kernel_size == (1, 1)]
    big = max(pointwise, key=lambda l: int(np.prod(l.kernel.shape)))
    kernel = np.asarray(big.get_weights()[0])
    print(f"{args.model}: {len(layers)} weighted layers, {args.bits}-bit; largest pointwise layer "
          f"{big.name} {tuple(kernel.shape)}; cpu count {os.cpu_count()}", flush=True)

    kw = dict(axis=-1, num_bits=args.bits, symmetric=True)
    t_old, old = best_of(lambda: greedy_search_loop(kernel, **kw), args.repeat)
    t_new, new = best_of(lambda: greedy_search(kernel, **kw), args.repeat)
    report(f"{big.name}, {kernel.shape[-1]} channels", t_old, t_new,
           all(np.array_equal(a, b) for a, b in zip(old, new)))

    kernels = [(l, np.asarray(l.get_weights()[0])) for l in layers]
    channels = sum(quantize_kernel(l, k, args.bits, True)[1].scale.size for l, k in kernels)

    def network(setter):
        return [quantize_kernel(l, k, args.bits, per_channel=True, range_setter=setter)[1].scale for l, k in kernels]

    t_old, old = best_of(lambda: network(greedy_search_loop), args.repeat)
    t_new, new = best_of(lambda: network(greedy_search), args.repeat)
    report(f"whole network, per-channel weights ({channels} channels)", t_old, t_new,
           all(np.array_equal(a, b) for a, b in zip(old, new)))

    s = fashion_mnist_splits()
    calib, _ = one_per_class(s["x_val"], s["y_val"])
    sim = Simulator(model, calib)
    values = sum(a.size for a in sim.activations.values())

    def activations(setter):
        sim._ranges.clear()  # the simulator caches ranges per setter and bits
        return sim.activation_ranges(args.bits, setter, name="greedy")

    t_old, old = best_of(lambda: activations(greedy_search_loop), args.repeat)
    t_new, new = best_of(lambda: activations(greedy_search), args.repeat)
    t_hist, _ = best_of(lambda: [histogram(a, 512) for a in sim.activations.values()], args.repeat)
    report(f"activation ranges ({len(sim.activations)} points, {values:,} values)", t_old, t_new, old == new)
    print(f"  of which histograms of the activations: {t_hist:.2f} s", flush=True)


if __name__ == "__main__":
    main()
