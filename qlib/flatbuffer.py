"""Read and write ``.tflite`` files through the generated flatbuffer schema module.

A ``.tflite`` file is a flatbuffer of the TFLite schema (``schema.fbs``). LiteRT ships the
generated Python module for it (``ai_edge_litert/schema_py_generated.py``; TensorFlow ships the
same one as ``tensorflow.lite.python.schema_py_generated``), with an object API:
``ModelT.InitFromPackedBuf`` unpacks a whole model into plain Python objects (tensors, buffers,
operators with their options), and ``ModelT.Pack`` writes one back. Nothing here parses bytes by
hand.

:func:`read` unpacks a model (checking that it is one and that it is complete), :func:`graph`
gives a numpy view of its main subgraph (:class:`Tensor` and :class:`Op` records), and
:func:`write` packs an edited ``ModelT`` into bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

__all__ = ["schema", "read", "write", "Tensor", "Op", "Graph", "graph", "op_name", "unpack_int4", "single_op",
           "TENSOR_DTYPES",
           "INT4"]

#: numpy dtypes of the TFLite tensor types qlib reads (schema ``TensorType``).
INT4 = 17
TENSOR_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_,
                 7: np.int16, 9: np.int8, 10: np.float64, 12: np.uint64, 15: np.uint32, 16: np.uint16}


def schema():
    """The generated TFLite schema module (LiteRT's, else TensorFlow's copy of the same file).

    Examples
    --------
    >>> schema().TensorType.INT8
    9
    """
    try:
        from ai_edge_litert import schema_py_generated as s
    except ImportError:  # pragma: no cover - LiteRT is pinned in requirements.txt
        from tensorflow.lite.python import schema_py_generated as s
    return s


def _check_bytes(tflite_model) -> bytes:
    if not isinstance(tflite_model, (bytes, bytearray, memoryview)):
        raise TypeError(f"tflite_model must be the bytes of a .tflite file, got {type(tflite_model).__name__}; "
                        "read a file with pathlib.Path(path).read_bytes()")
    return bytes(tflite_model)


def read(tflite_model: bytes):
    """Unpack a ``.tflite`` model into the schema's object API (a ``ModelT``).

    Raises a ``ValueError`` saying what is wrong when the bytes are not a TFLite model or are
    cut short (a truncated download, a partial copy).

    Examples
    --------
    >>> read(b"not a model")
    Traceback (most recent call last):
    ...
    ValueError: not a TFLite model: 11 bytes without the 'TFL3' file identifier at bytes 4..8
    """
    buf = _check_bytes(tflite_model)
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError(f"not a TFLite model: {len(buf)} bytes without the 'TFL3' file identifier at bytes 4..8")
    root = struct.unpack_from("<I", buf, 0)[0]
    if root + 4 > len(buf):
        raise ValueError(f"truncated or corrupted .tflite: its root table is at byte {root} but the file has "
                         f"{len(buf)} bytes; re-export or re-copy the file")
    s = schema()
    try:
        model = s.ModelT.InitFromPackedBuf(buf, 0)
    except (IndexError, struct.error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"truncated or corrupted .tflite ({len(buf)} bytes): the flatbuffer cannot be read "
                         f"({type(exc).__name__}: {exc}); re-export or re-copy the file") from exc
    if not model.subgraphs:
        raise ValueError("the .tflite model has no subgraph")
    for i, b in enumerate(model.buffers or []):
        if b.offset and b.offset > 1:  # large models keep buffers after the flatbuffer
            if b.offset + b.size > len(buf):
                raise ValueError(f"truncated .tflite: buffer {i} ends at byte {b.offset + b.size}, the file has "
                                 f"{len(buf)} bytes; re-export or re-copy the file")
            b.data = np.frombuffer(buf, np.uint8, b.size, b.offset)
    _check_buffers(model)
    return model


def _need_bytes(t) -> int | None:
    n = int(np.prod(t.shape if t.shape is not None else []))
    if t.type == INT4:
        return (n + 1) // 2
    return n * np.dtype(TENSOR_DTYPES[t.type]).itemsize if t.type in TENSOR_DTYPES else None


def unpack_int4(packed, shape) -> np.ndarray:
    """Signed 4-bit values packed two per byte (low nibble first, as TFLite stores INT4) as int8.

    Examples
    --------
    >>> unpack_int4(np.array([0x7F, 0x08], np.uint8), (3,)).tolist()
    [-1, 7, -8]
    """
    b = np.asarray(packed, np.uint8)
    nibbles = np.stack([b & 0x0F, b >> 4], axis=-1).reshape(-1).astype(np.int8)
    nibbles = np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)
    n = int(np.prod(shape))
    return nibbles[:n].reshape(shape)


def _check_buffers(model) -> None:
    s = model.subgraphs[0]
    for t in s.tensors:
        data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
        need = _need_bytes(t)
        if data is None or len(data) == 0 or need is None:
            continue
        if len(data) != need:
            raise ValueError(f"truncated or corrupted .tflite: tensor {_name(t)!r} needs {need} bytes of data, its "
                             f"buffer holds {len(data)}; re-export or re-copy the file")


def write(model) -> bytes:
    """Pack a ``ModelT`` (from :func:`read`, possibly edited) into ``.tflite`` bytes.

    Examples
    --------
    >>> import keras
    >>> from qlib.tflite import convert_int8
    >>> inp = keras.Input((2,))
    >>> tfl = convert_int8(keras.Model(inp, keras.layers.Dense(1)(inp)), np.ones((4, 2)))
    >>> write(read(tfl))[4:8]
    b'TFL3'
    """
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _name(t) -> str:
    n = t.name
    return n.decode() if isinstance(n, bytes) else (n or "")


def op_name(model, opcode_index: int) -> str:
    """The builtin operator name (``"CONV_2D"``, ...) of an operator code, or ``"CUSTOM:<code>"``.

    Examples
    --------
    >>> import keras
    >>> from qlib.tflite import convert_int8
    >>> inp = keras.Input((2,))
    >>> m = read(convert_int8(keras.Model(inp, keras.layers.Dense(1)(inp)), np.ones((4, 2))))
    >>> op_name(m, m.subgraphs[0].operators[0].opcodeIndex)
    'FULLY_CONNECTED'
    """
    code = model.operatorCodes[opcode_index]
    value = max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
    names = {v: k for k, v in vars(schema().BuiltinOperator).items() if not k.startswith("_")}
    if names.get(value) == "CUSTOM":
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
        return f"CUSTOM:{custom}"
    return names.get(value, f"UNKNOWN_{value}")


@dataclass(eq=False)
class Tensor:
    """One tensor of a TFLite subgraph: name, shape, numpy dtype, quantization, and data if constant.

    ``scale``/``zero_point`` are arrays (one entry per tensor, or one per channel along ``axis``);
    empty when the tensor is not quantized. ``type`` is the schema's ``TensorType`` (INT4
    constants are unpacked to int8 ``data``).
    """

    index: int
    name: str
    shape: tuple
    dtype: type
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int
    data: np.ndarray | None = None
    type: int = 0

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    def __repr__(self) -> str:
        q = ""
        if self.scale.size == 1:
            q = f", scale={float(self.scale[0]):.6g}, zero_point={int(self.zero_point[0])}"
        elif self.scale.size > 1:
            q = f", {self.scale.size} scales on axis {self.axis}"
        const = ", constant" if self.data is not None else ""
        dtype = "int4" if self.type == INT4 else np.dtype(self.dtype).name
        return f"Tensor({self.index}: {self.name!r}, {dtype}{list(self.shape)}{q}{const})"


@dataclass(eq=False)
class Op:
    """One operator: its builtin name, input and output tensor indices (``-1``: absent), options object."""

    index: int
    name: str
    inputs: list
    outputs: list
    options: object = None
    version: int = 1

    def __repr__(self) -> str:
        return f"Op({self.index}: {self.name}, inputs={self.inputs}, outputs={self.outputs})"


@dataclass(eq=False)
class Graph:
    """The main subgraph of a model: tensors, operators in execution order, graph inputs and outputs."""

    tensors: list
    ops: list
    inputs: list
    outputs: list
    model: object = field(default=None, repr=False)

    def __repr__(self) -> str:
        kinds = {}
        for op in self.ops:
            kinds[op.name] = kinds.get(op.name, 0) + 1
        ops = ", ".join(f"{k} x{v}" for k, v in kinds.items())
        return f"Graph({len(self.tensors)} tensors, {len(self.ops)} ops: {ops})"

    def tensor(self, name: str) -> Tensor:
        """The tensor called ``name`` (a ``KeyError`` listing close names otherwise)."""
        for t in self.tensors:
            if t.name == name:
                return t
        close = [t.name for t in self.tensors if name.split("/")[0] in t.name][:5]
        raise KeyError(f"no tensor named {name!r}; similar: {close}")

    def producer(self, tensor_index: int):
        """The op whose output is tensor ``tensor_index`` (``None`` for inputs and constants)."""
        for op in self.ops:
            if tensor_index in op.outputs:
                return op
        return None


def graph(tflite_model) -> Graph:
    """A numpy view of a model's main subgraph (``tflite_model``: bytes, or a ``ModelT`` from :func:`read`).

    Examples
    --------
    >>> import keras
    >>> from qlib.tflite import convert_int8
    >>> inp = keras.Input((4, 4, 1))
    >>> m = keras.Model(inp, keras.layers.Conv2D(2, 3, name="c")(inp))
    >>> g = graph(convert_int8(m, np.ones((2, 4, 4, 1))))
    >>> g
    Graph(4 tensors, 1 ops: CONV_2D x1)
    >>> w = g.tensors[g.ops[0].inputs[1]]                 # CONV_2D inputs: x, weights, bias
    >>> w.dtype.__name__, w.data.shape, w.scale.size
    ('int8', (2, 3, 3, 1), 2)
    """
    model = tflite_model if hasattr(tflite_model, "subgraphs") else read(tflite_model)
    sub = model.subgraphs[0]
    tensors = []
    for i, t in enumerate(sub.tensors):
        q = t.quantization
        scale = np.asarray(q.scale if q is not None and q.scale is not None else [], np.float32)
        zp = np.asarray(q.zeroPoint if q is not None and q.zeroPoint is not None else [], np.int64)
        axis = int(q.quantizedDimension) if q is not None else 0
        dtype = TENSOR_DTYPES.get(t.type, np.int8 if t.type == INT4 else None)
        if dtype is None:
            names = {v: k for k, v in vars(schema().TensorType).items() if not k.startswith("_")}
            dtype = names.get(t.type, str(t.type))
        data = None
        buf = model.buffers[t.buffer] if 0 < t.buffer < len(model.buffers) else None
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
        if buf is not None and buf.data is not None and len(buf.data) and isinstance(dtype, type):
            raw = np.asarray(buf.data, np.uint8)
            data = unpack_int4(raw, shape) if t.type == INT4 else np.frombuffer(raw.tobytes(), dtype).reshape(shape)
        tensors.append(Tensor(i, _name(t), shape, dtype, scale, zp, axis, data, int(t.type)))
    ops = []
    for i, o in enumerate(sub.operators or []):
        version = model.operatorCodes[o.opcodeIndex].version or 1
        ops.append(Op(i, op_name(model, o.opcodeIndex), [int(v) for v in (o.inputs if o.inputs is not None else [])],
                      [int(v) for v in (o.outputs if o.outputs is not None else [])], o.builtinOptions, int(version)))
    return Graph(tensors, ops, [int(v) for v in sub.inputs], [int(v) for v in sub.outputs], model)


def single_op(tflite_model: bytes, op_index: int) -> bytes:
    """A model of one operator of ``tflite_model``: its non-constant inputs become the model's
    inputs, its output the model's output; constants (weights, biases) and quantization are kept.

    Runs one layer of a real network on any kernel set, fed with the int8 tensor the network
    computed before it.

    Examples
    --------
    >>> import keras
    >>> from qlib.tflite import convert_int8
    >>> inp = keras.Input((4,))
    >>> m = keras.Model(inp, keras.layers.Dense(2, name="b")(keras.layers.Dense(3, name="a")(inp)))
    >>> one = single_op(convert_int8(m, np.ones((2, 4))), 1)
    >>> g = graph(one)
    >>> g.ops, g.tensors[g.inputs[0]].shape
    ([Op(0: FULLY_CONNECTED, inputs=[0, 1, 2], outputs=[3])], (1, 3))
    """
    s = schema()
    model = read(tflite_model)
    sub = model.subgraphs[0]
    if not 0 <= op_index < len(sub.operators):
        raise ValueError(f"op_index must be in 0..{len(sub.operators) - 1}, got {op_index}")
    op = sub.operators[op_index]
    used = [int(i) for i in list(op.inputs) + list(op.outputs) if i >= 0]
    new_index = {old: new for new, old in enumerate(dict.fromkeys(used))}
    tensors = [sub.tensors[old] for old in new_index]
    const = {old for old in new_index if 0 < sub.tensors[old].buffer < len(model.buffers)
             and model.buffers[sub.tensors[old].buffer].data is not None
             and len(model.buffers[sub.tensors[old].buffer].data)}
    op.inputs = [new_index[int(i)] if i >= 0 else -1 for i in op.inputs]
    op.outputs = [new_index[int(i)] for i in op.outputs]
    sub.tensors = tensors
    sub.operators = [op]
    sub.inputs = [new_index[int(i)] for i in graph(tflite_model).ops[op_index].inputs if i >= 0 and i not in const]
    sub.outputs = list(op.outputs)
    model.subgraphs = [sub]
    model.signatureDefs = None
    if model.metadata is not None:
        model.metadata = [m for m in model.metadata if m.name in (b"min_runtime_version", "min_runtime_version")]
    del s
    return write(model)
