#!/usr/bin/env python
"""The DFQ steps, measured. Writes data/sweeps/dfq.json (about 12 minutes on 2 CPU cores).

    python scripts/dfq_table.py            # cached results in data/cache are reused
    python scripts/dfq_table.py --refresh  # recompute

Methods: baseline (fold BN, per-tensor weights), +CLE, +CLE+BA, +CLE+BA+BC (analytic, data-free),
and per-channel weights without DFQ, for weight bit widths 4..8:

- Fashion-MNIST zoo: top-1 on the full 10,000-image test set, activations 8-bit (min-max,
  calibrated on one image per class);
- ImageNet MobileNetV2: fidelity to the float model (agreement with 95% intervals, logit SQNR) on
  the photo crops of the bit-width sweep (``qlib.photos``), with float activations (the weights
  alone) and with 8-bit activations.

    python scripts/dfq_table.py --skip-fashion --out /tmp/dfq_imagenet.json   # the ImageNet part alone
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from qlib import results  # noqa: E402
from qlib.cache import CACHE_DIR, cached, code_version, model_hash  # noqa: E402
from qlib.data import fashion_mnist_splits, one_per_class  # noqa: E402
from qlib.dfq import dfq  # noqa: E402
from qlib.evaluate import evaluate, predict  # noqa: E402
from qlib.simulate import Simulator  # noqa: E402
from qlib.zoo import load_model  # noqa: E402

METHODS = {
    "baseline": dict(equalization=False, bias_absorption=False, bias_correction=False),
    "CLE": dict(bias_absorption=False, bias_correction=False),
    "CLE+BA": dict(bias_correction=False),
    "CLE+BA+BC": dict(),
}
BITS = [4, 5, 6, 7, 8]


# the version of the qlib code each result depends on, computed once, as this run imports it
FASHION_CODE = code_version("qlib.dfq", "qlib.simulate", "qlib.evaluate", "qlib.data", "qlib.zoo")
IMAGENET_CODE = code_version("qlib.dfq", "qlib.simulate", "qlib.evaluate", "qlib.photos", "qlib.imagenet")


def fashion(refresh, cache_dir=CACHE_DIR):
    s = fashion_mnist_splits()
    calib, _ = one_per_class(s["x_val"], s["y_val"])
    records = []
    for name in ["v1_standard", "v1_friendly", "v2_standard", "v2_friendly"]:
        model = load_model(name)
        mhash = model_hash(model)
        ref = predict(model, s["x_test"], batch_size=1000)
        for bits in BITS:
            for method, kw in list(METHODS.items()) + [("per-channel", None)]:
                start = time.time()
                key = dict(model=mhash, method=method, weight_bits=bits, activation_bits=8, per_channel=method == "per-channel")

                def run():
                    if kw is None:
                        q = Simulator(model, calib).quantize(bits, 8, per_channel=True)
                    else:
                        m, _ = dfq(model, weight_bits=bits, **kw)
                        q = Simulator(m, calib).quantize(bits, 8, per_channel=False)
                    return evaluate(q, s["x_test"], s["y_test"], reference=ref, batch_size=1000).as_dict()

                res = cached("dfq", key, run, refresh, cache_dir, code=FASHION_CODE)
                records.append(dict(model=name, method=method, weight_bits=bits, activation_bits=8, **res))
                print(f"{name} W{bits}A8 {method:10s}: {res['accuracy']:.4f} ({time.time() - start:.1f} s)", flush=True)
    return records


def imagenet(refresh, cache_dir=CACHE_DIR):
    from qlib.imagenet import mobilenet_v2_imagenet
    from sweep_bits import agreement_by_photo, imagenet_split, with_intervals

    calib, x, photo, meta = imagenet_split()
    model = mobilenet_v2_imagenet()
    mhash = model_hash(model)
    ref = predict(model, x, batch_size=64)
    records, reports = [], {}
    for bits in sorted(BITS, reverse=True):  # 8 bits first: the rows the book shows
        for method, kw in list(METHODS.items()) + [("per-channel", None)]:
            sim = None  # free the last simulator's calibration activations (GBs at 224x224) first
            gc.collect()
            if kw is None:
                sim = Simulator(model, calib, batch_size=32)
            else:
                m, rep = dfq(model, weight_bits=bits, **kw)
                sim = Simulator(m, calib, batch_size=32)
                if bits == 8:
                    reports[method] = {"iterations": rep.iterations, "pairs": len(rep.pairs),
                                       "absorbed": len(rep.absorbed), "corrected": len(rep.bias_corrections),
                                       "seconds": round(rep.seconds, 2)}
            for abits in (None, 8):
                key = dict(model=mhash, method=method, weight_bits=bits, activation_bits=abits,
                           calibration=meta["calibration_photos"], test=meta["test_photos"],
                           inputs="qlib.photos.photo_inputs")
                res = with_intervals(cached("dfq_imagenet", key, lambda: agreement_by_photo(
                    predict(sim.quantize(bits, abits, per_channel=kw is None), x, batch_size=64), ref, photo),
                    refresh, cache_dir, code=IMAGENET_CODE))
                records.append(dict(model="imagenet_mobilenet_v2", method=method, weight_bits=bits,
                                    activation_bits=abits, n=int(x.shape[0]), **res))
                lo, hi = res["agreement_ci95_photo_bootstrap"]
                print(f"imagenet W{bits}A{abits} {method:10s}: agreement {res['agreement']:.3f} [{lo:.3f}, {hi:.3f}] "
                      f"SQNR {res['sqnr_db']:.1f}", flush=True)
    order = list(METHODS) + ["per-channel"]
    records.sort(key=lambda r: (r["weight_bits"], order.index(r["method"]), r["activation_bits"] is not None))
    return records, reports, meta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refresh", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "sweeps" / "dfq.json")
    ap.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="where cached results are read and written")
    ap.add_argument("--skip-imagenet", action="store_true")
    ap.add_argument("--skip-fashion", action="store_true")
    args = ap.parse_args(argv)
    start, cpu = time.time(), time.process_time()
    meta = {"command": " ".join(["python", "scripts/dfq_table.py"] + (argv if argv is not None else sys.argv[1:]))}
    records = []
    if not args.skip_imagenet:
        inet, reports, inet_meta = imagenet(args.refresh, args.cache_dir)
        records += inet
        meta.update(imagenet_reports_at_8_bits=reports, imagenet=inet_meta)
    if not args.skip_fashion:
        records += fashion(args.refresh, args.cache_dir)
    meta.update(seconds=round(time.time() - start, 1), cpu_seconds=round(time.process_time() - cpu, 1),
                keras_backend=__import__("keras").backend.backend())
    results.save(args.out, meta, records)
    print(f"wrote {args.out} ({len(records)} records, {meta['seconds']} s)")


if __name__ == "__main__":
    main()
