"""Layer rules, in one place: which Keras layers qlib knows, and how each weighted layer stores its kernel.

Every transform in qlib (folding, the quantization simulator, equalization, bias correction, the
TFLite export and the integer interpreter, AdaRound, low rank, product quantization) asks the same
questions of a layer. They are answered here and nowhere else.

**Weighted layers** (:data:`WEIGHTED`) have a kernel with output channels. Their layouts:

=================  ==================  ===========================  ==============  =====================
layer              Keras kernel        output channel ``o``         input channel   TFLite weight
=================  ==================  ===========================  ==============  =====================
``Conv2D``         ``(kh, kw, I, O)``  last axis                    axis 2          ``(O, kh, kw, I)``
``DepthwiseConv2D`` ``(kh, kw, C, M)`` ``c * M + m`` (``C*M`` outs)  axis 2 (``C``)  ``(1, kh, kw, C*M)``
``Dense``          ``(I, O)``          last axis                    axis 0          ``(O, I)``
=================  ==================  ===========================  ==============  =====================

**Other layers**, by what passes through them (three different questions, three sets):

- :data:`CHANNELWISE`: per-channel ops a depthwise-separable chain may cross between two
  convolutions (BatchNorm, activations, padding): :func:`qlib.graph.separable_blocks`.
- :data:`GRID_PRESERVING`: ops whose output reuses the input's quantization grid (padding, dropout,
  reshapes, max pooling): TFLite stores no new int8 tensor for them.
- :data:`SCALE_COMMUTING`: ops that commute with a positive per-channel scale (padding, dropout,
  pooling), so cross-layer equalization may rescale across them (ReLU too, checked separately).

Activations: :func:`is_relu`, :func:`is_relu6`, :func:`is_fusable_activation` (what TFLite fuses
into the preceding conv), :func:`inline_activation` (a layer's own ``activation=`` argument).
"""

from __future__ import annotations

import keras
import numpy as np

from .quantizers import QuantParams, fit_params

__all__ = [
    "WEIGHTED", "CHANNELWISE", "GRID_PRESERVING", "SCALE_COMMUTING", "POOLING", "ACTIVATION_LAYERS",
    "QUANTIZED_OUTPUT",
    "kind", "is_weighted", "is_relu", "is_relu6", "is_fusable_activation", "inline_activation",
    "num_outputs", "outputs_last", "from_outputs_last", "output_ranges", "input_ranges",
    "scale_outputs", "scale_inputs", "constant_response", "quantize_kernel",
    "to_tflite_layout", "from_tflite_layout",
]

L = keras.layers

#: Layers with a kernel and output channels: what gets folded into, quantized and equalized.
WEIGHTED = (L.Conv2D, L.DepthwiseConv2D, L.Dense)
#: Per-channel layers a chain may cross between two convolutions (separable blocks).
CHANNELWISE = (L.BatchNormalization, L.ReLU, L.Activation, L.ZeroPadding2D)
#: Layers whose output is on their input's quantization grid (no int8 tensor of their own in TFLite).
GRID_PRESERVING = (L.ZeroPadding2D, L.Dropout, L.Flatten, L.Reshape, L.MaxPooling2D)
#: Pooling layers that average (TFLite MEAN / AVERAGE_POOL_2D: a new int8 tensor).
POOLING = (L.GlobalAveragePooling2D, L.AveragePooling2D)
#: Layers that commute with a positive per-channel scale ``s``: ``f(x * s) = f(x) * s``.
SCALE_COMMUTING = (L.ZeroPadding2D, L.Dropout, L.MaxPooling2D) + POOLING
#: Activation layers (as opposed to a layer's own ``activation=`` argument).
ACTIVATION_LAYERS = (L.ReLU, L.Activation)
#: Layers whose output TFLite stores as a new int8 tensor (a quantization point), unless fused.
QUANTIZED_OUTPUT = WEIGHTED + ACTIVATION_LAYERS + (L.Add,) + POOLING

_KINDS = {"conv2d": L.Conv2D, "depthwise": L.DepthwiseConv2D, "dense": L.Dense}


def kind(layer) -> str:
    """``"conv2d"``, ``"depthwise"`` or ``"dense"``: which kernel layout a weighted layer has.

    Examples
    --------
    >>> kind(keras.layers.DepthwiseConv2D(3)), kind(keras.layers.Dense(2))
    ('depthwise', 'dense')
    >>> kind(keras.layers.ReLU())
    Traceback (most recent call last):
    ...
    TypeError: layer 're_lu...' (ReLU) has no kernel qlib understands; weighted layers are Conv2D, DepthwiseConv2D and Dense
    """
    for name, cls in _KINDS.items():  # Keras 3: DepthwiseConv2D, SeparableConv2D are no Conv2D subclasses
        if isinstance(layer, cls):
            return name
    raise TypeError(f"layer {getattr(layer, 'name', layer)!r} ({type(layer).__name__}) has no kernel qlib "
                    "understands; weighted layers are Conv2D, DepthwiseConv2D and Dense")


def is_weighted(layer) -> bool:
    """Whether ``layer`` is a Conv2D, DepthwiseConv2D or Dense (see :func:`kind`).

    Examples
    --------
    >>> is_weighted(keras.layers.Conv2D(2, 1)), is_weighted(keras.layers.Add())
    (True, False)
    """
    try:
        kind(layer)
    except TypeError:
        return False
    return True


def inline_activation(layer) -> str:
    """The name of a layer's own ``activation=`` argument (``"linear"`` when it has none).

    Examples
    --------
    >>> inline_activation(keras.layers.Dense(2, activation="relu6")), inline_activation(keras.layers.ReLU())
    ('relu6', 'linear')
    """
    if isinstance(layer, L.Activation):
        return "linear"
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", "linear") if act is not None else "linear"


def is_relu(layer) -> bool:
    """A plain ReLU layer: ``ReLU()`` (no cap, slope or threshold) or ``Activation("relu")``.

    Examples
    --------
    >>> is_relu(keras.layers.ReLU()), is_relu(keras.layers.ReLU(6.0)), is_relu(keras.layers.Activation("relu"))
    (True, False, True)
    """
    if isinstance(layer, L.ReLU):
        return layer.max_value is None and float(layer.negative_slope) == 0 and float(layer.threshold) == 0
    return isinstance(layer, L.Activation) and getattr(layer.activation, "__name__", "") == "relu"


def is_relu6(layer) -> bool:
    """A ReLU6 layer: ``ReLU(6.0)`` or ``Activation("relu6")``.

    Examples
    --------
    >>> is_relu6(keras.layers.ReLU(6.0)), is_relu6(keras.layers.ReLU(4.0)), is_relu6(keras.layers.Activation("relu6"))
    (True, False, True)
    """
    if isinstance(layer, L.ReLU):
        return layer.max_value is not None and float(layer.max_value) == 6.0 and \
            float(layer.negative_slope) == 0.0 and float(layer.threshold) == 0.0
    return isinstance(layer, L.Activation) and getattr(layer.activation, "__name__", "") == "relu6"


def is_fusable_activation(layer) -> bool:
    """An activation TFLite fuses into the conv or dense op before it (ReLU or ReLU6).

    Examples
    --------
    >>> is_fusable_activation(keras.layers.ReLU(6.0)), is_fusable_activation(keras.layers.Activation("tanh"))
    (True, False)
    """
    return is_relu(layer) or is_relu6(layer)


def num_outputs(layer, kernel=None) -> int:
    """Output channels of a weighted layer (``C*M`` for a depthwise conv).

    Examples
    --------
    >>> num_outputs(keras.layers.DepthwiseConv2D(3), np.zeros((3, 3, 4, 2)))
    8
    """
    k = np.shape(layer.kernel if kernel is None else kernel)
    return int(k[2] * k[3]) if kind(layer) == "depthwise" else int(k[-1])


def outputs_last(layer, kernel) -> np.ndarray:
    """The kernel with its output channels on the last axis, one slice per output channel.

    Conv2D and Dense kernels already are; a depthwise ``(kh, kw, C, M)`` becomes ``(kh, kw, C*M)``
    in TFLite's channel order. Undo with :func:`from_outputs_last`.

    Examples
    --------
    >>> outputs_last(keras.layers.DepthwiseConv2D(3), np.zeros((3, 3, 4, 2))).shape
    (3, 3, 8)
    """
    kernel = np.asarray(kernel)
    if kind(layer) == "depthwise":
        return kernel.reshape(kernel.shape[:2] + (-1,))
    return kernel


def from_outputs_last(layer, flat, shape) -> np.ndarray:
    """Inverse of :func:`outputs_last`: back to the Keras kernel ``shape``.

    Examples
    --------
    >>> dw = keras.layers.DepthwiseConv2D(3)
    >>> k = np.arange(72.0).reshape(3, 3, 4, 2)
    >>> bool(np.array_equal(from_outputs_last(dw, outputs_last(dw, k), k.shape), k))
    True
    """
    kind(layer)
    return np.asarray(flat).reshape(shape)


def output_ranges(layer, kernel) -> np.ndarray:
    """Per-output-channel ``max |w|`` (the range a symmetric per-channel quantizer covers).

    Examples
    --------
    >>> output_ranges(keras.layers.Dense(2), np.array([[1.0, -3.0], [-2.0, 0.5]])).tolist()
    [2.0, 3.0]
    """
    flat = outputs_last(layer, np.abs(np.asarray(kernel)))
    return flat.reshape(-1, flat.shape[-1]).max(axis=0)


def _input_axis(layer, kernel) -> int:
    if kind(layer) == "dense":
        return 0
    if kind(layer) == "depthwise" and np.shape(kernel)[3] != 1:
        raise ValueError(f"layer {layer.name!r}: depth_multiplier > 1 is not supported by per-input-channel "
                         "operations (equalization, bias absorption): each input channel feeds several outputs")
    return 2


def input_ranges(layer, kernel) -> np.ndarray:
    """Per-input-channel ``max |w|``: how strongly each input channel is used.

    Examples
    --------
    >>> input_ranges(keras.layers.Dense(2), np.array([[1.0, -3.0], [-2.0, 0.5]])).tolist()
    [3.0, 2.0]
    """
    kernel = np.abs(np.asarray(kernel))
    ax = _input_axis(layer, kernel)
    return np.moveaxis(kernel, ax, 0).reshape(kernel.shape[ax], -1).max(axis=1)


def scale_outputs(layer, kernel, s) -> np.ndarray:
    """Multiply output channel ``o`` of the kernel by ``s[o]`` (``s``: one factor per output).

    Folding BatchNorm multiplies by the BN scale; equalization divides (pass ``1 / s``).

    Examples
    --------
    >>> scale_outputs(keras.layers.DepthwiseConv2D(1), np.ones((1, 1, 2, 2)), np.array([1.0, 2, 3, 4])).ravel().tolist()
    [1.0, 2.0, 3.0, 4.0]
    """
    kernel = np.asarray(kernel)
    s = np.asarray(s)
    if kind(layer) == "depthwise":
        return kernel * s.reshape(kernel.shape[2], kernel.shape[3])
    return kernel * s


def scale_inputs(layer, kernel, s) -> np.ndarray:
    """Multiply input channel ``i`` of the kernel by ``s[i]``.

    Examples
    --------
    >>> scale_inputs(keras.layers.Dense(1), np.ones((2, 1)), np.array([2.0, 3.0])).ravel().tolist()
    [2.0, 3.0]
    """
    kernel = np.asarray(kernel)
    ax = _input_axis(layer, kernel)
    shape = [1] * kernel.ndim
    shape[ax] = kernel.shape[ax]
    return kernel * np.asarray(s).reshape(shape)


def constant_response(layer, kernel, v) -> np.ndarray:
    """Output of ``kernel`` (no bias) when input channel ``i`` is the constant ``v[i]`` everywhere.

    Zero-padded borders are ignored. This is the bias change that a constant shift of the input
    (high-bias absorption), or a weight error times the mean input (bias correction), amounts to.

    Examples
    --------
    >>> constant_response(keras.layers.Conv2D(1, 3), np.ones((3, 3, 2, 1)), np.array([1.0, 2.0])).tolist()
    [27.0]
    """
    kernel = np.asarray(kernel)
    v = np.asarray(v)
    k = kind(layer)
    if k == "depthwise":
        _input_axis(layer, kernel)
        return kernel.sum(axis=(0, 1))[:, 0] * v
    if k == "dense":
        return v @ kernel
    return np.einsum("hwio,i->o", kernel, v)


def quantize_kernel(layer, kernel, num_bits: int, per_channel: bool = False,
                    range_setter=None) -> tuple[np.ndarray, QuantParams]:
    """A layer's kernel quantize-dequantized the way TFLite stores weights, and its params.

    Symmetric, ``narrow_range``; per tensor, or per output channel (``params.axis == -1`` on
    :func:`outputs_last`'s view: a depthwise kernel has ``C*M`` output channels, in TFLite's order).

    Examples
    --------
    >>> dw = keras.layers.DepthwiseConv2D(3)
    >>> k, p = quantize_kernel(dw, np.ones((3, 3, 2, 1)) * [[0.5], [2.0]], 8, per_channel=True)
    >>> p.scale.shape, bool(np.allclose(k, np.ones((3, 3, 2, 1)) * [[0.5], [2.0]]))
    ((2,), True)
    """
    kernel = np.asarray(kernel)
    flat = outputs_last(layer, kernel)
    p = fit_params(flat, num_bits, symmetric=True, narrow_range=True, axis=-1 if per_channel else None,
                   range_setter=range_setter)
    return p.fake_quant(flat).reshape(kernel.shape), p


def to_tflite_layout(layer_kind: str, kernel) -> np.ndarray:
    """A Keras kernel in TFLite's weight layout (see the module table).

    Examples
    --------
    >>> to_tflite_layout("conv2d", np.zeros((3, 3, 4, 8))).shape, to_tflite_layout("depthwise", np.zeros((3, 3, 4, 2))).shape
    ((8, 3, 3, 4), (1, 3, 3, 8))
    """
    k = np.asarray(kernel)
    if layer_kind == "conv2d":
        return np.transpose(k, (3, 0, 1, 2))
    if layer_kind == "depthwise":
        return k.reshape(1, k.shape[0], k.shape[1], -1)
    if layer_kind == "dense":
        return k.T
    raise ValueError(f"layer_kind must be 'conv2d', 'depthwise' or 'dense', got {layer_kind!r}")


def from_tflite_layout(layer_kind: str, values, depth_multiplier: int = 1) -> np.ndarray:
    """A TFLite weight tensor rearranged like the Keras kernel (inverse of :func:`to_tflite_layout`).

    Examples
    --------
    >>> k = np.arange(24.0).reshape(1, 2, 2, 6)
    >>> from_tflite_layout("depthwise", k, depth_multiplier=2).shape
    (2, 2, 3, 2)
    >>> w = np.arange(6.0).reshape(2, 3)
    >>> bool(np.array_equal(from_tflite_layout("dense", to_tflite_layout("dense", w)), w))
    True
    """
    v = np.asarray(values)
    if layer_kind == "conv2d":  # (O, kh, kw, I) -> (kh, kw, I, O)
        return np.transpose(v, (1, 2, 3, 0))
    if layer_kind == "depthwise":  # (1, kh, kw, C*M) -> (kh, kw, C, M)
        _, kh, kw, cm = v.shape
        if cm % depth_multiplier:
            raise ValueError(f"{cm} depthwise channels do not divide by depth_multiplier={depth_multiplier}")
        return v.reshape(kh, kw, cm // depth_multiplier, depth_multiplier)
    if layer_kind == "dense":  # (O, I) -> (I, O)
        return v.T
    raise ValueError(f"layer_kind must be 'conv2d', 'depthwise' or 'dense', got {layer_kind!r}")
