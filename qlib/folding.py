"""Fold BatchNorm into the layer before it, and swap ReLU6 for ReLU: function-preserving rewrites.

At inference a BatchNormalization is a per-channel affine map,
``y = s * (z - mean) + beta`` with ``s = gamma / sqrt(var + eps)``. When ``z = W x + b`` comes
from a Conv2D, DepthwiseConv2D or Dense, the two fold into one layer::

    W' = W * s          (scaled along the output channel)
    b' = s * (b - mean) + beta

which is what a TFLite model runs. Folding is where a tiny running variance turns into a huge
weight: ``s`` blows up and with it the folded channel's range.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np

from .graph import FoldPair, as_functional, batchnorm_pairs
from .layers import inline_activation, is_relu6, is_weighted, scale_outputs

__all__ = ["bn_scale", "fold_weights", "rebuild", "fold_batchnorm", "replace_relu6"]


def bn_scale(bn) -> np.ndarray:
    """The per-channel factor ``gamma / sqrt(moving_variance + epsilon)`` of a BatchNormalization.

    Examples
    --------
    >>> bn = keras.layers.BatchNormalization(epsilon=1e-3)
    >>> bn.build((None, 2))
    >>> bn.set_weights([np.ones(2), np.zeros(2), np.zeros(2), np.array([1.0, 0.0])])
    >>> bn_scale(bn).round(3).tolist()                 # variance 0: the scale is 1/sqrt(eps)
    [1.0, 31.623]
    """
    if not isinstance(bn, keras.layers.BatchNormalization):
        raise TypeError(f"bn must be a BatchNormalization layer, got {type(bn).__name__}")
    gamma = np.asarray(bn.gamma, np.float64) if bn.gamma is not None else 1.0
    var = np.asarray(bn.moving_variance, np.float64)
    return gamma / np.sqrt(var + bn.epsilon)


def fold_weights(layer, bn) -> list[np.ndarray]:
    """Kernel and bias of ``layer`` with ``bn`` folded in (float32), as ``[kernel, bias]``.

    Examples
    --------
    >>> dense = keras.layers.Dense(2, use_bias=False); dense.build((None, 3))
    >>> dense.set_weights([np.ones((3, 2))])
    >>> bn = keras.layers.BatchNormalization(epsilon=0.0); bn.build((None, 2))
    >>> bn.set_weights([np.array([2.0, 1.0]), np.array([0.5, 0.0]), np.array([1.0, 0.0]), np.array([4.0, 1.0])])
    >>> [w.tolist() for w in fold_weights(dense, bn)]
    [[[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]], [-0.5, 0.0]]
    """
    s = bn_scale(bn)
    mean = np.asarray(bn.moving_mean, np.float64)
    beta = np.asarray(bn.beta, np.float64) if bn.beta is not None else 0.0
    if not is_weighted(layer):
        raise TypeError(f"cannot fold BN into layer {layer.name!r} of type {type(layer).__name__}")
    kernel = scale_outputs(layer, np.asarray(layer.kernel, np.float64), s)
    bias = np.asarray(layer.bias, np.float64) if layer.use_bias else np.zeros(s.shape)
    new_bias = s * (bias - mean) + beta
    return [kernel.astype(np.float32), new_bias.astype(np.float32)]


def rebuild(model, replace: dict | None = None, skip: set | None = None, weights: dict | None = None,
            insert_before: dict | None = None):
    """Copy a functional model, swapping layers by name; the building block of every transform.

    Parameters
    ----------
    model : keras.Model
    replace : dict, optional
        ``{layer name: new layer}`` (the new layer keeps the old one's place in the graph).
    skip : set, optional
        Names of single-input layers to remove (their input is passed straight through).
    weights : dict, optional
        ``{layer name: list of arrays}`` to set on the new model; every other layer keeps its
        weights.
    insert_before : dict, optional
        ``{layer name: new layer}``: apply the new (weightless, single-input) layer to that
        layer's input first, e.g. an explicit ``ZeroPadding2D``.

    Examples
    --------
    >>> inp = keras.Input((3,), name="pixels")
    >>> m = keras.Model(inp, keras.layers.ReLU(name="r")(keras.layers.Dense(2, name="d")(inp)))
    >>> [l.name for l in rebuild(m, skip={"r"}).layers]
    ['pixels', 'd']
    """
    model = as_functional(model)
    replace, skip, weights = dict(replace or {}), set(skip or ()), dict(weights or {})
    insert_before = dict(insert_before or {})
    names = {l.name for l in model.layers}
    for name in list(replace) + list(skip) + list(weights) + list(insert_before):
        if name not in names:
            raise ValueError(f"model {model.name!r} has no layer named {name!r}")

    def clone_fn(layer):
        if layer.name in replace:
            return replace[layer.name]
        return layer.__class__.from_config(layer.get_config())

    def call_fn(layer, *args, **kwargs):
        if layer.name in skip:
            return args[0]
        if layer.name in insert_before:
            args = (insert_before[layer.name](args[0]),) + args[1:]
        return layer(*args, **kwargs)

    # keep the input layers' names (clone_model would call them "keras_tensor...")
    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t._keras_history.operation.name)
              for t in model.inputs]
    input_tensors = inputs if isinstance(model.input, (list, tuple)) else inputs[0]
    new = keras.models.clone_model(model, input_tensors=input_tensors, clone_function=clone_fn,
                                   call_function=call_fn)
    for layer in new.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])
        elif layer.name not in replace and layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return new


def fold_batchnorm(model, strict: bool = True, warn_if_none: bool = True):
    """A copy of ``model`` with every foldable BatchNormalization folded into the layer before it.

    The returned model computes the same function (to float32 rounding) in inference mode,
    has no folded BN layers, and gives every folded layer a bias.

    Parameters
    ----------
    model : keras.Model
        Functional model.
    strict : bool
        Raise a ``ValueError`` naming any BatchNormalization that cannot be folded (default);
        ``False`` leaves those in place.
    warn_if_none : bool
        Warn when there is nothing to fold (e.g. an already folded model, or an LSTM).

    Examples
    --------
    >>> inp = keras.Input((8, 8, 3), name="image")
    >>> x = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inp)
    >>> x = keras.layers.BatchNormalization(name="bn")(x)
    >>> model = keras.Model(inp, keras.layers.ReLU(name="relu")(x))
    >>> folded = fold_batchnorm(model)
    >>> [l.name for l in folded.layers], folded.get_layer("conv").use_bias
    (['image', 'conv', 'relu'], True)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    >>> bool(np.allclose(model(x), folded(x), atol=1e-5))
    True
    """
    model = as_functional(model)
    pairs: list[FoldPair] = batchnorm_pairs(model, strict=strict)
    if not pairs and warn_if_none:
        warnings.warn(f"model {model.name!r} has no BatchNormalization that follows a Conv2D, DepthwiseConv2D "
                      "or Dense layer: nothing was folded (an unchanged copy is returned)", stacklevel=2)
    replace, weights = {}, {}
    for pair in pairs:
        layer, bn = model.get_layer(pair.layer), model.get_layer(pair.bn)
        config = layer.get_config()
        config["use_bias"] = True
        config["bias_initializer"] = "zeros"
        replace[layer.name] = layer.__class__.from_config(config)
        weights[layer.name] = fold_weights(layer, bn)
    return rebuild(model, replace=replace, skip={p.bn for p in pairs}, weights=weights)


def replace_relu6(model):
    """A copy of ``model`` with every ReLU6 (``ReLU(6.0)`` or ``Activation("relu6")``) made a plain ReLU.

    This changes the function wherever an activation exceeds 6; it is the architecture change
    the quantization-friendly MobileNet makes, and a prerequisite of cross-layer equalization
    (ReLU commutes with positive scaling, ReLU6 does not).

    Examples
    --------
    >>> inp = keras.Input((3,))
    >>> m = keras.Model(inp, keras.layers.ReLU(6.0, name="act")(inp))
    >>> replace_relu6(m)(np.array([[-1.0, 3.0, 10.0]])).numpy().tolist()
    [[0.0, 3.0, 10.0]]
    """
    model = as_functional(model)
    replace, weights = {}, {}
    for layer in model.layers:
        if is_relu6(layer):
            replace[layer.name] = keras.layers.ReLU(name=layer.name)
        elif inline_activation(layer) == "relu6":
            config = layer.get_config()  # e.g. Conv2D(..., activation="relu6")
            config["activation"] = "relu"
            replace[layer.name] = layer.__class__.from_config(config)
            weights[layer.name] = layer.get_weights()
    return rebuild(model, replace=replace, weights=weights)
