#!/usr/bin/env python
"""Product quantization (Q-CNN) of whole zoo models: accuracy against sub-vector length and codebook size.

    python scripts/pq_sweep.py                     # writes data/sweeps/pq.json (cached configs reused)
    python scripts/pq_sweep.py --models v1_standard --subvector 4 --out part1.json   # a part
    python scripts/pq_sweep.py --merge part1.json part2.json ...                     # merged into pq.json

Every 1x1 convolution and the classifier of each model is product-quantized (BatchNorm folded
first; the stem conv and the depthwise layers stay float) with ``d`` entries per sub-vector and
``K`` codewords per subspace, two ways:

- ``kmeans``: codebooks learnt on the weights alone (each layer's response error is measured on
  the same calibration images, with inputs from the network compressed so far);
- ``response``: Q-CNN, codebooks and assignments refined to reproduce each layer's response on
  500 validation images, layer by layer, with inputs from the network compressed so far.

For each: top-1 on the Fashion-MNIST test set with float activations and (``response``) with
8-bit activations (qlib's simulation, min-max ranges on one image per class); compression of
the compressed layers and of the whole model against float32 and int8; multiply-adds. No
training: numpy and Keras inference, CPU or GPU (``KERAS_BACKEND=jax``) alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from partiv_common import accuracy, provenance, write_results  # noqa: E402


from qlib.cache import cached, code_version, model_hash  # noqa: E402
from qlib.data import fashion_mnist_splits, one_per_class  # noqa: E402
from qlib.folding import fold_batchnorm  # noqa: E402
from qlib.layers import num_outputs  # noqa: E402
from qlib.models import layer_costs  # noqa: E402
from qlib.pq import compress_model  # noqa: E402
from qlib.simulate import Simulator  # noqa: E402
from qlib.zoo import load_model  # noqa: E402


#: the code a cached record depends on (computed once, when the modules are imported)
CODE = code_version("qlib.pq", "qlib.simulate", "qlib.evaluate", "qlib.folding", "qlib.data", "qlib.zoo")


def model_sizes(folded) -> dict:
    """Bits of every layer's weights: float32, and int8 kernels (int32 biases, a float scale per channel)."""
    out = {}
    for layer in folded.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        kernel = ws[0]
        rest = sum(w.size for w in ws[1:])
        outputs = num_outputs(layer, kernel)
        out[layer.name] = {"float32": 32 * (kernel.size + rest), "int8": 8 * kernel.size + 32 * rest + 32 * outputs,
                           "bias_bits": 32 * rest}
    return out


def run_config(model, folded, sizes, costs, d, k, method, splits, calib_pq, calib_act, test):
    start = time.time()
    pq_model, report = compress_model(model, d, k, calibration_data=calib_pq, refine=method == "response")
    seconds = time.time() - start
    xt, yt = test
    rec = {"subvector_length": d, "codebook_size": k, "method": method, "compress_seconds": round(seconds, 1)}
    rec.update(accuracy(pq_model, xt, yt))
    if method == "response":
        q = Simulator(pq_model, calib_act).quantize(weight_bits=None, activation_bits=8)
        rec["a8"] = accuracy(q, xt, yt)
    t = report.totals()
    names = {r["name"] for r in report.records}
    biases = sum(sizes[n]["bias_bits"] for n in names)
    others_f = sum(v["float32"] for n, v in sizes.items() if n not in names)
    others_i = sum(v["int8"] for n, v in sizes.items() if n not in names)
    total_f = sum(v["float32"] for v in sizes.values())
    total_i = sum(v["int8"] for v in sizes.values())
    dense_total = sum(costs.values())
    rec.update({
        "layers": len(report.records), "capped_layers": sum(r["capped"] for r in report.records),
        "layer_compression_vs_float32": t["compression_vs_float32"], "layer_compression_vs_int8": t["compression_vs_int8"],
        "model_compression_vs_float32": total_f / (t["pq_bits"] + biases + others_f),
        "model_compression_vs_int8": total_i / (t["pq_bits"] + biases + others_i),
        "layer_mac_ratio": t["mac_ratio"], "layer_op_ratio": t["op_ratio"],
        "model_op_ratio": dense_total / (dense_total - t["dense_macs"] + t["table_macs"] + t["lookup_adds"]),
        "response_errors": {r["name"]: round(r["response_error"], 5) for r in report.records},
        "weight_errors": {r["name"]: round(r["weight_error"], 5) for r in report.records},
    })
    return rec


def merge(parts, out, argv):
    """One results file from parts run in parallel (e.g. one model and sub-vector length each)."""
    records, floats, metas = [], {}, []
    for part in parts:
        data = json.loads(part.read_text())
        records += data["records"]
        floats.update(data["meta"]["float"])
        metas.append(data["meta"])
    keys = ("calibration_images", "test_images", "activation_calibration")
    for k in keys:
        if len({json.dumps(m[k]) for m in metas}) != 1:
            raise SystemExit(f"the parts differ in {k}: they cannot be merged")
    meta = {k: metas[0][k] for k in keys}
    meta.update({"float": floats, "parts": [{k: v for k, v in m.items() if k != "float"} for m in metas],
                 "command": "python scripts/pq_sweep.py " + " ".join(argv)})
    write_results(out, meta, records)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["v1_standard", "v2_standard"])
    ap.add_argument("--subvector", nargs="+", type=int, default=[4, 8])
    ap.add_argument("--codebook", nargs="+", type=int, default=[8, 16, 32, 64])
    ap.add_argument("--methods", nargs="+", default=["kmeans", "response"], choices=["kmeans", "response"])
    ap.add_argument("--calibration", type=int, default=500, help="validation images for the response refinement")
    ap.add_argument("--test-limit", type=int, default=0, help="first N test images only (0: all 10,000)")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "sweeps" / "pq.json")
    ap.add_argument("--refresh", action="store_true")
    ap.add_argument("--merge", nargs="+", type=Path, help="merge these part files (run in parallel) into --out")
    args = ap.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if args.merge:
        return merge(args.merge, args.out, argv)
    start = time.time()
    s = fashion_mnist_splits()
    calib_pq = s["x_val"][:args.calibration]
    calib_act, _ = one_per_class(s["x_val"], s["y_val"])
    n = args.test_limit or s["x_test"].shape[0]
    test = (s["x_test"][:n], s["y_test"][:n])
    records, floats = [], {}
    for name in args.models:
        model = load_model(name)
        folded = fold_batchnorm(model)
        sizes = model_sizes(folded)
        costs = {c["name"]: c["macs"] for c in layer_costs(folded)}
        mhash = model_hash(model)
        floats[name] = accuracy(model, *test)
        floats[name]["a8"] = accuracy(Simulator(model, calib_act).quantize(weight_bits=None, activation_bits=8), *test)
        for d in args.subvector:
            for k in args.codebook:
                for method in args.methods:
                    config = dict(model=mhash, d=d, k=k, method=method, calibration=args.calibration, test=n,
                                  version=2)
                    rec = cached("pq", config, lambda: run_config(model, folded, sizes, costs, d, k, method, s,
                                                                  calib_pq, calib_act, test), refresh=args.refresh,
                                 code=CODE)
                    rec = dict(rec, model=name)
                    records.append(rec)
                    a8 = f", W=PQ A8 {rec['a8']['accuracy']:.4f}" if "a8" in rec else ""
                    print(f"{name} d={d} K={k} {method}: {rec['accuracy']:.4f}{a8}, "
                          f"{rec['layer_compression_vs_float32']:.1f}x vs float32, "
                          f"{rec['layer_compression_vs_int8']:.1f}x vs int8 ({rec['compress_seconds']} s)", flush=True)
    meta = provenance(argv, time.time() - start)
    meta.update({"float": floats, "calibration_images": args.calibration, "test_images": n,
                 "activation_calibration": "one validation image per class (min-max)"})
    write_results(args.out, meta, records)


if __name__ == "__main__":
    main()
