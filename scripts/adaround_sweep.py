#!/usr/bin/env python
"""AdaRound against nearest rounding and DFQ, at 4- and 3-bit weights. Writes data/sweeps/adaround.json.

    python scripts/adaround_sweep.py                                  # everything, one process
    python scripts/adaround_sweep.py --models v1_friendly --skip-imagenet --out /tmp/a/v1_friendly.json
    python scripts/adaround_sweep.py --skip-fashion --out /tmp/a/imagenet.json
    python scripts/merge_sweeps.py data/sweeps/adaround.json /tmp/a/*.json
    python scripts/adaround_sweep.py --quick --models v1_friendly --out /tmp/a/smoke.json   # smoke test
    python scripts/adaround_sweep.py --legacy-cache --cached-only --skip-imagenet  # assemble what is cached

Runs on any Keras backend (``KERAS_BACKEND=jax`` works; the rounding itself is numpy). Every
configuration is cached in data/cache (``qlib.cache``), so an interrupted run resumes. The cache key
holds the :func:`qlib.cache.code_version` of the modules the numbers depend on; ``--legacy-cache``
also accepts the entries of the first runs, made before the keys held a code version (their key
has ``version: 1`` instead); every record says which it is (``code``: the code version, or
``"v1"``). ``--cached-only`` computes nothing: configurations without an entry are listed in
``meta["missing"]`` and left out of the records. ``--accept-code V`` also uses entries cached by
the earlier code version ``V`` (the shipped file was assembled at ``44de140aea6b868e``; any later edit
of the modules it depends on, even a docstring, makes a new version).

Fashion-MNIST zoo (``table: "accuracy"``), for W4A8 and W3A8, per tensor and per channel:

- ``nearest``: :func:`qlib.simulate.Simulator` with nearest rounding (the bit-width sweep's setting);
- ``DFQ``: the data-free pipeline of Part III (CLE + bias absorption + analytic bias correction);
- ``AdaRound``: :func:`qlib.adaround.adaround` on the float model;
- ``DFQ+AdaRound``: CLE + bias absorption, then AdaRound (AdaRound replaces bias correction:
  the rounding it learns already removes the mean output error).

Activation ranges (8-bit, min-max) come from one image per class of the validation split, as in
the rest of the book, for every method: only the weights differ. AdaRound learns the rounding on
a fixed, seeded subset of 1024 validation images (never the test set). Accuracy on the full
10,000-image test set, with fidelity to the float model. Per-layer reconstruction errors of every
AdaRound run go to ``table: "layers"``.

Also: ``table: "iterations"`` (accuracy and time against the number of iterations, v1_friendly
W4 per channel and v2_standard W3 per channel), ``table: "anomaly"`` (the v1_friendly per-channel
curve: only conv1 quantized, in the simulation and through the real TFLite converter and int8
kernels, one channel of it, its background shift alone; bias correction analytic and empirical,
AdaRound on conv1 alone),
and ``table: "imagenet"``: the ImageNet MobileNetV2 at W4A8, fidelity to float (top-1 agreement,
logit SQNR) on the test crops of the bit-width sweep, AdaRound learned on more crops of the
calibration photos.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from qlib import results  # noqa: E402
from qlib.adaround import adaround, calibration_subset  # noqa: E402
from qlib.cache import CACHE_DIR, cache_key, cached, code_version, model_hash  # noqa: E402
from qlib.data import fashion_mnist_splits, one_per_class  # noqa: E402
from qlib.dfq import dfq  # noqa: E402
from qlib.evaluate import evaluate, predict  # noqa: E402
from qlib.layers import quantize_kernel  # noqa: E402
from qlib.simulate import Simulator  # noqa: E402
from qlib.tflite import convert_int8  # noqa: E402
from qlib.zoo import load_model  # noqa: E402

STUDENTS = ["v1_standard", "v1_friendly", "v2_standard", "v2_friendly"]
METHODS = ["nearest", "DFQ", "AdaRound", "DFQ+AdaRound"]
#: AdaRound's settings for every table (the iteration study varies ``iterations``).
SETTINGS = dict(iterations=500, batch_size=1024, lr=1e-2, reg=0.01, warmup=0.2, beta_range=(20.0, 2.0),
                rows=16384, seed=0)
CALIBRATION = 1024
#: the version of the qlib code the results depend on (part of every cache key), computed once, as this run
#: imports it: edit any of these modules (or what they import from qlib) and cached results are recomputed
FASHION_CODE = code_version("qlib.adaround", "qlib.dfq", "qlib.simulate", "qlib.evaluate", "qlib.tflite", "qlib.data",
                            "qlib.zoo")
IMAGENET_CODE = code_version("qlib.adaround", "qlib.dfq", "qlib.simulate", "qlib.evaluate", "qlib.photos",
                             "qlib.imagenet")


#: the cache keys of the runs made before the keys held a code version carried this instead
LEGACY_VERSION = 1


class Store:
    """``qlib.cache.cached`` with a code version in every key, optionally reading pre-code-version
    entries (``legacy``) and never computing (``cached_only``; what is missing is listed)."""

    def __init__(self, refresh=False, legacy=False, cached_only=False, accept=()):
        self.refresh, self.legacy, self.cached_only = refresh, legacy, cached_only
        self.accept = list(accept)   # earlier code versions whose entries are also used (after the current one)
        self.missing = []
        self.reproduced = []   # configurations cached both ways: the current result beside the v1 one

    def _reproduced(self, name, config, old, compute, res, code):
        """Note a result computed at ``code`` beside the v1 entry of the same configuration."""
        if isinstance(res, dict) and "accuracy" in res:
            before = cached(name, old, compute)
            self.reproduced.append(dict(cache=name, **{k: v for k, v in config.items() if k in (
                "method", "variant", "weight_bits", "per_channel", "settings")}, model_hash=config.get("model"),
                accuracy=res["accuracy"], accuracy_v1=before["accuracy"], code=code))

    def get(self, name, config, compute, code):
        """``(result, provenance)``: provenance is ``code`` or ``"v1"`` (a legacy entry); ``(None, None)``
        when ``cached_only`` and nothing is cached."""
        current = CACHE_DIR / f"{name}-{cache_key(**config, code_version=code)}.json"
        old = dict(config, version=LEGACY_VERSION)
        has_old = self.legacy and not self.refresh and (CACHE_DIR / f"{name}-{cache_key(**old)}.json").is_file()
        if not self.refresh and current.is_file():
            res = cached(name, config, compute, code=code)
            if has_old:
                self._reproduced(name, config, old, compute, res, code)
            return res, code
        for earlier in [] if self.refresh else self.accept:
            if (CACHE_DIR / f"{name}-{cache_key(**config, code_version=earlier)}.json").is_file():
                res = cached(name, config, compute, code=earlier)
                if has_old:
                    self._reproduced(name, config, old, compute, res, earlier)
                return res, earlier
        if has_old:
            return cached(name, old, compute), f"v{LEGACY_VERSION}"
        if self.cached_only:
            self.missing.append(dict(cache=name, **{k: v for k, v in config.items()
                                                     if k not in ("calibration", "activations", "test")}))
            return None, None
        return cached(name, config, compute, self.refresh, code=code), code


def timed(fn):
    t, c = time.time(), time.process_time()
    out = fn()
    return out, {"seconds": round(time.time() - t, 1), "cpu_seconds": round(time.process_time() - c, 1),
                 "load_average": round(os.getloadavg()[0], 1)}


def build(method, model, bits, per_channel, cal, act, settings):
    """The simulated-quantization model of one method, and the AdaRound report (or None)."""
    if method == "nearest":
        return Simulator(model, act).quantize(bits, 8, per_channel), None
    if method == "DFQ":
        m, _ = dfq(model, weight_bits=bits, per_channel=per_channel)
        return Simulator(m, act).quantize(bits, 8, per_channel), None
    if method == "AdaRound":
        q = adaround(model, cal, bits, per_channel, activation_data=act, **settings)
        return q, q.adaround_report
    if method == "DFQ+AdaRound":
        m, _ = dfq(model, weight_bits=bits, bias_correction=False, per_channel=per_channel)
        q = adaround(m, cal, bits, per_channel, activation_data=act, **settings)
        return q, q.adaround_report
    raise ValueError(method)


class Zoo:
    """The data, and one cached evaluation per (model, method, bits, granularity, settings)."""

    def __init__(self, quick, store):
        s = fashion_mnist_splits()
        self.act, _ = one_per_class(s["x_val"], s["y_val"])
        self.cal = calibration_subset(s["x_val"], 256 if quick else CALIBRATION)
        self.x, self.y = (s["x_test"][:2000], s["y_test"][:2000]) if quick else (s["x_test"], s["y_test"])
        self.base = dict(calibration=f"{self.cal.shape[0]} seeded validation images",
                         activations="one_per_class(x_val, y_val)", test=f"fashion_mnist test first {len(self.y)}")
        self.store = store
        self._models = {}

    def model(self, name):
        """``(model, model_hash, reference)``: ``reference()`` is the float model's output on the test set,
        computed when a result is (not to assemble cached ones)."""
        if name not in self._models:
            model = load_model(name)
            outputs = []

            def reference():
                if not outputs:
                    outputs.append(predict(model, self.x, batch_size=1000))
                return outputs[0]

            self._models[name] = (model, model_hash(model), reference)
        return self._models[name]

    def float_accuracy(self, name):
        model, mhash, _ = self.model(name)
        res, prov = self.store.get("adaround", dict(self.base, model=mhash, method="float"),
                                   lambda: evaluate(model, self.x, self.y, batch_size=1000).as_dict(), FASHION_CODE)
        return None if res is None else dict(res, code=prov)

    def result(self, name, method, bits, pc, settings):
        """Accuracy, fidelity, cost and the per-layer report of one configuration (cached; ``None``: not
        cached and the store computes nothing)."""
        model, mhash, ref = self.model(name)
        key = dict(self.base, model=mhash, method=method, weight_bits=bits, per_channel=pc,
                   settings=settings if "AdaRound" in method else None)

        def run():
            (q, rep), cost = timed(lambda: build(method, model, bits, pc, self.cal, self.act, settings))
            res = evaluate(q, self.x, self.y, reference=ref(), batch_size=1000).as_dict()
            return dict(res, **cost, layers=rep.table() if rep is not None else [])

        res, prov = self.store.get("adaround", key, run, FASHION_CODE)
        return None if res is None else dict(res, code=prov)


def run_fashion(zoo, names, bits_list, granularities, methods, settings):
    records = []
    for name in names:
        fl = zoo.float_accuracy(name)
        if fl is not None:
            records.append(dict(table="accuracy", model=name, method="float", weight_bits=None, per_channel=None,
                                activation_bits=None, **fl))
        for bits in bits_list:
            for pc in granularities:
                for method in methods:
                    res = zoo.result(name, method, bits, pc, settings)
                    if res is None:
                        continue
                    layers = res.pop("layers")
                    records.append(dict(table="accuracy", model=name, method=method, weight_bits=bits, per_channel=pc,
                                        activation_bits=8,
                                        iterations=settings["iterations"] if "AdaRound" in method else None, **res))
                    records += [dict(table="layers", model=name, method=method, weight_bits=bits, per_channel=pc,
                                     **layer) for layer in layers]
                    print(f"{name} W{bits}A8 {'pc' if pc else 'pt'} {method:13s}: {res['accuracy']:.4f} "
                          f"({res['seconds']} s, cpu {res['cpu_seconds']} s)", flush=True)
    return records


def run_iterations(zoo, studies, settings):
    """Accuracy and time of AdaRound against its number of iterations per layer.

    Zero iterations is nearest rounding (``tests/test_adaround.py`` checks they are the same model),
    so that point is the nearest-rounding result; the others are AdaRound runs, the one at the
    default count shared with the main table.
    """
    records = []
    for name, bits, pc, iteration_list in studies:
        for its in iteration_list:
            if its == 0:
                res = zoo.result(name, "nearest", bits, pc, settings)
            else:
                res = zoo.result(name, "AdaRound", bits, pc, dict(settings, iterations=its))
            if res is None:
                continue
            res.pop("layers")
            records.append(dict(table="iterations", model=name, weight_bits=bits, per_channel=pc, iterations=its,
                                **res))
            print(f"{name} W{bits} {'pc' if pc else 'pt'} {its:5d} iterations: {res['accuracy']:.4f} "
                  f"({res['seconds']} s, cpu {res['cpu_seconds']} s)", flush=True)
    return records


def run_anomaly(zoo, bits_list, settings, name="v1_friendly"):
    """Why v1_friendly per channel scores better at 3 bits than at 4: where it comes from, what fixes it."""
    model, mhash, ref = zoo.model(name)
    act, cal, x, y = zoo.act, zoo.cal, zoo.x, zoo.y
    records = []

    sim = Simulator(model, act)
    conv1 = sim.folded.get_layer("conv1")
    w, b = conv1.get_weights()
    # the input is -1 on the background: a channel's response there is b - sum(w). The channel whose
    # 4-bit response changes sign the most is the one the chapter follows.
    k4, _ = quantize_kernel(conv1, w, 4, per_channel=True)
    before, after = b - w.sum(axis=(0, 1, 2)), b - k4.sum(axis=(0, 1, 2))
    channel = int(np.argmax(np.where(np.sign(before) != np.sign(after), np.abs(after - before), -1.0)))

    def conv1_only(bits, channels=None, background_only=False):
        q = sim.quantize(None, 8)  # float weights, 8-bit activations
        k, _ = quantize_kernel(conv1, w, bits, per_channel=True)
        kernel = w.copy()
        if background_only:   # float kernel, bias moved so the background response is the quantized one
            q.get_layer("conv1").set_weights([w, (b + (w - k).sum(axis=(0, 1, 2))).astype(np.float32)])
            return q
        sel = slice(None) if channels is None else channels
        kernel[..., sel] = k[..., sel]
        q.get_layer("conv1").set_weights([kernel.astype(np.float32), b])
        return q

    def conv1_only_tflite(bits):
        """conv1's kernel on the quantized grid, converted by the real TFLite converter to int8 (per channel)
        and run by the TFLite kernels: the same effect, with no simulation in between."""
        folded = sim.folded
        k, _ = quantize_kernel(conv1, w, bits, per_channel=True)
        folded.get_layer("conv1").set_weights([k.astype(np.float32), b])
        try:
            return convert_int8(folded, act)
        finally:
            folded.get_layer("conv1").set_weights([w, b])

    variants = {
        "float weights": lambda bits: Simulator(model, act).quantize(None, 8),
        "conv1 only": conv1_only,
        "conv1 only, TFLite int8": conv1_only_tflite,
        f"conv1 channel {channel} only": lambda bits: conv1_only(bits, [channel]),
        "conv1 background shift only": lambda bits: conv1_only(bits, background_only=True),
        "bias correction (analytic)": lambda bits: Simulator(dfq(model, bits, equalization=False, bias_absorption=False,
                                                                 per_channel=True)[0], act).quantize(bits, 8, True),
        "bias correction (empirical)": lambda bits: Simulator(dfq(model, bits, equalization=False,
                                                                  bias_absorption=False, per_channel=True,
                                                                  calibration_data=cal)[0], act).quantize(bits, 8, True),
        "AdaRound conv1 only": lambda bits: adaround(model, cal, bits, True, activation_data=act, layers=["conv1"],
                                                     **settings),
    }
    for bits in bits_list:
        for variant in list(variants) + ["nearest", "AdaRound"]:
            if variant in ("nearest", "AdaRound"):   # the main table's runs
                res = zoo.result(name, variant, bits, True, settings)
                if res is None:
                    continue
                res = {k: res[k] for k in ("accuracy", "ci_low", "ci_high", "n", "agreement", "sqnr_db", "kl", "code")}
            else:
                key = dict(zoo.base, model=mhash, variant=variant, weight_bits=bits, per_channel=True,
                           settings=settings if "AdaRound" in variant else None)
                res, prov = zoo.store.get("adaround_anomaly", key, lambda: evaluate(
                    variants[variant](bits), x, y, reference=ref(), batch_size=1000).as_dict(), FASHION_CODE)
                if res is None:
                    continue
                res = dict(res, code=prov)
            records.append(dict(table="anomaly", model=name, variant=variant, weight_bits=bits, per_channel=True,
                                channel=channel, **res))
            print(f"anomaly {name} W{bits} pc {variant:28s}: {res['accuracy']:.4f}", flush=True)
    return records


def run_imagenet(settings, store, quick, crops_per_photo=26):
    """The ImageNet MobileNetV2 at W4A8: fidelity to float on the bit-width sweep's test crops.

    Activation ranges from the bit-width sweep's 64 calibration crops (so "nearest" is the sweep's
    own W4 point); AdaRound learns on ``crops_per_photo`` other crops (seed 1) of the same 8
    calibration photos. No test photo is ever used for calibration.
    """
    from qlib.imagenet import mobilenet_v2_imagenet
    from qlib.photos import photo_inputs
    from sweep_bits import agreement_by_photo, imagenet_split, with_intervals

    act, x, photo, split = imagenet_split()
    crops = 4 if quick else crops_per_photo
    cal, _ = photo_inputs("calibration", crops_per_photo=crops, seed=1)
    model = mobilenet_v2_imagenet()
    mhash = model_hash(model)
    ref = predict(model, x, batch_size=32)
    cfg = dict(settings, predict_batch=16)
    records = []
    for method, pc in (("nearest", True), ("AdaRound", True), ("nearest", False), ("DFQ", False),
                       ("DFQ+AdaRound", False)):
        key = dict(model=mhash, method=method, weight_bits=4, per_channel=pc, activation_bits=8,
                   settings=cfg if "AdaRound" in method else None, activations=split["calibration_photos"],
                   calibration=f"{crops} crops per photo (seed 1) of {split['calibration_photos']}",
                   test=split["test_photos"], inputs="qlib.photos.photo_inputs")

        def run():
            (q, rep), cost = timed(lambda: build(method, model, 4, pc, cal, act, cfg))
            return dict(agreement_by_photo(predict(q, x, batch_size=32), ref, photo), **cost,
                        layers=rep.table() if rep is not None else [])

        res, prov = store.get("adaround_imagenet", key, run, IMAGENET_CODE)
        if res is None:
            continue
        res = dict(with_intervals(res), code=prov)
        layers = res.pop("layers")
        records.append(dict(table="imagenet", model="imagenet_mobilenet_v2", method=method, weight_bits=4,
                            per_channel=pc, activation_bits=8, n=int(x.shape[0]), calibration_crops=int(cal.shape[0]),
                            **res))
        records += [dict(table="layers", model="imagenet_mobilenet_v2", method=method, weight_bits=4, per_channel=pc,
                         **layer) for layer in layers]
        lo, hi = res["agreement_ci95_photo_bootstrap"]
        print(f"imagenet W4A8 {'pc' if pc else 'pt'} {method:13s}: agreement {res['agreement']:.3f} [{lo:.3f}, {hi:.3f}], "
              f"SQNR {res['sqnr_db']:.1f} dB ({res['seconds']} s, cpu {res['cpu_seconds']} s)", flush=True)
    return records, dict(split, adaround_crops=int(cal.shape[0]),
                         adaround_calibration=f"photo_inputs('calibration', crops_per_photo={crops}, seed=1)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=STUDENTS, choices=STUDENTS)
    ap.add_argument("--bits", nargs="+", type=int, default=[4, 3])
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--granularity", nargs="+", default=["per_tensor", "per_channel"],
                    choices=["per_tensor", "per_channel"])
    ap.add_argument("--iterations", type=int, default=SETTINGS["iterations"])
    ap.add_argument("--skip-fashion", action="store_true", help="no zoo accuracy table")
    ap.add_argument("--skip-studies", action="store_true", help="no iteration study and no anomaly table")
    ap.add_argument("--studies", nargs="+", default=["iterations", "anomaly"], choices=["iterations", "anomaly"])
    ap.add_argument("--study-iterations", nargs="+", type=int, default=[0, 25, 50, 100, 200, 500, 1000],
                    help="the iteration study's counts (v2_standard W3 uses those from 50 to 500)")
    ap.add_argument("--anomaly-bits", nargs="+", type=int, default=[3, 4, 5])
    ap.add_argument("--skip-imagenet", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2000 test images, 256 calibration images, "
                    "50 iterations, W4 per channel only")
    ap.add_argument("--refresh", action="store_true", help="recompute instead of reading data/cache")
    ap.add_argument("--legacy-cache", action="store_true",
                    help="also use the cache entries made before the keys held a code version (record code 'v1')")
    ap.add_argument("--accept-code", nargs="+", default=[], metavar="VERSION",
                    help="also use entries cached by these earlier code versions (a record's `code` says which)")
    ap.add_argument("--cached-only", action="store_true",
                    help="compute nothing: leave out (and list in meta['missing']) what is not cached")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "sweeps" / "adaround.json")
    args = ap.parse_args(argv)
    settings = dict(SETTINGS, iterations=50 if args.quick else args.iterations)
    bits = [4] if args.quick else args.bits
    gran = [True] if args.quick else [g == "per_channel" for g in args.granularity]
    start = time.time()
    records = []
    meta = {"command": " ".join(["python", "scripts/adaround_sweep.py"] + (argv if argv is not None else sys.argv[1:])),
            "keras_backend": __import__("keras").backend.backend(), "settings": settings, "cpu_count": os.cpu_count(),
            "code_version": {"fashion": FASHION_CODE, "imagenet": IMAGENET_CODE},
            "calibration": f"AdaRound: {CALIBRATION} validation images (seed 0); activation ranges: one image per "
                           "class of the validation split", "test": "Fashion-MNIST test, 10,000"}
    store = Store(args.refresh, args.legacy_cache, args.cached_only, args.accept_code)
    if not args.skip_fashion:
        zoo = Zoo(args.quick, store)
        records += run_fashion(zoo, args.models, bits, gran, args.methods, settings)
        if not args.skip_studies and "iterations" in args.studies:
            its = [0, 25] if args.quick else args.study_iterations
            studies = [(m, b, pc, its if m == "v1_friendly" else [i for i in its if 50 <= i <= 500 or i == 0])
                       for m, b, pc in (("v1_friendly", 4, True), ("v2_standard", 3, True)) if m in args.models]
            records += run_iterations(zoo, studies, settings)
        if not args.skip_studies and "anomaly" in args.studies and "v1_friendly" in args.models:
            records += run_anomaly(zoo, [4] if args.quick else args.anomaly_bits, settings)
    if not args.skip_imagenet:
        inet, inet_meta = run_imagenet(settings, store, args.quick)
        records += inet
        meta["imagenet"] = inet_meta
    meta["missing"] = store.missing
    meta["reproduced"] = list({json.dumps(r, sort_keys=True): r for r in store.reproduced}.values())
    meta["seconds"] = round(time.time() - start, 1)
    results.save(args.out, meta, records)
    print(f"wrote {args.out} ({len(records)} records, {meta['seconds']} s)")


if __name__ == "__main__":
    main()
