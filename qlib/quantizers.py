"""Uniform affine quantization, as TensorFlow Lite does it.

A real number ``x`` is stored as an integer ``q`` with a ``scale`` (the step size) and a
``zero_point`` (the integer that stands for real 0)::

    q = clamp(round(x / scale) + zero_point, qmin, qmax)      # quantize
    x_hat = (q - zero_point) * scale                           # dequantize

``round`` is round-half-away-from-zero (C's ``std::round``, which the TFLite kernels and
converter use), not numpy's round-half-to-even. Integers are signed, as in TFLite's int8:
``qmin = -2**(num_bits-1)`` (``+1`` with ``narrow_range``) and ``qmax = 2**(num_bits-1) - 1``.

Per-channel quantization gives every slice along ``axis`` its own scale and zero point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import check_array, check_axis, check_min_max, check_num_bits

__all__ = ["TFLITE_MIN_RANGE", "round_half_away", "integer_range", "QuantParams", "compute_params",
           "tensor_min_max", "fit_params", "quantize", "dequantize", "fake_quant"]

#: TFLite's converter widens a range narrower than this to this width (centred), so that an
#: all-zero or nearly-zero channel never gets a zero or denormal scale.
TFLITE_MIN_RANGE = 1e-6


def round_half_away(x: np.ndarray) -> np.ndarray:
    """Round to the nearest integer, ties away from zero (like C ``std::round``).

    Parameters
    ----------
    x : array_like
        Values to round.

    Returns
    -------
    numpy.ndarray
        Rounded values, same dtype as ``x`` (float).

    Examples
    --------
    >>> round_half_away([0.5, 1.5, 2.5, -0.5, -2.5, 0.49999999999999994])
    array([ 1.,  2.,  3., -1., -3.,  0.])
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    whole = np.trunc(x)
    frac = x - whole  # exact in floating point
    return whole + np.where(np.abs(frac) >= 0.5, np.sign(x), 0.0).astype(x.dtype)


def integer_range(num_bits: int = 8, narrow_range: bool = False) -> tuple[int, int]:
    """Signed integer limits ``(qmin, qmax)`` for ``num_bits``.

    Examples
    --------
    >>> integer_range(8)
    (-128, 127)
    >>> integer_range(8, narrow_range=True)
    (-127, 127)
    >>> integer_range(4)
    (-8, 7)
    """
    num_bits = check_num_bits(num_bits)
    qmax = 2 ** (num_bits - 1) - 1
    qmin = -(2 ** (num_bits - 1)) + (1 if narrow_range else 0)
    return qmin, qmax


@dataclass(frozen=True, eq=False)
class QuantParams:
    """Scale and zero point of a quantizer, per tensor (``axis=None``) or per channel.

    Build one with :func:`compute_params` (from a range) or :func:`fit_params` (from a tensor).

    Attributes
    ----------
    scale : numpy.ndarray
        Step size(s), float64, shape ``()`` per tensor or ``(channels,)`` per channel.
    zero_point : numpy.ndarray
        Integer(s) that represent real 0, int64, same shape as ``scale``.
    num_bits, symmetric, narrow_range, axis
        How the quantizer was built.

    Examples
    --------
    >>> p = compute_params(-1.0, 1.0, num_bits=8, symmetric=True, narrow_range=True)
    >>> p
    QuantParams(num_bits=8, symmetric=True, narrow_range=True, per tensor, scale=0.007874, zero_point=0)
    >>> p.quantize([0.5, -2.0]).tolist()
    [64, -127]
    """

    scale: np.ndarray
    zero_point: np.ndarray
    num_bits: int
    symmetric: bool
    narrow_range: bool
    axis: int | None = None

    @property
    def qmin(self) -> int:
        return integer_range(self.num_bits, self.narrow_range)[0]

    @property
    def qmax(self) -> int:
        return integer_range(self.num_bits, self.narrow_range)[1]

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    @property
    def range(self) -> tuple[np.ndarray, np.ndarray]:
        """The representable real range ``((qmin - zp) * scale, (qmax - zp) * scale)``."""
        return (self.qmin - self.zero_point) * self.scale, (self.qmax - self.zero_point) * self.scale

    def __repr__(self) -> str:
        if self.per_channel:
            where = f"axis={self.axis}, {self.scale.size} channels"
            vals = (
                f"scale in [{self.scale.min():.4g}, {self.scale.max():.4g}], "
                f"zero_point in [{self.zero_point.min()}, {self.zero_point.max()}]"
            )
        else:
            where = "per tensor"
            vals = f"scale={float(self.scale):.4g}, zero_point={int(self.zero_point)}"
        return (
            f"QuantParams(num_bits={self.num_bits}, symmetric={self.symmetric}, "
            f"narrow_range={self.narrow_range}, {where}, {vals})"
        )

    def _broadcast(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.per_channel:
            return self.scale, self.zero_point
        if x.ndim <= self.axis or x.shape[self.axis] != self.scale.size:
            raise ValueError(
                f"per-channel params have {self.scale.size} channels on axis {self.axis}, "
                f"but the tensor has shape {x.shape}; fit params on a tensor of this shape"
            )
        shape = [1] * x.ndim
        shape[self.axis] = self.scale.size
        return self.scale.reshape(shape), self.zero_point.reshape(shape)

    def quantize(self, x) -> np.ndarray:
        """Real values to integers (int64), clamped to ``[qmin, qmax]``."""
        x = check_array(x, "x").astype(np.float64)
        scale, zp = self._broadcast(x)
        q = round_half_away(x / scale) + zp
        return np.clip(q, self.qmin, self.qmax).astype(np.int64)

    def dequantize(self, q) -> np.ndarray:
        """Integers back to real values (float64)."""
        q = np.asarray(q)
        if not np.issubdtype(q.dtype, np.integer):
            raise TypeError(f"q must be an integer array (from quantize), got dtype {q.dtype}")
        scale, zp = self._broadcast(q)
        return (q.astype(np.float64) - zp) * scale

    def fake_quant(self, x) -> np.ndarray:
        """Quantize then dequantize: the real value the integer hardware will see."""
        x = check_array(x, "x")
        return self.dequantize(self.quantize(x)).astype(x.dtype)


def compute_params(
    min_val,
    max_val,
    num_bits: int = 8,
    symmetric: bool = False,
    narrow_range: bool = False,
    axis: int | None = None,
    min_range: float = TFLITE_MIN_RANGE,
) -> QuantParams:
    """Scale and zero point that cover the real range ``[min_val, max_val]``.

    Asymmetric: the range is first stretched to include 0, then
    ``scale = (max - min) / (qmax - qmin)`` and ``zero_point = round(qmin - min / scale)``,
    clamped to ``[qmin, qmax]``: real 0 is exactly representable.
    Symmetric: ``zero_point = 0`` and ``scale = max(|min|, |max|) / qmax``.

    A range narrower than ``min_range`` is widened to ``min_range`` about its centre, as
    TFLite's converter does; so an all-zero channel gets a small positive scale and quantizes
    to exact zeros instead of dividing by zero. ``min_range=0`` keeps tiny ranges as they are
    (a range of exactly zero then gets ``scale = 1``).

    Parameters
    ----------
    min_val, max_val : float or array_like
        Range bounds; arrays of shape ``(channels,)`` for per-channel params.
    num_bits : int
        Bit width, 2..16.
    symmetric : bool
        Zero point fixed at 0.
    narrow_range : bool
        Drop the most negative integer (int8: -127..127), as TFLite weights do.
    axis : int or None
        The channel axis of the tensors these params will quantize (``None``: per tensor).
    min_range : float
        Smallest range width, see above.

    Returns
    -------
    QuantParams

    Examples
    --------
    >>> p = compute_params(-0.5, 1.5, num_bits=8)
    >>> float(p.scale), int(p.zero_point)
    (0.00784313725490196, -64)
    >>> p.fake_quant([0.0, 1.0]).tolist()   # 0 is exact
    [0.0, 1.003921568627451]
    >>> compute_params([0.0, -1.0], [0.0, 2.0], symmetric=True, narrow_range=True, axis=-1)
    QuantParams(num_bits=8, symmetric=True, narrow_range=True, axis=-1, 2 channels, scale in [3.937e-09, 0.01575], zero_point in [0, 0])
    """
    num_bits = check_num_bits(num_bits)
    lo, hi = check_min_max(min_val, max_val)
    if axis is None and lo.ndim != 0:
        raise ValueError(
            f"min_val/max_val have shape {lo.shape} but axis=None (per tensor); "
            "pass scalars, or set axis to the channel axis for per-channel params"
        )
    if axis is not None:
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"axis must be an int or None, got {axis!r}")
        lo, hi = np.atleast_1d(lo), np.atleast_1d(hi)
        if lo.ndim != 1:
            raise ValueError(f"per-channel min_val/max_val must be 1-D, got shape {lo.shape}")
    if not np.isfinite(min_range) or min_range < 0:
        raise ValueError(f"min_range must be a finite number >= 0, got {min_range!r}")
    qmin, qmax = integer_range(num_bits, narrow_range)

    if symmetric:
        half = np.maximum(np.abs(lo), np.abs(hi))
        half = np.maximum(half, min_range / 2)
        scale = half / qmax
        zero_point = np.zeros_like(scale, dtype=np.int64)
    else:
        lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
        width = hi - lo
        narrow = width < min_range
        centre = (lo + hi) / 2
        lo = np.where(narrow, np.minimum(centre - min_range / 2, 0.0), lo)
        hi = np.where(narrow, np.maximum(centre + min_range / 2, 0.0), hi)
        scale = (hi - lo) / (qmax - qmin)
        safe = np.where(scale > 0, scale, 1.0)
        zero_point = np.clip(round_half_away(qmin - lo / safe), qmin, qmax).astype(np.int64)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float64)
    return QuantParams(scale, np.asarray(zero_point, np.int64), num_bits, bool(symmetric),
                       bool(narrow_range), axis)


def tensor_min_max(x, axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of ``x``, over everything (``axis=None``) or per slice along ``axis``.

    Examples
    --------
    >>> lo, hi = tensor_min_max([[1.0, -2.0], [3.0, 0.5]], axis=1)
    >>> lo.tolist(), hi.tolist()
    ([1.0, -2.0], [3.0, 0.5])
    """
    x = check_array(x, "x")
    ax = check_axis(axis, x.ndim)
    if ax is None:
        return np.asarray(x.min(), np.float64), np.asarray(x.max(), np.float64)
    other = tuple(i for i in range(x.ndim) if i != ax)
    return x.min(axis=other).astype(np.float64), x.max(axis=other).astype(np.float64)


def fit_params(
    x,
    num_bits: int = 8,
    symmetric: bool = False,
    narrow_range: bool = False,
    axis: int | None = None,
    range_setter=None,
    min_range: float = TFLITE_MIN_RANGE,
) -> QuantParams:
    """Quantization params for tensor ``x``, its range found by ``range_setter`` (min-max by default).

    Parameters
    ----------
    x : array_like
        The tensor (weights or a batch of activations).
    num_bits, symmetric, narrow_range, min_range
        As in :func:`compute_params`.
    axis : int or None
        Channel axis for per-channel params, ``None`` for per tensor.
    range_setter : callable, optional
        ``range_setter(x, axis=..., num_bits=..., symmetric=...) -> (min, max)``; one of
        :mod:`qlib.ranges`. Default: plain min-max.

    Examples
    --------
    Per-channel int8 weights the way TFLite stores a Conv2D kernel (output channels last):

    >>> w = np.array([[0.1, -2.0], [0.03, 1.0]])          # 2 inputs x 2 output channels
    >>> p = fit_params(w, symmetric=True, narrow_range=True, axis=-1)
    >>> p.quantize(w).tolist()
    [[127, -127], [38, 64]]
    """
    x = check_array(x, "x")
    ax = check_axis(axis, x.ndim)
    if range_setter is None:
        lo, hi = tensor_min_max(x, ax)
    else:
        lo, hi = range_setter(x, axis=ax, num_bits=num_bits, symmetric=symmetric)
    return compute_params(lo, hi, num_bits, symmetric, narrow_range, ax, min_range)


def quantize(x, params: QuantParams) -> np.ndarray:
    """Integers for ``x`` under ``params`` (see :meth:`QuantParams.quantize`).

    Examples
    --------
    >>> quantize([0.25, 9.0], compute_params(0.0, 1.0)).tolist()
    [-64, 127]
    """
    return _check_params(params).quantize(x)


def dequantize(q, params: QuantParams) -> np.ndarray:
    """Real values for integers ``q`` under ``params``.

    Examples
    --------
    >>> dequantize(np.array([-128, 127]), compute_params(0.0, 1.0)).tolist()
    [0.0, 1.0]
    """
    return _check_params(params).dequantize(q)


def fake_quant(x, params: QuantParams) -> np.ndarray:
    """Quantize-dequantize ``x`` under ``params``.

    Examples
    --------
    >>> fake_quant([0.3, 0.7], compute_params(0.0, 1.0, num_bits=2)).tolist()
    [0.3333333333333333, 0.6666666666666666]
    """
    return _check_params(params).fake_quant(x)


def _check_params(params) -> QuantParams:
    if not isinstance(params, QuantParams):
        raise TypeError(
            f"params must be a QuantParams (from compute_params or fit_params), got {type(params).__name__}"
        )
    return params
