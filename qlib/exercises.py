"""Checkers for the book's exercises: immediate feedback, right or wrong and why.

Every exercise with a computable answer has a checker registered under the exercise's label
(the ``:label:`` of its ``{exercise}`` directive). A student computes an answer in the notebook
and calls :func:`check`::

    from qlib.exercises import check
    check("ex-fundamentals-scale", my_scale)      # Feedback(right: ...) or Feedback(not yet: ...)

A checker computes the expected answer itself (from the same models and data the chapter uses),
compares, and says what is off. :func:`reference` gives the expected answer, which the tests run
through every checker (and the book's solutions use :func:`check` as a student would).

Writing a checker::

    @exercise("ex-my-label")
    def _my_label(answer):
        expected = ...                               # compute it
        return close(answer, expected, rtol=1e-6, what="the scale"), expected
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Feedback", "exercise", "check", "reference", "labels", "close", "equal"]

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
        return Feedback(True, f"{what} matches ({shown})")
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


# --- Learning to round (book/adaround.md) ---

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
    try:
        got = [int(v) for v in np.asarray(answer).ravel()]
    except (TypeError, ValueError):
        return Feedback(False, f"give the two integers as a list, got {answer!r}"), expected
    if got == [2, 2]:
        return Feedback(False, "[2, 2] is nearest rounding; its two errors point the same way and add up"), expected
    return equal(got, expected, what="the best integer pair"), expected


@exercise("ex-adaround-mean")
def _adaround_mean(answer):
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
    expected = float(np.mean((x @ dw - x.mean(axis=0) @ dw) ** 2))
    if answer is None:
        return Feedback(False, "no answer"), expected
    return close(answer, expected, rtol=1e-3, what="the output error left after bias correction"), expected
