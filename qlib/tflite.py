"""The real thing: full-integer TFLite conversion, and reading back what the converter chose.

These helpers wrap ``tf.lite.TFLiteConverter`` and ``tf.lite.Interpreter`` so the book can put
qlib's simulation next to the int8 kernels that run on a phone.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass

import numpy as np

from ._checks import check_array

__all__ = ["convert_int8", "interpreter", "TFLiteWeight", "weight_tensors"]


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


def interpreter(tflite_model: bytes, preserve_all_tensors: bool = False):
    """A ready (tensors allocated) ``tf.lite.Interpreter`` for a flatbuffer.

    Examples
    --------
    >>> import keras
    >>> inp = keras.Input((2,))
    >>> tfl = convert_int8(keras.Model(inp, keras.layers.Dense(1)(inp)), np.ones((4, 2)))
    >>> interpreter(tfl).get_input_details()[0]["dtype"].__name__
    'int8'
    """
    tf = _tf()
    if not isinstance(tflite_model, (bytes, bytearray)):
        raise TypeError(f"tflite_model must be the bytes of a .tflite file, got {type(tflite_model).__name__}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = tf.lite.Interpreter(model_content=bytes(tflite_model),
                                 experimental_preserve_all_tensors=preserve_all_tensors)
    it.allocate_tensors()
    return it


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
        v = self.values
        if kind == "conv2d":  # (O, kh, kw, I) -> (kh, kw, I, O)
            return np.transpose(v, (1, 2, 3, 0))
        if kind == "depthwise":  # (1, kh, kw, C*M) -> (kh, kw, C, M)
            _, kh, kw, cm = v.shape
            return v.reshape(kh, kw, cm // depth_multiplier, depth_multiplier)
        if kind == "dense":  # (O, I) -> (I, O)
            return v.T
        raise ValueError(f"kind must be 'conv2d', 'depthwise' or 'dense', got {kind!r}")


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
    it = interpreter(tflite_model, preserve_all_tensors=True)
    produced = {int(i) for op in it._get_ops_details() for i in op["outputs"]}
    produced |= {d["index"] for d in it.get_input_details()}
    out = []
    for d in it.get_tensor_details():
        q = d["quantization_parameters"]
        if d["dtype"] == np.int8 and d["index"] not in produced and len(q["scales"]) >= 1:
            out.append(TFLiteWeight(d["name"], np.array(it.get_tensor(d["index"])),
                                    np.asarray(q["scales"]), np.asarray(q["zero_points"]),
                                    int(q["quantized_dimension"])))
    return out
