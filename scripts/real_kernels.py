#!/usr/bin/env python
"""qlib's quantization on the real int8 kernels. Writes data/sweeps/real_kernels.json.

    nice -n 10 python scripts/real_kernels.py                 # everything (hours on 2 shared cores)
    python scripts/real_kernels.py --parts bitexact --limit 500 --out /tmp/rk.json   # a quick check
    python scripts/real_kernels.py --refresh                  # recompute instead of reading data/cache
    python scripts/real_kernels.py --parts dfq bits --models v1_standard   # one zoo model only
    python scripts/real_kernels.py --parts bitexact --accept-code c0ddbec741b8a2cf   # reuse an earlier version's results

Every model is exported with :func:`qlib.export.to_tflite` (qlib's grids in the ``.tflite``) and
run on LiteRT's kernels. Parts (records carry ``table`` = the part's name):

- ``converter``: what the TFLite converter itself does with weight fake-quant ops of 2..8 bits
  (before qlib rewrites them): storage type, scale / qlib's scale, share of integers identical.
- ``bitexact``: every zoo model, W8A8 per tensor and per channel (min-max, one calibration image
  per class), on the full 10,000-image Fashion-MNIST test set, and the ImageNet MobileNetV2 on the
  crops of the bit-width sweep: :func:`qlib.integer.run` against the reference kernels
  (``BUILTIN_REF``), every int8 output and every intermediate tensor; the default (XNNPACK) and
  the optimized (no delegate) kernels against the reference kernels; ``qlib.integer`` with
  ``kernels="xnnpack"`` (XNNPACK's float32 requantization) against the default kernels (on the first
  2,000 images); the float simulation against the reference kernels.
- ``dfq`` / ``dfq_imagenet``: the DFQ table (baseline, CLE, CLE+BA, CLE+BA+BC per tensor;
  per-channel without DFQ; weight bits 4..8, 8-bit activations) on the default kernels, next to
  the simulated numbers shipped in ``data/sweeps/dfq.json`` (``scripts/dfq_table.py``: same
  models, calibration and test inputs).
- ``bits`` / ``bits_imagenet``: accuracy (ImageNet: agreement with the float model) vs weight bit
  width (2..8, per tensor / per channel, min-max and greedy-search weight ranges; 8-bit
  activations, min-max and greedy-search; ImageNet: 4..8 bits, min-max) on the default kernels,
  next to the simulated numbers shipped in ``data/sweeps/bits.json`` (``scripts/sweep_bits.py``).
- ``partings``: op by op, how often the float simulation and the integer kernels differ
  (:func:`qlib.export.partings`; every zoo model, W8A8 per channel, the first 500 test images).

The ImageNet inputs are those of the shipped sweeps: the photo crops of ``qlib.photos`` (1,036
test crops of 37 photos, calibrated on 64 crops of 8 other photos). Results are cached per
configuration in data/cache (``rk_*`` files), keyed by model hash, configuration and the version
of the qlib code that computed them (``qlib.cache.code_version``, computed once at start).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from qlib import export, flatbuffer, integer, results, tflite  # noqa: E402
from qlib import cache as qcache  # noqa: E402
from qlib.cache import cache_key, code_version, model_hash  # noqa: E402
from qlib.data import fashion_mnist_splits, one_per_class  # noqa: E402
from qlib.dfq import dfq  # noqa: E402
from qlib.evaluate import evaluate, predict  # noqa: E402
from qlib.ranges import RANGE_SETTERS  # noqa: E402
from qlib.simulate import Simulator  # noqa: E402
from qlib.zoo import load_model  # noqa: E402

STUDENTS = ["v1_standard", "v1_friendly", "v2_standard", "v2_friendly"]
DFQ_METHODS = {
    "baseline": dict(equalization=False, bias_absorption=False, bias_correction=False),
    "CLE": dict(bias_absorption=False, bias_correction=False),
    "CLE+BA": dict(bias_correction=False),
    "CLE+BA+BC": dict(),
}
DFQ_BITS = [4, 5, 6, 7, 8]
WEIGHT_BITS = [2, 3, 4, 5, 6, 7, 8]
IMAGENET_BITS = [4, 5, 6, 7, 8]
EMULATION_IMAGES = 2000  # qlib.integer with XNNPACK's arithmetic vs the default kernels: the first N images

# the version of the qlib code every result depends on, computed once, as this run imports it
CODE = code_version("qlib.export", "qlib.integer", "qlib.tflite", "qlib.evaluate", "qlib.simulate", "qlib.dfq",
                    "qlib.ranges", "qlib.data", "qlib.zoo", "qlib.photos", "qlib.imagenet")
CACHE_DIR = [qcache.CACHE_DIR]


ACCEPT: list[str] = []  # earlier code versions whose cached results are also used (--accept-code)


def cached(name, config, compute, refresh=False):
    """The cached result of ``compute()`` at this code version, else (``--accept-code``) at an earlier one.

    A dict result says which code computed it (``code``), so a reused entry is never mistaken for a new one.
    """
    code = CODE
    if not refresh and not (Path(CACHE_DIR[0]) / f"{name}-{cache_key(**config, code_version=CODE)}.json").is_file():
        code = next((v for v in ACCEPT
                     if (Path(CACHE_DIR[0]) / f"{name}-{cache_key(**config, code_version=v)}.json").is_file()), CODE)
    res = qcache.cached(name, config, compute, refresh, cache_dir=CACHE_DIR[0], code=code)
    return dict(res, code=code) if isinstance(res, dict) else res


def shipped(name: str, **where) -> dict:
    """The simulated result the book shows: the one record of ``data/sweeps/<name>.json`` matching ``where``."""
    return results.load(name).one(**where)


def log(*args):
    print(*args, flush=True)


# --- the converter, honestly -------------------------------------------------------------------

def part_converter(s, calib, refresh, limit):
    model = load_model("v1_standard")
    sim = Simulator(model, calib)
    records = []
    for bits in WEIGHT_BITS:
        for pc in (False, True):
            key = dict(model=model_hash(model), weight_bits=bits, per_channel=pc, calibration="one_per_class")

            def run():
                q = sim.quantize(bits, 8, per_channel=pc)
                grids = export.grids(q, bits, pc)
                raw = export.converted(q, bits, pc)  # before qlib rewrites anything
                g = flatbuffer.graph(raw)
                types, ratios, same, layers = {}, [], 0, 0
                for op in g.ops:
                    if op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
                        continue
                    w = g.tensors[op.inputs[1]]
                    lg = grids[export.layer_of(w.name)]
                    dtype = "int4" if w.type == flatbuffer.INT4 else np.dtype(w.dtype).name
                    types[dtype] = types.get(dtype, 0) + 1
                    ratios.append(float(np.median(w.scale / np.broadcast_to(lg.weight.scale, w.scale.shape))))
                    same += int(np.array_equal(w.data, lg.weight.integers))
                    layers += 1
                e = export.export(q, bits, pc)
                return dict(storage=types, scale_ratio_median=float(np.median(ratios)),
                            scale_ratio_min=float(np.min(ratios)), scale_ratio_max=float(np.max(ratios)),
                            layers=layers, layers_integers_identical=same, rewritten_after=len(e.rewritten),
                            on_qlib_grid_after=all(export.on_grid(r) for r in e.rows))

            res = cached("rk_converter", key, run, refresh)
            records.append(dict(table="converter", model="v1_standard", weight_bits=bits, per_channel=pc, **res))
            log(f"converter W{bits} {'pc' if pc else 'pt'}: {res['storage']} "
                f"scale ratio {res['scale_ratio_median']:.4f} "
                f"identical {res['layers_integers_identical']}/{res['layers']}")
    return records


# --- bit-exactness -------------------------------------------------------------------------------

def compare_run(tfl, x, sim_logits=None, batch=50, other_batch=500):  # noqa: C901
    """qlib.integer vs the reference kernels (every tensor), and the other kernel sets."""
    g = flatbuffer.graph(tfl)
    out = g.outputs[0]
    xq = tflite.quantize_input(tfl, x)
    model = integer.Model(tfl)
    computed = sorted(set(g.inputs) | {i for op in g.ops for i in op.outputs})
    tensor_equal = {i: 0 for i in computed}
    tensor_size = {i: 0 for i in computed}
    ref_out = []
    it, current = None, None
    t_ref = t_ours = 0.0
    for start in range(0, xq.shape[0], batch):
        xb = xq[start:start + batch]
        if current != xb.shape[0]:
            it = tflite.interpreter(tfl, preserve_all_tensors=True, kernels="reference", batch_size=xb.shape[0])
            current = xb.shape[0]
        t0 = time.time()
        it.set_tensor(it.get_input_details()[0]["index"], xb)
        it.invoke()
        ref = {i: np.array(it.get_tensor(i)) for i in computed}
        t1 = time.time()
        ours = model.run(xb, all_tensors=True, batch_size=None)
        t2 = time.time()
        t_ref, t_ours = t_ref + t1 - t0, t_ours + t2 - t1
        for i in computed:
            tensor_equal[i] += int(np.sum(ours[i] == ref[i]))
            tensor_size[i] += ref[i].size
        ref_out.append(ref[out])
    ref_out = np.concatenate(ref_out)
    res = dict(n=int(x.shape[0]), tensors=len(computed),
               tensors_identical=int(sum(tensor_equal[i] == tensor_size[i] for i in computed)),
               elements_identical=float(sum(tensor_equal.values()) / sum(tensor_size.values())),
               output_identical=float(tensor_equal[out] / tensor_size[out]),
               seconds_reference=round(t_ref, 1), seconds_qlib=round(t_ours, 1))
    t0 = time.time()
    n_emulated = min(EMULATION_IMAGES, xq.shape[0])
    emulated = integer.Model(tfl, kernels="xnnpack").run(xq[:n_emulated], batch_size=batch)
    seconds_emulation = round(time.time() - t0, 1)
    for kernels in ("default", "optimized"):
        t0 = time.time()
        other = tflite.invoke(tfl, xq, kernels=kernels, batch_size=other_batch)
        diff = np.abs(other.astype(np.int32) - ref_out.astype(np.int32))
        res[kernels] = dict(output_identical=float(np.mean(diff == 0)), max_abs_diff=int(diff.max()),
                            images_identical=float(np.mean(np.all(diff.reshape(diff.shape[0], -1) == 0, axis=1))),
                            top1_agreement=float(np.mean(other.argmax(1) == ref_out.argmax(1))),
                            diff_histogram={int(k): int(v) for k, v in zip(*np.unique(diff, return_counts=True))},
                            seconds=round(time.time() - t0, 1))
        if kernels == "default":  # qlib.integer following XNNPACK's arithmetic, against the default kernels
            res[kernels]["xnnpack_emulation_identical"] = float(np.mean(emulated == other[:n_emulated]))
            res[kernels]["xnnpack_emulation_images"] = int(n_emulated)
            res[kernels]["seconds_xnnpack_emulation"] = seconds_emulation
    if sim_logits is not None:
        t = g.tensors[out]
        sim_q = np.clip(np.round(sim_logits / t.scale[0]) + t.zero_point[0], -128, 127)
        res["simulation"] = dict(top1_agreement=float(np.mean(sim_logits.argmax(1) == ref_out.argmax(1))),
                                 output_identical=float(np.mean(sim_q == ref_out)),
                                 max_abs_diff=int(np.abs(sim_q - ref_out).max()))
    res["_ref_out"] = ref_out
    return res


def part_bitexact(s, calib, refresh, limit):
    x, y = s["x_test"][:limit], s["y_test"][:limit]
    records = []
    for name in STUDENTS:
        model = load_model(name)
        sim = Simulator(model, calib)
        for pc in (False, True):
            key = dict(model=model_hash(model), weight_bits=8, activation_bits=8, per_channel=pc, n=int(x.shape[0]),
                       calibration="one_per_class(x_val, y_val)", test="fashion_mnist test")

            def run():
                q = sim.quantize(8, 8, per_channel=pc)
                tfl = export.to_tflite(q, 8, pc)
                sim_logits = predict(q, x, batch_size=1000)
                res = compare_run(tfl, x, sim_logits, batch=100)
                ref_out = res.pop("_ref_out")
                out = flatbuffer.graph(tfl).tensors[flatbuffer.graph(tfl).outputs[0]]
                ref_logits = (ref_out.astype(np.float32) - out.zero_point[0]) * out.scale[0]
                res["accuracy"] = dict(simulation=float(np.mean(sim_logits.argmax(1) == y)),
                                       reference=float(np.mean(ref_logits.argmax(1) == y)))
                res["tflite_bytes"] = len(tfl)
                return res

            res = cached("rk_bitexact", key, run, refresh)
            records.append(dict(table="bitexact", model=name, weight_bits=8, activation_bits=8, per_channel=pc, **res))
            log(f"bitexact {name} {'pc' if pc else 'pt'}: qlib==ref outputs {res['output_identical']:.4%}, tensors "
                f"{res['tensors_identical']}/{res['tensors']}; "
                f"default identical {res['default']['output_identical']:.2%} "
                f"(max {res['default']['max_abs_diff']}), top-1 {res['default']['top1_agreement']:.2%}; "
                f"ref {res['seconds_reference']} s, qlib {res['seconds_qlib']} s")
    return records


def _imagenet(limit):
    """The ImageNet MobileNetV2 and the photo split of the shipped sweeps (first ``limit`` test crops)."""
    from qlib.imagenet import mobilenet_v2_imagenet
    from sweep_bits import imagenet_split

    calib, x, photo, meta = imagenet_split()
    model = mobilenet_v2_imagenet()
    key = dict(model=model_hash(model), calibration=meta["calibration_photos"], test=meta["test_photos"],
               inputs="qlib.photos.photo_inputs", n=int(x[:limit].shape[0]))
    return model, calib, x[:limit], photo[:limit], key


def part_bitexact_imagenet(refresh, limit):
    model, calib, x, _, base = _imagenet(limit)
    sim = Simulator(model, calib, batch_size=32)
    records = []
    for pc in (False, True):
        key = dict(base, weight_bits=8, activation_bits=8, per_channel=pc)

        def run():
            q = sim.quantize(8, 8, per_channel=pc)
            tfl = export.to_tflite(q, 8, pc)
            res = compare_run(tfl, x, predict(q, x, batch_size=16), batch=4, other_batch=16)
            res.pop("_ref_out")
            res["tflite_bytes"] = len(tfl)
            return res

        res = cached("rk_bitexact_imagenet", key, run, refresh)
        records.append(dict(table="bitexact", model="imagenet_mobilenet_v2", weight_bits=8, activation_bits=8,
                            per_channel=pc, **res))
        log(f"bitexact imagenet {'pc' if pc else 'pt'}: qlib==ref {res['output_identical']:.4%}, tensors "
            f"{res['tensors_identical']}/{res['tensors']}; default identical {res['default']['output_identical']:.2%} "
            f"(max {res['default']['max_abs_diff']}), top-1 {res['default']['top1_agreement']:.2%}; "
            f"ref {res['seconds_reference']} s, qlib {res['seconds_qlib']} s")
    return records


# --- accuracy tables on the default kernels ------------------------------------------------------

def real_eval(q, bits, pc, x, y, ref):
    start = time.time()
    tfl = export.to_tflite(q, bits, pc)
    res = evaluate(tfl, x, y, reference=ref, kernels="default").as_dict()
    res["seconds"] = round(time.time() - start, 1)
    return res


def real_fidelity(q, bits, pc, x, ref, photo):
    from sweep_bits import agreement_by_photo

    start = time.time()
    tfl = export.to_tflite(q, bits, pc)
    res = agreement_by_photo(predict(tfl, x, 16, kernels="default"), ref, photo)
    res["seconds"] = round(time.time() - start, 1)
    return res


def _simulated(record: dict) -> dict:
    """The fields of a shipped simulated record that the comparison needs."""
    keep = ("accuracy", "ci_low", "ci_high", "n", "agreement", "sqnr_db", "agreement_ci95_wilson",
            "agreement_ci95_photo_bootstrap")
    return {k: record[k] for k in keep if k in record}


def part_dfq(s, calib, refresh, limit):
    x, y = s["x_test"][:limit], s["y_test"][:limit]
    records = []
    for name in STUDENTS:
        model = load_model(name)
        mhash = model_hash(model)
        ref = predict(model, x, batch_size=1000)
        for bits in DFQ_BITS:
            for method, kw in list(DFQ_METHODS.items()) + [("per-channel", None)]:
                pc = method == "per-channel"

                def run():
                    if kw is None:
                        q = Simulator(model, calib).quantize(bits, 8, per_channel=True)
                    else:
                        m, _ = dfq(model, weight_bits=bits, **kw)
                        q = Simulator(m, calib).quantize(bits, 8, per_channel=False)
                    return real_eval(q, bits, pc, x, y, ref)

                simulated = _simulated(shipped("dfq", model=name, method=method, weight_bits=bits, activation_bits=8))
                key = dict(model=mhash, method=method, weight_bits=bits, activation_bits=8, per_channel=pc,
                           calibration="one_per_class(x_val, y_val)", n=int(x.shape[0]))
                real = cached("rk_dfq", key, run, refresh)
                records.append(dict(table="dfq", model=name, method=method, weight_bits=bits, activation_bits=8,
                                    per_channel=pc, simulated=simulated, real=real))
                log(f"dfq {name} W{bits} {method:10s}: simulated {simulated['accuracy']:.4f} "
                    f"real {real['accuracy']:.4f} ({real['seconds']} s)")
    return records


def part_dfq_imagenet(refresh, limit):
    import gc

    from sweep_bits import with_intervals

    model, calib, x, photo, base = _imagenet(limit)
    ref = predict(model, x, batch_size=16)
    records = []
    for bits in sorted(DFQ_BITS, reverse=True):
        for method, kw in list(DFQ_METHODS.items()) + [("per-channel", None)]:
            pc = method == "per-channel"

            def run():
                gc.collect()
                m = model if kw is None else dfq(model, weight_bits=bits, **kw)[0]
                q = Simulator(m, calib, batch_size=32).quantize(bits, 8, per_channel=pc)
                return real_fidelity(q, bits, pc, x, ref, photo)

            simulated = shipped("dfq", model="imagenet_mobilenet_v2", method=method, weight_bits=bits,
                                activation_bits=8)
            real = with_intervals(cached("rk_dfq_imagenet", dict(base, method=method, weight_bits=bits,
                                                                 activation_bits=8, per_channel=pc), run, refresh))
            records.append(dict(table="dfq", model="imagenet_mobilenet_v2", method=method, weight_bits=bits,
                                activation_bits=8, per_channel=pc, n=int(x.shape[0]),
                                simulated=_simulated(simulated), real=_simulated(real)))
            log(f"dfq imagenet W{bits} {method:10s}: simulated {simulated['agreement']:.3f} "
                f"real {real['agreement']:.3f} ({real['seconds']} s)")
    return records


def bits_configs():
    for bits in WEIGHT_BITS:
        for pc in (False, True):
            for setter in ("minmax", "greedy"):
                yield dict(sweep="weights", weight_bits=bits, activation_bits=8, per_channel=pc, weight_range=setter,
                           activation_range="minmax")
    yield dict(sweep="activations", weight_bits=8, activation_bits=8, per_channel=True, weight_range="minmax",
               activation_range="greedy")


def part_bits(s, calib, refresh, limit):
    x, y = s["x_test"][:limit], s["y_test"][:limit]
    records = []
    for name in STUDENTS:
        model = load_model(name)
        mhash = model_hash(model)
        sim = Simulator(model, calib)
        ref = predict(model, x, batch_size=1000)
        for cfg in bits_configs():
            def run():
                q = sim.quantize(cfg["weight_bits"], cfg["activation_bits"], cfg["per_channel"],
                                 RANGE_SETTERS[cfg["weight_range"]], RANGE_SETTERS[cfg["activation_range"]],
                                 setter_name=cfg["activation_range"])
                return real_eval(q, cfg["weight_bits"], cfg["per_channel"], x, y, ref)

            simulated = _simulated(shipped("bits", model=name, **cfg))
            key = dict(cfg, model=mhash, calibration="one_per_class(x_val, y_val)", n=int(x.shape[0]))
            real = cached("rk_bits", key, run, refresh)
            records.append(dict(cfg, table="bits", model=name, simulated=simulated, real=real))
            log(f"bits {name} W{cfg['weight_bits']} {'pc' if cfg['per_channel'] else 'pt'} "
                f"{cfg['weight_range']}/{cfg['activation_range']}: simulated {simulated['accuracy']:.4f} "
                f"real {real['accuracy']:.4f} ({real['seconds']} s)")
    return records


def part_bits_imagenet(refresh, limit):
    from sweep_bits import with_intervals

    model, calib, x, photo, base = _imagenet(limit)
    ref = predict(model, x, batch_size=16)
    sim = Simulator(model, calib, batch_size=32)
    records = []
    for bits in sorted(IMAGENET_BITS, reverse=True):
        for pc in (False, True):
            cfg = dict(weight_bits=bits, activation_bits=8, per_channel=pc, weight_range="minmax",
                       activation_range="minmax")
            simulated = shipped("bits", model="imagenet_mobilenet_v2", **cfg)
            real = with_intervals(cached("rk_bits_imagenet", dict(base, **cfg), lambda: real_fidelity(
                sim.quantize(bits, 8, pc), bits, pc, x, ref, photo), refresh))
            records.append(dict(cfg, table="bits", model="imagenet_mobilenet_v2", n=int(x.shape[0]),
                                simulated=_simulated(simulated), real=_simulated(real)))
            log(f"bits imagenet W{bits} {'pc' if pc else 'pt'}: simulated {simulated['agreement']:.3f} "
                f"real {real['agreement']:.3f} ({real['seconds']} s)")
    return records


def part_partings(s, calib, refresh, limit):
    x = s["x_test"][:min(limit or 500, 500)]
    records = []
    for name in STUDENTS:
        model = load_model(name)
        key = dict(model=model_hash(model), weight_bits=8, activation_bits=8, per_channel=True, n=int(x.shape[0]),
                   calibration="one_per_class(x_val, y_val)", test="fashion_mnist test")

        def run():
            q = Simulator(model, calib).quantize(8, 8, per_channel=True)
            return export.partings(q, export.to_tflite(q, 8, True), x)

        rows = cached("rk_partings", key, run, refresh)
        records += [dict(r, table="partings", model=name, per_channel=True, images=int(x.shape[0]), position=i)
                    for i, r in enumerate(rows)]
        log(f"partings {name}: logits differ end to end {rows[-1]['end_to_end_differ']:.2%}")
    return records


PARTS = ["converter", "partings", "bitexact", "dfq", "bits", "bits_imagenet", "dfq_imagenet", "bitexact_imagenet"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=PARTS, choices=PARTS)
    ap.add_argument("--limit", type=int, default=None, help="first N test images/crops only (a smoke run; "
                    "the book expects none)")
    ap.add_argument("--models", nargs="+", default=list(STUDENTS), choices=STUDENTS,
                    help="zoo models of the Fashion-MNIST parts (default: all four)")
    ap.add_argument("--refresh", action="store_true", help="recompute instead of reading data/cache")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "sweeps" / "real_kernels.json")
    ap.add_argument("--cache-dir", type=Path, default=qcache.CACHE_DIR, help="where per-configuration results go")
    ap.add_argument("--accept-code", nargs="+", default=[], metavar="VERSION",
                    help="also use results cached by these earlier code versions (each record's `code` says which)")
    args = ap.parse_args(argv)
    ACCEPT[:] = args.accept_code
    CACHE_DIR[0] = args.cache_dir
    STUDENTS[:] = args.models  # the parts read this list
    from importlib.metadata import version

    s = fashion_mnist_splits()
    calib, _ = one_per_class(s["x_val"], s["y_val"])
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {"meta": {}, "records": []}
    # every record says which qlib code computed it; records from before records said so were all
    # computed by the code of the run that wrote the file (its meta's code_version)
    records = [r if "code" in r else dict(r, code=previous["meta"].get("code_version"))
               for r in previous["records"] if r.get("part") not in args.parts]
    meta = dict(previous["meta"])
    meta.update(tensorflow=version("tensorflow"), ai_edge_litert=version("ai-edge-litert"), rounding=integer.ROUNDING,
                machine=f"{platform.machine()} {platform.processor() or ''}".strip(), code_version=CODE,
                accepted_code=list(args.accept_code),  # code_version: the latest run's; each record has its `code`
                calibration="Fashion-MNIST: one image per class from the validation split; ImageNet: the photo "
                            "split of scripts/sweep_bits.py")
    command = " ".join(["python", "scripts/real_kernels.py"] + (argv if argv is not None else sys.argv[1:]))
    for key in ("seconds", "cpu_seconds", "commands", "limits", "models"):
        meta[key] = dict(meta.get(key, {}))
    for part in args.parts:
        start, cpu = time.time(), time.process_time()
        if part.endswith("imagenet"):
            new = globals()[f"part_{part}"](args.refresh, args.limit)
        else:
            new = globals()[f"part_{part}"](s, calib, args.refresh, args.limit)
        new = [dict(r, part=part, code=r.get("code") or (r.get("real") or {}).get("code") or CODE) for r in new]
        records = [r for r in records if r.get("part") != part] + new
        meta["seconds"][part] = round(time.time() - start, 1)
        meta["cpu_seconds"][part] = round(time.process_time() - cpu, 1)
        meta["commands"][part], meta["limits"][part] = command, args.limit
        meta["models"][part] = None if part.endswith("imagenet") or part == "converter" else list(args.models)
        log(f"part {part}: {meta['seconds'][part]} s (cpu {meta['cpu_seconds'][part]} s)")
        order = {p: i for i, p in enumerate(PARTS)}
        records.sort(key=lambda r: order[r["part"]])  # stable: each part keeps its own order
        results.save(args.out, meta, records)  # written after every part: a long run keeps what it has
        log(f"wrote {args.out} ({len(records)} records)")


if __name__ == "__main__":
    main()
