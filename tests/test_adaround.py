"""AdaRound: final weights on the grid (floor or ceil), zero iterations = nearest, never worse on small layers."""

import itertools

import keras
import numpy as np
import pytest

from qlib.adaround import adaround, beta_schedule, init_logits, optimize_rounding, rectified_sigmoid
from qlib.dfq import dfq
from qlib.layers import WEIGHTED, outputs_last, quantize_kernel
from qlib.simulate import FakeQuant, Simulator
from qlib.quantizers import round_half_away


def _small_model(seed=0, depth_multiplier=2):
    """conv-bn-relu -> depthwise (multiplier 2) -> relu6 -> pointwise -> pool -> dense: every kernel kind."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inp)
    x = keras.layers.BatchNormalization(name="conv_bn")(x)
    x = keras.layers.ReLU(name="conv_relu")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=depth_multiplier, name="dw")(x)
    x = keras.layers.ReLU(6.0, name="dw_relu6")(x)
    x = keras.layers.Conv2D(6, 1, name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    m = keras.Model(inp, keras.layers.Dense(5, name="fc")(x), name="small")
    rng = np.random.default_rng(seed)
    m.get_layer("conv_bn").set_weights([rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.2, 4), rng.normal(0, 0.3, 4),
                                        rng.uniform(0.2, 2.0, 4)])
    return m


@pytest.fixture(scope="module")
def small():
    m = _small_model()
    calib = np.random.default_rng(1).normal(size=(32, 8, 8, 3)).astype(np.float32)
    return m, calib


@pytest.fixture(scope="module")
def runs(small):
    """Per channel on the model; per tensor after DFQ (equalization, bias absorption), as in the sweep
    (on a depth multiplier of 1: equalization does not support more)."""
    m, calib = small
    m_dfq, _ = dfq(_small_model(depth_multiplier=1), weight_bits=3, bias_correction=False)
    kw = dict(weight_bits=3, iterations=60, rows=512, batch_size=128, keep_better=False)
    return {True: (m, adaround(m, calib, per_channel=True, **kw)),
            False: (m_dfq, adaround(m_dfq, calib, per_channel=False, **kw))}


@pytest.mark.parametrize("per_channel", [False, True])
def test_final_weights_are_floor_or_ceil_of_their_grid(small, runs, per_channel):
    _, calib = small
    model, q = runs[per_channel]
    flipped = 0
    for layer in Simulator(model, calib).folded.layers:
        if not isinstance(layer, WEIGHTED):
            continue
        w = layer.get_weights()[0].astype(np.float64)
        _, p = quantize_kernel(layer, w, 3, per_channel)
        s = p.scale                                                 # one per output channel (last axis) or scalar
        k = outputs_last(layer, q.get_layer(layer.name).get_weights()[0].astype(np.float64))
        w = outputs_last(layer, w)
        ints = k / s
        assert np.allclose(ints, np.round(ints), atol=1e-4), layer.name          # on the grid
        ints = np.round(ints)
        lo = np.clip(np.floor(w / s), -3, 3)
        hi = np.clip(np.ceil(w / s), -3, 3)
        assert np.all((ints == lo) | (ints == hi)), layer.name                     # floor or ceil, clipped
        flipped += int(np.sum(ints != np.clip(round_half_away(w / s), -3, 3)))
    assert flipped > 0  # it did learn something other than nearest rounding
    assert np.all(np.isfinite(q(calib).numpy()))


def test_zero_iterations_reproduce_nearest_rounding(small):
    m, calib = small
    q0 = adaround(m, calib, weight_bits=4, per_channel=True, iterations=0, rows=256)
    ref = Simulator(m, calib).quantize(4, 8, per_channel=True)
    assert [l.name for l in q0.layers] == [l.name for l in ref.layers]
    for a, b in zip(q0.layers, ref.layers):
        for wa, wb in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(wa, wb, err_msg=a.name)  # kernels, int32-grid biases, FakeQuant grids
    np.testing.assert_array_equal(q0(calib).numpy(), ref(calib).numpy())
    assert all(l.flipped == 0 and l.mse == l.mse_nearest for l in q0.adaround_report.layers)


def test_returned_model_looks_like_a_simulator_output(small, runs):
    m, calib = small
    q = runs[True][1]
    ref = Simulator(m, calib).quantize(3, 8, per_channel=True)
    fq = [l.name for l in q.layers if isinstance(l, FakeQuant)]
    assert fq == [l.name for l in ref.layers if isinstance(l, FakeQuant)] and len(fq) >= 4
    for a, b in zip(q.layers, ref.layers):
        if isinstance(a, FakeQuant):
            np.testing.assert_array_equal(a.get_weights(), b.get_weights())  # same activation grids
    # biases unchanged: the grid, hence the int32 bias grid, is nearest rounding's
    for name in ("conv", "dw", "pw", "fc"):
        np.testing.assert_array_equal(q.get_layer(name).get_weights()[1], ref.get_layer(name).get_weights()[1])
    rep = q.adaround_report
    assert [l.name for l in rep.layers] == ["conv", "dw", "pw", "fc"]
    assert [l.activation for l in rep.layers] == ["relu", "relu6", "linear", "linear"]
    assert sum(l.mse < l.mse_nearest for l in rep.layers) >= 3


@pytest.mark.parametrize("per_channel", [False, True])
def test_returned_model_exports_to_tflite_on_its_grids(small, runs, per_channel):
    """AdaRound's output is what qlib.export takes: the learned weights go into the .tflite as they are
    (a regression: cutting sub-models from the returned model once called its layers twice, which
    export rejects as shared layers)."""
    from qlib import export, graph, tflite

    _, q = runs[per_channel]
    for layer in q.layers[1:]:
        graph.producers(layer)  # raises for a layer called more than once
    e = export.export(q, 3, per_channel)
    weights = [r for r in e.rows if r["role"] == "weight"]
    assert [r["layer"] for r in weights] == ["conv", "dw", "pw", "fc"]
    assert all(export.on_grid(r) for r in e.rows)
    x = np.random.default_rng(2).normal(size=(8, 8, 8, 3)).astype(np.float32)
    out = tflite.invoke(e.tflite, tflite.quantize_input(e.tflite, x), kernels="reference")
    assert out.shape == (8, 5) and out.dtype == np.int8


@pytest.mark.parametrize("seed", range(3))
def test_small_layer_error_never_above_nearest(seed):
    """The learned rounding itself (no fallback to nearest) reconstructs better than nearest rounding."""
    rng = np.random.default_rng(seed)
    # a dense layer with ReLU on correlated ReLU features, and a depthwise layer without activation
    z = rng.normal(size=(800, 4))
    x = np.maximum(z @ rng.normal(size=(4, 32)) + 0.5 * rng.normal(size=(800, 32)), 0)
    w, b = rng.normal(size=(32, 6)) * 0.1, rng.normal(size=6) * 0.1
    r = optimize_rounding(x, np.maximum(x @ w + b, 0), w, np.abs(w).max(axis=0) / 7, 4, bias=b, activation="relu",
                          iterations=300, batch_size=256, keep_better=False, seed=seed)
    assert r.mse < r.mse_nearest and r.flipped > 0 and not r.kept_nearest
    xd = rng.normal(size=(400, 9, 8)) + rng.normal(size=(400, 1, 8))
    wd = rng.normal(size=(9, 8, 1)) * 0.2
    td = np.einsum("rkc,kc->rc", xd, wd[:, :, 0])
    r = optimize_rounding(xd, td, wd, np.abs(wd).reshape(9, 8).max(0) / 7, 4, depthwise=True, iterations=300,
                          keep_better=False, seed=seed)
    assert r.mse < r.mse_nearest


def test_against_brute_force_on_tiny_layers():
    """AdaRound is a local method: on 10-weight layers it never ranks below nearest rounding among all
    1024 roundings, and usually finds one of the best."""
    ranks_ada, ranks_near = [], []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(300, 2)) @ rng.normal(size=(2, 10)) + 0.3 * rng.normal(size=(300, 10))
        w = rng.normal(size=(10, 1)) * 0.1
        s = float(np.abs(w).max() / 7)
        r = optimize_rounding(x, x @ w, w, s, 4, iterations=300, keep_better=False)
        floor = np.floor(w / s)
        errs = np.array([np.mean((x @ ((floor + np.array(c)[:, None]) * s - w)) ** 2)
                         for c in itertools.product((0, 1), repeat=10)])
        ranks_ada.append(int(np.sum(errs < r.mse * (1 - 1e-6))))
        ranks_near.append(int(np.sum(errs < r.mse_nearest * (1 - 1e-6))))
    assert all(a <= n for a, n in zip(ranks_ada, ranks_near)), (ranks_ada, ranks_near)
    assert sum(ranks_ada) < 0.5 * sum(ranks_near), (ranks_ada, ranks_near)
    assert sum(a < 10 for a in ranks_ada) >= 4, ranks_ada


def test_layer_inputs_are_collected_incrementally_through_residual_branches():
    from qlib.adaround import LayerInputs

    keras.utils.set_random_seed(3)
    inp = keras.Input((6, 6, 2), name="image")
    h = keras.layers.ReLU(name="r0")(keras.layers.Conv2D(4, 3, padding="same", name="c0")(inp))
    b = keras.layers.ReLU(6.0, name="r1")(keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(h))
    b = keras.layers.Conv2D(4, 1, name="pw")(b)
    x = keras.layers.Add(name="add")([h, b])
    x = keras.layers.Conv2D(4, 1, name="c2")(x)
    out = keras.layers.Dense(3, name="fc")(keras.layers.GlobalAveragePooling2D(name="pool")(x))
    m = keras.Model(inp, out)
    data = np.random.default_rng(0).normal(size=(10, 6, 6, 2)).astype(np.float32)
    q = Simulator(m, data).quantize(4, 8)
    names = ["c0", "dw", "pw", "c2", "fc"]
    stream = LayerInputs(q, names, data, batch=3)
    for name in names:
        direct = keras.Model(q.input, q.get_layer(name).input)(data).numpy()
        np.testing.assert_allclose(stream.next(), direct, atol=1e-6, err_msg=name)
        q.get_layer(name).set_weights([w * 0.9 for w in q.get_layer(name).get_weights()])  # as if rounded anew
    assert stream.values == {}  # nothing kept after the last layer


def test_rectified_sigmoid_and_schedule():
    rest = np.linspace(0, 0.99, 12)
    np.testing.assert_allclose(rectified_sigmoid(init_logits(rest)), rest, atol=1e-12)
    assert rectified_sigmoid(np.array([-50.0]))[0] == 0.0 and rectified_sigmoid(np.array([50.0]))[0] == 1.0
    assert beta_schedule(19, 100) is None and beta_schedule(20, 100) == 20.0 and beta_schedule(100, 100) == 2.0


def test_bad_input_is_named(small):
    m, calib = small
    with pytest.raises(ValueError, match="not weighted layers"):
        adaround(m, calib, layers=["pool"])
    with pytest.raises(ValueError, match="iterations must be an integer >= 0"):
        adaround(m, calib, iterations=-1)
    with pytest.raises(ValueError, match="calibration_data is empty"):
        adaround(m, calib[:0])
    with pytest.raises(ValueError, match="matrix form"):
        optimize_rounding(np.ones((4, 3)), np.ones((4, 2)), np.ones((2, 2)), 0.1, 4)
    with pytest.raises(ValueError, match="activation must be one of"):
        optimize_rounding(np.ones((4, 2)), np.ones((4, 2)), np.ones((2, 2)), 0.1, 4, activation="tanh")


def test_shipped_results_cover_w4_and_meet_the_goal():
    """data/sweeps/adaround.json (scripts/adaround_sweep.py): every zoo model at W4A8, per tensor and
    per channel, with all four methods on the full test set; AdaRound's best within one point of
    float on every one (the issue's goal, which the chapter states); the ImageNet rows with learned
    rounding closer to float than nearest rounding; every record saying which code computed it."""
    from qlib.results import load

    ada = load("adaround")
    acc = ada.select(table="accuracy")
    models = ("v1_standard", "v1_friendly", "v2_standard", "v2_friendly")
    for m in models:
        float_acc = ada.one(table="accuracy", model=m, method="float")["accuracy"]
        w4 = [r for r in acc if r["model"] == m and r["weight_bits"] == 4]
        assert sorted((r["per_channel"], r["method"]) for r in w4) == sorted(
            (pc, meth) for pc in (False, True) for meth in ("nearest", "DFQ", "AdaRound", "DFQ+AdaRound")), m
        assert all(r["n"] == 10000 and r["ci_low"] <= r["accuracy"] <= r["ci_high"] for r in w4)
        assert max(r["accuracy"] for r in w4 if "AdaRound" in r["method"]) >= float_acc - 0.01, m
    assert all(r.get("code") for r in acc)
    inet = {(r["method"], r["per_channel"]): r for r in ada.select(table="imagenet")}
    assert inet[("AdaRound", True)]["agreement"] > inet[("nearest", True)]["agreement"]
    assert inet[("AdaRound", True)]["sqnr_db"] > inet[("nearest", True)]["sqnr_db"]
