#!/usr/bin/env python
"""Claim: the look-up path saves multiply-adds, but in numpy it is slower than the dense layer it replaces.

    python benchmarks/pq_speed.py            # prints the ratios, writes data/sweeps/pq_speed.json

For every 1x1 convolution and the classifier of the zoo's ``v1_standard`` (BatchNorm folded),
on the layer's real inputs for 16 test images (every pixel of a 1x1 conv is one input
vector), times in one run, single-threaded (BLAS threads pinned to 1 for both):

- dense: ``x @ W`` (float32, numpy's BLAS matrix product);
- look-up: ``ProductQuantizer.matmul(x)`` (float32): the tables ``K * D`` multiply-adds as one
  batched matrix product, then ``M`` gathers-and-adds of ``O`` rows.

Median of 15 repeats after 2 warm-ups, interleaved. The codebooks are fitted by k-means (the
time does not depend on their values, only on ``d`` and ``K``). Prints per layer and in total:
the operation ratio (dense / look-up) and the measured time ratio (look-up / dense).

For scale, the same on a layer of the shape Q-CNN compressed, AlexNet's first fully-connected
layer (9216 -> 4096), with random codebooks and codes, for 1 and 16 input vectors
(``name = "alexnet_fc6_shape"``; not one of our layers).
"""

import os

for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from qlib.data import fashion_mnist_splits  # noqa: E402
from qlib.folding import fold_batchnorm  # noqa: E402
from qlib.pq import ProductQuantizer, fit, pq_layers  # noqa: E402
from qlib.zoo import load_model  # noqa: E402

CONFIGS = [(4, 16), (4, 32), (8, 32)]  # (entries per sub-vector d, codewords K)
IMAGES, REPEATS, WARMUP = 16, 15, 2
FC6 = (9216, 4096)


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(q, w2, xin):
    """Median seconds of the dense product and of the look-up path, interleaved."""
    dense, lookup = [], []
    for i in range(WARMUP + REPEATS):
        td = timed(lambda: xin @ w2)
        tl = timed(lambda: q.matmul(xin))
        if i >= WARMUP:
            dense.append(td)
            lookup.append(tl)
    return statistics.median(dense), statistics.median(lookup)


def record(d, k, name, q, w2, xin):
    dense_s, lookup_s = measure(q, w2, xin)
    costs = q.costs()
    rows = int(xin.shape[0])
    rec = {"d": d, "k": k, "name": name, "rows": rows, "input_dim": int(w2.shape[0]), "outputs": int(w2.shape[1]),
           "codebook_size": q.codebook_size, "dense_seconds": dense_s, "lookup_seconds": lookup_s,
           "dense_macs": costs["dense_macs"] * rows, "lookup_ops": (costs["table_macs"] + costs["lookup_adds"]) * rows}
    rec["time_ratio"] = rec["lookup_seconds"] / rec["dense_seconds"]
    rec["op_ratio"] = rec["dense_macs"] / rec["lookup_ops"]
    print(f"d={d} K={k} {name:17s} {rows:6d} x {rec['input_dim']:4d} -> {rec['outputs']:4d}: "
          f"ops dense/look-up {rec['op_ratio']:5.2f}x, time look-up/dense {rec['time_ratio']:6.2f}x", flush=True)
    return rec


def main():
    folded = fold_batchnorm(load_model("v1_standard"))
    x = fashion_mnist_splits()["x_test"][:IMAGES]
    names = pq_layers(folded)
    probe = keras.Model(folded.inputs, [folded.get_layer(n).input for n in names])
    inputs = {n: np.ascontiguousarray(np.asarray(v, np.float32).reshape(-1, v.shape[-1]))
              for n, v in zip(names, probe.predict(x, verbose=0))}
    records = []
    for d, k in CONFIGS:
        for name in names:
            w = folded.get_layer(name).get_weights()[0]
            w2 = np.ascontiguousarray(w.reshape(-1, w.shape[-1]).astype(np.float32))
            xin = inputs[name]
            q = fit(w2, w2.shape[0] // d, min(k, w2.shape[1]))
            assert np.allclose(q.matmul(xin), xin @ q.decode().astype(np.float32), rtol=1e-3, atol=1e-3)
            records.append(record(d, k, name, q, w2, xin))
    rng = np.random.default_rng(0)
    big = []
    for d, k in CONFIGS:
        m = FC6[0] // d
        q = ProductQuantizer(rng.normal(size=(m, k, d)), rng.integers(0, k, (m, FC6[1])), FC6)
        w2 = np.ascontiguousarray(q.decode().astype(np.float32))
        for rows in (1, IMAGES):
            big.append(record(d, k, "alexnet_fc6_shape", q, w2, rng.normal(size=(rows, FC6[0])).astype(np.float32)))
    totals = []
    for d, k in CONFIGS:
        rs = [r for r in records if r["d"] == d and r["k"] == k]  # our layers only
        t = {"d": d, "k": k, "dense_seconds": sum(r["dense_seconds"] for r in rs),
             "lookup_seconds": sum(r["lookup_seconds"] for r in rs),
             "op_ratio": sum(r["dense_macs"] for r in rs) / sum(r["lookup_ops"] for r in rs)}
        t["time_ratio"] = t["lookup_seconds"] / t["dense_seconds"]
        totals.append(t)
        print(f"d={d} K={k} all layers: dense/look-up operations {t['op_ratio']:.2f}x; measured look-up/dense time "
              f"{t['time_ratio']:.2f}x (dense {t['dense_seconds'] * 1e3:.1f} ms, look-up {t['lookup_seconds'] * 1e3:.1f} ms)")
    meta = {"command": "python benchmarks/pq_speed.py", "images": IMAGES, "repeats": REPEATS, "warmup": WARMUP,
            "threads": 1, "numpy_version": np.__version__, "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
            "processor": platform.processor() or platform.machine(), "totals": totals}
    out = ROOT / "data" / "sweeps" / "pq_speed.json"
    out.write_text(json.dumps({"meta": meta, "records": records + big}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
