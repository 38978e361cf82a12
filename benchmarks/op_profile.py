#!/usr/bin/env python
"""Claim: the per-op times, each op timed on its own, add up to the whole model's time (within 15%),
and on the int8 kernels a depthwise op costs several times more per MAC than a pointwise one.

    python benchmarks/op_profile.py            # v1_standard, v2_standard and the ImageNet MobileNetV2
    python benchmarks/op_profile.py --quick    # v1_standard int8 only, few passes

Writes ``data/sweeps/op_profile.json``. HOST CPU numbers, single thread, LiteRT kernels: every op
of the converter's int8 model (and of the float model) runs as its own single-op ``.tflite``
(``qlib.deploy.profile_ops``) on the tensors it sees in the whole model; each pass calls the whole
model, every op once in order, then a no-op model. Records of ``kind="op"`` are the ops (type,
layer, MACs, ms, share: each op's median, the per-call overhead taken off), ``kind="summary"``
one per profile: the whole model, ``total_ms`` (per pass, the ops' times summed with the
overhead counted once; median over the passes), their ratio, ``sum_ms`` (the ops' medians plus
one overhead), the per-call overhead, the load average. Every call is timed twice: wall clock, and the
calling thread's CPU time (single thread: the time the kernels computed). ``ratio`` compares
wall-clock medians, ``ratio_cpu`` CPU-time medians, ``ratio_min`` the fastest passes. On a loaded
machine the whole model's long calls are preempted far more often than the ops' short ones,
which inflates its wall-clock median and not theirs; CPU time does not count the waits, so the
check (``tests/test_deploy.py``) uses ``ratio_cpu``. The per-type totals printed are CPU time.
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


def profile(name, model, calib, x, kernel_sets, passes, with_float):
    variants = {"int8": deploy.converter_int8(model, calib)}
    if with_float:
        variants["float32"] = deploy.float_tflite(model)
    records = []
    for variant, tfl in variants.items():
        for kernels in kernel_sets:
            load0 = os.getloadavg()[0]
            t0 = time.time()
            p = deploy.profile_ops(tfl, kernels=kernels, num_threads=1, passes=passes, x=x)
            load1 = os.getloadavg()[0]
            common = dict(model=name, variant=variant, kernels=kernels, source="host")
            cpu = {r["index"]: r for r in p.cpu_records()}
            records += [dict(kind="op", **common, **r, cpu_share=cpu[r["index"]]["share"],
                             cpu_ms_per_mmac=cpu[r["index"]]["ms_per_mmac"]) for r in p.records()]
            by_type = {t["op_type"]: t for t in p.by_type(use_cpu=True)}
            records.append(dict(kind="summary", **common, ops=len(p.ops), whole_ms=p.whole_ms,
                                whole_q1_ms=p.whole.q1_ms, whole_q3_ms=p.whole.q3_ms, total_ms=p.total_ms, sum_ms=p.sum_ms,
                                ratio=p.ratio, overhead_ms=p.overhead_ms, passes=passes, whole_min_ms=p.whole.min_ms,
                                total_min_ms=p.passes.min_ms, ratio_min=p.ratio_min,
                                loadavg=[round(load0, 2), round(load1, 2)],
                                whole_cpu_ms=p.whole.cpu_median_ms, total_cpu_ms=p.total_cpu_ms, ratio_cpu=p.ratio_cpu,
                                by_type=[dict(t) for t in p.by_type()], by_type_cpu=[dict(t) for t in p.by_type(use_cpu=True)],
                                depthwise_ms_per_mmac=(by_type.get("DEPTHWISE_CONV_2D") or {}).get("ms_per_mmac"),
                                conv_ms_per_mmac=(by_type.get("CONV_2D") or {}).get("ms_per_mmac")))
            print(f"{name} {variant} [{kernels}] {p} ({time.time() - t0:.0f} s, load {load0:.1f}->{load1:.1f})",
                  flush=True)
            for t in p.by_type(use_cpu=True):
                mm = f"{t['ms_per_mmac']:.4f} ms/MMAC" if t["ms_per_mmac"] else ""
                print(f"    {t['op_type']:18s} x{t['count']:3d} {t['ms']:.3f} ms {t['share']:6.1%} {mm}")
    return records


#: What the load average means here (recorded with every result).
LOAD_NOTE = ("os.getloadavg() (1, 5, 15 minutes) on a 2-core machine shared with other jobs; 'nice' is the "
             "benchmark's niceness (positive: the benchmark yielded the cores to the other jobs, so its wall-clock "
             "times include waits; the CPU-time fields do not, though the other jobs still share the caches and "
             "the memory bus)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["v1_standard", "v2_standard"])
    ap.add_argument("--skip-imagenet", action="store_true")
    ap.add_argument("--kernels", nargs="+", default=["default", "optimized"], choices=["default", "optimized"])
    ap.add_argument("--passes", type=int, default=200)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "sweeps" / "op_profile.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.skip_imagenet, args.kernels, args.passes = ["v1_standard"], True, ["default"], 30

    from qlib.data import fashion_mnist_splits, one_per_class
    from qlib.zoo import load_model

    start, load_start = time.time(), os.getloadavg()
    s = fashion_mnist_splits()
    calib, _ = one_per_class(s["x_val"], s["y_val"])
    records = []
    for name in args.models:
        records += profile(name, load_model(name), calib, s["x_test"][:1], args.kernels, args.passes, not args.quick)
    if not args.skip_imagenet:
        from qlib.imagenet import mobilenet_v2_imagenet
        from sweep_bits import imagenet_split

        icalib, ix, _, _ = imagenet_split()
        records += profile("imagenet_mobilenet_v2", mobilenet_v2_imagenet(), icalib, ix[:1], args.kernels,
                           max(20, args.passes // 5), True)
    meta = {"command": " ".join(["python", "benchmarks/op_profile.py"] + (argv if argv is not None else sys.argv[1:])),
            "what": "HOST CPU, not a phone: single-thread LiteRT, every op as its own single-op model",
            "passes": args.passes, "seconds": round(time.time() - start, 1),
            "loadavg_start": [round(v, 2) for v in load_start], "loadavg_end": [round(v, 2) for v in os.getloadavg()],
            "nice": os.nice(0), "load_note": LOAD_NOTE,
            "host": deploy.host_info()}
    results.save(args.out, meta, records)
    print(f"wrote {args.out} ({len(records)} records, {meta['seconds']} s)")


if __name__ == "__main__":
    main()
