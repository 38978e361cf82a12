"""MobileNet v1 and MobileNetV2 builders, standard or quantization-friendly, with clear layer names.

One switch, ``variant``, picks the separable block:

- ``"standard"`` (Howard et al. 2017; Sandler et al. 2018): depthwise -> BN -> ReLU6 ->
  pointwise -> BN -> ReLU6 (V2: the projection is linear, BN only);
- ``"friendly"``, the quantization-friendly separable convolution (Sheng et al. 2018,
  arXiv 1803.08607): **no BN and no activation between depthwise and pointwise**, and ReLU
  instead of ReLU6 everywhere. The depthwise output goes straight into the pointwise conv, so
  there is no BN scale to blow up a depthwise channel's range.

Layer names (``block{i}_dw``, ``block{i}_dw_bn``, ``block{i}_pw`` ... for v1;
``block{i}_expand``, ``block{i}_dw``, ``block{i}_project`` ... for V2) say where each layer sits.
The builders use plain ``keras.layers`` and so run on any Keras 3 backend.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from .layers import is_weighted, kind

__all__ = ["VARIANTS", "V1_BLOCKS", "V2_BLOCKS", "make_divisible", "mobilenet_v1", "mobilenet_v2", "build",
           "layer_costs"]

VARIANTS = ("standard", "friendly")

# MobileNet v1: (pointwise filters, depthwise stride) for the 13 separable blocks
V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
             (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
# MobileNetV2: (expansion t, output channels c, repeats n, first stride s)
V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))


def _check(variant, alpha, num_classes, input_shape):
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha (width multiplier) must be a positive number, got {alpha!r}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if len(input_shape) != 3 or min(input_shape[:2]) < 8:
        raise ValueError(f"input_shape must be (height, width, channels) with sides >= 8, got {input_shape!r}")


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` (no more than 10% down), as MobileNetV2 does.

    Examples
    --------
    >>> make_divisible(32 * 0.35), make_divisible(16 * 0.35), make_divisible(1280 * 1.4)
    (16, 8, 1792)
    """
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _act(variant, name):
    return layers.ReLU(6.0 if variant == "standard" else None, name=name)


def _reg(weight_decay):
    return keras.regularizers.L2(weight_decay) if weight_decay else None


def _pad(stride, name):
    """Symmetric padding before a stride-2 3x3 conv (PyTorch-style); None for stride 1."""
    return layers.ZeroPadding2D(1, name=name) if stride == 2 else None


def _conv_bn_act(x, filters, kernel, stride, variant, name, weight_decay, act=True):
    pad = _pad(stride, f"{name}_pad") if kernel == 3 else None
    if pad is not None:
        x = pad(x)
    padding = "valid" if pad is not None or kernel == 1 else "same"
    x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False,
                      kernel_regularizer=_reg(weight_decay), name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return _act(variant, f"{name}_relu")(x) if act else x


def _depthwise(x, stride, variant, name):
    """Depthwise 3x3; in the friendly variant it is followed by nothing (no BN, no activation)."""
    pad = _pad(stride, f"{name}_pad")
    if pad is not None:
        x = pad(x)
    x = layers.DepthwiseConv2D(3, strides=stride, padding="valid" if pad is not None else "same",
                               use_bias=False, name=name)(x)
    if variant == "standard":
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        x = _act(variant, f"{name}_relu")(x)
    return x


def _head(x, num_classes, dropout, weight_decay):
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    return layers.Dense(num_classes, kernel_regularizer=_reg(weight_decay), name="logits")(x)


def mobilenet_v1(input_shape=(32, 32, 3), num_classes: int = 10, alpha: float = 0.25,
                 variant: str = "standard", small_input: bool = True, dropout: float = 0.0,
                 weight_decay: float = 0.0, name: str | None = None) -> keras.Model:
    """MobileNet v1 (Howard et al. 2017) as a functional Keras model returning logits.

    Parameters
    ----------
    input_shape : tuple
        ``(height, width, channels)``.
    num_classes : int
        Size of the output layer.
    alpha : float
        Width multiplier applied to every layer's channel count.
    variant : {"standard", "friendly"}
        The separable block (see the module docstring).
    small_input : bool
        Stem convolution with stride 1 instead of 2, for 32x32 inputs (4 stride-2 stages remain).
    dropout, weight_decay : float
        Dropout before the classifier; L2 factor on conv and dense kernels (not depthwise, as in
        the MobileNet paper).

    Examples
    --------
    >>> m = mobilenet_v1(alpha=0.25)
    >>> m.output_shape, m.count_params()
    ((None, 10), 221114)
    >>> [l.name for l in mobilenet_v1(variant="friendly").layers][4:7]
    ['block1_dw', 'block1_pw', 'block1_pw_bn']
    """
    input_shape = tuple(input_shape)
    _check(variant, alpha, num_classes, input_shape)
    inp = keras.Input(input_shape, name="image")
    x = _conv_bn_act(inp, make_divisible(32 * alpha), 3, 1 if small_input else 2, variant, "conv1",
                     weight_decay)
    for i, (filters, stride) in enumerate(V1_BLOCKS, start=1):
        x = _depthwise(x, stride, variant, f"block{i}_dw")
        x = _conv_bn_act(x, make_divisible(filters * alpha), 1, 1, variant, f"block{i}_pw", weight_decay)
    out = _head(x, num_classes, dropout, weight_decay)
    return keras.Model(inp, out, name=name or f"mobilenet_v1_{alpha:g}_{variant}")


def mobilenet_v2(input_shape=(32, 32, 3), num_classes: int = 10, alpha: float = 0.35,
                 variant: str = "standard", small_input: bool = True, dropout: float = 0.0,
                 weight_decay: float = 0.0, name: str | None = None) -> keras.Model:
    """MobileNetV2 (Sandler et al. 2018) as a functional Keras model returning logits.

    Inverted residual blocks: 1x1 expansion (BN, activation), 3x3 depthwise, linear 1x1
    projection (BN), with a residual ``Add`` when shapes allow. ``small_input`` makes the stem
    and the first stride-2 block stride 1 (for 32x32 inputs). Other parameters as in
    :func:`mobilenet_v1`.

    Examples
    --------
    >>> m = mobilenet_v2(alpha=0.35)
    >>> m.output_shape, m.count_params()
    ((None, 10), 423018)
    >>> "block2_dw_bn" in [l.name for l in mobilenet_v2(variant="friendly").layers]
    False
    """
    input_shape = tuple(input_shape)
    _check(variant, alpha, num_classes, input_shape)
    inp = keras.Input(input_shape, name="image")
    channels = make_divisible(32 * alpha)
    x = _conv_bn_act(inp, channels, 3, 1 if small_input else 2, variant, "conv1", weight_decay)
    i = 0
    for stage, (t, c, n, s) in enumerate(V2_BLOCKS):
        out_ch = make_divisible(c * alpha)
        for r in range(n):
            i += 1
            stride = s if r == 0 else 1
            if small_input and stage == 1:
                stride = 1
            blk = f"block{i}"
            h = x
            if t != 1:
                h = _conv_bn_act(h, channels * t, 1, 1, variant, f"{blk}_expand", weight_decay)
            h = _depthwise(h, stride, variant, f"{blk}_dw")
            h = layers.Conv2D(out_ch, 1, use_bias=False, kernel_regularizer=_reg(weight_decay),
                              name=f"{blk}_project")(h)
            h = layers.BatchNormalization(name=f"{blk}_project_bn")(h)
            x = layers.Add(name=f"{blk}_add")([x, h]) if stride == 1 and channels == out_ch else h
            channels = out_ch
    last = make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    x = _conv_bn_act(x, last, 1, 1, variant, "conv_last", weight_decay)
    out = _head(x, num_classes, dropout, weight_decay)
    return keras.Model(inp, out, name=name or f"mobilenet_v2_{alpha:g}_{variant}")


def build(arch: str, **kwargs) -> keras.Model:
    """Build ``"mobilenet_v1"`` or ``"mobilenet_v2"`` by name.

    Examples
    --------
    >>> build("mobilenet_v2", alpha=0.35, variant="friendly").name
    'mobilenet_v2_0.35_friendly'
    """
    builders = {"mobilenet_v1": mobilenet_v1, "mobilenet_v2": mobilenet_v2}
    if arch not in builders:
        raise ValueError(f"arch must be one of {sorted(builders)}, got {arch!r}")
    return builders[arch](**kwargs)


def layer_costs(model) -> list[dict]:
    """Parameters and multiply-accumulates (MACs) of every layer with weights, for one image.

    Conv2D: ``H_out W_out kh kw C_in C_out``; DepthwiseConv2D: ``H_out W_out kh kw C M``;
    Dense: ``in x out``. BatchNorm has parameters but no MACs at inference (it is folded).

    Examples
    --------
    >>> inp = keras.Input((8, 8, 4))
    >>> x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(inp)
    >>> x = layers.Conv2D(16, 1, use_bias=False, name="pw")(x)
    >>> [(c["name"], c["params"], c["macs"]) for c in layer_costs(keras.Model(inp, x))]
    [('dw', 36, 2304), ('pw', 64, 4096)]
    """
    out = []
    for layer in model.layers:
        if not layer.weights:
            continue
        params = int(sum(int(np.prod(w.shape)) for w in layer.weights))
        macs = 0
        k = kind(layer) if is_weighted(layer) else None
        if k in ("conv2d", "depthwise"):
            h, w = layer.output.shape[1:3]
            kh, kw = layer.kernel_size
            # kernel (kh, kw, C_in, C_out) or depthwise (kh, kw, C, M): one MAC per kernel weight per pixel
            macs = h * w * kh * kw * layer.kernel.shape[2] * layer.kernel.shape[3]
        elif k == "dense":
            macs = layer.kernel.shape[0] * layer.kernel.shape[1]
        out.append({"name": layer.name, "type": type(layer).__name__, "params": params, "macs": int(macs)})
    return out
