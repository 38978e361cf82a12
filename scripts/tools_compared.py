#!/usr/bin/env python
"""Which tool should a reader use? qlib, the TFLite converter and Google's LiteRT quantizer, side by side.

    python scripts/tools_compared.py                          # zoo models on the full test set + ImageNet
    python scripts/tools_compared.py --models v1_standard --limit 2000 --skip-imagenet   # a quick look

Writes ``data/sweeps/tools.json``. Every tool quantizes the same trained models with the same
calibration images (one Fashion-MNIST validation image per class; the ImageNet network: the
calibration crops of the bit-width sweep), and every quantized model runs in LiteRT's int8
kernels (default kernel set, as an app gets them). Rows:

- **TFLite converter**: float32; its own PTQ per channel (its default) and per tensor
  (``_experimental_disable_per_channel``). It offers no 4-bit weights for full-integer models.
- **LiteRT quantizer** (PyPI ``ai-edge-quantizer`` 0.10.0, on the float ``.tflite``): static
  min-max W8A8 per channel and per tensor, and W4A8 per channel (int4 weights).
- **qlib**, each method exported with qlib's own grids (``qlib.export.to_tflite``): min-max per
  channel and per tensor, the LPIRC greedy step/offset search (weights and activations), DFQ
  (CLE + bias absorption + bias correction, per tensor), each at W8A8 and W4A8; and AdaRound
  (learned rounding, W4A8 per channel; Fashion-MNIST only), which learns its rounding on 1,024
  unlabelled validation images (its activation ranges still come from the ten calibration images).

The qlib rows are the exported ``.tflite`` files on the kernels (``route: "export"``); a checkout
without ``qlib.export`` would measure qlib's simulation instead (``route: "simulation"``, no file
size) and say so. Results are cached in ``data/cache`` (``--refresh`` recomputes).

Fashion-MNIST rows: top-1 with its 95% interval, and agreement with the float Keras model.
ImageNet rows: agreement and logit SQNR against the float Keras model (no labels offline).
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
from qlib.cache import cached, model_hash  # noqa: E402

ZOO = ["v1_standard", "v1_friendly", "v2_standard", "v2_friendly"]

#: (tool, method, weight bits, per channel): every row of the table
VARIANTS = [
    ("TFLite converter", "float", None, None),
    ("TFLite converter", "PTQ", 8, True),
    ("TFLite converter", "PTQ", 8, False),
    ("LiteRT quantizer", "min-max", 8, True),
    ("LiteRT quantizer", "min-max", 8, False),
    ("LiteRT quantizer", "min-max", 4, True),
    ("qlib", "min-max", 8, True),
    ("qlib", "min-max", 8, False),
    ("qlib", "greedy", 8, True),
    ("qlib", "DFQ", 8, False),
    ("qlib", "min-max", 4, True),
    ("qlib", "greedy", 4, True),
    ("qlib", "DFQ", 4, False),
    ("qlib", "AdaRound", 4, True),
]
#: AdaRound (``qlib.adaround``, the settings of scripts/adaround_sweep.py) learns its rounding on more
#: (unlabelled) images than the ten calibration images: a seeded subset of the validation split. Its
#: activation ranges come from the same ten images as every other row. Not run on the ImageNet network
#: (hours on 2 CPU cores; scripts/adaround_sweep.py has that part).
ADAROUND_IMAGES = 1024
ADAROUND_SETTINGS = dict(iterations=500, batch_size=1024, lr=1e-2, reg=0.01, warmup=0.2, beta_range=(20.0, 2.0),
                         rows=16384, seed=0)


def label(tool, method, bits, per_channel) -> str:
    if bits is None:
        return f"{tool}: float32"
    return f"{tool}: {method} W{bits}A8 per {'channel' if per_channel else 'tensor'}"


def qlib_route() -> str:
    """``"export"`` where qlib.export.to_tflite exists (it does on main), else ``"simulation"``."""
    try:
        from qlib.export import to_tflite  # noqa: F401
    except ImportError:
        return "simulation"
    return "export"


def qlib_quantized(model, calib, method, bits, per_channel, sim_cache: dict, adaround_data=None):
    """qlib's simulated-quantization Keras model for one method (what qlib.export exports)."""
    from qlib.dfq import dfq
    from qlib.ranges import RANGE_SETTERS
    from qlib.simulate import Simulator

    if method == "AdaRound":
        from qlib.adaround import adaround

        if adaround_data is None:
            raise ValueError("the AdaRound row needs its unlabelled images (adaround_data)")
        return adaround(model, adaround_data, bits, per_channel, activation_data=calib, **ADAROUND_SETTINGS)
    if method == "DFQ":
        m, _ = dfq(model, weight_bits=bits)
        return Simulator(m, calib).quantize(bits, 8, per_channel)
    if "sim" not in sim_cache:
        sim_cache["sim"] = Simulator(model, calib)
    sim = sim_cache["sim"]
    setter = RANGE_SETTERS["greedy" if method == "greedy" else "minmax"]
    return sim.quantize(bits, 8, per_channel, setter, setter, setter_name=method)


def build(model, calib, variant, float_bytes: bytes, sim_cache: dict, adaround_data=None):
    """``(tflite bytes or None, keras model or None, route)`` for one variant."""
    tool, method, bits, per_channel = variant
    if tool == "TFLite converter":
        if bits is None:
            return float_bytes, None, "tflite"
        return deploy.converter_int8(model, calib, per_channel=per_channel), None, "tflite"
    if tool == "LiteRT quantizer":
        return deploy.litert_quantizer(float_bytes, calib, weight_bits=bits, per_channel=per_channel), None, "tflite"
    q = qlib_quantized(model, calib, method, bits, per_channel, sim_cache, adaround_data)
    if qlib_route() == "export":  # qlib's grids in a real int8 .tflite
        from qlib.export import to_tflite

        return to_tflite(q, weight_bits=bits, per_channel=per_channel), None, "export"
    return None, q, "simulation"


def measure(model, calib, x, y, reference, variants, refresh, dataset, mhash, adaround_data=None):
    from qlib.evaluate import evaluate, fidelity, predict

    float_bytes = deploy.float_tflite(model)
    sim_cache: dict = {}
    records = []
    for v in variants:
        tool, method, bits, per_channel = v
        route = qlib_route() if tool == "qlib" else "tflite"
        key = dict(model=mhash, tool=tool, method=method, weight_bits=bits, per_channel=per_channel, route=route,
                   dataset=dataset, n=int(x.shape[0]), calibration=int(calib.shape[0]))
        if method == "AdaRound":
            key.update(adaround_images=int(adaround_data.shape[0]), settings=ADAROUND_SETTINGS)
        start = time.time()

        def run():
            tfl, keras_model, r = build(model, calib, v, float_bytes, sim_cache, adaround_data)
            runnable = tfl if tfl is not None else keras_model
            if y is not None:
                res = evaluate(runnable, x, y, reference=reference).as_dict()
            else:
                res = fidelity(predict(runnable, x, batch_size=16), reference)
                res["n"] = int(x.shape[0])
            res.update(route=r, size_bytes=len(tfl) if tfl is not None else None)
            return res

        res = cached("tools", key, run, refresh)
        rec = dict(tool=tool, method=method, weight_bits=bits, per_channel=per_channel, label=label(*v), **res)
        if method == "AdaRound":
            rec["adaround_images"] = int(adaround_data.shape[0])
        records.append(rec)
        what = f"top-1 {res['accuracy']:.4f}" if "accuracy" in res else f"SQNR {res['sqnr_db']:.1f} dB"
        print(f"  {rec['label']:55s} {what}, agreement {res['agreement']:.4f}, "
              f"{res['size_bytes'] or '-'} bytes [{res['route']}] ({time.time() - start:.0f} s)", flush=True)
    return records


def fashion(names, limit, refresh):
    from qlib.adaround import calibration_subset
    from qlib.data import fashion_mnist_splits, one_per_class
    from qlib.evaluate import predict
    from qlib.zoo import load_model

    s = fashion_mnist_splits()
    calib, _ = one_per_class(s["x_val"], s["y_val"])
    unlabelled = calibration_subset(s["x_val"], ADAROUND_IMAGES)
    x, y = s["x_test"][:limit], s["y_test"][:limit]
    out = []
    for name in names:
        print(name, flush=True)
        model = load_model(name)
        ref = predict(model, x, batch_size=1000)
        for r in measure(model, calib, x, y, ref, VARIANTS, refresh, "fashion_mnist test", model_hash(model),
                         adaround_data=unlabelled):
            out.append(dict(model=name, **r))
    return out


def imagenet(refresh):
    from qlib.evaluate import predict
    from qlib.imagenet import mobilenet_v2_imagenet
    from sweep_bits import imagenet_split

    calib, x, _, _ = imagenet_split()
    model = mobilenet_v2_imagenet()
    ref = predict(model, x, batch_size=16)
    print("imagenet_mobilenet_v2", flush=True)
    return [dict(model="imagenet_mobilenet_v2", **r)
            for r in measure(model, calib, x, None, ref, [v for v in VARIANTS if v[1] != "AdaRound"], refresh,
                             "imagenet crops", model_hash(model))]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=ZOO, choices=ZOO)
    ap.add_argument("--limit", type=int, default=10000, help="test images (default: the full 10,000)")
    ap.add_argument("--skip-imagenet", action="store_true")
    ap.add_argument("--refresh", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "sweeps" / "tools.json")
    args = ap.parse_args(argv)
    start, load_start = time.time(), os.getloadavg()
    records = fashion(args.models, args.limit, args.refresh)
    if not args.skip_imagenet:
        records += imagenet(args.refresh)
    from importlib.metadata import version

    meta = {"command": " ".join(["python", "scripts/tools_compared.py"] + (argv if argv is not None else sys.argv[1:])),
            "seconds": round(time.time() - start, 1), "kernels": "default (XNNPACK)", "num_threads": "LiteRT default",
            "qlib_route": qlib_route(),
            "loadavg_start": [round(v, 2) for v in load_start], "loadavg_end": [round(v, 2) for v in os.getloadavg()],
            "load_note": "accuracies do not depend on the load; results cached per configuration (data/cache/tools-*.json) "
                         "may come from earlier runs of the same code", "calibration": "one_per_class(x_val, y_val): 10 images; ImageNet: "
            "sweep_bits.imagenet_split() calibration crops; AdaRound: rounding learned on "
            f"calibration_subset(x_val, {ADAROUND_IMAGES}), settings {ADAROUND_SETTINGS}", "host": deploy.host_info(),
            "versions": {p: version(p) for p in ("ai-edge-litert", "ai-edge-quantizer", "tensorflow", "keras")}}
    results.save(args.out, meta, records)
    print(f"wrote {args.out} ({len(records)} records, {meta['seconds']} s)")


if __name__ == "__main__":
    main()
