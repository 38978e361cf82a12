"""Data-free quantization: function preservation, equal ranges, absorption, bias correction."""

import keras
import numpy as np
import pytest

from factories import randomize_bn
from qlib.dfq import (DFQState, absorb_high_biases, clipped_normal_mean, correct_bias, dfq, equalize,
                      equalization_pairs, prepare)
from qlib.layers import input_ranges, output_ranges
from qlib.models import mobilenet_v1, mobilenet_v2


def _random(model, seed=0):
    return randomize_bn(model, seed)


@pytest.mark.parametrize("builder", [mobilenet_v1, mobilenet_v2])
@pytest.mark.parametrize("variant", ["standard", "friendly"])
def test_equalization_preserves_function(builder, variant):
    model = _random(builder(alpha=0.25, variant=variant))
    folded, _ = prepare(model)
    eq = equalize(model).to_model()
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    assert np.max(np.abs(eq(x).numpy() - folded(x).numpy())) < 1e-4


def test_equalized_pairs_have_equal_ranges():
    model = _random(mobilenet_v1(alpha=0.25))
    eq = equalize(model).to_model()
    for p in equalization_pairs(eq):
        l1, l2 = eq.get_layer(p.first), eq.get_layer(p.second)
        r1, r2 = output_ranges(l1, l1.get_weights()[0]), input_ranges(l2, l2.get_weights()[0])
        np.testing.assert_allclose(r1, r2, rtol=1e-2)  # iterated to (near) convergence


def test_imagenet_mobilenet_v2_equalization_preserves_function(imagenet_model):
    from qlib.imagenet import preprocess_imagenet, sample_photos

    m = imagenet_model
    folded, _ = prepare(m)
    eq = equalize(m).to_model()
    real = np.concatenate([preprocess_imagenet(p) for p in sample_photos().values()])
    rnd = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype(np.float32)
    for x in (real, rnd):
        assert np.max(np.abs(eq(x).numpy() - folded(x).numpy())) < 1e-4
    pairs = equalization_pairs(folded)
    assert len(pairs) == 37 and any("depthwise" in p.first for p in pairs)


def _two_layer(beta, gamma):
    inp = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(5, 1, use_bias=False, name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="r")(x)
    x = keras.layers.Conv2D(2, 1, name="c2")(x)
    m = keras.Model(inp, x)
    m.get_layer("bn").set_weights([gamma, beta, np.zeros(5), np.ones(5)])
    return m


def test_high_bias_absorption_is_exact_when_preactivations_stay_high():
    beta, gamma = np.array([5.0, 0.2, 3.0, -1.0, 8.0]), np.array([0.5, 1.0, 0.1, 1.0, 2.0])
    m = _two_layer(beta, gamma)
    state = absorb_high_biases(DFQState.from_model(m))
    np.testing.assert_allclose(state.report.absorbed["c1"], np.maximum(0, beta - 3 * gamma))
    absorbed = state.to_model()
    x = np.random.default_rng(0).normal(size=(8, 4, 4, 3)).astype(np.float32) * 0.01  # pre-act ~ beta
    np.testing.assert_allclose(absorbed(x).numpy(), m(x).numpy(), atol=1e-4)
    assert np.abs(absorbed.get_layer("c1").get_weights()[1]).max() < np.abs(beta).max()


def test_clipped_normal_mean_matches_monte_carlo():
    rng = np.random.default_rng(0)
    for mu, sigma in [(0.0, 1.0), (1.5, 0.5), (-2.0, 1.0), (0.3, 2.0)]:
        mc = np.maximum(rng.normal(mu, sigma, 2_000_000), 0).mean()
        assert clipped_normal_mean(mu, sigma) == pytest.approx(mc, abs=4e-3 * max(sigma, 1))


def test_analytic_bias_correction_matches_brute_force_expectation():
    """On a small layer: the correction equals E[(W_q - W) x] with x = ReLU(N(beta, gamma^2))."""
    beta, gamma = np.array([0.5, -0.3, 1.2, 0.0, 2.0]), np.array([1.0, 0.5, 0.2, 1.5, 0.7])
    m = _two_layer(beta, gamma)
    m.get_layer("c2").set_weights([np.random.default_rng(1).normal(size=(1, 1, 5, 2)), np.zeros(2)])
    state = DFQState.from_model(m)
    w = state.kernel["c2"]
    wq = np.round(w * 4) / 4
    rep = correct_bias(state, {"c2": wq}).report
    corrected = state.to_model()
    x = np.maximum(np.random.default_rng(2).normal(beta, gamma, size=(1_000_000, 5)), 0)
    brute = (x @ (wq - w)[0, 0]).mean(axis=0)
    np.testing.assert_allclose(rep.bias_corrections["c2"], brute, atol=3e-3)
    np.testing.assert_allclose(corrected.get_layer("c2").get_weights()[1], -rep.bias_corrections["c2"], atol=1e-6)


def test_empirical_bias_correction_removes_the_mean_error():
    m = _random(mobilenet_v1(alpha=0.25))
    state = DFQState.from_model(m)
    folded = state.to_model()
    x = np.random.default_rng(0).uniform(-1, 1, size=(16, 32, 32, 3)).astype(np.float32)
    layer = folded.get_layer("block3_pw")
    w = layer.get_weights()[0]
    wq = np.round(w * 8) / 8
    inputs = keras.Model(folded.input, layer.input).predict(x, verbose=0)
    before = (inputs.reshape(-1, inputs.shape[-1]) @ (wq - w)[0, 0]).mean(axis=0)
    rep = correct_bias(state, {"block3_pw": wq}, calibration_data=x).report
    np.testing.assert_allclose(rep.bias_corrections["block3_pw"], before, rtol=1e-3, atol=1e-5)


def test_dfq_rescues_per_tensor_weights_on_imagenet_mobilenet_v2(imagenet_model):
    from qlib.evaluate import fidelity, predict
    from qlib.imagenet import preprocess_imagenet, sample_photos
    from qlib.simulate import Simulator

    m = imagenet_model
    x = np.concatenate([preprocess_imagenet(p) for p in sample_photos().values()])
    ref = predict(m, x)
    base = Simulator(m, x).quantize(8, None, per_channel=False)
    model, report = dfq(m, weight_bits=8)
    fixed = Simulator(model, x).quantize(8, None, per_channel=False)
    assert fidelity(predict(fixed, x), ref)["sqnr_db"] > fidelity(predict(base, x), ref)["sqnr_db"] + 3
    assert report.iterations > 1 and len(report.absorbed) > 0 and report.seconds < 10


def test_unsupported_layers_are_named():
    inp = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 1, name="pw")(inp)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw_mult")(x)
    with pytest.raises(ValueError, match="'dw_mult': depth_multiplier > 1"):
        equalize(keras.Model(inp, x))
    inp = keras.Input((4,))
    m = keras.Model(inp, keras.layers.Dense(3, activation="tanh", name="fc_tanh")(inp))
    with pytest.raises(ValueError, match="fc_tanh.*tanh"):
        prepare(m)
