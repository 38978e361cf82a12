"""The ImageNet MobileNetV2 port: right answers on real photos, and a numpy re-computation."""

import keras
import numpy as np
import pytest

from qlib.data import mobilenet_v2_state_dict
from qlib.imagenet import class_names, preprocess_imagenet, sample_photos


@pytest.fixture(scope="module")
def model(imagenet_model):
    return imagenet_model


def test_port_classifies_the_sample_photos(model):
    names = class_names()
    photos = sample_photos()
    logits = model(np.concatenate([preprocess_imagenet(p) for p in photos.values()])).numpy()
    top = dict(zip(photos, logits.argmax(1)))
    assert names[top["coffee"]] == "espresso"
    assert 281 <= top["chelsea"] <= 285  # the domestic-cat classes (tabby ... Egyptian Mau)
    prob = np.exp(logits - logits.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    assert prob[1].max() > 0.9


def _conv_numpy(x, w, stride, pad):
    """Plain numpy 2-D convolution, NHWC input, (kh, kw, in, out) kernel, symmetric padding."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = w.shape[:2]
    oh = (x.shape[1] - kh) // stride + 1
    ow = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
            out += patch @ w[i, j]
    return out


def test_first_block_matches_numpy(model):
    sd = mobilenet_v2_state_dict()
    x = preprocess_imagenet(sample_photos()["chelsea"]).astype(np.float64)
    w = np.transpose(sd["features.0.0.weight"], (2, 3, 1, 0)).astype(np.float64)
    y = _conv_numpy(x, w, stride=2, pad=1)
    g, b, mu, var = (sd[f"features.0.1.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
    y = np.clip(g * (y - mu) / np.sqrt(var + 1e-5) + b, 0, 6)
    head = keras.Model(model.input, model.get_layer("Conv1_relu").output)
    np.testing.assert_allclose(head(x.astype(np.float32)).numpy(), y, atol=1e-4)


def test_keras_defaults_would_be_wrong(model):
    """Why the port changes epsilon: with Keras' 1e-3 the first BN's outputs move."""
    bn = model.get_layer("bn_Conv1")
    var = np.asarray(bn.moving_variance)
    scale_torch = 1 / np.sqrt(var + 1e-5)
    scale_keras = 1 / np.sqrt(var + 1e-3)
    assert np.max(scale_torch / scale_keras) > 1.5


def test_preprocess_rejects_grayscale():
    with pytest.raises(ValueError, match="RGB"):
        preprocess_imagenet(np.zeros((50, 50), np.uint8))
