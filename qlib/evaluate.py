"""Accuracy with a confidence interval, and fidelity to a float reference, for Keras and TFLite alike.

``evaluate(model, x, y)`` takes a Keras model, the bytes of a ``.tflite`` model, or a path to
one; a TFLite model runs in the real interpreter (int8 inputs quantized with the model's own
input scale and zero point, outputs dequantized).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._checks import check_array, check_batch, check_count
from .quantizers import round_half_away

__all__ = ["wilson_interval", "fidelity", "Evaluation", "predict", "evaluate"]


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (95% for ``z = 1.96``).

    Examples
    --------
    >>> [round(v, 4) for v in wilson_interval(9300, 10000)]
    [0.9248, 0.9348]
    """
    n = check_count(n, "n", 1)
    if isinstance(correct, bool) or not isinstance(correct, numbers.Integral):
        raise TypeError(f"correct must be an integer count, got {correct!r}")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in 0..n, got {correct} of {n}")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fidelity(logits, reference) -> dict:
    """How closely ``logits`` follow ``reference`` logits (the float model on the same inputs).

    Returns top-1 agreement, logit SQNR in dB (``10 log10(sum ref^2 / sum (ref - logits)^2)``)
    and the mean KL divergence ``KL(softmax(reference) || softmax(logits))`` in nats.

    Examples
    --------
    >>> ref = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    >>> f = fidelity(ref + 0.01, ref)
    >>> f["agreement"], round(f["sqnr_db"], 1), f["kl"] < 1e-6
    (1.0, 40.2, True)
    """
    a = check_array(logits, "logits").astype(np.float64)
    r = check_array(reference, "reference").astype(np.float64)
    if a.shape != r.shape or a.ndim != 2:
        raise ValueError(f"logits {a.shape} and reference {r.shape} must be the same (N, classes) shape")
    noise = np.sum((r - a) ** 2)
    sqnr = float("inf") if noise == 0 else float(10 * np.log10(np.sum(r ** 2) / noise))
    p, q = _softmax(r), _softmax(a)
    kl = float(np.mean(np.sum(p * (np.log(p + 1e-30) - np.log(q + 1e-30)), axis=1)))
    return {"agreement": float(np.mean(a.argmax(1) == r.argmax(1))), "sqnr_db": sqnr, "kl": max(kl, 0.0)}


@dataclass(frozen=True)
class Evaluation:
    """Top-1 accuracy with its 95% Wilson interval, and fidelity to a reference when given."""

    accuracy: float
    ci_low: float
    ci_high: float
    n: int
    agreement: float | None = None
    sqnr_db: float | None = None
    kl: float | None = None

    def __repr__(self) -> str:
        s = f"Evaluation(top-1 {self.accuracy:.2%} [{self.ci_low:.2%}, {self.ci_high:.2%}], n={self.n}"
        if self.agreement is not None:
            s += f", agreement {self.agreement:.2%}, SQNR {self.sqnr_db:.1f} dB, KL {self.kl:.2e}"
        return s + ")"

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def predict(model, x, batch_size: int = 500) -> np.ndarray:
    """Logits of a Keras model or a TFLite model (bytes or path) on inputs ``x``.

    Examples
    --------
    >>> import keras
    >>> inp = keras.Input((3,))
    >>> m = keras.Model(inp, keras.layers.Dense(2, kernel_initializer="ones")(inp))
    >>> predict(m, np.ones((4, 3))).tolist()[0]
    [3.0, 3.0]
    """
    x = check_array(x, "x").astype(np.float32)
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"no TFLite model at {path}")
        model = path.read_bytes()
    if isinstance(model, (bytes, bytearray)):
        return _predict_tflite(bytes(model), x, batch_size)
    if not hasattr(model, "predict"):
        raise TypeError(f"model must be a keras.Model, TFLite bytes or a .tflite path, got {type(model).__name__}")
    if getattr(model, "inputs", None) and len(model.inputs) == 1:
        x = check_batch(x, model.input.shape[1:], "x")
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), np.float32)


def _predict_tflite(tflite_model: bytes, x: np.ndarray, batch_size: int) -> np.ndarray:
    from .tflite import interpreter

    it = interpreter(tflite_model)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    check_batch(x, [None if d < 0 else int(d) for d in inp.get("shape_signature", inp["shape"])[1:]], "x")
    results, current = [], None
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        if current != xb.shape[0]:
            it.resize_tensor_input(inp["index"], list(xb.shape))
            it.allocate_tensors()
            current = xb.shape[0]
            inp, out = it.get_input_details()[0], it.get_output_details()[0]
        if inp["dtype"] != np.float32:
            scale, zp = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            # TFLite's QUANTIZE rounds half away from zero (numpy's round goes to even)
            xb = np.clip(round_half_away(xb / scale) + zp, info.min, info.max).astype(inp["dtype"])
        it.set_tensor(inp["index"], xb)
        it.invoke()
        y = it.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zp = out["quantization"]
            y = (y.astype(np.float32) - zp) * scale
        results.append(np.array(y, np.float32))
    return np.concatenate(results)


def evaluate(model, x, y, reference=None, batch_size: int = 500) -> Evaluation:
    """Top-1 accuracy (95% CI) of ``model`` on ``(x, y)``; with ``reference`` (float logits on the
    same ``x``, or a float model), fidelity to it as well.

    Examples
    --------
    >>> import keras
    >>> inp = keras.Input((2,))
    >>> m = keras.Model(inp, keras.layers.Dense(2, kernel_initializer="identity")(inp))
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.5]])
    >>> evaluate(m, x, np.array([0, 1, 1]))
    Evaluation(top-1 66.67% [20.77%, 93.85%], n=3)
    """
    y = np.asarray(y)
    x = check_array(x, "x")
    if x.shape[0] == 0:
        raise ValueError("x is empty: evaluate needs at least one example")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must hold one label per example: x has {x.shape[0]}, y has shape {y.shape}")
    logits = predict(model, x, batch_size)
    correct = int(np.sum(logits.argmax(1) == y))
    lo, hi = wilson_interval(correct, y.size)
    extra = {}
    if reference is not None:
        ref = reference if isinstance(reference, np.ndarray) else predict(reference, x, batch_size)
        extra = fidelity(logits, ref)
    return Evaluation(correct / y.size, lo, hi, int(y.size), **extra)
