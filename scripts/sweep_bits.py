#!/usr/bin/env python
"""Accuracy versus bit width: the book's summary sweep. Writes data/sweeps/bits.json.

    python scripts/sweep_bits.py               # everything (about 30 minutes on 2 CPU cores)
    python scripts/sweep_bits.py --refresh     # recompute instead of reading data/cache
    python scripts/sweep_bits.py --models v1_standard --quick

For each Fashion-MNIST zoo model, simulated quantization (``qlib.simulate``) calibrated on one
image per class from the validation split (the LPIRC winner's calibration set), evaluated on the
full 10,000-image test set:

- weights 2..16 bits x {per tensor, per channel} x weight range setter {minmax, mse, greedy},
  activations 8 bits (min-max);
- activations 4..16 bits x activation range setter {minmax, greedy}, weights 8 bits per channel.

For the ImageNet MobileNetV2, whose test images do not ship offline, fidelity to the float model
(top-1 agreement, logit SQNR) on crops of the scikit-image sample photos, calibrated on crops of
other photos.

Every configuration's result is cached in data/cache keyed by model hash and configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qlib.cache import cached, model_hash  # noqa: E402
from qlib.data import fashion_mnist_splits, one_per_class  # noqa: E402
from qlib.evaluate import evaluate, fidelity, predict  # noqa: E402
from qlib.ranges import RANGE_SETTERS  # noqa: E402
from qlib.simulate import Simulator  # noqa: E402
from qlib.zoo import load_model  # noqa: E402

STUDENTS = ["v1_standard", "v1_friendly", "v2_standard", "v2_friendly"]
WEIGHT_BITS = [2, 3, 4, 5, 6, 7, 8, 12, 16]
ACTIVATION_BITS = [4, 5, 6, 7, 8, 12, 16]
WEIGHT_SETTERS = ["minmax", "mse", "greedy"]
ACTIVATION_SETTERS = ["minmax", "greedy"]


def configs(quick: bool = False):
    wbits = [4, 8] if quick else WEIGHT_BITS
    abits = [8] if quick else ACTIVATION_BITS
    yield dict(sweep="float", weight_bits=None, activation_bits=None, per_channel=False,
               weight_range="minmax", activation_range="minmax")
    for bits in wbits:
        for per_channel in (False, True):
            for setter in (["minmax"] if quick else WEIGHT_SETTERS):
                yield dict(sweep="weights", weight_bits=bits, activation_bits=8, per_channel=per_channel,
                           weight_range=setter, activation_range="minmax")
    for bits in abits:
        for setter in (["minmax"] if quick else ACTIVATION_SETTERS):
            yield dict(sweep="activations", weight_bits=8, activation_bits=bits, per_channel=True,
                       weight_range="minmax", activation_range=setter)


def run_config(sim, cfg, x, y, reference):
    q = sim.quantize(cfg["weight_bits"], cfg["activation_bits"], cfg["per_channel"],
                     RANGE_SETTERS[cfg["weight_range"]], RANGE_SETTERS[cfg["activation_range"]],
                     setter_name=cfg["activation_range"])
    return evaluate(q, x, y, reference=reference, batch_size=1000).as_dict()


def sweep_fashion(names, refresh, quick):
    s = fashion_mnist_splits()
    calib, _ = one_per_class(s["x_val"], s["y_val"])
    records = []
    for name in names:
        model = load_model(name)
        mhash = model_hash(model)
        sim = Simulator(model, calib)
        ref = predict(model, s["x_test"], batch_size=1000)
        for cfg in configs(quick):
            start = time.time()
            key = dict(cfg, model=mhash, calibration="one_per_class(x_val, y_val)", test="fashion_mnist test 10k")
            res = cached("bits", key, lambda: run_config(sim, cfg, s["x_test"], s["y_test"], ref), refresh)
            records.append(dict(cfg, model=name, **res))
            print(f"{name} {cfg['sweep']:11s} W{cfg['weight_bits']} A{cfg['activation_bits']} "
                  f"{'pc' if cfg['per_channel'] else 'pt'} {cfg['weight_range']}/{cfg['activation_range']}: "
                  f"{res['accuracy']:.4f} ({time.time() - start:.1f} s)", flush=True)
    return records


def imagenet_inputs(seed: int = 0, crops_per_photo: int = 12):
    """Random 224 crops (after resizing the short side to 256..320) of the scikit-image photos."""
    from skimage import data as skdata
    from skimage.transform import resize

    from qlib.imagenet import IMAGENET_MEAN, IMAGENET_STD

    rng = np.random.default_rng(seed)
    photos = {}
    for name in ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "cat", "retina",
                 "hubble_deep_field", "immunohistochemistry", "colorwheel"):
        if hasattr(skdata, name):
            try:
                img = getattr(skdata, name)()
            except Exception:  # some sample images need an optional download (pooch)
                continue
            if img.ndim == 3 and img.shape[2] == 3:
                photos[name] = img
    out = {}
    for name, img in photos.items():
        crops = []
        for _ in range(crops_per_photo):
            short = rng.integers(256, 321)
            h, w = img.shape[:2]
            nh, nw = (short, int(w * short / h)) if h <= w else (int(h * short / w), short)
            r = resize(img, (nh, nw), order=1, anti_aliasing=True, preserve_range=True) / 255.0
            top, left = rng.integers(0, nh - 223), rng.integers(0, nw - 223)
            crop = r[top:top + 224, left:left + 224]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            crops.append(((crop - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32))
        out[name] = np.stack(crops)
    return out


def imagenet_split():
    """Calibration crops, test crops, and the photo names of each (alternate photos by name)."""
    inputs = imagenet_inputs()
    names = sorted(inputs)
    calib_names, test_names = names[::2], names[1::2]
    return (np.concatenate([inputs[n] for n in calib_names]), np.concatenate([inputs[n] for n in test_names]),
            calib_names, test_names)


def sweep_imagenet(refresh):
    from qlib.imagenet import mobilenet_v2_imagenet

    calib, x, calib_names, test_names = imagenet_split()
    model = mobilenet_v2_imagenet()
    mhash = model_hash(model)
    ref = predict(model, x, batch_size=64)
    sim = Simulator(model, calib, batch_size=32)
    records = []
    for bits in [4, 5, 6, 7, 8, 10, 12, 16]:
        for per_channel in (False, True):
            cfg = dict(weight_bits=bits, activation_bits=8, per_channel=per_channel, weight_range="minmax",
                       activation_range="minmax")
            key = dict(cfg, model=mhash, calibration=calib_names, test=test_names)

            def run():
                q = sim.quantize(bits, 8, per_channel)
                return fidelity(predict(q, x, batch_size=64), ref)

            res = cached("bits_imagenet", key, run, refresh)
            records.append(dict(cfg, model="imagenet_mobilenet_v2", n=int(x.shape[0]), **res))
            print(f"imagenet W{bits} A8 {'pc' if per_channel else 'pt'}: agreement {res['agreement']:.3f}, "
                  f"SQNR {res['sqnr_db']:.1f} dB", flush=True)
    return records, {"calibration_photos": calib_names, "test_photos": test_names, "crops": int(x.shape[0])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=STUDENTS, choices=STUDENTS)
    ap.add_argument("--refresh", action="store_true", help="recompute instead of reading data/cache")
    ap.add_argument("--quick", action="store_true", help="a few configurations only (for a smoke test)")
    ap.add_argument("--skip-imagenet", action="store_true")
    ap.add_argument("--skip-fashion", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "sweeps" / "bits.json")
    args = ap.parse_args(argv)
    start = time.time()
    records = [] if args.skip_fashion else sweep_fashion(args.models, args.refresh, args.quick)
    meta = {"command": " ".join(["python", "scripts/sweep_bits.py"] + (argv if argv is not None else sys.argv[1:])),
            "keras_backend": __import__("keras").backend.backend()}
    if not args.skip_fashion:
        meta.update(calibration="one image per class from the validation split", test="Fashion-MNIST test, 10,000")
    if not args.skip_imagenet:
        inet, inet_meta = sweep_imagenet(args.refresh)
        records += inet
        meta["imagenet"] = inet_meta
    meta["seconds"] = round(time.time() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "records": records}, indent=1, default=float) + "\n")
    print(f"wrote {args.out} ({len(records)} records, {meta['seconds']} s)")


if __name__ == "__main__":
    main()
