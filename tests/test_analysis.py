"""Part II's measurements: range statistics, BatchNorm statistics, and the shipped sweep."""

import json
from pathlib import Path

import numpy as np
import pytest

from factories import depthwise_bn_relu6
from qlib import zoo
from qlib.analysis import bn_statistics, depthwise_kernels, layer_range_stats, levels_per_channel

SWEEP = Path(__file__).resolve().parents[1] / "data" / "sweeps" / "bits.json"


def test_range_stats_on_a_known_tensor():
    w = np.stack([np.linspace(-2, 2, 9), np.linspace(-0.02, 0.02, 9), np.zeros(9)], axis=-1).reshape(3, 3, 3)
    s = layer_range_stats(w)
    assert s["channels"] == 3 and s["zero"] == 1
    assert s["range_ratio"] == pytest.approx(4 / 0.04)
    assert s["crushed"] == 1  # the zero channel; 0.02 is above half a step (2/127/2)
    assert levels_per_channel(w, 8).tolist()[:2] == [9, 3]


def test_depthwise_kernels_are_folded():
    m = depthwise_bn_relu6(tiny_variance=True)
    raw, folded = depthwise_kernels(m, fold=False)["dw"], depthwise_kernels(m)["dw"]
    scale = bn_statistics(m)["dw_bn"]["scale"]
    np.testing.assert_allclose(folded, raw * scale, rtol=1e-5)


def test_bn_statistics_epsilon_override():
    m = depthwise_bn_relu6(tiny_variance=True)
    small = bn_statistics(m, epsilon=1e-5)["dw_bn"]["scale"]
    large = bn_statistics(m, epsilon=1e-1)["dw_bn"]["scale"]
    assert small[0] / large[0] > 50  # the tiny-variance channel: 1/sqrt(eps)
    assert small[1] / large[1] < 1.2  # a normal channel hardly moves


def test_imagenet_dead_channels_sit_after_depthwise_layers():
    from qlib.imagenet import mobilenet_v2_imagenet

    stats = bn_statistics(mobilenet_v2_imagenet())
    tiny = {n: int((v["variance"] < 1e-3).sum()) for n, v in stats.items()}
    assert sum(tiny.values()) == 5527
    assert sum(c for n, c in tiny.items() if "depthwise" in n) == 5512


def test_shipped_sweep_is_complete_and_consistent():
    data = json.loads(SWEEP.read_text())
    records = data["records"]
    fashion = [r for r in records if r["model"] != "imagenet_mobilenet_v2"]
    man = zoo.manifest()
    for model in ["v1_standard", "v1_friendly", "v2_standard", "v2_friendly"]:
        rs = [r for r in fashion if r["model"] == model]
        assert len(rs) == 69
        assert all(r["n"] == 10000 and r["ci_low"] <= r["accuracy"] <= r["ci_high"] for r in rs)
        fl = next(r for r in rs if r["sweep"] == "float")
        assert abs(fl["accuracy"] - man[model]["float_test_accuracy"]) <= 0.001
        w8pc = next(r for r in rs if r["sweep"] == "weights" and r["weight_bits"] == 8 and r["per_channel"]
                    and r["weight_range"] == "minmax")
        assert abs(w8pc["accuracy"] - fl["accuracy"]) < 0.01
    inet = [r for r in records if r["model"] == "imagenet_mobilenet_v2"]
    assert len(inet) == 16 and all(0 <= r["agreement"] <= 1 for r in inet)
    assert all("command" in p and "keras_backend" in p for p in data["meta"]["parts"])


def test_shipped_dfq_table_is_complete_and_dfq_helps():
    data = json.loads((SWEEP.parent / "dfq.json").read_text())
    recs = data["records"]
    fm = {(r["model"], r["method"], r["weight_bits"]): r["accuracy"] for r in recs if r["model"] != "imagenet_mobilenet_v2"}
    assert len(fm) == 4 * 5 * 5
    assert fm[("v1_standard", "CLE+BA+BC", 4)] > fm[("v1_standard", "baseline", 4)] + 0.5
    inet = [r for r in recs if r["model"] == "imagenet_mobilenet_v2"]
    assert len(inet) == 5 * 5 * 2
    sq = {r["method"]: r["sqnr_db"] for r in inet if r["weight_bits"] == 8 and r["activation_bits"] is None}
    sq8 = {r["method"]: r["sqnr_db"] for r in inet if r["weight_bits"] == 8 and r["activation_bits"] == 8}
    # equalization and bias correction help; absorption only helps once activations are quantized
    assert sq["baseline"] + 3 < sq["CLE"] and sq["CLE+BA"] < sq["CLE+BA+BC"]
    assert sq8["baseline"] < sq8["CLE"] < sq8["CLE+BA"] < sq8["CLE+BA+BC"]


def test_shipped_results_match_their_manifest_checksums():
    import hashlib
    import re

    root = SWEEP.parents[2]
    manifest = (root / "data" / "MANIFEST.md").read_text()
    rows = re.findall(r"\| `(data/sweeps/[\w.]+)` \| `([0-9a-f]{64})` \|", manifest)
    shipped = {f"data/sweeps/{p.name}" for p in (root / "data" / "sweeps").glob("*.json")}
    assert {f for f, _ in rows} == shipped, "every shipped result needs a checksum row in data/MANIFEST.md"
    for path, digest in rows:
        assert hashlib.sha256((root / path).read_bytes()).hexdigest() == digest, path
