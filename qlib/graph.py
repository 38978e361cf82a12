"""Walk the graph of a functional tf.keras model: who feeds whom.

Transforms (BN folding, ReLU6 replacement, later equalization) need to know which layer produces
a layer's input and which layers consume its output. Keras keeps that in each layer's nodes; this
module reads it once and answers by layer name.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

#: Layers whose output channels can absorb a following BatchNorm.
FOLDABLE = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def _check_functional(model) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    if not hasattr(model, "_run_through_graph") or not model.built:
        raise TypeError(
            f"model {model.name!r} must be a built functional (or Sequential) keras model; "
            "subclassed models have no graph to walk"
        )


def producers(layer) -> list:
    """The layers whose outputs are ``layer``'s inputs (in call order).

    Examples
    --------
    >>> inp = keras.Input((4,))
    >>> out = keras.layers.Dense(2, name="d")(keras.layers.Dense(3, name="c")(inp))
    >>> [l.name for l in producers(keras.Model(inp, out).get_layer("d"))]
    ['c']
    """
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        raise ValueError(
            f"layer {layer.name!r} is called {len(nodes)} times in the model; "
            "shared layers are not supported by qlib's graph transforms"
        )
    return [t._keras_history.operation for t in nodes[0].input_tensors]


def consumers(layer, model=None) -> list:
    """The layers that take ``layer``'s output as an input (within ``model`` if given).

    Examples
    --------
    >>> inp = keras.Input((4,))
    >>> h = keras.layers.Dense(3, name="c")(inp)
    >>> m = keras.Model(inp, keras.layers.Add()([keras.layers.Dense(3, name="a")(h), h]))
    >>> sorted(l.name for l in consumers(m.get_layer("c"), m))
    ['a', 'add']
    """
    ops = [n.operation for n in layer._outbound_nodes]
    if model is not None:
        in_model = {id(l) for l in model.layers}
        ops = [op for op in ops if id(op) in in_model]
    return ops


@dataclass(frozen=True)
class FoldPair:
    """A layer and the BatchNormalization that directly and solely follows it."""

    layer: str
    bn: str

    def __repr__(self) -> str:
        return f"FoldPair({self.layer} <- {self.bn})"


def batchnorm_pairs(model, strict: bool = True) -> list[FoldPair]:
    """Every (Conv2D/DepthwiseConv2D/Dense, BatchNormalization) pair that can be folded.

    A BN can be folded when its only input comes from a Conv2D, DepthwiseConv2D or Dense with
    no activation, whose output feeds nothing but that BN, and it normalises the last (channel)
    axis.

    Parameters
    ----------
    model : keras.Model
        A functional model.
    strict : bool
        Raise a ``ValueError`` naming the first BatchNormalization that cannot be folded
        (default); with ``strict=False`` such layers are left out of the list.

    Examples
    --------
    >>> inp = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inp)
    >>> x = keras.layers.BatchNormalization(name="bn")(x)
    >>> batchnorm_pairs(keras.Model(inp, x))
    [FoldPair(conv <- bn)]
    """
    _check_functional(model)
    pairs = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        reason = _unfoldable_reason(layer, model)
        if reason is None:
            pairs.append(FoldPair(producers(layer)[0].name, layer.name))
        elif strict:
            raise ValueError(
                f"BatchNormalization layer {layer.name!r} cannot be folded: {reason}. "
                "Pass strict=False to keep such layers unfolded."
            )
    return pairs


def _unfoldable_reason(bn, model) -> str | None:
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    ndim = len(bn.input.shape)
    if axis is None or axis % ndim != ndim - 1:
        return f"it normalises axis {bn.axis}, not the last (channel) axis"
    prev = producers(bn)
    if len(prev) != 1 or not isinstance(prev[0], FOLDABLE):
        names = ", ".join(f"{p.name} ({type(p).__name__})" for p in prev)
        return f"its input comes from {names}, not a Conv2D, DepthwiseConv2D or Dense layer"
    layer = prev[0]
    if getattr(layer.activation, "__name__", None) != "linear":
        return f"{layer.name!r} applies an activation before the BN"
    if len(consumers(layer, model)) != 1:
        return f"the output of {layer.name!r} also feeds other layers"
    if len(layer._inbound_nodes) != 1:
        return f"{layer.name!r} is a shared layer"
    return None
