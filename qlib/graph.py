"""Walk the graph of a functional Keras model: who feeds whom.

Transforms (BN folding, ReLU6 replacement, equalization, the simulator) need to know which layer
produces a layer's input and which layers consume its output. Keras keeps that in each layer's
nodes; this module reads it and answers by layer name. :func:`walk` is the one chain walker every
transform uses; which layers it may cross is a rule from :mod:`qlib.layers`.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from .layers import CHANNELWISE, WEIGHTED, inline_activation, is_weighted, kind

__all__ = ["as_functional", "producers", "consumers", "walk", "FoldPair", "batchnorm_pairs",
           "SeparableBlock", "separable_blocks", "depthwise_pairs", "depthwise_triplets"]


def as_functional(model):
    """``model`` as a functional Keras model with a graph to walk (a built ``Sequential`` is converted).

    A ``keras.Sequential`` is a functional graph in a list: it is wrapped in a functional model
    that shares its layers (and weights). Subclassed and unbuilt models raise a ``TypeError``
    that says what to do.

    Examples
    --------
    >>> seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")], name="seq")
    >>> m = as_functional(seq)
    >>> [l.name for l in m.layers], m.get_layer("d") is seq.get_layer("d")
    (['input_layer...', 'd'], True)
    >>> as_functional("model.keras")
    Traceback (most recent call last):
    ...
    TypeError: model must be a keras.Model, got str
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    if isinstance(model, keras.Sequential):
        if not model.built or not getattr(model, "inputs", None):
            raise TypeError(
                f"Sequential model {model.name!r} is not built with a known input shape; start it with "
                "keras.Input(shape) (or call model.build((None, *shape))) before passing it to qlib")
        ins, outs = model.inputs, model.outputs
        return keras.Model(ins[0] if len(ins) == 1 else ins, outs[0] if len(outs) == 1 else outs, name=model.name)
    if not hasattr(model, "_run_through_graph") or not model.built:
        raise TypeError(
            f"model {model.name!r} must be a built functional or Sequential keras model; subclassed "
            "models have no graph to walk: rebuild it with the functional API (keras.Input + layer calls)"
        )
    return model


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
    model = as_functional(model)
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
    if len(prev) != 1 or not isinstance(prev[0], WEIGHTED):
        names = ", ".join(f"{p.name} ({type(p).__name__})" for p in prev)
        return f"its input comes from {names}, not a Conv2D, DepthwiseConv2D or Dense layer"
    layer = prev[0]
    if inline_activation(layer) != "linear":
        return f"{layer.name!r} applies an activation before the BN"
    if len(consumers(layer, model)) != 1:
        return f"the output of {layer.name!r} also feeds other layers"
    if len(layer._inbound_nodes) != 1:
        return f"{layer.name!r} is a shared layer"
    return None


@dataclass(frozen=True)
class SeparableBlock:
    """A depthwise convolution with the convolutions around it, by layer name.

    ``previous`` is the Conv2D whose output (through ``before``: BN, ReLU, padding) feeds the
    depthwise layer, ``pointwise`` the 1x1 Conv2D it feeds (through ``after``). Either may be
    ``None`` (e.g. a depthwise layer right after the input). ``previous -> depthwise ->
    pointwise`` is the triplet cross-layer equalization walks; ``depthwise -> pointwise`` the
    pair the quantization-friendly block changes.
    """

    depthwise: str
    pointwise: str | None
    previous: str | None
    before: tuple = ()
    after: tuple = ()

    def __repr__(self) -> str:
        chain = [self.previous, *self.before, f"[{self.depthwise}]", *self.after, self.pointwise]
        return "SeparableBlock(" + " -> ".join(c for c in chain if c) + ")"


def walk(layer, model, forward: bool = True, through=None, stop=None):
    """Follow a one-to-one chain from ``layer`` to the next layer for which ``stop`` holds.

    Forward, each step goes to the single consumer, which must have no other input; backward, to
    the single producer, which must feed nothing else (the layer found by ``stop`` may). Layers
    for which ``through(layer, passed)`` holds are crossed (``passed``: the layers crossed so far);
    anything else ends the walk with ``None``.

    Returns ``(stop layer or None, names of the crossed layers in graph order)``.

    Examples
    --------
    >>> inp = keras.Input((4,))
    >>> h = keras.layers.ReLU(name="r")(keras.layers.Dense(3, name="a")(inp))
    >>> m = keras.Model(inp, keras.layers.Dense(2, name="b")(keras.layers.Dropout(0.1, name="drop")(h)))
    >>> end, passed = walk(m.get_layer("a"), m, through=lambda l, _: True, stop=lambda l: l.name == "b")
    >>> end.name, passed
    ('b', ('r', 'drop'))
    >>> walk(m.get_layer("b"), m, forward=False, through=lambda l, _: True, stop=lambda l: l.name == "a")[1]
    ('r', 'drop')
    """
    through = through or (lambda current, passed: False)
    stop = stop or (lambda current: False)
    passed, current = [], layer
    while True:
        nxt = consumers(current, model) if forward else producers(current)
        if len(nxt) != 1:
            break
        current = nxt[0]
        if forward and len(producers(current)) != 1:
            break
        if stop(current):
            names = [p.name for p in passed]
            return current, tuple(names if forward else names[::-1])
        if not through(current, passed) or (not forward and len(consumers(current, model)) != 1):
            break
        passed.append(current)
    return None, tuple(p.name for p in passed)


def _is_pointwise_chain_end(layer) -> bool:
    return is_weighted(layer) and kind(layer) == "conv2d"


def _channelwise(layer, passed) -> bool:
    return isinstance(layer, CHANNELWISE)


def separable_blocks(model) -> list[SeparableBlock]:
    """Every DepthwiseConv2D of ``model`` with its neighbouring convolutions.

    Works on :mod:`qlib.models` builders and on ``keras.applications`` MobileNetV2 alike.

    Examples
    --------
    >>> from qlib.models import mobilenet_v2
    >>> blocks = separable_blocks(mobilenet_v2(variant="standard"))
    >>> blocks[1]
    SeparableBlock(block2_expand -> block2_expand_bn -> block2_expand_relu -> [block2_dw] -> block2_dw_bn -> block2_dw_relu -> block2_project)
    >>> separable_blocks(mobilenet_v2(variant="friendly"))[1].after
    ()
    """
    model = as_functional(model)
    out = []
    for layer in model.layers:
        if not is_weighted(layer) or kind(layer) != "depthwise":
            continue
        pw, after = walk(layer, model, True, _channelwise, _is_pointwise_chain_end)
        prev, before = walk(layer, model, False, _channelwise, _is_pointwise_chain_end)
        pw_ok = pw is not None and tuple(pw.kernel_size) == (1, 1)
        out.append(SeparableBlock(layer.name, pw.name if pw_ok else None,
                                  prev.name if prev is not None else None,
                                  before if prev is not None else (), after if pw_ok else ()))
    return out


def depthwise_pairs(model) -> list[tuple[str, str]]:
    """``(depthwise, pointwise)`` name pairs.

    Examples
    --------
    >>> from qlib.models import mobilenet_v1
    >>> depthwise_pairs(mobilenet_v1())[:2]
    [('block1_dw', 'block1_pw'), ('block2_dw', 'block2_pw')]
    """
    return [(b.depthwise, b.pointwise) for b in separable_blocks(model) if b.pointwise]


def depthwise_triplets(model) -> list[tuple[str, str, str]]:
    """``(previous conv, depthwise, pointwise)`` name triplets.

    Examples
    --------
    >>> from qlib.models import mobilenet_v1
    >>> depthwise_triplets(mobilenet_v1())[:2]
    [('conv1', 'block1_dw', 'block1_pw'), ('block1_pw', 'block2_dw', 'block2_pw')]
    """
    return [(b.previous, b.depthwise, b.pointwise) for b in separable_blocks(model)
            if b.pointwise and b.previous]
