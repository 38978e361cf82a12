"""BatchNorm folding and ReLU6 -> ReLU: the function must not change."""

import keras
import numpy as np
import pytest

from factories import conv_bn_relu, depthwise_bn_relu6
from qlib.folding import bn_scale, fold_batchnorm, replace_relu6
from qlib.graph import FoldPair, batchnorm_pairs


def _inputs(model, rng, n=4):
    return rng.normal(size=(n,) + tuple(model.input.shape[1:])).astype(np.float32)


@pytest.mark.parametrize("factory", [conv_bn_relu, depthwise_bn_relu6])
@pytest.mark.parametrize("seed", [0, 1])
def test_folding_preserves_function(factory, seed, rng):
    model = factory(seed)
    folded = fold_batchnorm(model)
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in folded.layers)
    x = _inputs(model, rng)
    diff = np.max(np.abs(model(x, training=False).numpy() - folded(x).numpy()))
    assert diff < 1e-4


def test_folding_with_depth_multiplier_and_existing_bias(rng):
    model = depthwise_bn_relu6(depth_multiplier=2)
    folded = fold_batchnorm(model)
    x = _inputs(model, rng)
    assert np.max(np.abs(model(x).numpy() - folded(x).numpy())) < 1e-4

    inp = keras.Input((6,))
    h = keras.layers.Dense(4, name="fc")(inp)  # has its own bias
    out = keras.layers.BatchNormalization(name="fc_bn")(h)
    m = keras.Model(inp, out)
    m.get_layer("fc_bn").set_weights([np.full(4, 2.0), np.ones(4), np.full(4, 0.3), np.full(4, 0.5)])
    m.get_layer("fc").set_weights([np.ones((6, 4)), np.arange(4.0)])
    f = fold_batchnorm(m)
    x = rng.normal(size=(3, 6)).astype(np.float32)
    assert np.max(np.abs(m(x).numpy() - f(x).numpy())) < 1e-4


def test_folding_blows_up_tiny_variance_channels():
    model = depthwise_bn_relu6(tiny_variance=True)
    scale = bn_scale(model.get_layer("dw_bn"))
    folded = fold_batchnorm(model)
    w0 = model.get_layer("dw").get_weights()[0]
    w1 = folded.get_layer("dw").get_weights()[0]
    ratio = np.abs(w1).max(axis=(0, 1, 3)) / np.abs(w0).max(axis=(0, 1, 3))
    np.testing.assert_allclose(ratio, scale, rtol=1e-4)
    assert min(scale[0], scale[3]) > 10 * max(scale[1], scale[2])  # var 1e-12: 1/sqrt(eps) ~ 31.6


def test_pairs_are_listed():
    assert batchnorm_pairs(depthwise_bn_relu6()) == [FoldPair("dw", "dw_bn"), FoldPair("pw", "pw_bn")]


def test_unfoldable_batchnorm_is_named():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inp)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.BatchNormalization(name="late_bn")(x)
    model = keras.Model(inp, x)
    with pytest.raises(ValueError, match="'late_bn' cannot be folded.*relu"):
        fold_batchnorm(model)
    kept = fold_batchnorm(model, strict=False)
    assert "late_bn" in [l.name for l in kept.layers]


def test_conv_feeding_two_layers_is_not_folded():
    inp = keras.Input((8, 8, 3))
    c = keras.layers.Conv2D(4, 3, name="conv")(inp)
    out = keras.layers.Add()([keras.layers.BatchNormalization(name="bn")(c), c])
    with pytest.raises(ValueError, match="also feeds other layers"):
        fold_batchnorm(keras.Model(inp, out))


def test_non_model_rejected():
    with pytest.raises(TypeError, match="keras.Model"):
        fold_batchnorm("model.keras")


def test_replace_relu6(rng):
    model = depthwise_bn_relu6()
    relu = replace_relu6(model)
    kinds = {l.name: (type(l).__name__, getattr(l, "max_value", None)) for l in relu.layers}
    assert kinds["dw_relu6"] == ("ReLU", None) and kinds["pw_relu6"] == ("ReLU", None)
    small = _inputs(model, rng) * 1e-3  # activations far below 6: same function
    np.testing.assert_allclose(model(small).numpy(), relu(small).numpy(), atol=1e-6)
    big = _inputs(model, rng) * 100  # above 6 they differ
    assert relu(big).numpy().max() > 6 >= model(big).numpy().max()


def test_replace_inline_relu6_activation():
    inp = keras.Input((3,))
    m = keras.Model(inp, keras.layers.Dense(2, activation="relu6", name="d")(inp))
    m.get_layer("d").set_weights([np.full((3, 2), 10.0), np.zeros(2)])
    out = replace_relu6(m)(np.ones((1, 3), np.float32)).numpy()
    np.testing.assert_allclose(out, [[30.0, 30.0]])
