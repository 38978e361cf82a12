#!/usr/bin/env python
"""The DFQ steps, measured. Writes data/sweeps/dfq.json (about 12 minutes on 2 CPU cores).

    python scripts/dfq_table.py            # cached results in data/cache are reused
    python scripts/dfq_table.py --refresh  # recompute

Methods: baseline (fold BN, per-tensor weights), +CLE, +CLE+BA, +CLE+BA+BC (analytic, data-free),
and per-channel weights without DFQ, for weight bit widths 4..8:

- Fashion-MNIST zoo: top-1 on the full 10,000-image test set, activations 8-bit (min-max,
  calibrated on one image per class);
- ImageNet MobileNetV2: fidelity to the float model (agreement, logit SQNR) on the crops of the
  bit-width sweep, with float activations (the weights alone) and with 8-bit activations.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from qlib.cache import cached, model_hash  # noqa: E402
from qlib.data import fashion_mnist_splits, one_per_class  # noqa: E402
from qlib.dfq import dfq  # noqa: E402
from qlib.evaluate import evaluate, fidelity, predict  # noqa: E402
from qlib.simulate import Simulator  # noqa: E402
from qlib.zoo import load_model  # noqa: E402

METHODS = {
    "baseline": dict(equalization=False, bias_absorption=False, bias_correction=False),
    "CLE": dict(bias_absorption=False, bias_correction=False),
    "CLE+BA": dict(bias_correction=False),
    "CLE+BA+BC": dict(),
}
BITS = [4, 5, 6, 7, 8]


def fashion(refresh):
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

                res = cached("dfq", key, run, refresh)
                records.append(dict(model=name, method=method, weight_bits=bits, activation_bits=8, **res))
                print(f"{name} W{bits}A8 {method:10s}: {res['accuracy']:.4f} ({time.time() - start:.1f} s)", flush=True)
    return records


def imagenet(refresh):
    from qlib.imagenet import mobilenet_v2_imagenet
    from sweep_bits import imagenet_split

    calib, x, calib_names, test_names = imagenet_split()
    names = sorted(calib_names + test_names)
    model = mobilenet_v2_imagenet()
    mhash = model_hash(model)
    ref = predict(model, x, batch_size=64)
    records, reports = [], {}
    for bits in BITS:
        for method, kw in list(METHODS.items()) + [("per-channel", None)]:
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
                key = dict(model=mhash, method=method, weight_bits=bits, activation_bits=abits, photos=names)
                res = cached("dfq_imagenet", key, lambda: fidelity(
                    predict(sim.quantize(bits, abits, per_channel=kw is None), x, batch_size=64), ref), refresh)
                records.append(dict(model="imagenet_mobilenet_v2", method=method, weight_bits=bits,
                                    activation_bits=abits, n=int(x.shape[0]), **res))
                print(f"imagenet W{bits}A{abits} {method:10s}: agreement {res['agreement']:.3f} "
                      f"SQNR {res['sqnr_db']:.1f}", flush=True)
    return records, reports


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refresh", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "sweeps" / "dfq.json")
    args = ap.parse_args(argv)
    start = time.time()
    inet, reports = imagenet(args.refresh)
    records = inet + fashion(args.refresh)
    meta = {"command": " ".join(["python", "scripts/dfq_table.py"] + (argv if argv is not None else sys.argv[1:])),
            "imagenet_reports_at_8_bits": reports, "seconds": round(time.time() - start, 1),
            "keras_backend": __import__("keras").backend.backend()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "records": records}, indent=1, default=float) + "\n")
    print(f"wrote {args.out} ({len(records)} records, {meta['seconds']} s)")


if __name__ == "__main__":
    main()
