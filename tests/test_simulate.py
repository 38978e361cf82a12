"""Simulated quantization of whole models: hand-computed cases, accuracy, agreement with TFLite."""

import keras
import numpy as np
import pytest

from qlib.evaluate import evaluate, fidelity, predict
from qlib.quantizers import compute_params, fit_params, round_half_away
from qlib.simulate import FakeQuant, Simulator, quantization_points, quantize_model
from qlib.tflite import convert_int8


def _tiny():
    inp = keras.Input((3,), name="x")
    h = keras.layers.Dense(2, name="fc1")(inp)
    h = keras.layers.ReLU(name="relu")(h)
    out = keras.layers.Dense(1, name="fc2")(h)
    m = keras.Model(inp, out, name="tiny")
    m.get_layer("fc1").set_weights([np.array([[0.5, -1.0], [0.25, 2.0], [-0.75, 0.1]]), np.array([0.1, -0.2])])
    m.get_layer("fc2").set_weights([np.array([[1.5], [-0.3]]), np.array([0.05])])
    return m


def test_matches_a_hand_computed_pipeline():
    m = _tiny()
    calib = np.random.default_rng(0).uniform(-1, 1, size=(64, 3)).astype(np.float32)
    q = quantize_model(m, weight_bits=4, activation_bits=6, calibration_data=calib)
    assert quantization_points(m) == ["x", "relu", "fc2"]

    # by hand, in numpy: input grid, 4-bit symmetric weights, int32 bias, fused ReLU grid, output grid
    def grid(t, bits):
        return compute_params(t.min(), t.max(), bits)

    w1, b1 = m.get_layer("fc1").get_weights()
    w2, b2 = m.get_layer("fc2").get_weights()
    g_in = grid(calib, 6)
    h = np.maximum(calib @ w1 + b1, 0)
    g_h = grid(h, 6)
    g_out = grid(h @ w2 + b2, 6)
    p1, p2 = fit_params(w1, 4, True, True), fit_params(w2, 4, True, True)
    qb1 = round_half_away(b1 / (g_in.scale * p1.scale)) * g_in.scale * p1.scale
    qb2 = round_half_away(b2 / (g_h.scale * p2.scale)) * g_h.scale * p2.scale
    x = g_in.fake_quant(calib.astype(np.float64))
    x = g_h.fake_quant(np.maximum(x @ p1.fake_quant(w1) + qb1, 0))
    expected = g_out.fake_quant(x @ p2.fake_quant(w2) + qb2)
    np.testing.assert_allclose(q(calib).numpy(), expected, atol=1e-5)


def test_fake_quant_layer_matches_numpy():
    fq = FakeQuant(8)
    fq.build(())
    fq.set_range(-1.3, 2.1)
    x = np.random.default_rng(1).uniform(-2, 3, 50_000).astype(np.float32)
    ref = compute_params(-1.3, 2.1).fake_quant(x)
    assert np.max(np.abs(fq(x).numpy() - ref)) < 1e-6


@pytest.fixture(scope="module")
def v1(fmnist, zoo_model):
    """v1_standard, its Simulator (calibrated once on one image per class), 1,000 test images and the
    float logits on them: shared by the model-level tests below (each prediction runs once)."""
    s, calib = fmnist
    m = zoo_model("v1_standard")
    x, y = s["x_test"][:1000], s["y_test"][:1000]
    sim = Simulator(m, calib)
    w8a8 = sim.quantize(8, 8, per_channel=True)
    return dict(model=m, sim=sim, calib=calib, x=x, y=y, float=predict(m, x, batch_size=1000),
                w8a8=w8a8, w8a8_logits=predict(w8a8, x, batch_size=1000))


def test_float_configuration_is_the_folded_model(v1):
    q = v1["sim"].quantize(None, None)
    x = v1["x"][:64]
    assert np.max(np.abs(q(x).numpy() - v1["float"][:64])) < 1e-3


def test_quantize_model_is_the_simulator(v1):
    q = quantize_model(v1["model"], 8, 8, per_channel=True, calibration_data=v1["calib"])
    x = v1["x"][:64]
    np.testing.assert_array_equal(q(x).numpy(), v1["w8a8"](x).numpy())


def test_per_channel_w8a8_within_one_point_of_float(v1):
    """On 1,000 test images (the full 10k, every model, are in the shipped sweep, checked in
    test_analysis).

    Float and W8A8 disagree on under 1% of images, so the paired accuracy difference on 1,000
    images has a standard error under 0.32 points: one point is over three standard errors away.
    """
    fp, q = v1["float"].argmax(1), v1["w8a8_logits"].argmax(1)
    agreement = float(np.mean(fp == q))
    assert agreement > 0.98
    assert abs(float(np.mean(fp == v1["y"])) - float(np.mean(q == v1["y"]))) < 0.01


def test_low_bits_per_tensor_collapses_per_channel_survives(v1):
    x, y = v1["x"][:500], v1["y"][:500]  # 0.5 and 0.8 are over 6 standard errors from the shipped values
    pt = evaluate(v1["sim"].quantize(4, 8, per_channel=False), x, y, batch_size=500).accuracy
    pc = evaluate(v1["sim"].quantize(4, 8, per_channel=True), x, y, batch_size=500).accuracy
    assert pt < 0.5 < 0.8 < pc


def test_simulation_agrees_with_tflite_int8_kernels(v1):
    tfl = predict(convert_int8(v1["model"], v1["calib"]), v1["x"])
    sim, ref = v1["w8a8_logits"], v1["float"]
    ours, theirs = fidelity(sim, tfl), fidelity(tfl, ref)
    assert ours["agreement"] >= 0.99
    # the simulation is far closer to the int8 kernels than the int8 kernels are to float
    assert ours["sqnr_db"] > theirs["sqnr_db"] + 6


def test_errors_are_clear():
    m = _tiny()
    with pytest.raises(ValueError, match="calibration_data is required"):
        quantize_model(m, 8, 8)
    with pytest.raises(ValueError, match="weight_bits must be in 2..16"):
        quantize_model(m, 1, None)
    with pytest.raises(ValueError, match="activation_bits"):
        Simulator(m, np.ones((2, 3))).quantize(8, 20)
    inp = keras.Input((8,))
    odd = keras.Model(inp, keras.layers.LayerNormalization(name="ln")(keras.layers.Dense(8)(inp)))
    with pytest.raises(ValueError, match="'ln' \\(LayerNormalization\\) is not supported"):
        quantize_model(odd, 8, None)
    sm = keras.Model(inp, keras.layers.Dense(3, activation=None)(keras.layers.Activation("softmax", name="sm")(inp)))
    with pytest.raises(ValueError, match="'sm'.*softmax"):
        quantize_model(sm, 8, None)
    with pytest.raises(ValueError, match="NaN"):
        quantize_model(m, 8, 8, calibration_data=np.full((2, 3), np.nan))
