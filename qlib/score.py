"""The LPIRC 2018 score: accuracy per unit of time, with no reward below a time budget."""

from __future__ import annotations

import math

__all__ = ["lpirc_score"]


def lpirc_score(accuracy: float, runtime_s: float, num_images: int, budget_ms: float = 30.0) -> float:
    """``accuracy / max(budget x num_images, runtime)``, in accuracy per second.

    The LPIRC 2018 image-classification track ran each entry on one big core of a Pixel 2 and
    divided its top-1 accuracy by its total runtime, but never by less than 30 ms per image:
    beyond that speed only accuracy counts.

    Parameters
    ----------
    accuracy : float
        Top-1 accuracy in [0, 1].
    runtime_s : float
        Total time to classify ``num_images`` images, in seconds.
    num_images : int
        How many images were classified.
    budget_ms : float
        Time per image below which being faster earns nothing (30 ms in LPIRC 2018).

    Examples
    --------
    >>> round(lpirc_score(0.70, runtime_s=20.0, num_images=1000), 6)  # 20 ms/image: counted as 30
    0.023333
    >>> round(lpirc_score(0.70, runtime_s=60.0, num_images=1000), 6)  # 60 ms/image: half the score
    0.011667
    """
    if not 0.0 <= float(accuracy) <= 1.0 or math.isnan(float(accuracy)):
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy!r}")
    if not float(runtime_s) > 0 or math.isinf(float(runtime_s)):
        raise ValueError(f"runtime_s must be a positive finite number of seconds, got {runtime_s!r}")
    if int(num_images) != num_images or num_images < 1:
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
    if not float(budget_ms) > 0:
        raise ValueError(f"budget_ms must be positive, got {budget_ms!r}")
    return float(accuracy) / max(float(budget_ms) / 1000.0 * int(num_images), float(runtime_s))
