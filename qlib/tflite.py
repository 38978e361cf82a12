"""The real thing: full-integer TFLite conversion, the LiteRT runtime, and reading back what the
converter chose.

Conversion uses TensorFlow's ``tf.lite.TFLiteConverter``; models run in LiteRT
(``ai_edge_litert.interpreter.Interpreter``, PyPI ``ai-edge-litert``, pinned), the successor of
the deprecated ``tf.lite.Interpreter`` with the same API. Three kernel sets, chosen by name:

- ``"default"``: what an app gets, the optimized kernels with the XNNPACK delegate;
- ``"optimized"``: TFLite's own optimized kernels without any delegate (ruy, gemmlowp);
- ``"reference"``: the reference kernels (``BUILTIN_REF``), plain loops that define the integer
  arithmetic: the ground truth :mod:`qlib.integer` matches bit for bit.

:func:`quantize_input` turns float inputs into the int8 a model expects exactly as TFLite's
QUANTIZE kernel does; :func:`invoke` runs raw tensors through a kernel set (every intermediate
tensor too, with ``all_tensors=True``).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass

import numpy as np

from ._checks import check_array

__all__ = ["KERNELS", "convert_int8", "interpreter", "input_details", "quantize_input", "invoke",
           "TFLiteWeight", "weight_tensors"]

#: Kernel sets of :func:`interpreter`, by name: LiteRT ``OpResolverType`` members.
KERNELS = {"default": "AUTO", "optimized": "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "reference": "BUILTIN_REF"}


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


def convert_int8(model, calibration_data, int8_io: bool = True) -> bytes:
    """Convert a Keras model to a full-integer (int8 weights and activations) TFLite flatbuffer.

    Parameters
    ----------
    model : keras.Model
        A float model with a single input.
    calibration_data : array_like
        Inputs (batch first) the converter runs to set activation ranges; at least one sample.
    int8_io : bool
        Make the model's input and output int8 too (as on a phone); ``False`` keeps float I/O
        with quantize/dequantize ops at the edges.

    Returns
    -------
    bytes
        The ``.tflite`` model.

    Examples
    --------
    >>> import keras
    >>> inp = keras.Input((4, 4, 1))
    >>> m = keras.Model(inp, keras.layers.Conv2D(2, 3, name="c")(inp))
    >>> x = np.random.default_rng(0).normal(size=(8, 4, 4, 1)).astype("float32")
    >>> tfl = convert_int8(m, x)
    >>> tfl[4:8]
    b'TFL3'
    """
    tf = _tf()
    data = check_array(calibration_data, "calibration_data").astype(np.float32)
    if data.ndim < 2:
        raise ValueError(f"calibration_data must be a batch (samples first), got shape {data.shape}")

    def representative():
        for i in range(data.shape[0]):
            yield [data[i : i + 1]]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # Keras prints its export summary, TF warns about I/O stats
        return conv.convert()


def _litert():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ai_edge_litert import interpreter as litert

    return litert


def interpreter(tflite_model: bytes, preserve_all_tensors: bool = False, kernels: str = "default",
                num_threads: int | None = None, batch_size: int | None = None):
    """A ready (tensors allocated) LiteRT ``Interpreter`` for a flatbuffer.

    Parameters
    ----------
    tflite_model : bytes
        The ``.tflite`` model.
    preserve_all_tensors : bool
        Keep every intermediate tensor readable after ``invoke`` (tensors inside a delegate,
        e.g. XNNPACK's, are not).
    kernels : {"default", "optimized", "reference"}
        Which kernel set runs the ops (see the module docstring).
    num_threads : int, optional
        Threads for the CPU kernels (LiteRT's default when ``None``).
    batch_size : int, optional
        Resize every input's batch dimension before allocating.

    Examples
    --------
    >>> import keras
    >>> inp = keras.Input((2,))
    >>> tfl = convert_int8(keras.Model(inp, keras.layers.Dense(1)(inp)), np.ones((4, 2)))
    >>> interpreter(tfl).get_input_details()[0]["dtype"].__name__
    'int8'
    >>> interpreter(tfl, kernels="reference", batch_size=3).get_input_details()[0]["shape"].tolist()
    [3, 2]
    >>> interpreter(tfl, kernels="fast")
    Traceback (most recent call last):
    ...
    ValueError: kernels must be one of ['default', 'optimized', 'reference'], got 'fast'
    """
    if not isinstance(tflite_model, (bytes, bytearray)):
        raise TypeError(f"tflite_model must be the bytes of a .tflite file, got {type(tflite_model).__name__}")
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {sorted(KERNELS)}, got {kernels!r}")
    litert = _litert()
    resolver = getattr(litert.OpResolverType, KERNELS[kernels])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = litert.Interpreter(model_content=bytes(tflite_model), num_threads=num_threads,
                                experimental_op_resolver_type=resolver,
                                experimental_preserve_all_tensors=preserve_all_tensors)
    if batch_size is not None:
        for inp in it.get_input_details():
            it.resize_tensor_input(inp["index"], [int(batch_size)] + list(inp["shape"][1:]))
    it.allocate_tensors()
    return it


def input_details(tflite_model: bytes) -> dict:
    """The (first) input tensor's ``shape``, ``dtype``, ``scale`` and ``zero_point``.

    Examples
    --------
    >>> import keras
    >>> inp = keras.Input((2,))
    >>> d = input_details(convert_int8(keras.Model(inp, keras.layers.Dense(1)(inp)), np.ones((4, 2))))
    >>> d["dtype"].__name__, d["shape"]
    ('int8', (1, 2))
    """
    from . import flatbuffer

    g = flatbuffer.graph(tflite_model)
    t = g.tensors[g.inputs[0]]
    scale = float(t.scale[0]) if t.scale.size else 0.0
    zp = int(t.zero_point[0]) if t.zero_point.size else 0
    return {"shape": t.shape, "dtype": t.dtype, "scale": scale, "zero_point": zp}


def quantize_input(tflite_model: bytes, x) -> np.ndarray:
    """Float inputs as the model's int8 input tensor, rounded exactly like TFLite's QUANTIZE kernel.

    ``q = clamp(round(float32(x) / float32(scale)) + zero_point)``, with the division in float32
    and ``round`` half away from zero (``TfLiteRound``); a float-input model gets ``x`` back as
    float32.

    Examples
    --------
    >>> import keras
    >>> inp = keras.Input((2,))
    >>> tfl = convert_int8(keras.Model(inp, keras.layers.Dense(1)(inp)), np.array([[-1.0, 1.0]]))
    >>> d = input_details(tfl)
    >>> round(d["scale"] * 255, 6), d["zero_point"]          # the range [-1, 1]
    (2.0, -1)
    >>> quantize_input(tfl, [[-1.0, 0.5], [0.0, 1.0]]).tolist()  # float32(2/255) > 2/255: 1.0 -> 127.4999 -> 127
    [[-128, 63], [-1, 126]]
    """
    from .quantizers import round_half_away

    d = input_details(tflite_model)
    x = check_array(x, "x").astype(np.float32)
    if d["dtype"] == np.float32:
        return x
    info = np.iinfo(d["dtype"])
    q = round_half_away(x / np.float32(d["scale"])).astype(np.int64) + d["zero_point"]
    return np.clip(q, info.min, info.max).astype(d["dtype"])


def invoke(tflite_model: bytes, x, kernels: str = "default", batch_size: int = 500, all_tensors: bool = False,
           num_threads: int | None = None):
    """Run raw input tensors (e.g. int8) through a kernel set; the raw output tensor (e.g. int8).

    With ``all_tensors=True`` returns ``{tensor index: array}`` for every tensor the runtime
    computed (inputs, intermediates, outputs; not constants), batches concatenated: the
    reference to compare :mod:`qlib.integer` with, tensor by tensor. Use small ``x`` then.

    Examples
    --------
    >>> import keras
    >>> inp = keras.Input((2,))
    >>> tfl = convert_int8(keras.Model(inp, keras.layers.Dense(1)(inp)), np.array([[-1.0, 1.0]]))
    >>> x = quantize_input(tfl, np.zeros((3, 2)))
    >>> invoke(tfl, x, kernels="reference").shape
    (3, 1)
    >>> sorted(invoke(tfl, x, kernels="reference", all_tensors=True))   # the input and the output
    [0, 2]
    """
    from . import flatbuffer

    x = np.asarray(x)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch (samples first), got shape {x.shape}")
    d = input_details(tflite_model)
    if x.dtype != d["dtype"]:
        raise TypeError(f"x has dtype {x.dtype}, the model's input is {np.dtype(d['dtype']).name}; "
                        "convert float inputs with quantize_input(tflite_model, x)")
    computed = None
    if all_tensors:
        g = flatbuffer.graph(tflite_model)
        computed = sorted(set(g.inputs) | {i for op in g.ops for i in op.outputs})
    it, current = None, None
    outs = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        if current != xb.shape[0]:
            it = interpreter(tflite_model, preserve_all_tensors=all_tensors, kernels=kernels,
                             num_threads=num_threads, batch_size=xb.shape[0])
            current = xb.shape[0]
        it.set_tensor(it.get_input_details()[0]["index"], xb)
        it.invoke()
        if all_tensors:
            outs.append({i: np.array(it.get_tensor(i)) for i in computed})
        else:
            outs.append(np.array(it.get_tensor(it.get_output_details()[0]["index"])))
    if all_tensors:
        if len(outs) == 1:
            return outs[0]
        return {i: np.concatenate([o[i] for o in outs]) if outs[0][i].ndim else outs[0][i] for i in computed}
    return np.concatenate(outs)


@dataclass(frozen=True, eq=False)
class TFLiteWeight:
    """A per-channel quantized constant (a weight) of a TFLite model, as stored.

    ``values`` are the integers in TFLite's layout (Conv2D ``(O, kh, kw, I)``, depthwise
    ``(1, kh, kw, C*M)``); ``axis`` is TFLite's ``quantized_dimension``.
    """

    name: str
    values: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray
    axis: int

    def __repr__(self) -> str:
        return (f"TFLiteWeight({self.name!r}, shape={self.values.shape}, dtype={self.values.dtype}, "
                f"{self.scales.size} scales, axis={self.axis})")

    def to_keras_layout(self, kind: str, depth_multiplier: int = 1) -> np.ndarray:
        """The integers rearranged like the Keras kernel of a ``"conv2d"``, ``"depthwise"`` or ``"dense"``."""
        from .layers import from_tflite_layout

        if kind not in ("conv2d", "depthwise", "dense"):
            raise ValueError(f"kind must be 'conv2d', 'depthwise' or 'dense', got {kind!r}")
        return from_tflite_layout(kind, self.values, depth_multiplier)


def weight_tensors(tflite_model: bytes) -> list[TFLiteWeight]:
    """Every per-channel-quantized int8 constant in a TFLite model (its conv and dense weights).

    Examples
    --------
    >>> import keras
    >>> inp = keras.Input((4, 4, 1))
    >>> m = keras.Model(inp, keras.layers.Conv2D(2, 3)(inp))
    >>> [w.values.shape for w in weight_tensors(convert_int8(m, np.ones((2, 4, 4, 1))))]
    [(2, 3, 3, 1)]
    """
    from . import flatbuffer

    g = flatbuffer.graph(tflite_model)
    return [TFLiteWeight(t.name, np.array(t.data), t.scale, t.zero_point, t.axis) for t in g.tensors
            if t.dtype == np.int8 and t.data is not None and t.scale.size >= 1]
