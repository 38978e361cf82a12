"""Tiny Keras model factories (like tfmot's end-to-end tests): conv-bn-relu, depthwise-bn-relu6."""

import keras
import numpy as np


def randomize_bn(model, seed: int = 0, tiny_variance: bool = False):
    """Give every BatchNormalization non-trivial statistics, as after training."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            var = rng.uniform(0.1, 2.0, c)
            if tiny_variance:
                var[::3] = 1e-12  # dead channels, like the ImageNet MobileNetV2
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c),
                               rng.normal(0, 0.5, c), var])
    return model


def conv_bn_relu(seed: int = 0, tiny_variance: bool = False):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inp)
    x = keras.layers.BatchNormalization(name="conv_bn")(x)
    x = keras.layers.ReLU(name="conv_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(5, name="logits")(x)
    return randomize_bn(keras.Model(inp, x, name="conv_bn_relu"), seed, tiny_variance)


def depthwise_bn_relu6(seed: int = 0, tiny_variance: bool = False, depth_multiplier: int = 1):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((12, 12, 4), name="image")
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False,
                                     depth_multiplier=depth_multiplier, name="dw")(inp)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.ReLU(6.0, name="dw_relu6")(x)
    x = keras.layers.Conv2D(6, 1, use_bias=False, name="pw")(x)
    x = keras.layers.BatchNormalization(name="pw_bn")(x)
    x = keras.layers.ReLU(6.0, name="pw_relu6")(x)
    return randomize_bn(keras.Model(inp, x, name="depthwise_bn_relu6"), seed, tiny_variance)
