"""Product quantization (Q-CNN): the look-up path equals the decoded layer; response-aware codebooks; bad input."""

import keras
import numpy as np
import pytest

from qlib import pq


@pytest.fixture
def layer_data(rng):
    w = rng.normal(size=(32, 48))
    # correlated inputs of unequal scale, like activations: most of their energy in a few directions
    x = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 32)) + 0.1 * rng.normal(size=(300, 32))
    return w, x


@pytest.mark.parametrize("m,k", [(1, 4), (8, 16), (32, 2), (16, 48)])
def test_lookup_path_equals_the_decoded_layer(layer_data, m, k):
    w, x = layer_data
    q = pq.fit(w, m, k, inputs=x, iterations=3)
    np.testing.assert_allclose(q.matmul(x), x @ q.decode(), rtol=1e-10, atol=1e-10)
    # float32 inputs stay float32 and agree to float32 rounding
    x32 = x.astype(np.float32)
    out32 = q.matmul(x32)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, x @ q.decode(), rtol=1e-4, atol=1e-4)


def test_lookup_path_by_hand():
    """Two subspaces of 2, two codewords each: the tables and the sums, written out."""
    books = np.array([[[1.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [-1.0, 0.0]]])   # (M=2, K=2, d=2)
    codes = np.array([[0, 1, 1], [1, 0, 1]])                                  # (M, O=3)
    q = pq.ProductQuantizer(books, codes, (4, 3))
    x = np.array([3.0, 5.0, 7.0, 11.0])
    # tables: subspace 0: [3, 10]; subspace 1: [18, -7]
    assert q.matmul(x).tolist() == [3 - 7, 10 + 18, 10 - 7]
    np.testing.assert_array_equal(q.decode(), [[1, 0, 0], [0, 2, 2], [-1, 1, -1], [0, 1, 0]])


def test_conv_kernels_1x1_and_3x3(rng):
    w1 = rng.normal(size=(1, 1, 16, 24))
    q1 = pq.fit(w1, 4, 8)
    assert q1.decode().shape == w1.shape
    x = rng.normal(size=(2, 5, 5, 16))
    np.testing.assert_allclose(q1.matmul(x), np.einsum("nhwi,io->nhwo", x, q1.decode()[0, 0]), atol=1e-10)
    w3 = rng.normal(size=(3, 3, 4, 8))                              # im2col patches of 36
    q3 = pq.fit(w3, 9, 4)
    patches = rng.normal(size=(10, 36))
    np.testing.assert_allclose(q3.matmul(patches), patches @ q3.decode().reshape(36, 8), atol=1e-10)


def test_a_codeword_per_output_reproduces_the_kernel(layer_data):
    w, _ = layer_data
    np.testing.assert_allclose(pq.fit(w, 4, w.shape[1]).decode(), w, atol=1e-12)


def test_response_refinement_beats_kmeans_and_never_increases_its_objective(layer_data):
    w, x = layer_data
    plain = pq.fit(w, 8, 8)
    aware = pq.fit(w, 8, 8, inputs=x, iterations=10)
    h = np.array(aware.objective_history)
    assert np.all(np.diff(h) <= 1e-9 * np.abs(h[:-1]).max())
    err = lambda q: np.linalg.norm(x @ w - q.matmul(x)) / np.linalg.norm(x @ w)
    assert err(aware) < 0.8 * err(plain)
    # the weight error is what plain k-means minimises
    assert np.linalg.norm(plain.decode() - w) < np.linalg.norm(aware.decode() - w)


def test_without_inputs_it_is_kmeans_per_subspace(layer_data):
    w, _ = layer_data
    q = pq.fit(w, 4, 5, seed=3)
    for m in range(4):
        c, a = pq.kmeans(w[m * 8:(m + 1) * 8].T, 5, seed=3 + m)
        np.testing.assert_allclose(q.codebooks[m], c)
        np.testing.assert_array_equal(q.codes[m], a)


def test_costs_and_storage_by_hand():
    c = pq.table_costs(64, 128, num_subspaces=16, codebook_size=8)
    assert c["dense_macs"] == 64 * 128 and c["table_macs"] == 8 * 64 and c["lookup_adds"] == 16 * 128
    assert pq.pq_bits(64, 128, 16, 8) == 8 * 64 * 32 + 16 * 128 * 3
    assert pq.pq_bits(64, 128, 16, 1) == 64 * 32 + 16 * 128 * 1


def test_compress_model_layers_compute_the_lookup_path(rng):
    inp = keras.Input((6, 6, 8), name="image")
    h = keras.layers.Conv2D(16, 1, use_bias=False, name="pw")(inp)
    h = keras.layers.BatchNormalization(name="pw_bn")(h)
    h = keras.layers.ReLU(name="relu")(h)
    out = keras.layers.Dense(5, name="logits")(keras.layers.GlobalAveragePooling2D(name="pool")(h))
    model = keras.Model(inp, out)
    x = rng.normal(size=(16, 6, 6, 8)).astype(np.float32)
    small, report = pq.compress_model(model, subvector_length=2, codebook_size=4, calibration_data=x)
    assert [r["name"] for r in report.records] == ["pw", "logits"]
    assert "pw_bn" not in [l.name for l in small.layers]                    # BN folded first
    layer = small.get_layer("pw")
    probe = keras.Model(small.inputs, [layer.input, layer.output])
    xin, yout = (np.asarray(v) for v in probe(x))
    lookup = report.quantizers["pw"].matmul(xin.astype(np.float64)) + layer.get_weights()[1]
    np.testing.assert_allclose(yout, lookup, atol=1e-4)
    t = report.totals()
    assert t["compression_vs_float32"] == pytest.approx(t["float32_bits"] / t["pq_bits"])
    assert report.records[1]["capped"] is False and report.records[1]["codebook_size"] == 4


def test_bad_input_gets_clear_errors(layer_data):
    w, x = layer_data
    with pytest.raises(ValueError, match="does not divide the input dimension D=32"):
        pq.fit(w, 5, 4)
    with pytest.raises(ValueError, match="codebook_size=49 is larger than the 48 sub-vectors"):
        pq.fit(w, 4, 49)
    with pytest.raises(ValueError, match="positive integer"):
        pq.fit(w, 0, 4)
    with pytest.raises(ValueError, match="inputs have 31 features"):
        pq.fit(w, 4, 4, inputs=x[:, :31])
    with pytest.raises(ValueError, match="k=9 clusters asked for 8 points"):
        pq.kmeans(np.zeros((8, 2)), 9)
    dw = keras.layers.DepthwiseConv2D(3)
    dw.build((None, 8, 8, 4))
    with pytest.raises(ValueError, match="not supported for depthwise kernels"):
        pq.fit(dw, 1, 2)
    with pytest.raises(ValueError, match="Dense kernel"):
        pq.fit(np.zeros((2, 3, 4)), 1, 2)
    q = pq.fit(w, 4, 4)
    with pytest.raises(ValueError, match="this kernel takes 32"):
        q.matmul(np.zeros((3, 16)))


def test_shipped_sweep_is_consistent():
    """data/sweeps/pq.json (scripts/pq_sweep.py): refinement never loses to k-means; storage and cost formulas."""
    from qlib import results

    sweep = results.load("pq")
    assert sweep.meta["command"].startswith("python scripts/pq_sweep.py") and sweep.meta["float"]
    for r in sweep.select(method="response"):
        k = sweep.one(model=r["model"], subvector_length=r["subvector_length"], codebook_size=r["codebook_size"],
                      method="kmeans")
        assert r["accuracy"] >= k["accuracy"] - 0.005
        assert 0 <= r["a8"]["accuracy"] <= 1 and r["layer_compression_vs_int8"] == pytest.approx(
            k["layer_compression_vs_int8"])
        assert r["layer_compression_vs_float32"] > r["layer_compression_vs_int8"] > 0
        assert r["model_compression_vs_float32"] < r["layer_compression_vs_float32"]
    speed = results.load("pq_speed")
    for r in speed.records:
        c = pq.table_costs(r["input_dim"], r["outputs"], r["input_dim"] // r["d"], r["codebook_size"])
        assert r["op_ratio"] == pytest.approx(c["op_ratio"])
        assert r["time_ratio"] == pytest.approx(r["lookup_seconds"] / r["dense_seconds"])
