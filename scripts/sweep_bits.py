#!/usr/bin/env python
"""Accuracy versus bit width: the book's summary sweep. Writes data/sweeps/bits.json.

    python scripts/sweep_bits.py               # everything (about 30 minutes on 2 CPU cores)
    python scripts/sweep_bits.py --refresh     # recompute instead of reading data/cache
    python scripts/sweep_bits.py --models v1_standard --quick
    python scripts/sweep_bits.py --skip-fashion --out /tmp/imagenet.json   # the ImageNet part alone

For each Fashion-MNIST zoo model, simulated quantization (``qlib.simulate``) calibrated on one
image per class from the validation split (the LPIRC winner's calibration set), evaluated on the
full 10,000-image test set:

- weights 2..16 bits x {per tensor, per channel} x weight range setter {minmax, mse, greedy},
  activations 8 bits (min-max);
- activations 4..16 bits x activation range setter {minmax, greedy}, weights 8 bits per channel.

For the ImageNet MobileNetV2, whose test images do not ship offline, fidelity to the float model
(top-1 agreement with 95% intervals, logit SQNR) on 1,036 crops of 37 natural photos
(``qlib.photos``), calibrated on 64 crops of 8 other photos.

Every configuration's result is cached in data/cache keyed by model hash, configuration and the
version of the qlib code that computes it (``qlib.cache.code_version``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qlib import results  # noqa: E402
from qlib.cache import CACHE_DIR, cached, code_version, model_hash  # noqa: E402
from qlib.data import fashion_mnist_splits, one_per_class  # noqa: E402
from qlib.evaluate import evaluate, fidelity, predict, wilson_interval  # noqa: E402
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


def sweep_fashion(names, refresh, quick, cache_dir=CACHE_DIR):
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
            res = cached("bits", key, lambda: run_config(sim, cfg, s["x_test"], s["y_test"], ref), refresh,
                         cache_dir, code=FASHION_CODE)
            records.append(dict(cfg, model=name, **res))
            print(f"{name} {cfg['sweep']:11s} W{cfg['weight_bits']} A{cfg['activation_bits']} "
                  f"{'pc' if cfg['per_channel'] else 'pt'} {cfg['weight_range']}/{cfg['activation_range']}: "
                  f"{res['accuracy']:.4f} ({time.time() - start:.1f} s)", flush=True)
    return records


# the version of the qlib code each result depends on, computed once, as this run imports it
IMAGENET_CODE = code_version("qlib.simulate", "qlib.evaluate", "qlib.ranges", "qlib.photos", "qlib.imagenet")
FASHION_CODE = code_version("qlib.simulate", "qlib.evaluate", "qlib.ranges", "qlib.data", "qlib.zoo")
BOOTSTRAP_SAMPLES = 10_000


def imagenet_split():
    """Calibration inputs, test inputs, the photo of each test input, and the split's description.

    ``qlib.photos``: crops and flips of natural photos, split by photo (no calibration photo is
    ever tested).
    """
    from qlib.photos import PHOTOS_JSON, photo_inputs
    from qlib.data import sha256_file

    calib, calib_photo = photo_inputs("calibration")
    x, photo = photo_inputs("test")
    meta = {"calibration_photos": sorted(set(calib_photo.tolist())), "test_photos": sorted(set(photo.tolist())),
            "calibration_inputs": int(calib.shape[0]), "crops": int(x.shape[0]),
            "distinct_test_photos": len(set(photo.tolist())),
            "photos": f"data/photos.json (sha256 {sha256_file(PHOTOS_JSON)[:16]}...), qlib.photos.photo_inputs",
            "intervals": "agreement_ci95_wilson: 95% Wilson interval treating the test crops as independent "
                         "(qlib.evaluate.wilson_interval); agreement_ci95_photo_bootstrap: 95% percentile interval "
                         f"of a bootstrap over test photos ({BOOTSTRAP_SAMPLES} resamples of the photos with "
                         "replacement, all crops of a drawn photo kept, seed 0). Crops of one photo are "
                         "correlated, so the photo bootstrap is the honest one; the Wilson interval is too narrow. Where "
                         "no (or every) test crop agrees, the bootstrap interval collapses to a point: read the "
                         "Wilson interval there."}
    return calib, x, photo, meta


def agreement_by_photo(logits, reference, photo) -> dict:
    """``fidelity`` plus the top-1 agreements counted per photo (what the intervals need)."""
    res = fidelity(logits, reference)
    agree = np.asarray(logits).argmax(1) == np.asarray(reference).argmax(1)
    res["agree_by_photo"] = {name: int(agree[photo == name].sum()) for name in sorted(set(photo.tolist()))}
    res["n_by_photo"] = {name: int((photo == name).sum()) for name in sorted(set(photo.tolist()))}
    return res


def with_intervals(res: dict, seed: int = 0) -> dict:
    """Add the 95% Wilson and photo-bootstrap intervals on agreement to a cached ImageNet result."""
    names = sorted(res["agree_by_photo"])
    agree = np.array([res["agree_by_photo"][n] for n in names])
    count = np.array([res["n_by_photo"][n] for n in names])
    draw = np.random.default_rng(seed).integers(0, len(names), size=(BOOTSTRAP_SAMPLES, len(names)))
    boot = agree[draw].sum(1) / count[draw].sum(1)
    return dict(res, agreement_ci95_wilson=list(wilson_interval(int(agree.sum()), int(count.sum()))),
                agreement_ci95_photo_bootstrap=[float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))])


def sweep_imagenet(refresh, cache_dir=CACHE_DIR):
    from qlib.imagenet import mobilenet_v2_imagenet

    calib, x, photo, meta = imagenet_split()
    model = mobilenet_v2_imagenet()
    mhash = model_hash(model)
    ref = predict(model, x, batch_size=64)
    sim = Simulator(model, calib, batch_size=32)
    records = []
    for bits in [4, 5, 6, 7, 8, 10, 12, 16]:
        for per_channel in (False, True):
            cfg = dict(weight_bits=bits, activation_bits=8, per_channel=per_channel, weight_range="minmax",
                       activation_range="minmax")
            key = dict(cfg, model=mhash, calibration=meta["calibration_photos"], test=meta["test_photos"],
                       inputs="qlib.photos.photo_inputs")

            def run():
                q = sim.quantize(bits, 8, per_channel)
                return agreement_by_photo(predict(q, x, batch_size=64), ref, photo)

            res = with_intervals(cached("bits_imagenet", key, run, refresh, cache_dir, code=IMAGENET_CODE))
            records.append(dict(cfg, model="imagenet_mobilenet_v2", n=int(x.shape[0]), **res))
            lo, hi = res["agreement_ci95_photo_bootstrap"]
            print(f"imagenet W{bits} A8 {'pc' if per_channel else 'pt'}: agreement {res['agreement']:.3f} "
                  f"[{lo:.3f}, {hi:.3f}], SQNR {res['sqnr_db']:.1f} dB", flush=True)
    return records, meta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=STUDENTS, choices=STUDENTS)
    ap.add_argument("--refresh", action="store_true", help="recompute instead of reading data/cache")
    ap.add_argument("--quick", action="store_true", help="a few configurations only (for a smoke test)")
    ap.add_argument("--skip-imagenet", action="store_true")
    ap.add_argument("--skip-fashion", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "sweeps" / "bits.json")
    ap.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="where cached results are read and written")
    args = ap.parse_args(argv)
    start, cpu = time.time(), time.process_time()
    records = [] if args.skip_fashion else sweep_fashion(args.models, args.refresh, args.quick, args.cache_dir)
    meta = {"command": " ".join(["python", "scripts/sweep_bits.py"] + (argv if argv is not None else sys.argv[1:])),
            "keras_backend": __import__("keras").backend.backend()}
    if not args.skip_fashion:
        meta.update(calibration="one image per class from the validation split", test="Fashion-MNIST test, 10,000")
    if not args.skip_imagenet:
        inet, inet_meta = sweep_imagenet(args.refresh, args.cache_dir)
        records += inet
        meta["imagenet"] = inet_meta
    meta["seconds"] = round(time.time() - start, 1)
    meta["cpu_seconds"] = round(time.process_time() - cpu, 1)
    results.save(args.out, meta, records)
    print(f"wrote {args.out} ({len(records)} records, {meta['seconds']} s)")


if __name__ == "__main__":
    main()
