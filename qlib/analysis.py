"""Per-layer statistics behind Part II: why 8-bit MobileNets break.

All functions work on a model's *folded* weights (what TFLite quantizes) and return plain
numbers and arrays, so chapters can tabulate and plot them and tests can check them.
"""

from __future__ import annotations

import numpy as np

from ._checks import check_array
from .folding import bn_scale, fold_batchnorm
from .graph import batchnorm_pairs
from .layers import is_weighted, kind
from .quantizers import compute_params

__all__ = ["depthwise_kernels", "channel_ranges", "levels_per_channel", "layer_range_stats", "bn_statistics"]


def depthwise_kernels(model, fold: bool = True) -> dict[str, np.ndarray]:
    """Every depthwise kernel as ``(kh, kw, channels)``, after BatchNorm folding by default.

    Examples
    --------
    >>> from qlib.models import mobilenet_v1
    >>> k = depthwise_kernels(mobilenet_v1(alpha=0.25))
    >>> len(k), k["block1_dw"].shape
    (13, (3, 3, 8))
    """
    m = fold_batchnorm(model, strict=False, warn_if_none=False) if fold else model
    out = {}
    for layer in m.layers:
        if is_weighted(layer) and kind(layer) == "depthwise":
            w = layer.get_weights()[0]
            out[layer.name] = w.reshape(w.shape[0], w.shape[1], -1)
    return out


def channel_ranges(w) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (last axis) minimum and maximum.

    Examples
    --------
    >>> lo, hi = channel_ranges(np.array([[1.0, -2.0], [3.0, 0.5]]))
    >>> lo.tolist(), hi.tolist()
    ([1.0, -2.0], [3.0, 0.5])
    """
    w = check_array(w, "w")
    flat = w.reshape(-1, w.shape[-1])
    return flat.min(axis=0), flat.max(axis=0)


def levels_per_channel(w, num_bits: int = 8, per_channel: bool = False) -> np.ndarray:
    """Distinct integer levels each channel (last axis) uses under a symmetric narrow-range grid.

    Examples
    --------
    >>> w = np.stack([np.linspace(-1, 1, 9), np.linspace(-0.001, 0.001, 9)], axis=-1)
    >>> levels_per_channel(w, 8).tolist(), levels_per_channel(w, 8, per_channel=True).tolist()
    ([9, 1], [9, 9])
    """
    w = check_array(w, "w")
    flat = w.reshape(-1, w.shape[-1])
    if per_channel:
        m = np.abs(flat).max(axis=0)
        p = compute_params(-m, m, num_bits, symmetric=True, narrow_range=True, axis=-1)
    else:
        m = float(np.abs(flat).max())
        p = compute_params(-m, m, num_bits, symmetric=True, narrow_range=True)
    q = p.quantize(flat)
    return np.array([np.unique(q[:, c]).size for c in range(flat.shape[1])])


def layer_range_stats(w, num_bits: int = 8) -> dict:
    """The numbers Part II reports for one layer's folded weights (channels last).

    ``range_ratio``: widest channel range over the median channel range;
    ``few_levels``: fraction of channels a per-tensor grid gives fewer than 4 distinct levels;
    ``zero``: channels whose weights are all exactly 0; ``crushed``: channels (zero or not)
    that a per-tensor grid rounds entirely to 0.

    Examples
    --------
    >>> w = np.stack([np.linspace(-1, 1, 9), np.zeros(9), np.full(9, 1e-4)], axis=-1)
    >>> s = layer_range_stats(w)
    >>> s["channels"], s["zero"], s["crushed"], round(s["few_levels"], 3)
    (3, 1, 2, 0.667)
    """
    w = check_array(w, "w")
    lo, hi = channel_ranges(w)
    width = hi - lo
    levels = levels_per_channel(w, num_bits)
    flat = w.reshape(-1, w.shape[-1])
    m = float(np.abs(flat).max())
    p = compute_params(-m, m, num_bits, symmetric=True, narrow_range=True)
    crushed = int(np.sum(np.all(p.quantize(flat) == 0, axis=0)))
    median = float(np.median(width))
    return {
        "channels": int(w.shape[-1]),
        "max_range": float(width.max()),
        "median_range": median,
        "range_ratio": float(width.max() / median) if median > 0 else float("inf"),
        "few_levels": float(np.mean(levels < 4)),
        "zero": int(np.sum(np.all(flat == 0, axis=0))),
        "crushed": crushed,
    }


def bn_statistics(model, epsilon: float | None = None) -> dict[str, dict]:
    """For every foldable BatchNorm: its running variance and fold scale ``gamma/sqrt(var+eps)``.

    ``epsilon`` overrides the layers' own epsilon (to explore its effect).

    Examples
    --------
    >>> from qlib.models import mobilenet_v1
    >>> stats = bn_statistics(mobilenet_v1(alpha=0.25))
    >>> next(iter(stats)), sorted(stats["block1_dw_bn"])
    ('conv1_bn', ['layer', 'scale', 'variance'])
    """
    out = {}
    for pair in batchnorm_pairs(model, strict=False):
        bn = model.get_layer(pair.bn)
        var = np.asarray(bn.moving_variance, np.float64)
        if epsilon is None:
            scale = bn_scale(bn)
        else:
            gamma = np.asarray(bn.gamma, np.float64) if bn.gamma is not None else 1.0
            scale = gamma / np.sqrt(var + epsilon)
        out[pair.bn] = {"layer": pair.layer, "variance": var, "scale": scale}
    return out
