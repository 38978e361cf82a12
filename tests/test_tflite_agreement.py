"""qlib's per-channel weight quantization reproduces the integers TFLite's converter writes."""

import keras
import numpy as np
import pytest

from qlib.folding import fold_batchnorm
from qlib.quantizers import fit_params
from qlib.tflite import convert_int8, weight_tensors


def _model(rng):
    keras.utils.set_random_seed(7)
    inp = keras.Input((10, 10, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    model = keras.Model(inp, x)
    conv, dw = model.get_layer("conv"), model.get_layer("dw")
    # realistic trouble: channels 100x apart, an all-zero channel, a tiny one
    k, b = conv.get_weights()
    k = k * np.logspace(-2, 0, 8)
    k[..., 3] = 0.0
    k[..., 5] *= 1e-5
    conv.set_weights([k, b])
    k, b = dw.get_weights()
    k = k * rng.uniform(0.01, 3.0, size=k.shape[2:])
    k[:, :, 2, 1] = 0.0
    dw.set_weights([k, b])
    return model


@pytest.fixture(scope="module")
def converted():
    rng = np.random.default_rng(0)
    model = _model(rng)
    calib = rng.normal(size=(16, 10, 10, 3)).astype(np.float32)
    return model, weight_tensors(convert_int8(model, calib))


def _find(tensors, shape):
    hits = [t for t in tensors if tuple(t.values.shape) == shape]
    assert len(hits) == 1, [t.name for t in tensors]
    return hits[0]


def test_conv2d_weight_integers_match_tflite(converted):
    model, tensors = converted
    kernel = model.get_layer("conv").get_weights()[0]  # (3, 3, 3, 8)
    tfl = _find(tensors, (8, 3, 3, 3))
    assert tfl.axis == 0 and np.all(tfl.zero_points == 0)
    p = fit_params(kernel, num_bits=8, symmetric=True, narrow_range=True, axis=-1)
    np.testing.assert_array_equal(p.quantize(kernel), tfl.to_keras_layout("conv2d"))
    np.testing.assert_allclose(p.scale.astype(np.float32), tfl.scales, rtol=1e-6)


def test_depthwise_weight_integers_match_tflite(converted):
    model, tensors = converted
    kernel = model.get_layer("dw").get_weights()[0]  # (3, 3, 8, 2)
    tfl = _find(tensors, (1, 3, 3, 16))
    assert tfl.axis == 3
    flat = kernel.reshape(3, 3, 16)  # TFLite's channel order c * M + m
    p = fit_params(flat, num_bits=8, symmetric=True, narrow_range=True, axis=-1)
    np.testing.assert_array_equal(p.quantize(flat).reshape(kernel.shape),
                                  tfl.to_keras_layout("depthwise", depth_multiplier=2))
    np.testing.assert_allclose(p.scale.astype(np.float32), tfl.scales, rtol=1e-6)


def test_folded_model_weights_match_tflite():
    """The converter folds BN itself; qlib's folding then quantization gives the same integers."""
    from factories import depthwise_bn_relu6

    model = depthwise_bn_relu6(seed=3)
    calib = np.random.default_rng(1).normal(size=(8, 12, 12, 4)).astype(np.float32)
    tensors = weight_tensors(convert_int8(model, calib))
    folded = fold_batchnorm(model)
    dw = folded.get_layer("dw").get_weights()[0].reshape(3, 3, 4)
    p = fit_params(dw, 8, symmetric=True, narrow_range=True, axis=-1)
    tfl = _find(tensors, (1, 3, 3, 4))
    np.testing.assert_array_equal(p.quantize(dw), tfl.to_keras_layout("depthwise").reshape(3, 3, 4))
    pw = folded.get_layer("pw").get_weights()[0]
    p = fit_params(pw, 8, symmetric=True, narrow_range=True, axis=-1)
    np.testing.assert_array_equal(p.quantize(pw), _find(tensors, (6, 1, 1, 4)).to_keras_layout("conv2d"))


def test_models_run_in_litert_with_three_kernel_sets(converted):
    """LiteRT (not the deprecated tf.lite.Interpreter) runs every .tflite; the reference kernels and
    the optimized ones (with and without XNNPACK) compute nearly the same int8 outputs."""
    from ai_edge_litert.interpreter import Interpreter

    from qlib.tflite import interpreter, invoke, quantize_input

    model, _ = converted
    calib = np.random.default_rng(0).normal(size=(16, 10, 10, 3)).astype(np.float32)
    tfl = convert_int8(model, calib)
    assert isinstance(interpreter(tfl), Interpreter)
    x = quantize_input(tfl, np.random.default_rng(1).normal(size=(32, 10, 10, 3)))
    ref = invoke(tfl, x, kernels="reference").astype(int)
    for kernels in ("default", "optimized"):
        out = invoke(tfl, x, kernels=kernels).astype(int)
        assert out.shape == ref.shape and np.max(np.abs(out - ref)) <= 2 and np.mean(out == ref) > 0.9
    with pytest.raises(TypeError, match="quantize_input"):
        invoke(tfl, x.astype(np.float32))
