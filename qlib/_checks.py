"""Argument checks shared by qlib modules.

Every public function validates what it is given and raises a ``ValueError`` or ``TypeError``
that names the argument, says what was wrong and what to do instead.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_num_bits", "check_array", "check_axis", "check_min_max", "check_batch", "check_count"]

MIN_BITS, MAX_BITS = 2, 16


def check_num_bits(num_bits, name: str = "num_bits") -> int:
    """Return ``num_bits`` as an int, or raise if it is not an integer in 2..16."""
    if isinstance(num_bits, bool) or not isinstance(num_bits, numbers.Integral):
        raise TypeError(f"{name} must be an integer in {MIN_BITS}..{MAX_BITS}, got {num_bits!r}")
    if not MIN_BITS <= int(num_bits) <= MAX_BITS:
        raise ValueError(
            f"{name} must be in {MIN_BITS}..{MAX_BITS}, got {num_bits}; "
            "use 8 for int8 (TFLite) or 16 for int16 activations"
        )
    return int(num_bits)


def check_array(x, name: str = "x", allow_empty: bool = False) -> np.ndarray:
    """Return ``x`` as a float array, or raise if it is not numeric, is empty, or holds NaN/inf."""
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be a numeric array, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - numpy raises many types here
        raise TypeError(f"{name} must be a numeric array: {exc}") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
                                   or arr.dtype == bool):
        raise TypeError(f"{name} must be a real numeric array (integers or floats), got dtype {arr.dtype}")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} is empty; pass at least one value")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"{name} contains {bad} NaN or inf value(s); fix or drop them before quantizing"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    return arr


def check_axis(axis, ndim: int, name: str = "axis") -> int | None:
    """Return a non-negative axis (or None), or raise if it is out of range for ``ndim``."""
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name} must be an int or None, got {axis!r}")
    if not -ndim <= int(axis) < ndim:
        raise ValueError(
            f"{name}={axis} is out of range for a tensor with {ndim} dimension(s); "
            f"use a value in {-ndim}..{ndim - 1} or None for per-tensor"
        )
    return int(axis) % ndim


def check_min_max(min_val, max_val) -> tuple[np.ndarray, np.ndarray]:
    """Return float64 arrays for a range, or raise if min > max or a bound is not finite."""
    lo = check_array(min_val, "min_val").astype(np.float64)
    hi = check_array(max_val, "max_val").astype(np.float64)
    if lo.shape != hi.shape:
        raise ValueError(f"min_val shape {lo.shape} and max_val shape {hi.shape} differ")
    if np.any(lo > hi):
        i = int(np.argmax((lo > hi).ravel()))
        raise ValueError(
            f"min_val must be <= max_val, but min_val={lo.ravel()[i]!r} > max_val={hi.ravel()[i]!r}"
            + (f" at channel {i}" if lo.ndim else "")
        )
    return lo, hi


def check_batch(x, input_shape, name: str = "x") -> np.ndarray:
    """Return ``x`` as a float32 batch whose samples have ``input_shape``, or raise saying what was expected.

    ``input_shape`` is one sample's shape (``None`` matches any size), e.g. ``model.input.shape[1:]``.
    """
    expected = tuple(None if d is None else int(d) for d in input_shape)
    want = "(N, " + ", ".join("?" if d is None else str(d) for d in expected) + ")"
    arr = check_array(x, name, allow_empty=True)
    if arr.ndim != len(expected) + 1 or any(e is not None and e != g for e, g in zip(expected, arr.shape[1:])):
        raise ValueError(f"{name} must be a batch of inputs of shape {want} (samples first), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: pass at least one input sample, shape {want}")
    return arr.astype(np.float32)


def check_count(n, name: str, minimum: int = 1) -> int:
    """Return ``n`` as an int, or raise if it is not an integer >= ``minimum`` (bools and floats refused)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {n!r}")
    if int(n) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    return int(n)
