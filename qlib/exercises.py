"""Checkers for the book's exercises: immediate feedback, right or wrong and why.

Every exercise with a computable answer has a checker registered under the exercise's label
(the ``:label:`` of its ``{exercise}`` directive). A student computes an answer in the notebook
and calls :func:`check`::

    from qlib.exercises import check
    check("ex-fundamentals-scale", (scale, zero_point))   # Feedback(right: ...) or Feedback(not yet: ...)

A checker computes the expected answer itself (from the same models and data the chapter uses),
compares, and says what is off. :func:`reference` gives the expected answer, which the tests run
through every checker (and the book's solutions use :func:`check` as a student would).

The checkers are grouped by chapter, in the book's order, after the shared helpers (answer
parsing, and the data they compute from: the ImageNet weights read in numpy, the zoo, the sweeps;
each computed once per process).

Writing a checker::

    @exercise("ex-my-label")
    def _my_label(answer):
        expected = ...                               # compute it
        return close(answer, expected, rtol=1e-6, what="the scale"), expected
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["Feedback", "exercise", "check", "reference", "labels", "close", "equal", "imagenet_depthwise",
           "bias_correction"]

_CHECKERS: dict = {}


@dataclass(frozen=True)
class Feedback:
    """The verdict on an answer: ``correct`` and a message saying why.

    Examples
    --------
    >>> Feedback(True, "the scale matches")
    Feedback(right: the scale matches)
    >>> bool(Feedback(False, "off by 2x"))
    False
    """

    correct: bool
    message: str

    def __bool__(self) -> bool:
        return self.correct

    def __repr__(self) -> str:
        return f"Feedback({'right' if self.correct else 'not yet'}: {self.message})"

    def _repr_markdown_(self) -> str:
        return ("**Right.** " if self.correct else "**Not yet.** ") + self.message


def close(answer, expected, rtol: float = 1e-6, atol: float = 0.0, what: str = "the answer") -> Feedback:
    """Feedback on a numeric answer (scalar or array) against the expected value.

    Examples
    --------
    >>> close(0.5, 0.5, what="the scale")
    Feedback(right: the scale matches (0.5))
    >>> close([1.0, 2.0], [1.0, 3.0], what="the ranges")
    Feedback(not yet: the ranges differ from the expected values in 1 of 2 entries (largest difference 1))
    >>> close("0.5", 0.5)
    Feedback(not yet: the answer should be a number or an array of numbers, got str)
    """
    if answer is None:
        return Feedback(False, f"no answer given for {what}")
    try:
        a = np.asarray(answer, dtype=np.float64)
    except (TypeError, ValueError):
        return Feedback(False, f"{what} should be a number or an array of numbers, got {type(answer).__name__}")
    if isinstance(answer, (str, bytes)):
        return Feedback(False, f"{what} should be a number or an array of numbers, got {type(answer).__name__}")
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return Feedback(False, f"{what} should have shape {e.shape}, got {a.shape}")
    ok = np.isclose(a, e, rtol=rtol, atol=atol)
    if np.all(ok):
        shown = f"{float(e):.6g}" if e.ndim == 0 else f"{e.size} values"
        return Feedback(True, f"{what} {'matches' if e.ndim == 0 else 'match'} ({shown})")
    if e.ndim == 0:
        return Feedback(False, f"{what} is {float(a):.6g}, expected about {float(e):.6g}")
    return Feedback(False, f"{what} differ from the expected values in {int(np.sum(~ok))} of {ok.size} entries "
                           f"(largest difference {float(np.max(np.abs(a - e))):.3g})")


def equal(answer, expected, what: str = "the answer") -> Feedback:
    """Feedback on an exact answer (an integer, a string, a name).

    Examples
    --------
    >>> equal(3, 3, what="the number of dead channels")
    Feedback(right: the number of dead channels is 3)
    >>> equal("ReLU6", "ReLU", what="the activation")
    Feedback(not yet: the activation is 'ReLU6', expected 'ReLU')
    """
    if answer == expected:
        return Feedback(True, f"{what} is {expected!r}")
    return Feedback(False, f"{what} is {answer!r}, expected {expected!r}")


def exercise(label: str):
    """Register ``fn(answer) -> (Feedback, expected)`` as the checker of exercise ``label``.

    Examples
    --------
    >>> @exercise("ex-demo-double")
    ... def _demo(answer):
    ...     return equal(answer, 4, what="2 + 2"), 4
    >>> check("ex-demo-double", 4)
    Feedback(right: 2 + 2 is 4)
    """
    if not isinstance(label, str) or not label.startswith("ex-"):
        raise ValueError(f"exercise labels start with 'ex-', got {label!r}")

    def register(fn):
        if label in _CHECKERS and _CHECKERS[label].__qualname__ != fn.__qualname__:
            raise ValueError(f"exercise {label!r} already has a checker")
        _CHECKERS[label] = fn
        return fn

    return register


def _checker(label):
    if label not in _CHECKERS:
        raise ValueError(f"no checker for exercise {label!r}; exercises with checkers: {labels()}")
    return _CHECKERS[label]


def check(label: str, answer) -> Feedback:
    """Check a student's answer to exercise ``label``.

    Examples
    --------
    >>> check("ex-nope", 1)
    Traceback (most recent call last):
    ...
    ValueError: no checker for exercise 'ex-nope'; exercises with checkers: [...]
    """
    return _checker(label)(answer)[0]


def reference(label: str):
    """The expected answer of exercise ``label`` (what the checker compares with).

    Examples
    --------
    >>> @exercise("ex-demo-triple")
    ... def _demo(answer):
    ...     return equal(answer, 9, what="3 x 3"), 9
    >>> reference("ex-demo-triple")
    9
    """
    return _checker(label)(None)[1]


def labels() -> list[str]:
    """Labels of every exercise with a checker.

    Examples
    --------
    >>> isinstance(labels(), list)
    True
    """
    return sorted(_CHECKERS)


# =============================================================================================
# Private helpers: reading answers, and the shared data every checker computes from (each
# computed once per process). Checkers follow, one section per chapter, in the book's order.
# =============================================================================================

def _number(answer, what: str):
    """``answer`` as a float, or the Feedback saying why it is not one."""
    if isinstance(answer, np.ndarray) and answer.ndim == 0:
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        return Feedback(False, f"{what} should be a single number, got {type(answer).__name__}")
    if not math.isfinite(float(answer)):
        return Feedback(False, f"{what} should be a finite number, got {answer}")
    return float(answer)


def _integer(answer, what: str):
    """``answer`` as an int (a float holding a whole number is fine), or the Feedback saying why not."""
    x = _number(answer, what)
    if isinstance(x, Feedback):
        return x
    if x != round(x):
        return Feedback(False, f"{what} is a whole number, got {answer}")
    return int(round(x))


def _parts(answer, n: int, what: str):
    """``answer`` as a tuple of ``n`` items, or the Feedback saying why not."""
    if isinstance(answer, (str, bytes, dict)) or not hasattr(answer, "__len__") or len(answer) != n:
        return Feedback(False, f"{what} should be {n} values in a tuple, got {answer!r:.80}")
    return tuple(answer)


def _integers(answer, what: str, each: tuple):
    """``answer`` as a tuple of ``len(each)`` ints (``each`` names them in messages), or the Feedback
    on the first thing wrong with it."""
    parts = _parts(answer, len(each), what)
    if isinstance(parts, Feedback):
        return parts
    got = tuple(_integer(v, name) for v, name in zip(parts, each))
    return next((g for g in got if isinstance(g, Feedback)), got)


def _array(answer, shape: tuple):
    """``answer`` as a float array of ``shape``, or None (close() explains what is wrong with it)."""
    if answer is None or isinstance(answer, (str, bytes, dict)):
        return None
    try:
        a = np.asarray(answer, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return a if a.shape == shape else None


def _dict_of_ints(answer, expected: dict, what: str) -> Feedback:
    """Feedback on ``{key: integer}`` answers, key by key."""
    if not isinstance(answer, dict) or set(answer) != set(expected):
        return Feedback(False, f"{what} should be a dict with the keys {sorted(expected)}, got {answer!r:.120}")
    wrong = [k for k in expected if _integer(answer[k], k) != expected[k]]
    if wrong:
        return Feedback(False, f"{what}: not yet for {', '.join(map(str, wrong))} "
                               f"({len(expected) - len(wrong)} of {len(expected)} right)")
    return Feedback(True, f"{what}: {expected}")


_TORCH_BN_EPSILON = 1e-5   # qlib.imagenet.TORCH_BN_EPSILON; not imported, as that module imports Keras
_TINY_VARIANCE = 1e-3      # the book's threshold for a "tiny" BatchNorm running variance


@lru_cache(maxsize=1)
def _imagenet_layers() -> tuple:
    """Every conv of the ImageNet MobileNetV2 with the BatchNorm after it, in order, from the state dict.

    ``(kind, raw kernel, BN stats)`` with kind ``"depthwise"`` (kernel ``(3, 3, C)``, the view of
    :func:`qlib.analysis.depthwise_kernels`) or ``"conv2d"`` (Keras layout ``(kh, kw, C_in, C_out)``).
    Numpy only, so a checker needs no Keras model; the folded kernels (:func:`_folded`) are
    bit-identical to ``depthwise_kernels(mobilenet_v2_imagenet())``.
    """
    from .data import mobilenet_v2_state_dict

    modules: dict = {}
    for key, value in mobilenet_v2_state_dict().items():
        prefix, param = key.rsplit(".", 1)
        modules.setdefault(prefix, {})[param] = np.asarray(value)
    modules = list(modules.values())
    out = []
    for conv, bn in zip(modules, modules[1:]):
        w = conv.get("weight")
        if w is None or w.ndim != 4 or "running_var" not in bn:
            continue
        stats = {"gamma": bn["weight"], "beta": bn["bias"], "mean": bn["running_mean"], "variance": bn["running_var"]}
        stats = {k: v.astype(np.float64) for k, v in stats.items()}
        if w.shape[1] == 1:  # torch depthwise (C, 1, kh, kw)
            out.append(("depthwise", np.transpose(w, (2, 3, 0, 1))[..., 0], stats))
        else:                # torch conv (O, I, kh, kw) -> Keras (kh, kw, I, O)
            out.append(("conv2d", np.transpose(w, (2, 3, 1, 0)), stats))
    return tuple(out)


def _folded(kernel, stats, epsilon: float = _TORCH_BN_EPSILON) -> np.ndarray:
    """A kernel (output channels last) with its BatchNorm folded in, like qlib.folding (float64, then float32)."""
    scale = stats["gamma"] / np.sqrt(stats["variance"] + epsilon)
    return (kernel.astype(np.float64) * scale).astype(np.float32)


@lru_cache(maxsize=1)
def imagenet_depthwise() -> dict:
    """``{Keras layer name: (raw kernel, BN stats)}`` for the 17 depthwise layers of the ImageNet
    MobileNetV2, read from the shipped state dict in numpy (no Keras), under Keras' layer names:
    what the checkers compare a student's answers with.

    Examples
    --------
    >>> dw = imagenet_depthwise()
    >>> len(dw), dw["expanded_conv_depthwise"][0].shape, sorted(dw["block_1_depthwise"][1])
    (17, (3, 3, 32), ['beta', 'gamma', 'mean', 'variance'])
    """
    layers = [(k, s) for kind, k, s in _imagenet_layers() if kind == "depthwise"]
    names = ["expanded_conv_depthwise"] + [f"block_{i}_depthwise" for i in range(1, len(layers))]
    return dict(zip(names, layers))


@lru_cache(maxsize=1)
def _imagenet_folded_depthwise() -> dict:
    """``{Keras layer name: folded kernel (3, 3, C)}``, as ``depthwise_kernels(mobilenet_v2_imagenet())``."""
    return {name: _folded(k, s) for name, (k, s) in imagenet_depthwise().items()}


@lru_cache(maxsize=1)
def _imagenet_folded_pointwise() -> tuple:
    """The folded kernels of every 1x1 Conv2D, in order."""
    return tuple(_folded(k, s) for kind, k, s in _imagenet_layers() if kind == "conv2d" and k.shape[:2] == (1, 1))


@lru_cache(maxsize=None)
def _zoo(name: str):
    from .zoo import load_model

    return load_model(name)


@lru_cache(maxsize=None)
def _zoo_depthwise(name: str, fold: bool = True) -> dict:
    from .analysis import depthwise_kernels

    return depthwise_kernels(_zoo(name), fold=fold)


@lru_cache(maxsize=None)
def _sweep(name: str):
    from .results import load

    return load(name)


def _sqnr_db(x, x_hat) -> float:
    x, x_hat = np.asarray(x, np.float64), np.asarray(x_hat, np.float64)
    return float(10 * np.log10(np.sum(x ** 2) / np.sum((x - x_hat) ** 2)))


def _levels(w, params) -> np.ndarray:
    """Distinct integers each channel (last axis) of ``w`` uses under ``params``."""
    q = params.quantize(w).reshape(-1, w.shape[-1])
    return np.array([np.unique(q[:, c]).size for c in range(q.shape[1])])


# ---------------------------------------------------------------------------------------------
# Quantization fundamentals (book/quantization_fundamentals.md)
# ---------------------------------------------------------------------------------------------

_TOY = np.array([-0.62, -0.1, 0.0, 0.37, 1.5, 2.0])   # the chapter's toy tensor


@lru_cache(maxsize=1)
def _features1_folded() -> np.ndarray:
    """features.1's folded depthwise weights (3, 3, 32), exactly as the chapter computes them (float32)."""
    from .data import mobilenet_v2_state_dict

    sd = mobilenet_v2_state_dict()
    w = sd["features.1.conv.0.0.weight"][:, 0]
    gamma, var = sd["features.1.conv.0.1.weight"], sd["features.1.conv.0.1.running_var"]
    return np.moveaxis(w * (gamma / np.sqrt(var + 1e-5))[:, None, None], 0, -1)


@exercise("ex-fundamentals-scale")
def _fundamentals_scale(answer):
    from .quantizers import compute_params

    p = compute_params(_TOY.min(), _TOY.max(), num_bits=8)
    scale, zp = float(p.scale), int(p.zero_point)
    expected = (scale, zp)
    parts = _parts(answer, 2, "the answer (scale, zero_point)")
    if isinstance(parts, Feedback):
        return parts, expected
    s, z = _number(parts[0], "the scale"), _number(parts[1], "the zero point")
    for got in (s, z):
        if isinstance(got, Feedback):
            return got, expected
    width = _TOY.max() - _TOY.min()
    if not np.isclose(s, scale, rtol=1e-4):
        hints = {width / 127: "the scale is 2x too large: did you divide by qmax (127) instead of qmax - qmin (255)?",
                 width / 256: "did you divide by 2**8 = 256 levels instead of the 255 steps between them (qmax - qmin)?",
                 width / 15: "that is the 4-bit scale; the exercise asks for 8 bits"}
        hint = next((h for v, h in hints.items() if np.isclose(s, v, rtol=1e-4)), None)
        return Feedback(False, hint or f"the scale is {s:.6g}, expected about {scale:.6g}: "
                                       "(x_max - x_min) / (qmax - qmin)"), expected
    if z != round(z):
        return Feedback(False, f"the zero point must be an integer (got {z}): round qmin - x_min / scale"), expected
    z = int(round(z))
    if z != zp:
        hints = {zp + 128: "that is the zero point of an unsigned grid (0..255); the book's integers are signed, "
                           "qmin = -128",
                 int(np.floor(-128 + _TOY.min() / scale + 0.5)): "the sign of x_min / scale is flipped: "
                                                                 "z = qmin - x_min / scale"}
        return Feedback(False, hints.get(z, f"the zero point is {z}, expected {zp}")), expected
    return Feedback(True, f"scale {scale:.6g} and zero point {zp}: real 0 is the integer {zp}"), expected


@exercise("ex-fundamentals-asymmetric")
def _fundamentals_asymmetric(answer):
    from .quantizers import fit_params

    folded = _features1_folded()
    expected = int(np.sum(_levels(folded, fit_params(folded, 8, symmetric=False)) < 4))
    n = _integer(answer, "the number of channels")
    if isinstance(n, Feedback):
        return n, expected
    if n != expected:
        per_channel = int(np.sum(_levels(folded, fit_params(folded, 8, symmetric=False, axis=-1)) < 4))
        hint = " (that is the per-channel count: quantize per tensor, axis=None)" if n == per_channel else ""
        return Feedback(False, f"{n} channels, expected {expected} of {folded.shape[-1]}{hint}"), expected
    return Feedback(True, f"{expected} of {folded.shape[-1]} channels use fewer than four levels"), expected


_TIES_SCALE = 1 / 128   # the grid compute_params(0.0, 255 / 128, num_bits=8)


@exercise("ex-fundamentals-ties")
def _fundamentals_ties(answer):
    from .quantizers import round_half_away

    expected = 2.5 * _TIES_SCALE
    x = _number(answer, "x")
    if isinstance(x, Feedback):
        return x, expected
    v = x / _TIES_SCALE
    even, away = float(np.round(v)), float(round_half_away(v))
    if even != away:
        return Feedback(True, f"x / scale = {v:g}: np.round gives {even:g}, round_half_away {away:g}"), expected
    if abs(v - np.floor(v) - 0.5) > 0:
        return Feedback(False, f"x / scale = {v:.6g} is not exactly halfway between two integers: only exact "
                               "ties round differently"), expected
    return Feedback(False, f"x / scale = {v:g} is a tie, but both rules give {even:g}: when the integer away from "
                           "zero is even, ties-to-even agrees with it; try the next tie"), expected


def _sqnr_per_bit(per_channel: bool) -> float:
    from .quantizers import fit_params

    w = _features1_folded()
    sq = {b: _sqnr_db(w, fit_params(w, b, symmetric=True, narrow_range=True,
                                     axis=-1 if per_channel else None).fake_quant(w)) for b in (4, 8)}
    return (sq[8] - sq[4]) / 4


@exercise("ex-fundamentals-db-per-bit")
def _fundamentals_db_per_bit(answer):
    expected = _sqnr_per_bit(per_channel=True)
    x = _number(answer, "the dB per bit")
    if isinstance(x, Feedback):
        return x, expected
    if abs(x - expected) <= 0.02:
        return Feedback(True, f"{expected:.2f} dB per bit (the textbook value is 20 log10(2) = 6.02)"), expected
    if abs(x - 20 * math.log10(2)) < 0.02:
        return Feedback(False, "6.02 dB is the textbook value for a uniform signal; measure it on the weights"), expected
    if abs(x - _sqnr_per_bit(per_channel=False)) <= 0.02:
        return Feedback(False, "that is the per-tensor grid's value; the exercise asks per channel (axis=-1)"), expected
    return Feedback(False, f"{x:.3g} dB per bit, expected about {expected:.3g} (tolerance 0.02 dB)"), expected


# ---------------------------------------------------------------------------------------------
# The networks (book/the_networks.md)
# ---------------------------------------------------------------------------------------------

@exercise("ex-networks-wilson")
def _networks_wilson(answer):
    from .evaluate import wilson_interval
    from .zoo import manifest

    n = 10_000
    p = manifest()["v1_standard"]["float_test_accuracy"]
    expected = wilson_interval(round(p * n), n)
    parts = _parts(answer, 2, "the interval (low, high)")
    if isinstance(parts, Feedback):
        return parts, expected
    if all(isinstance(_number(v, "a bound"), float) for v in parts):
        half = 1.96 * math.sqrt(p * (1 - p) / n)
        if np.allclose(parts, (p - half, p + half), atol=2e-6) and not np.allclose(parts, expected, atol=2e-6):
            return Feedback(False, "that is the normal (Wald) interval p +- z sqrt(p(1-p)/n); Wilson's is centred "
                                   "at (p + z^2/2n) / (1 + z^2/n)"), expected
    return close(parts, expected, atol=2e-6, what="the bounds (low, high)"), expected


@exercise("ex-networks-macs")
def _networks_macs(answer):
    from .models import layer_costs

    costs = {c["name"]: c["macs"] for c in layer_costs(_zoo("v1_standard"))}
    expected = costs["block1_pw"] / costs["block1_dw"]
    x = _number(answer, "the ratio")
    if isinstance(x, Feedback):
        return x, expected
    if np.isclose(x, 1 / expected, rtol=1e-6):
        return Feedback(False, "upside down: that is depthwise / pointwise; the exercise asks pointwise / depthwise"), \
            expected
    return close(x, expected, rtol=1e-6, what="pointwise MACs / depthwise MACs"), expected


# ---------------------------------------------------------------------------------------------
# Depthwise ranges (book/depthwise_ranges.md)
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _starved(per_channel: bool) -> int:
    """Depthwise channels of the ImageNet network with fewer than four 8-bit levels."""
    from .analysis import levels_per_channel

    kernels = _imagenet_folded_depthwise().values()
    return int(sum(np.sum(levels_per_channel(w, 8, per_channel=per_channel) < 4) for w in kernels))


@exercise("ex-ranges-per-channel")
def _ranges_per_channel(answer):
    expected = _starved(per_channel=True)
    n = _integer(answer, "the number of channels")
    if isinstance(n, Feedback):
        return n, expected
    if n != expected:
        if n == _starved(per_channel=False):
            return Feedback(False, "that is the per-tensor count; pass per_channel=True"), expected
    return equal(n, expected, what="the number of channels with fewer than four levels per channel"), expected


@exercise("ex-ranges-bits-needed")
def _ranges_bits_needed(answer):
    from .analysis import levels_per_channel

    w = _imagenet_folded_depthwise()["expanded_conv_depthwise"]
    starved = {b: int(np.sum(levels_per_channel(w, b) < 4)) for b in range(2, 17)}
    expected = min(b for b, n in starved.items() if n == 0)
    b = _integer(answer, "the bit width")
    if isinstance(b, Feedback):
        return b, expected
    if b == expected:
        return Feedback(True, f"{expected} bits: with {expected - 1}, {starved[expected - 1]} channels still get "
                              "fewer than four levels"), expected
    if b in starved and starved[b] > 0:
        return Feedback(False, f"at {b} bits {starved[b]} channels still get fewer than four levels"), expected
    if b > expected:
        fewer = f": at {b - 1} bits every channel already gets four levels or more" if starved.get(b - 1) == 0 else ""
        return Feedback(False, f"fewer bits suffice{fewer}"), expected
    return Feedback(False, f"the bit width should be in 2..16, got {b}"), expected


@lru_cache(maxsize=None)
def _median_ratio(pointwise: bool) -> float:
    from .analysis import layer_range_stats

    kernels = _imagenet_folded_pointwise() if pointwise else _imagenet_folded_depthwise().values()
    return float(np.median([layer_range_stats(w)["range_ratio"] for w in kernels]))


@exercise("ex-ranges-pointwise")
def _ranges_pointwise(answer):
    expected = _median_ratio(pointwise=True)
    x = _number(answer, "the median range ratio")
    if isinstance(x, Feedback):
        return x, expected
    if not np.isclose(x, expected, rtol=1e-4) and np.isclose(x, _median_ratio(pointwise=False), rtol=1e-4):
        return Feedback(False, "that is the depthwise layers' median; the exercise asks for the 1x1 (pointwise) "
                               "convolutions"), expected
    n = len(_imagenet_folded_pointwise())
    return close(x, expected, rtol=1e-4, what=f"the median over {n} pointwise layers"), expected


# ---------------------------------------------------------------------------------------------
# Dead channels (book/zero_channels.md)
# ---------------------------------------------------------------------------------------------

def _bits_back(name: str) -> tuple[float, float]:
    """(bits, range ratio) the live channels of a depthwise layer gain when its dead channels are zeroed."""
    w = _imagenet_folded_depthwise()[name]
    live = imagenet_depthwise()[name][1]["variance"] >= _TINY_VARIANCE
    ratio = float(np.abs(w).max() / np.abs(w[..., live]).max())
    return math.log2(ratio), ratio


@exercise("ex-zero-prune")
def _zero_prune(answer):
    expected, ratio = _bits_back("block_16_depthwise")
    x = _number(answer, "the bits")
    if isinstance(x, Feedback):
        return x, expected
    if np.isclose(x, ratio, rtol=1e-4) and not np.isclose(x, expected, rtol=1e-4):
        return Feedback(False, f"{x:.4g} is the ratio of the two ranges; in bits it is log2 of it"), expected
    return close(x, expected, rtol=1e-4, what="the bits the live channels get back"), expected


_THRESHOLDS = (1e-3, 1e-6, 1e-10)


@exercise("ex-zero-threshold")
def _zero_threshold(answer):
    dw = np.concatenate([s["variance"] for _, s in imagenet_depthwise().values()])
    expected = tuple(int(np.sum(dw < t)) for t in _THRESHOLDS)
    counts = _integers(answer, "the answer (three counts)", ("a count",) * 3)
    if isinstance(counts, Feedback):
        return counts, expected
    every_bn = np.concatenate([s["variance"] for _, _, s in _imagenet_layers()])
    if tuple(counts) == tuple(int(np.sum(every_bn < t)) for t in _THRESHOLDS) != expected:
        return Feedback(False, "those are the counts over every BatchNorm; count only the BatchNorms right after "
                               "a depthwise layer"), expected
    wrong = [f"below {t:g}: {c}" for t, c, e in zip(_THRESHOLDS, counts, expected) if c != e]
    if wrong:
        return Feedback(False, f"not yet for {', '.join(wrong)}"), expected
    return Feedback(True, f"{expected[0]}, {expected[1]} and {expected[2]} depthwise channels"), expected


# ---------------------------------------------------------------------------------------------
# BatchNorm scale blow-up (book/bn_blowup.md)
# ---------------------------------------------------------------------------------------------

@exercise("ex-bn-fold-by-hand")
def _bn_fold_by_hand(answer):
    stats = imagenet_depthwise()["expanded_conv_depthwise"][1]
    c = int(np.argmin(stats["variance"]))
    gamma, var = stats["gamma"][c], stats["variance"][c]
    expected = float(gamma / np.sqrt(var + _TORCH_BN_EPSILON))
    x = _number(answer, "the fold scale")
    if isinstance(x, Feedback):
        return x, expected
    hints = [(gamma / np.sqrt(var + 1e-3), "you used Keras' default epsilon 1e-3; this network was trained with "
                                           "PyTorch's 1e-5"),
             (gamma / (var + _TORCH_BN_EPSILON), "the square root is missing: gamma / sqrt(var + eps)"),
             (gamma / np.sqrt(var) if var > 0 else np.inf, "epsilon is missing: with a variance this small it is "
                                                           "what sets the scale")]
    if not np.isclose(x, expected, rtol=1e-5):
        for value, hint in hints:
            if np.isclose(x, value, rtol=1e-4):
                return Feedback(False, hint), expected
    return close(x, expected, rtol=1e-5, what=f"the fold scale of channel {c}"), expected


_EPSILONS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)   # the slider's values in the chapter


def _widest_channel(eps: float) -> tuple[int, bool]:
    """(channel, is it live) of the widest folded channel of expanded_conv_depthwise at ``eps``."""
    kernel, stats = imagenet_depthwise()["expanded_conv_depthwise"]
    w = _folded(kernel, stats, eps)
    c = int(np.argmax(np.abs(w).reshape(-1, w.shape[-1]).max(axis=0)))
    return c, bool(stats["variance"][c] >= _TINY_VARIANCE)


@exercise("ex-bn-eps-live")
def _bn_eps_live(answer):
    live = {e: _widest_channel(e) for e in _EPSILONS}
    expected = next((e for e in _EPSILONS if live[e][1]), None)
    x = _number(answer, "epsilon")
    if isinstance(x, Feedback):
        return x, expected
    e = next((e for e in _EPSILONS if np.isclose(x, e, rtol=1e-6)), None)
    if e is None:
        return Feedback(False, f"epsilon should be one of the slider's values {list(_EPSILONS)}"), expected
    if e == expected:
        return Feedback(True, f"{e:g} is the first slider value at which a live channel (channel {live[e][0]}) "
                              "sets the range"), expected
    if not live[e][1]:
        return Feedback(False, f"at epsilon = {e:g} the widest channel is still channel {live[e][0]}, whose running "
                               f"variance is below {_TINY_VARIANCE:g}"), expected
    return Feedback(False, f"a live channel already sets the range at a smaller epsilon than {e:g}"), expected


# ---------------------------------------------------------------------------------------------
# The quantization-friendly separable convolution (book/quant_friendly.md)
# ---------------------------------------------------------------------------------------------

@exercise("ex-friendly-fold")
def _friendly_fold(answer):
    from .analysis import layer_range_stats

    folded = layer_range_stats(_zoo_depthwise("v1_standard", True)["block1_dw"])["range_ratio"]
    raw = layer_range_stats(_zoo_depthwise("v1_standard", False)["block1_dw"])["range_ratio"]
    expected = folded / raw
    x = _number(answer, "the factor")
    if isinstance(x, Feedback):
        return x, expected
    if np.isclose(x, 1 / expected, rtol=1e-4):
        return Feedback(False, "upside down: divide the folded ratio by the unfolded one"), expected
    return close(x, expected, rtol=1e-4, what="the factor folding adds to block1_dw's range ratio"), expected


def _weights_acc(model: str, bits: int, per_channel: bool = False, setter: str = "minmax") -> float:
    return _sweep("bits").one(model=model, sweep="weights", weight_bits=bits, per_channel=per_channel,
                              weight_range=setter)["accuracy"]


_LOW_BITS = range(2, 9)


@exercise("ex-friendly-lead")
def _friendly_lead(answer):
    expected = {arch: max(_LOW_BITS, key=lambda b: _weights_acc(f"{arch}_friendly", b) - _weights_acc(f"{arch}_standard", b))
                for arch in ("v1", "v2")}
    return _dict_of_ints(answer, expected, "the bit width of the largest lead"), expected


# ---------------------------------------------------------------------------------------------
# Setting the ranges (book/setting_ranges.md)
# ---------------------------------------------------------------------------------------------

_ALPHAS = tuple(round(0.05 * i, 2) for i in range(1, 21))   # 0.05, 0.10, ..., 1.00


def _clip_mse() -> dict:
    from .quantizers import compute_params

    x = _zoo_depthwise("v1_standard", True)["block1_dw"].ravel()
    m = float(np.abs(x).max())
    return {a: float(np.mean((x - compute_params(-a * m, a * m, 4, symmetric=True).fake_quant(x)) ** 2))
            for a in _ALPHAS}


@exercise("ex-setting-clip")
def _setting_clip(answer):
    mse = _clip_mse()
    expected = min(mse, key=mse.get)
    x = _number(answer, "alpha")
    if isinstance(x, Feedback):
        return x, expected
    a = next((a for a in _ALPHAS if np.isclose(x, a, atol=1e-9)), None)
    if a is None:
        return Feedback(False, "alpha should be one of 0.05, 0.10, ..., 1.00"), expected
    if a != expected:
        return Feedback(False, f"alpha = {a:.2f} gives a mean squared error of {mse[a]:.4g}, more than "
                               f"{mse[expected]:.4g} at the best alpha"), expected
    return Feedback(True, f"alpha = {a:.2f}: mean squared error {mse[a]:.4g}, against {mse[1.0]:.4g} for min-max"), \
        expected


@exercise("ex-setting-greedy-acts")
def _setting_greedy_acts(answer):
    sweep = _sweep("bits")

    def acc(bits, setter):
        return sweep.one(model="v2_standard", sweep="activations", activation_bits=bits,
                         activation_range=setter)["accuracy"]

    gain = {b: acc(b, "greedy") - acc(b, "minmax") for b in sweep.values("activation_bits", sweep="activations")}
    expected = max(gain, key=gain.get)
    b = _integer(answer, "the bit width")
    if isinstance(b, Feedback):
        return b, expected
    if b not in gain:
        return Feedback(False, f"the sweep has activation bit widths {sorted(gain)}, not {b}"), expected
    if b != expected:
        return Feedback(False, f"at {b} bits greedy gains {gain[b]:+.2%}, less than at another bit width"), expected
    return Feedback(True, f"{b} bits: greedy gains {gain[b]:+.2%} over min-max"), expected


# ---------------------------------------------------------------------------------------------
# Accuracy versus bit width (book/bit_width.md)
# ---------------------------------------------------------------------------------------------

_ZOO = ("v1_standard", "v1_friendly", "v2_standard", "v2_friendly")


@exercise("ex-bits-knee")
def _bits_knee(answer):
    expected = {m: max(range(2, 8), key=lambda b: _weights_acc(m, b + 1) - _weights_acc(m, b)) for m in _ZOO}
    return _dict_of_ints(answer, expected, "the bit width of the largest drop"), expected


@exercise("ex-bits-weights-vs-acts")
def _bits_weights_vs_acts(answer):
    acts = _sweep("bits").one(model="v1_standard", sweep="activations", activation_bits=4,
                              activation_range="minmax")["accuracy"]
    expected = _weights_acc("v1_standard", 4, per_channel=True) - acts
    x = _number(answer, "the difference")
    if isinstance(x, Feedback):
        return x, expected
    if np.isclose(x, -expected, atol=1e-9) and expected != 0:
        return Feedback(False, "the sign is flipped: weights minus activations"), expected
    if np.isclose(x, 100 * expected, atol=1e-6):
        return Feedback(False, "give it as a fraction (0.05 for 5 points), not in percent"), expected
    return close(x, expected, atol=1e-9, what="4-bit weights minus 4-bit activations"), expected


# ---------------------------------------------------------------------------------------------
# Data-free quantization (book/dfq.md): the ImageNet network's first depthwise -> pointwise pair,
# expanded_conv_depthwise (BN folded) -> ReLU -> expanded_conv_project (BN folded)
# ---------------------------------------------------------------------------------------------

def _first_pair():
    """(folded depthwise (3, 3, 32), its BN stats, folded projection kernel (1, 1, 32, 16))."""
    (_, dw, dw_bn), (_, pw, pw_bn) = _imagenet_layers()[1:3]
    return _folded(dw, dw_bn), dw_bn, _folded(pw, pw_bn)


def _equalization_scales() -> np.ndarray:
    dw, _, pw = _first_pair()
    r1 = np.abs(dw).reshape(-1, dw.shape[-1]).max(axis=0).astype(np.float64)
    r2 = np.abs(pw).max(axis=(0, 1, 3)).astype(np.float64)
    return np.sqrt(r1 * r2) / r2


@exercise("ex-dfq-equalize")
def _dfq_equalize(answer):
    expected = _equalization_scales()
    fb, a = close(answer, expected, rtol=1e-5, what="the scales"), _array(answer, expected.shape)
    if not fb and a is not None:
        if np.allclose(a, 1 / expected, rtol=1e-5):
            return Feedback(False, "those are 1/s: s divides the depthwise output channels, s = sqrt(r1 r2) / r2"), \
                expected
        if np.allclose(a, expected ** 2, rtol=1e-5):
            return Feedback(False, "those are r1 / r2, the square of s: s = sqrt(r1 r2) / r2 = sqrt(r1 / r2)"), \
                expected
    return fb, expected


def _clipped_normal_mean(mu, sigma) -> np.ndarray:
    """E[max(0, X)] for X ~ N(mu, sigma^2), written out independently of qlib.dfq."""
    z = mu / sigma
    cdf = 0.5 * (1 + np.array([math.erf(v / math.sqrt(2)) for v in z]))
    return sigma * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) + mu * cdf


def bias_correction(per_channel: bool = False, clipped: bool = True) -> np.ndarray:
    """The answer to ``ex-dfq-bias-correction``: the expected output error of the ImageNet
    MobileNetV2's first pointwise layer after 8-bit symmetric weight quantization,
    ``(W_q - W) E[x]``, with ``E[x]`` the mean of a clipped normal (the input passed BN and ReLU6;
    ``clipped=False``: the common mistake ``E[x] = beta``).

    Examples
    --------
    >>> e = bias_correction()
    >>> e.shape, bool(np.abs(e - bias_correction(clipped=False)).max() > 0)
    ((16,), True)
    """
    from .quantizers import fit_params

    _, bn, pw = _first_pair()
    beta, gamma = bn["beta"], np.abs(bn["gamma"])
    mean_in = _clipped_normal_mean(beta, gamma) if clipped else beta
    wq = fit_params(pw, 8, symmetric=True, narrow_range=True, axis=-1 if per_channel else None).fake_quant(pw)
    return np.einsum("hwio,i->o", (wq - pw).astype(np.float64), mean_in)


@exercise("ex-dfq-bias-correction")
def _dfq_bias_correction(answer):
    expected = bias_correction()
    atol = 1e-4 * float(np.abs(expected).max())
    fb, a = close(answer, expected, rtol=1e-4, atol=atol, what="the corrections"), _array(answer, expected.shape)
    if not fb and a is not None:
        for value, hint in [(-expected, "the sign is flipped: the correction is eps @ E[x], with eps = W_q - W"),
                            (bias_correction(clipped=False), "that uses E[x] = beta: the input passes a ReLU, so "
                                                              "E[x] is the mean of a clipped normal"),
                            (bias_correction(per_channel=True), "those are per-channel weights; the exercise "
                                                                 "quantizes per tensor")]:
            if np.allclose(a, value, rtol=1e-4, atol=atol):
                return Feedback(False, hint), expected
    return fb, expected


# ---------------------------------------------------------------------------------------------
# Integer-only inference: what the phone computes (book/integer_inference.md): MobileNet v1
# standard exported W8A8 per channel, its block1_pw convolution
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _integer_chapter():
    """The chapter's network (MobileNet v1 standard, W8A8 per channel, exported) and its block1_pw step."""
    from .export import zoo
    from .integer import Model

    e = zoo("v1_standard", 8, True)
    model = Model(e.tflite)
    step = next(s for s in model.steps
                if s.op == "CONV_2D" and model.graph.tensors[s.inputs[1]].name.startswith("block1_pw/"))
    return e, model, step


@exercise("ex-integer-multiplier")
def _integer_multiplier(answer):
    _, _, step = _integer_chapter()
    expected = (int(step.params["multiplier"][5]), int(step.params["shift"][5]))
    what = "(M0, shift) of block1_pw's output channel 5"
    got = _integers(answer, what, ("M0", "the shift"))
    if isinstance(got, Feedback):
        return got, expected
    m0, shift = got
    if (m0, shift) == expected:
        return Feedback(True, f"{what} is {expected}"), expected
    if shift == -expected[1] and m0 == expected[0]:
        return Feedback(False, "the shift has the wrong sign: M = M0 * 2**(shift - 31) with M < 1/2, so the shift "
                               "is negative"), expected
    if not 2 ** 30 <= m0 < 2 ** 31:
        return Feedback(False, f"M0 should lie in [2**30, 2**31) (31 bits of fraction), got {m0}"), expected
    if shift == expected[1] and abs(m0 - expected[0]) == 1:
        return Feedback(False, "off by one in M0: round frac * 2**31 to the nearest integer, do not truncate"), \
            expected
    return Feedback(False, f"{what} is {(m0, shift)}, expected {expected}"), expected


@exercise("ex-integer-bias")
def _integer_bias(answer):
    e, model, step = _integer_chapter()
    expected = int(step.params["bias"][5])
    what = "the int32 bias of block1_pw's output channel 5"
    v = _integer(answer, what)
    if isinstance(v, Feedback):
        return v, expected
    if v == expected:
        return Feedback(True, f"{what} is {expected}"), expected
    g = e.quantized.get_layer("block1_pw").get_weights()[1][5]
    s_y = float(model.graph.tensors[step.outputs[0]].scale[0])
    if v == int(round(g / s_y)):
        return Feedback(False, "that is the bias on the output grid s_y: the bias is added to the int32 "
                               "accumulator, whose unit is s_x * s_w"), expected
    return Feedback(False, f"{what} is {v}, expected {expected}"), expected


@exercise("ex-integer-single-rounding")
def _integer_single_rounding(answer):
    expected = _integer_single_rounding_expected()
    v = _number(answer, "the share of int8 logits that change")
    if isinstance(v, Feedback):
        return v, expected
    if 1 < v <= 100 and np.isclose(v / 100, expected, rtol=1e-9, atol=1e-9):
        return Feedback(False, "that looks like a percentage: give the share as a fraction in [0, 1]"), expected
    return close(v, expected, rtol=1e-9, atol=1e-9, what="the share of int8 logits that change"), expected


@lru_cache(maxsize=1)
def _integer_single_rounding_expected() -> float:
    from .data import fashion_mnist, preprocess
    from .integer import Model
    from .tflite import quantize_input

    e, model, _ = _integer_chapter()
    xq = quantize_input(e.tflite, preprocess(fashion_mnist("test")[0][:200]))
    return float(np.mean(Model(e.tflite, rounding="single").run(xq) != model.run(xq)))


# ---------------------------------------------------------------------------------------------
# Deploying to a Pixel
# ---------------------------------------------------------------------------------------------

@exercise("ex-deploy-ms-per-mac")
def _deploy_ms_per_mac(answer):
    """Host profile of the ImageNet MobileNetV2 int8: CPU ms per million MACs, depthwise over CONV_2D."""
    expected = _deploy_ms_per_mac_expected()
    return close(answer, expected, rtol=0.01, what="the depthwise / CONV_2D cost per MAC"), expected


@lru_cache(maxsize=1)
def _deploy_ms_per_mac_expected() -> float:
    from .results import load

    ops = load("op_profile").select(kind="op", model="imagenet_mobilenet_v2", variant="int8", kernels="default")

    def cost(op_type):
        sel = [o for o in ops if o["op_type"] == op_type]
        return sum(o["cpu_ms"] for o in sel) / (sum(o["macs"] for o in sel) / 1e6)

    return cost("DEPTHWISE_CONV_2D") / cost("CONV_2D")


@exercise("ex-deploy-score")
def _deploy_score(answer):
    """Runtime per image (ms) at which the hosted MobileNet v1 int8 scores as the hosted MobileNetV2 int8."""
    from .deploy import ANCHORS

    v1, v2 = (next(a for a in ANCHORS if a["entry"] == f"TFLite hosted {n}, int8")
              for n in ("MobileNet v1 1.0/224", "MobileNetV2 1.0/224"))
    expected = v1["top1"] * v2["runtime_ms"] / v2["top1"]  # both above 30 ms: score = top-1 / runtime
    return close(answer, expected, rtol=1e-3, what="the runtime per image in ms"), expected


@exercise("ex-deploy-parse")
def _deploy_parse(answer):
    """Share of the phone's time spent in DEPTHWISE_CONV_2D ops, from the published benchmark_model output."""
    from .deploy import parse_benchmark_model, published_sample

    out = parse_benchmark_model(published_sample())
    expected = next(t["share"] for t in out.by_type if t["node_type"] == "DEPTHWISE_CONV_2D")
    return close(answer, expected, rtol=1e-3, what="the depthwise share of the time"), expected




# --- Part IV: product quantization (book/product_quantization.md) ---

@exercise("ex-pq-storage")
def _pq_storage(answer):
    from .pq import pq_bits

    expected = 1024 * 1000 * 32 / pq_bits(1024, 1000, 1024 // 8, 256)
    return close(answer, expected, rtol=1e-3, what="the compression against float32"), expected


@exercise("ex-pq-int8-codebooks")
def _pq_int8_codebooks(answer):
    from .pq import pq_bits

    expected = 512 * 512 * 8 / pq_bits(512, 512, 512 // 4, 16, codebook_bits=8)
    return close(answer, expected, rtol=1e-3, what="the compression against int8"), expected


# --- Part IV: low-rank pointwise convolutions (book/low_rank.md) ---

@exercise("ex-lowrank-macs")
def _lowrank_macs(answer):
    expected = _lowrank_macs_expected()
    whole = isinstance(answer, (int, float, np.integer, np.floating)) and np.isfinite(answer) \
        and float(answer).is_integer()
    return equal(int(answer) if whole else answer, expected, what="the multiply-adds per image"), expected


@lru_cache(maxsize=1)
def _lowrank_macs_expected() -> int:
    from .models import build
    from .zoo import manifest

    config = dict(manifest()["v1_standard"]["config"])
    config["input_shape"] = tuple(config["input_shape"])
    layer = build(**config).get_layer("block7_pw")
    h, w = layer.output.shape[1:3]
    cin, cout = layer.kernel.shape[2:]
    return int(h * w * 64 * (cin + cout))


@exercise("ex-lowrank-energy")
def _lowrank_energy(answer):
    expected = _lowrank_energy_expected()
    return equal(answer, expected, what="the rank"), expected


@lru_cache(maxsize=1)
def _lowrank_energy_expected() -> int:
    from .folding import fold_batchnorm
    from .lowrank import rank_for_energy
    from .zoo import load_model

    kernel = fold_batchnorm(load_model("v1_standard")).get_layer("block13_pw").get_weights()[0]
    return rank_for_energy(kernel, 0.9)


# --- Part IV: distillation (book/distillation.md) ---

@exercise("ex-distill-hand")
def _distill_hand(answer):
    from .distill import distillation_loss

    expected = distillation_loss([0], [[1.0, 0.0, -1.0]], [[2.0, 1.0, -3.0]], temperature=2.0, alpha=0.3)
    return close(answer, expected, rtol=1e-6, what="the loss"), expected



# ---------------------------------------------------------------------------------------------
# Learning to round (book/adaround.md)
# ---------------------------------------------------------------------------------------------

@exercise("ex-adaround-h")
def _adaround_h(answer):
    from .adaround import rectified_sigmoid

    expected = rectified_sigmoid(np.array([-3.0, -0.5, 0.0, 0.5, 3.0]))
    if answer is None:
        return Feedback(False, "no answer"), expected
    return close(answer, expected, rtol=1e-6, atol=1e-9, what="h(V)"), expected


@exercise("ex-adaround-pair")
def _adaround_pair(answer):
    import itertools

    rng = np.random.default_rng(0)
    z, noise = rng.normal(size=(512, 1)), rng.normal(size=(512, 1))
    x = np.hstack([z, z + 0.1 * noise])
    w, s = np.array([0.34, 0.34]), 1 / 7
    cands = [np.floor(w / s) + np.array(c) for c in itertools.product((0, 1), repeat=2)]
    errors = [float(np.mean((x @ (q * s - w)) ** 2)) for q in cands]
    expected = [int(v) for v in cands[int(np.argmin(errors))]]
    if answer is None:
        return Feedback(False, "no answer"), expected
    got = _integers(answer, "the integer pair", ("each integer of the pair",) * 2)
    if isinstance(got, Feedback):
        return got, expected
    got = list(got)
    if got == [2, 2]:
        return Feedback(False, "[2, 2] is nearest rounding; its two errors point the same way and add up"), expected
    return equal(got, expected, what="the best integer pair"), expected


@exercise("ex-adaround-mean")
def _adaround_mean(answer):
    expected = _adaround_mean_expected()
    if answer is None:
        return Feedback(False, "no answer"), expected
    return close(answer, expected, rtol=1e-3, what="the output error left after bias correction"), expected


@lru_cache(maxsize=1)
def _adaround_mean_expected() -> float:
    import keras

    from .adaround import calibration_subset
    from .data import fashion_mnist_splits
    from .zoo import load_model

    model = load_model("v1_friendly")
    calib = calibration_subset(fashion_mnist_splits()["x_val"], 1024, seed=0)
    x = keras.Model(model.input, model.get_layer("pool").output).predict(calib, verbose=0).astype(np.float64)
    w = model.get_layer("logits").get_weights()[0].astype(np.float64)
    scale = np.abs(w).max(axis=0) / 3
    dw = np.clip(np.round(w / scale), -3, 3) * scale - w
    return float(np.mean((x @ dw - x.mean(axis=0) @ dw) ** 2))
