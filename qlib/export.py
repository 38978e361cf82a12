"""qlib's quantization in a real int8 ``.tflite``: the grids qlib chose, carried to the phone.

:func:`to_tflite` takes what :func:`qlib.simulate.quantize_model` / ``Simulator.quantize`` return
(a float Keras model with :class:`~qlib.simulate.FakeQuant` layers and weights already on their
grids) and writes a full-integer TFLite model whose every int8 tensor is on **qlib's** grid: the
stored weight integers are qlib's, the scales and zero points are qlib's (to float32 precision),
the int32 biases are qlib's ``round(b / (s_in * s_w))``. Any weight range setter, DFQ output,
greedy-search activation ranges and weight bit widths 2..8 (stored in int8 with fewer levels) all
go the same way.

The route, as the LPIRC 2018 winners did it, plus a check and a repair:

1. **FakeQuant ops in a TensorFlow graph.** The quantized Keras model is traced into a
   ``tf.function``: every ``FakeQuant`` layer becomes ``tf.quantization.fake_quant_with_min_max_args``
   over qlib's range; every kernel passes through a fake-quant op over qlib's weight range
   (per tensor: ``fake_quant_with_min_max_args(narrow_range=True)``; per channel:
   ``fake_quant_with_min_max_vars_per_channel`` on the outputs-last view, so a depthwise kernel
   ``(kh, kw, C, M)`` is quantized as ``(kh, kw, C*M)``). A per-channel **Dense** kernel is left a
   plain constant: TF's per-channel op quantizes the last axis, and the converter rejects it on a
   ``MatMul`` weight ("'tfl.transpose' op has mismatched quantized axes").
2. **The TFLite converter** in its quantization-aware mode (no representative dataset: every
   range comes from a fake-quant op) writes the ``.tflite``. At 8 bits it keeps qlib's grids
   exactly. Below 8 bits it does not: given ``num_bits`` 5..7 it stores 8-bit integers over the
   same range (a finer, *different* grid: ``round(k * 127 / qmax)``), given 2..4 it stores INT4
   tensors on a 4-bit grid (exact only at 4 bits). So weight fake-quant ops always carry 8 bits
   (over qlib's range), and below 8 bits step 3 writes qlib's integers (``scripts/real_kernels.py``
   measures what the converter does with ``num_bits`` < 8).
3. **Read back and repair.** Every weight, bias and activation tensor is read back through the
   generated flatbuffer schema (:mod:`qlib.flatbuffer`), mapped to its Keras layer by name scope,
   and compared with qlib's grids (:func:`grids`). Weights and biases the converter stored
   differently (a per-channel Dense kernel below 8 bits; any weight below 8 bits) are rewritten in
   the flatbuffer: buffer bytes and quantization parameters, through the schema's object API
   (``ModelT``). Then everything is checked again. An activation grid that differs, a layer or
   setting that cannot be exported (activations other than 8 bits, weights above 8 bits, float
   weights, biases off their int32 grid, unsupported layers) raises a ``ValueError`` naming it.
   Never a silently different grid.

:func:`export` returns the bytes with a report of what was checked and rewritten;
:func:`compare` puts any ``.tflite`` next to qlib's grids, tensor by tensor.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field

import keras
import numpy as np

from . import flatbuffer as fb
from .graph import as_functional, consumers, producers
from .layers import (ACTIVATION_LAYERS, GRID_PRESERVING, POOLING, inline_activation, is_fusable_activation,
                     is_weighted, kind, outputs_last, quantize_kernel, to_tflite_layout)
from .quantizers import round_half_away
from .simulate import FakeQuant, Simulator

__all__ = ["Grid", "LayerGrids", "grids", "export", "Exported", "to_tflite", "converted", "layer_of", "compare", "on_grid",
           "zoo", "partings"]

_WEIGHT_OPS = {"CONV_2D": "conv2d", "DEPTHWISE_CONV_2D": "depthwise", "FULLY_CONNECTED": "dense"}
_PASS_LAYERS = (keras.layers.InputLayer, keras.layers.Add) + ACTIVATION_LAYERS + GRID_PRESERVING + POOLING
INT32 = np.iinfo(np.int32)


@dataclass(eq=False)
class Grid:
    """One tensor's grid: ``scale`` and ``zero_point`` (scalars or per channel on ``axis``) and,
    for constants, the stored ``integers`` (TFLite layout)."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0
    integers: np.ndarray | None = None

    def __repr__(self) -> str:
        s = np.atleast_1d(self.scale)
        where = f"scale={float(s[0]):.6g}" if s.size == 1 else f"{s.size} scales on axis {self.axis}"
        zp = np.atleast_1d(self.zero_point)
        ints = "" if self.integers is None else f", integers {list(self.integers.shape)}"
        return f"Grid({where}, zero_point={int(zp[0]) if zp.size == 1 else 'per channel'}{ints})"


@dataclass(eq=False)
class LayerGrids:
    """qlib's grids around one weighted layer: input, kernel, int32 bias, output (after a fused ReLU)."""

    layer: str
    kind: str
    num_bits: int
    input: Grid
    weight: Grid
    bias: Grid | None
    output: Grid
    output_point: str

    def __repr__(self) -> str:
        where = "per channel" if np.size(self.weight.scale) > 1 else "per tensor"
        return (f"LayerGrids({self.layer!r}, {self.kind}, {self.num_bits}-bit weights {where}, "
                f"output on {self.output_point!r})")


def _fq_grid(layer) -> Grid:
    return Grid(np.float64(np.float32(layer.scale.numpy())), np.int64(round(float(layer.zero_point.numpy()))))


def _check_quantized(model):
    model = as_functional(model)
    fqs = [l for l in model.layers if isinstance(l, FakeQuant)]
    if not fqs:
        raise ValueError(f"model {model.name!r} has no FakeQuant layers: export needs qlib's activation grids; pass "
                         "what quantize_model(...) or Simulator.quantize(...) return, with activation_bits=8")
    for l in fqs:
        if l.num_bits != 8:
            raise ValueError(f"FakeQuant layer {l.name!r} has {l.num_bits}-bit activations: TFLite's int8 kernels "
                             "clamp every activation to [-128, 127], so only activation_bits=8 can be exported "
                             "(lower bit widths are simulation-only)")
    for l in model.layers:
        if isinstance(l, keras.layers.AveragePooling2D):
            after = [c for c in consumers(l, model) if isinstance(c, FakeQuant)]
            if after and not _same_grid(_fq_grid(after[0]), _fq_grid(_point_before(l))):
                raise ValueError(f"layer {l.name!r} (AveragePooling2D): qlib's simulation puts its output on a new "
                                 "grid, but TFLite's int8 AVERAGE_POOL_2D keeps its input's grid, so the .tflite would "
                                 "round twice (pool, then requantize); use GlobalAveragePooling2D (MEAN rescales)")
        if isinstance(l, FakeQuant) or is_weighted(l) or isinstance(l, _PASS_LAYERS):
            if isinstance(l, ACTIVATION_LAYERS) and not is_fusable_activation(l) and not _is_linear(l):
                raise ValueError(f"layer {l.name!r}: {_describe_activation(l)} cannot be exported; only plain ReLU, "
                                 "ReLU6 and linear activations can (TFLite fuses them into the op before)")
            if is_weighted(l):
                _check_weighted_layer(l)
            continue
        raise ValueError(f"layer {l.name!r} ({type(l).__name__}) cannot be exported to an int8 .tflite by qlib; "
                         "supported: Conv2D, DepthwiseConv2D, Dense, ReLU/ReLU6, Add, pooling, ZeroPadding2D, "
                         "Dropout, Flatten, Reshape and qlib FakeQuant layers")
    return model


def _is_linear(layer) -> bool:
    """An ``Activation("linear")`` layer (the identity)."""
    return getattr(getattr(layer, "activation", None), "__name__", "") == "linear"


def _describe_activation(layer) -> str:
    """What an activation layer computes, for an error message."""
    if hasattr(layer, "max_value"):  # ReLU with a cap, slope or threshold
        return (f"ReLU with max_value={layer.max_value}, negative_slope={layer.negative_slope}, "
                f"threshold={layer.threshold}")
    return f"activation {getattr(layer.activation, '__name__', layer.activation)!r}"


def _same_grid(a: Grid, b: Grid) -> bool:
    return bool(np.float32(a.scale) == np.float32(b.scale) and int(a.zero_point) == int(b.zero_point))


def _check_weighted_layer(layer):
    act = inline_activation(layer)
    if act not in ("linear", "relu", "relu6"):
        raise ValueError(f"layer {layer.name!r}: inline activation {act!r} cannot be exported "
                         "(relu, relu6, linear can)")
    if kind(layer) == "conv2d" and getattr(layer, "groups", 1) != 1:
        raise ValueError(f"layer {layer.name!r}: grouped convolution (groups={layer.groups}) cannot be exported")
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise ValueError(f"layer {layer.name!r}: data_format must be channels_last for TFLite")
    if kind(layer) == "dense" and len(layer.input.shape) != 2:
        raise ValueError(f"layer {layer.name!r}: Dense on a rank-{len(layer.input.shape)} input cannot be exported; "
                         "flatten or pool to (batch, features) first")


def _point_after(layer, model):
    """The FakeQuant layer whose grid ``layer``'s output ends up on (through a fused ReLU or a
    grid-preserving layer), or ``None``."""
    current = layer
    for _ in range(4):
        nxt = consumers(current, model)
        fq = [n for n in nxt if isinstance(n, FakeQuant)]
        if fq:
            return fq[0]
        if len(nxt) == 1 and (is_fusable_activation(nxt[0]) and is_weighted(current)):
            current = nxt[0]
            continue
        return None
    return None


def _point_before(layer):
    """The FakeQuant layer whose grid ``layer``'s (first) input is on."""
    current = producers(layer)[0]
    while not isinstance(current, FakeQuant):
        if not isinstance(current, GRID_PRESERVING):
            raise ValueError(f"layer {layer.name!r}: its input ({current.name!r}, {type(current).__name__}) is not on "
                             "a FakeQuant grid; quantize the model with activation_bits=8")
        current = producers(current)[0]
    return current


def _weight_grid(layer, kernel, num_bits, per_channel):
    """qlib's grid for a kernel that should already be on it, or ``None`` if it is not."""
    k = np.asarray(kernel, np.float64)
    fq, p = quantize_kernel(layer, k, num_bits, per_channel)
    flat = outputs_last(layer, k)
    q = p.quantize(flat)
    step = np.broadcast_to(p.scale, flat.shape[-1:])
    if np.any(np.abs(q * step - flat) > 1e-3 * step):
        return None
    ints = to_tflite_layout(kind(layer), q.reshape(k.shape)).astype(np.int8)
    axis = {"conv2d": 0, "depthwise": 3, "dense": 0}[kind(layer)]
    scale = np.atleast_1d(np.asarray(p.scale, np.float64))
    return Grid(scale, np.zeros(scale.shape, np.int64), axis, ints)


def _infer_weights(model, weighted, weight_bits, per_channel):
    """The (bits, per_channel) every kernel fits, smallest bits first, per tensor before per channel."""
    bits_options = [weight_bits] if weight_bits is not None else list(range(2, 9))
    pc_options = [per_channel] if per_channel is not None else [False, True]
    for bits in bits_options:
        for pc in pc_options:
            if all(_weight_grid(l, l.get_weights()[0], bits, pc) is not None for l in weighted):
                return bits, pc
    # say which layer is off, for the first requested configuration
    bits, pc = bits_options[-1], pc_options[-1]
    for l in weighted:
        if _weight_grid(l, l.get_weights()[0], bits, pc) is None:
            what = f"a symmetric {bits}-bit {'per-channel' if pc else 'per-tensor'} grid"
            if weight_bits is None or per_channel is None:
                what = "any 2..8-bit symmetric grid (per tensor or per channel)"
            raise ValueError(f"the kernel of layer {l.name!r} is not on {what}: export the model that "
                             "quantize_model / Simulator.quantize returned, with the weight_bits and per_channel "
                             "it was quantized with (weights above 8 bits or float weights cannot be exported)")
    raise AssertionError("unreachable")  # pragma: no cover


def grids(quantized, weight_bits: int | None = None, per_channel: bool | None = None) -> dict:
    """qlib's grids for every weighted layer of a quantized model: ``{layer: LayerGrids}``.

    ``weight_bits``/``per_channel`` are those the model was quantized with; ``None`` infers them
    from the kernels (the smallest bit width, per tensor before per channel, that every kernel is
    exactly on). A kernel that is not on such a grid raises a ``ValueError`` naming its layer, as
    does a bias off its int32 grid ``s_in * s_w`` (``quantize_bias=False``).

    Examples
    --------
    >>> from qlib.simulate import quantize_model
    >>> inp = keras.Input((4, 4, 2), name="image")
    >>> m = keras.Model(inp, keras.layers.Conv2D(3, 3, name="conv")(inp))
    >>> x = np.random.default_rng(0).normal(size=(8, 4, 4, 2)).astype("float32")
    >>> g = grids(quantize_model(m, 4, 8, per_channel=True, calibration_data=x))
    >>> g["conv"]
    LayerGrids('conv', conv2d, 4-bit weights per channel, output on 'conv_fq')
    >>> int(np.abs(g["conv"].weight.integers).max())
    7
    """
    model = _check_quantized(quantized)
    weighted = [l for l in model.layers if is_weighted(l)]
    if weight_bits is not None and (isinstance(weight_bits, bool) or not isinstance(weight_bits, (int, np.integer))):
        raise TypeError(f"weight_bits must be an int in 2..8 or None, got {weight_bits!r}")
    if weight_bits is not None and not 2 <= weight_bits <= 8:
        raise ValueError(f"weight_bits must be in 2..8 for an int8 .tflite (fewer levels on the int8 grid), got "
                         f"{weight_bits}; 16-bit weights need TFLite's int16x8 mode, which qlib does not export")
    bits, pc = _infer_weights(model, weighted, weight_bits, per_channel)
    out = {}
    for l in weighted:
        w = l.get_weights()
        wg = _weight_grid(l, w[0], bits, pc)
        fq_in = _point_before(l)
        fq_out = _point_after(l, model)
        if fq_out is None:
            raise ValueError(f"layer {l.name!r}: its output is not followed by a FakeQuant layer; quantize the model "
                             "with activation_bits=8")
        g_in = _fq_grid(fq_in)
        bias = None
        if len(w) > 1:
            s_b = np.float64(g_in.scale) * wg.scale
            v = np.asarray(w[1], np.float64) / np.broadcast_to(s_b, w[1].shape)
            k = round_half_away(v)
            off = np.abs(v - k) > np.maximum(1e-3, np.abs(k) * 2.0 ** -21)
            if np.any(off):
                raise ValueError(f"the bias of layer {l.name!r} is not on its int32 grid input_scale * weight_scale "
                                 f"({int(off.sum())} of {off.size} values off); quantize with quantize_bias=True")
            if np.any(np.abs(k) > INT32.max):
                raise ValueError(f"the bias of layer {l.name!r} does not fit in int32 on the grid "
                                 f"input_scale * weight_scale (largest {float(np.abs(k).max()):.3g})")
            bias = Grid(s_b, np.zeros(s_b.shape, np.int64), 0, k.astype(np.int32))
        out[l.name] = LayerGrids(l.name, kind(l), bits, g_in, wg, bias, _fq_grid(fq_out), fq_out.name)
    return out


def _activation_grids(model) -> dict:
    """``{keras layer name: Grid}`` of the int8 tensor each layer's output is stored as."""
    out = {}
    for l in model.layers:
        if isinstance(l, FakeQuant):
            out[l.name] = _fq_grid(l)
            # the layer that produced the FakeQuant's input (conv, fused ReLU, add, pool, input)
            out.setdefault(producers(l)[0].name, out[l.name])
    for l in model.layers:  # padding, reshape...: the grid of their input
        if isinstance(l, GRID_PRESERVING) and l.name not in out:
            current = l
            while current.name not in out and not isinstance(current, keras.layers.InputLayer):
                current = producers(current)[0]
            if current.name in out:
                out[l.name] = out[current.name]
    return out


# --- step 1: the TensorFlow graph with fake-quant ops ---------------------------------------------

def _tf():
    from .tflite import _tf as tf_import

    return tf_import()


def _weight_tensor(tf, layer, kernel, grid: LayerGrids, per_channel, fq_bits):
    qmax = 2 ** (grid.num_bits - 1) - 1
    bits = grid.num_bits if fq_bits is None else fq_bits
    a = (np.asarray(grid.weight.scale, np.float64) * qmax).astype(np.float32)
    k = np.asarray(kernel, np.float32)
    if not per_channel:
        return tf.quantization.fake_quant_with_min_max_args(tf.constant(k), -float(a[0]), float(a[0]), num_bits=bits,
                                                            narrow_range=True, name="weight_fq")
    if grid.kind == "dense":  # see the module docstring: left to the converter, then rewritten
        return tf.constant(k, name="weight")
    flat = outputs_last(layer, k)
    fq = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        tf.constant(flat), tf.constant(-a), tf.constant(a), num_bits=bits, narrow_range=True, name="weight_fq")
    return tf.reshape(fq, k.shape) if grid.kind == "depthwise" else fq


def _activate(tf, layer, y):
    act = getattr(getattr(layer, "activation", None), "__name__", "linear")
    return tf.nn.relu(y) if act == "relu" else tf.nn.relu6(y) if act == "relu6" else y


def _traced(model, layer_grids: dict, per_channel: bool, fq_bits: int | None = 8):
    """The quantized model as a ``tf.function`` with fake-quant ops (see the module docstring).

    ``fq_bits``: the ``num_bits`` of the weight fake-quant ops (8, over qlib's range; ``None``:
    the model's own weight bits, which the converter does not honour below 8, see
    ``scripts/real_kernels.py``)."""
    tf = _tf()
    weights = {l.name: l.get_weights() for l in model.layers if is_weighted(l)}
    fq_ranges = {l.name: _fq_grid(l) for l in model.layers if isinstance(l, FakeQuant)}

    def weighted(layer, x):
        w = weights[layer.name]
        kq = _weight_tensor(tf, layer, w[0], layer_grids[layer.name], per_channel, fq_bits)
        k = kind(layer)
        if k == "conv2d":
            y = tf.nn.conv2d(x, kq, layer.strides, layer.padding.upper(), dilations=layer.dilation_rate)
        elif k == "depthwise":
            y = tf.nn.depthwise_conv2d(x, kq, (1, *layer.strides, 1), layer.padding.upper(),
                                       dilations=layer.dilation_rate)
        else:
            y = tf.matmul(x, kq)
        if len(w) > 1:
            y = tf.nn.bias_add(y, tf.constant(np.asarray(w[1], np.float32)))
        return _activate(tf, layer, y)

    def call_fn(layer, *args, **kwargs):
        with tf.name_scope(layer.name):
            if isinstance(layer, FakeQuant):
                g = fq_ranges[layer.name]
                lo = (-128 - float(g.zero_point)) * float(g.scale)
                hi = (127 - float(g.zero_point)) * float(g.scale)
                return tf.quantization.fake_quant_with_min_max_args(args[0], lo, hi, num_bits=8, name="fq")
            if is_weighted(layer):
                return weighted(layer, args[0])
            if isinstance(layer, (keras.layers.Flatten, keras.layers.Reshape)):  # a static RESHAPE, any batch
                shape = layer.output.shape[1:]
                return tf.reshape(args[0], (-1, *shape) if isinstance(layer, keras.layers.Reshape)
                                  else (-1, int(np.prod(shape))))
            return layer(*args, **kwargs)

    spec = tf.TensorSpec((None, *model.input.shape[1:]), tf.float32)

    @tf.function(input_signature=[spec])
    def forward(x):
        return model._run_through_graph(x, operation_fn=lambda op: op, call_fn=call_fn)

    return forward


def _convert(forward, int8_io: bool) -> bytes:
    tf = _tf()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()], forward)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if int8_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # "Statistics for quantized inputs were expected": the FakeQuant has them
        return conv.convert()


# --- step 3: read back, compare, rewrite ------------------------------------------------------------

def _layer_of(tensor_name: str) -> str:
    return tensor_name.split("/")[0].split(";")[0]


def _stored(t: fb.Tensor) -> Grid:
    return Grid(t.scale.astype(np.float64), t.zero_point, t.axis, t.data)


def _rel(a, b) -> float:
    a, b = np.atleast_1d(np.asarray(a, np.float64)), np.atleast_1d(np.asarray(b, np.float64))
    if a.size != b.size and min(a.size, b.size) != 1:
        return float("inf")
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def _rows(g: fb.Graph, layer_grids: dict, act: dict) -> list[dict]:
    """One row per int8/int32 tensor of the model: which layer, role, expected vs stored grid."""
    rows, seen = [], set()

    def add(t: fb.Tensor, role, layer, expected: Grid, op):
        if t.index in seen:
            return
        seen.add(t.index)
        stored = _stored(t)
        exp_scale = np.atleast_1d(np.asarray(expected.scale, np.float64))
        n = max(stored.scale.size, exp_scale.size)
        zp_ok = stored.zero_point.size in (1, n) and bool(np.all(
            np.broadcast_to(stored.zero_point, (n,)) == np.broadcast_to(np.atleast_1d(expected.zero_point), (n,))))
        ints = None
        if expected.integers is not None:
            ints = t.data is not None and t.data.shape == expected.integers.shape and \
                bool(np.array_equal(t.data.astype(np.int64), expected.integers.astype(np.int64)))
        per_channel_ok = stored.scale.size == exp_scale.size or \
            (exp_scale.size == 1 and np.all(stored.scale == stored.scale[0]))
        dtype = "int4" if t.type == fb.INT4 else np.dtype(t.dtype).name
        rows.append(dict(tensor=t.name, index=t.index, role=role, layer=layer, op=op, dtype=dtype,
                         scales=int(stored.scale.size), scale_rel_diff=_rel(np.broadcast_to(stored.scale, (n,)),
                                                                            np.broadcast_to(exp_scale, (n,))),
                         per_channel_ok=bool(per_channel_ok), zero_points_equal=zp_ok, integers_identical=ints))

    for op in g.ops:
        if op.name in _WEIGHT_OPS:
            w = g.tensors[op.inputs[1]]
            layer = _layer_of(w.name)
            if layer not in layer_grids:
                raise ValueError(f"cannot map TFLite weight tensor {w.name!r} ({op.name}) to a weighted layer of the "
                                 f"model (layers: {sorted(layer_grids)[:5]}...)")
            lg = layer_grids[layer]
            add(w, "weight", layer, lg.weight, op.name)
            if len(op.inputs) > 2 and op.inputs[2] >= 0 and lg.bias is not None:
                add(g.tensors[op.inputs[2]], "bias", layer, lg.bias, op.name)
        for i in op.outputs:
            t = g.tensors[i]
            if t.dtype != np.int8:
                continue
            layer = _layer_of(t.name)
            if layer not in act:
                raise ValueError(f"cannot map TFLite tensor {t.name!r} (output of {op.name}) to a layer of the model")
            add(t, "activation", layer, act[layer], op.name)
    for i in g.inputs:
        t = g.tensors[i]
        if t.dtype == np.int8:
            add(t, "activation", _layer_of(t.name), act[_layer_of(t.name)], "input")
    return rows


def on_grid(row) -> bool:
    """Whether a row of :func:`compare` shows the tensor on qlib's grid: same scale (to 1e-6
    relative), same zero points, per channel where qlib is, the same stored integers (weights and
    biases) and not int4-packed (the int4 rows are checked by unpacking, in the tests).

    Examples
    --------
    >>> row = dict(dtype="int8", scale_rel_diff=0.0, zero_points_equal=True, per_channel_ok=True,
    ...            integers_identical=None)                      # an activation tensor
    >>> on_grid(row), on_grid(dict(row, scale_rel_diff=1e-3))
    (True, False)
    """
    return row["dtype"] != "int4" and row["scale_rel_diff"] <= 1e-6 and row["zero_points_equal"] and \
        row["per_channel_ok"] and \
        row["integers_identical"] is not False


def compare(tflite_model: bytes, quantized, weight_bits: int | None = None, per_channel: bool | None = None) -> list:
    """Every weight, bias and activation tensor of a ``.tflite`` next to qlib's grid for it.

    One dict per tensor: ``tensor``, ``role`` (weight / bias / activation), ``layer``, ``op``,
    ``scales`` (how many are stored), ``scale_rel_diff`` (largest relative difference to qlib's
    scale), ``zero_points_equal``, ``per_channel_ok`` (per channel where qlib is, or equal scales)
    and ``integers_identical`` (stored constants equal qlib's integers; ``None`` for activations).

    Examples
    --------
    >>> from qlib.simulate import quantize_model
    >>> inp = keras.Input((4, 4, 2), name="image")
    >>> m = keras.Model(inp, keras.layers.Conv2D(3, 3, name="conv")(inp))
    >>> x = np.random.default_rng(0).normal(size=(8, 4, 4, 2)).astype("float32")
    >>> q = quantize_model(m, 4, 8, per_channel=True, calibration_data=x)
    >>> rows = compare(to_tflite(q), q)
    >>> [(r["role"], r["integers_identical"], r["scale_rel_diff"] < 1e-6) for r in rows]
    [('weight', True, True), ('bias', True, True), ('activation', None, True), ('activation', None, True)]
    """
    model = _check_quantized(quantized)
    return _rows(fb.graph(tflite_model), grids(model, weight_bits, per_channel), _activation_grids(model))


@dataclass(eq=False)
class Exported:
    """The exported ``.tflite`` (``tflite``) and how it was made: the per-tensor comparison with
    qlib's grids (``rows``, see :func:`compare`), the tensors rewritten after conversion, and the
    simulated model it came from (``quantized``)."""

    tflite: bytes
    weight_bits: int
    per_channel: bool
    rows: list = field(repr=False)
    rewritten: list = field(default_factory=list)
    quantized: object = field(default=None, repr=False)

    def __repr__(self) -> str:
        roles = {}
        for r in self.rows:
            roles[r["role"]] = roles.get(r["role"], 0) + 1
        plural = {"weight": "weights", "bias": "biases", "activation": "activations"}
        checked = ", ".join(f"{v} {plural[k]}" for k, v in roles.items())
        return (f"Exported({len(self.tflite)} bytes, {self.weight_bits}-bit weights "
                f"{'per channel' if self.per_channel else 'per tensor'}; on qlib's grids: {checked}; "
                f"{len(self.rewritten)} tensors rewritten after conversion)")


def _rewrite(model_t, g: fb.Graph, bad: list, layer_grids: dict) -> list:
    """Write qlib's integers and quantization parameters into the weight/bias tensors of ``bad``."""
    s = fb.schema()
    sub = model_t.subgraphs[0]
    users = {}
    for t in sub.tensors:
        users[t.buffer] = users.get(t.buffer, 0) + 1
    done = []
    for row in bad:
        lg = layer_grids[row["layer"]]
        grid = lg.weight if row["role"] == "weight" else lg.bias
        t = sub.tensors[row["index"]]
        ints = grid.integers.astype(np.int8 if row["role"] == "weight" else np.int32)
        if users.get(t.buffer, 0) > 1:  # a shared buffer: give this tensor its own
            model_t.buffers.append(s.BufferT())
            users[t.buffer] -= 1
            t.buffer = len(model_t.buffers) - 1
        model_t.buffers[t.buffer].data = np.frombuffer(ints.tobytes(), np.uint8)
        scale = np.atleast_1d(np.asarray(grid.scale, np.float64)).astype(np.float32)
        q = t.quantization or s.QuantizationParametersT()
        q.scale = [float(v) for v in scale]
        q.zeroPoint = [0] * scale.size
        q.quantizedDimension = int(grid.axis) if scale.size > 1 else 0
        q.min, q.max = None, None
        t.quantization = q
        t.shape = list(ints.shape)
        t.type = s.TensorType.INT8 if row["role"] == "weight" else s.TensorType.INT32
        why = [w for w, bad in (("int4 storage", row["dtype"] == "int4"),
                                ("integers", not row["integers_identical"]),
                                ("scales", row["scale_rel_diff"] > 1e-6 or not row["per_channel_ok"])) if bad]
        done.append(f"{row['tensor']} ({row['role']} of {row['layer']}: {' and '.join(why)})")
    return done


def export(quantized, weight_bits: int | None = None, per_channel: bool | None = None,
           int8_io: bool = True) -> Exported:
    """:func:`to_tflite`, returning the :class:`Exported` record (bytes, checks, rewrites).

    Examples
    --------
    >>> from qlib.simulate import quantize_model
    >>> inp = keras.Input((6,), name="x")
    >>> m = keras.Model(inp, keras.layers.Dense(3, name="fc")(inp))
    >>> x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    >>> e = export(quantize_model(m, 3, 8, per_channel=True, calibration_data=x))
    >>> e
    Exported(... bytes, 3-bit weights per channel; on qlib's grids: 1 weights, 2 activations; 1 tensors rewritten ...)
    >>> e.rewritten                                       # the converter stored 8-bit integers
    ['fc/MatMul1 (weight of fc: integers and scales)']
    """
    if not isinstance(int8_io, bool):
        raise TypeError(f"int8_io must be True or False, got {int8_io!r}")
    model = _check_quantized(quantized)
    layer_grids = grids(model, weight_bits, per_channel)
    any_grid = next(iter(layer_grids.values()), None)
    bits = any_grid.num_bits if any_grid else (weight_bits or 8)
    pc = bool(any_grid and np.size(any_grid.weight.scale) > 1) if per_channel is None else per_channel
    act = _activation_grids(model)
    tflite = _convert(_traced(model, layer_grids, pc), int8_io)
    rows = _rows(fb.graph(tflite), layer_grids, act)
    bad = [r for r in rows if not on_grid(r)]
    wrong_act = [r for r in bad if r["role"] == "activation"]
    if wrong_act:
        r = wrong_act[0]
        raise ValueError(f"the converter did not keep qlib's grid for tensor {r['tensor']!r} (layer {r['layer']!r}, "
                         f"scale off by {r['scale_rel_diff']:.2g} relative, zero point equal: "
                         f"{r['zero_points_equal']}); {len(wrong_act)} activation tensors differ")
    rewritten = []
    if bad:
        model_t = fb.read(tflite)
        rewritten = _rewrite(model_t, fb.graph(model_t), bad, layer_grids)
        tflite = fb.write(model_t)
        rows = _rows(fb.graph(tflite), layer_grids, act)
        still = [r for r in rows if not on_grid(r)]
        if still:  # pragma: no cover - a bug, not a user error
            raise RuntimeError(f"rewriting did not put {still[0]['tensor']!r} on qlib's grid: {still[0]}")
    return Exported(tflite, bits, pc, rows, rewritten, model)


def to_tflite(quantized, weight_bits: int | None = None, per_channel: bool | None = None,
              int8_io: bool = True) -> bytes:
    """A full-integer ``.tflite`` carrying qlib's grids (see the module docstring for the route).

    Parameters
    ----------
    quantized : keras.Model
        What :func:`qlib.simulate.quantize_model` or ``Simulator.quantize`` return, with
        ``activation_bits=8`` and ``weight_bits`` 2..8 (any range setter, DFQ output...).
    weight_bits, per_channel : int or bool, optional
        How the model was quantized; ``None`` infers them from the kernels (checked either way:
        a kernel off that grid raises a ``ValueError`` naming its layer).
    int8_io : bool
        int8 input and output tensors (as on a phone); ``False``: float I/O with QUANTIZE and
        DEQUANTIZE ops at the edges.

    Returns
    -------
    bytes
        The ``.tflite`` model: stored weight integers identical to qlib's, scales and zero points
        equal to qlib's (float32), int32 biases ``round(b / (s_in * s_w))``.

    Examples
    --------
    >>> from qlib.simulate import quantize_model
    >>> from qlib import flatbuffer
    >>> inp = keras.Input((8, 8, 1), name="image")
    >>> h = keras.layers.ReLU(name="relu")(keras.layers.Conv2D(4, 3, name="conv")(inp))
    >>> m = keras.Model(inp, keras.layers.DepthwiseConv2D(3, name="dw")(h))
    >>> x = np.random.default_rng(0).normal(size=(8, 8, 8, 1)).astype("float32")
    >>> tfl = to_tflite(quantize_model(m, 8, 8, per_channel=True, calibration_data=x))
    >>> [op.name for op in flatbuffer.graph(tfl).ops]
    ['CONV_2D', 'DEPTHWISE_CONV_2D']
    >>> to_tflite(quantize_model(m, 8, None))
    Traceback (most recent call last):
    ...
    ValueError: model 'functional..._quantized' has no FakeQuant layers: export needs qlib's activation grids; ...
    """
    return export(quantized, weight_bits, per_channel, int8_io).tflite


def converted(quantized, weight_bits: int | None = None, per_channel: bool | None = None,
              fq_bits: int | None = None, int8_io: bool = True) -> bytes:
    """What the TFLite converter alone makes of qlib's fake-quant graph: the ``.tflite`` *before*
    :func:`export` checks and rewrites it (to see what the converter does with low-bit weights).

    ``fq_bits``: the ``num_bits`` of the weight fake-quant ops; ``None`` (the default here) gives
    them the model's own weight bits, which the converter does not honour below 8 bits. Use
    :func:`to_tflite` for a file on qlib's grids.

    Examples
    --------
    >>> from qlib.simulate import quantize_model
    >>> from qlib import flatbuffer
    >>> inp = keras.Input((6,), name="x")
    >>> m = keras.Model(inp, keras.layers.Dense(3, name="fc")(inp))
    >>> x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    >>> q = quantize_model(m, 3, 8, per_channel=True, calibration_data=x)
    >>> g = flatbuffer.graph(converted(q))
    >>> w = g.tensors[g.ops[0].inputs[1]]
    >>> layer_of(w.name), bool(np.array_equal(w.data, grids(q)["fc"].weight.integers))
    ('fc', False)
    """
    model = _check_quantized(quantized)
    layer_grids = grids(model, weight_bits, per_channel)
    pc = bool(np.size(next(iter(layer_grids.values())).weight.scale) > 1) if per_channel is None and layer_grids \
        else bool(per_channel)
    return _convert(_traced(model, layer_grids, pc, fq_bits=fq_bits), int8_io)


def layer_of(tensor_name: str) -> str:
    """The Keras layer a converted tensor's name comes from (its first path component).

    Examples
    --------
    >>> layer_of("block1_pw/Conv2D;block1_pw/bias")
    'block1_pw'
    """
    return _layer_of(tensor_name)


# --- where the float simulation and the integer kernels part ------------------------------------------

def _sim_layers(model, act: dict) -> dict:
    """``{keras layer name: the layer whose simulated output is that tensor}`` (its FakeQuant, if any)."""
    out = {}
    for l in model.layers:
        fq = [c for c in consumers(l, model) if isinstance(c, FakeQuant)]
        out[l.name] = fq[0] if fq else l
    return out


def _on_grid(values, grid: Grid) -> np.ndarray:
    return (round_half_away(np.asarray(values, np.float64) / float(grid.scale)) + int(grid.zero_point)).astype(np.int64)


def partings(quantized, tflite_model: bytes, x, batch_size: int = 100) -> list:
    """Op by op, how often qlib's float simulation and the integer kernels give different int8 values.

    ``quantized`` is the simulated model, ``tflite_model`` its export (:func:`to_tflite`), ``x``
    float inputs. The integer side is :mod:`qlib.integer` (bit-exact with LiteRT's reference
    kernels). One dict per int8 tensor: ``op``, ``layer``, ``n`` (elements), and the share of
    elements that differ and the largest difference

    - ``isolated_*``: the simulation of this op alone, fed with the integer model's (dequantized)
      inputs: what the op's float arithmetic does differently;
    - ``end_to_end_*``: the simulation run from the float input: differences carried from earlier
      layers too;
    - ``same_input_*``: the simulation run from the integer model's int8 input (dequantized), so
      without the input's rounding differences;

    and, for CONV_2D / DEPTHWISE_CONV_2D, the integer requantization's own cases
    (:func:`qlib.integer.rounding_cases`): ``ties``, ``double_rounding``, ``clamped_min``,
    ``clamped_max`` (shares of the op's outputs).
    The first row (``op="input"``) compares the simulation's input FakeQuant with TFLite's
    QUANTIZE rounding (:func:`qlib.tflite.quantize_input`).

    Examples
    --------
    >>> from qlib.simulate import quantize_model
    >>> inp = keras.Input((6, 6, 2), name="image")
    >>> m = keras.Model(inp, keras.layers.Conv2D(3, 3, activation="relu", name="conv")(inp))
    >>> x = np.random.default_rng(0).normal(size=(16, 6, 6, 2)).astype("float32")
    >>> q = quantize_model(m, 8, 8, per_channel=True, calibration_data=x)
    >>> rows = partings(q, to_tflite(q), x)
    >>> [(r["op"], r["layer"], r["n"]) for r in rows]
    [('input', 'image_fq', 1152), ('CONV_2D', 'conv', 768)]
    >>> all(r["isolated_differ"] <= 0.05 for r in rows)
    True
    """
    from . import integer
    from .tflite import quantize_input

    model = _check_quantized(quantized)
    x = np.asarray(x, np.float32)
    g = fb.graph(tflite_model)
    act = _activation_grids(model)
    sim_of = _sim_layers(model, act)
    im = integer.Model(tflite_model)
    xq = quantize_input(tflite_model, x)
    ints = im.run(xq, all_tensors=True, batch_size=batch_size)
    tensor_layer = {}
    for i in set(g.inputs) | {o for op in g.ops for o in op.outputs}:
        name = _layer_of(g.tensors[i].name)
        if name in act:
            tensor_layer[i] = name
    targets = sorted({sim_of[name].name for name in tensor_layer.values()})
    probe = keras.Model(model.inputs, [model.get_layer(t).output for t in targets])
    sim = probe.predict(x, batch_size=batch_size, verbose=0)
    sim = dict(zip(targets, sim if isinstance(sim, list) else [sim]))
    t_in = g.tensors[g.inputs[0]]
    x_int = ((xq.astype(np.float64) - t_in.zero_point[0]) * t_in.scale[0]).astype(np.float32) \
        if t_in.dtype == np.int8 else x
    same = probe.predict(x_int, batch_size=batch_size, verbose=0)
    same = dict(zip(targets, same if isinstance(same, list) else [same]))
    rows = []
    first = g.inputs[0]
    if g.tensors[first].dtype == np.int8:
        name = sim_of[tensor_layer[first]].name
        rows.append(_parting_row("input", name, _on_grid(sim[name], act[tensor_layer[first]]), xq, None,
                                 _on_grid(same[name], act[tensor_layer[first]]), None))
    for step in im.steps:
        out = step.outputs[0]
        if g.tensors[out].dtype != np.int8 or out not in tensor_layer:
            continue
        layer = tensor_layer[out]
        grid = act[layer]
        target = sim_of[layer]
        sources = {}
        for i in step.inputs:
            if i >= 0 and g.tensors[i].data is None and i in tensor_layer:
                src = sim_of[tensor_layer[i]]
                t = g.tensors[i]
                sources[src.name] = ((ints[i].astype(np.float64) - t.zero_point[0]) * t.scale[0]).astype(np.float32)
        isolated = _on_grid(_run_chain(model, target, sources), grid)
        e2e = _on_grid(sim[target.name], grid)
        same_input = _on_grid(same[target.name], grid)
        cases = None
        if step.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            src = [ints[i] for i in step.inputs if i >= 0 and g.tensors[i].data is None]
            p = step.params
            cases = integer.rounding_cases(step.accumulate(*src), p["multiplier"], p["shift"],
                                           int(g.tensors[out].zero_point[0]), p["activation_min"], p["activation_max"])
        base = [r for r in model.layers if r.name == layer]
        name = producers(base[0])[0].name if base and is_fusable_activation(base[0]) else layer
        rows.append(_parting_row(step.op, name, isolated, ints[out], e2e, same_input, cases))
    return rows


def _run_chain(model, target, sources: dict):
    """Run the Keras layers from ``sources`` (layer name -> value of its output) up to ``target``."""
    memo = dict(sources)

    def value(layer):
        if layer.name not in memo:
            args = [value(p) for p in producers(layer)]
            out = layer(args if len(args) > 1 else args[0])
            memo[layer.name] = np.asarray(out)
        return memo[layer.name]

    return value(target)


def _parting_row(op, layer, isolated, integer_values, end_to_end, same_input, cases) -> dict:
    iv = np.asarray(integer_values, np.int64)
    row = dict(op=op, layer=layer, n=int(iv.size))
    for key, values in (("isolated", isolated), ("end_to_end", end_to_end if end_to_end is not None else isolated),
                        ("same_input", same_input)):
        d = np.abs(np.asarray(values, np.int64) - iv)
        row[f"{key}_differ"], row[f"{key}_max"] = float(np.mean(d > 0)), int(d.max())
    for k in ("ties", "double_rounding", "clamped_min", "clamped_max"):
        row[k] = None if cases is None else cases[k] / max(cases["n"], 1)
    return row


def zoo(name: str, weight_bits: int = 8, per_channel: bool = True, activation_range: str = "minmax") -> Exported:
    """A Fashion-MNIST zoo model quantized the book's way and exported: :class:`Exported` with the
    simulated model in ``quantized`` (calibrated on one validation image per class, as the LPIRC
    winners did; ``activation_range`` names a setter of :data:`qlib.ranges.RANGE_SETTERS`).
    Cached per configuration for the session.

    Examples
    --------
    >>> e = zoo("v1_standard")
    >>> e.quantized.name, e.weight_bits, e.per_channel
    ('mobilenet_v1_0.5_standard_quantized', 8, True)
    """
    key = (name, int(weight_bits), bool(per_channel), activation_range)
    if key not in _ZOO:
        from .data import fashion_mnist_splits, one_per_class
        from .ranges import RANGE_SETTERS
        from .zoo import load_model

        s = fashion_mnist_splits()
        calib, _ = one_per_class(s["x_val"], s["y_val"])
        if activation_range not in RANGE_SETTERS:
            raise ValueError(f"activation_range must be one of {sorted(RANGE_SETTERS)}, got {activation_range!r}")
        q = Simulator(load_model(name), calib).quantize(weight_bits, 8, per_channel,
                                                        activation_range_setter=RANGE_SETTERS[activation_range],
                                                        setter_name=activation_range)
        e = export(q, weight_bits, per_channel)
        e.quantized = q
        _ZOO[key] = e
    return _ZOO[key]


_ZOO: dict = {}
