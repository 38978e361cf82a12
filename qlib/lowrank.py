"""Low-rank pointwise convolutions: one 1x1 conv as two thinner ones, by truncated SVD.

A 1x1 Conv2D with kernel ``W`` (``I`` inputs, ``O`` outputs) multiplies every pixel by ``W``:
``I * O`` multiply-adds per pixel. Write ``W = U S V^T`` (singular value decomposition) and keep
the ``r`` largest singular values: ``W ~ A B`` with ``A = U_r sqrt(S_r)`` (``I x r``) and
``B = sqrt(S_r) V_r^T`` (``r x O``). The layer becomes a 1x1 conv to ``r`` channels followed by
a 1x1 conv to ``O`` channels, ``r (I + O)`` multiply-adds per pixel: fewer as soon as
``r < I O / (I + O)`` (half the width for a square layer). At full rank ``r = min(I, O)`` the
product is ``W`` again.

The LPIRC 2018 runner-up (Hyperconnect) factorized the pointwise layers of a MobileNet v1 this
way and fine-tuned after each. We factorize **after folding BatchNorm** (:func:`factorize_model`
folds first): the kernel that is factorized is the one that runs, and the BN scale that weights
its output channels is part of it. The second conv carries the folded bias and the activation.
"""

from __future__ import annotations

import numbers

import numpy as np

from ._checks import check_array
from .layers import is_weighted, kind

__all__ = ["svd_factors", "singular_values", "energy", "rank_for_energy", "saving_rank",
           "pointwise_layers", "factorize_model"]


def _matrix(kernel) -> tuple[np.ndarray, tuple]:
    if is_weighted(kernel):
        if kind(kernel) != "conv2d" or tuple(kernel.kernel_size) != (1, 1):
            raise ValueError(f"layer {kernel.name!r} is not a 1x1 Conv2D; low-rank factorization here is for "
                             "pointwise convolutions (and Dense kernels passed as arrays)")
        kernel = np.asarray(kernel.kernel)
    w = check_array(kernel, "kernel").astype(np.float64)
    if w.ndim == 4:
        if w.shape[:2] != (1, 1):
            raise ValueError(f"kernel has spatial size {w.shape[:2]}; only 1x1 convolutions (1, 1, I, O) and "
                             "(I, O) matrices are factorized")
        return w[0, 0], w.shape
    if w.ndim != 2:
        raise ValueError(f"kernel must be (I, O) or a 1x1 conv kernel (1, 1, I, O), got shape {w.shape}")
    return w, w.shape


def singular_values(kernel) -> np.ndarray:
    """The singular values of a 1x1 conv (or dense) kernel, largest first.

    Examples
    --------
    >>> singular_values(np.diag([3.0, 1.0, 2.0])).tolist()
    [3.0, 2.0, 1.0]
    """
    return np.linalg.svd(_matrix(kernel)[0], compute_uv=False)


def energy(kernel) -> np.ndarray:
    """Fraction of the kernel's energy (sum of squared singular values) kept at rank 1, 2, ...

    Entry ``r - 1`` is ``sum(s[:r]**2) / sum(s**2)``: the share of ``||W||_F^2`` the rank-``r``
    approximation keeps (its relative squared error is one minus it).

    Examples
    --------
    >>> energy(np.diag([3.0, 1.0, 2.0])).round(3).tolist()
    [0.643, 0.929, 1.0]
    """
    s2 = singular_values(kernel) ** 2
    total = s2.sum()
    if total == 0:
        return np.ones_like(s2)
    return np.cumsum(s2) / total


def rank_for_energy(kernel, fraction: float) -> int:
    """The smallest rank that keeps ``fraction`` of the kernel's energy.

    Examples
    --------
    >>> rank_for_energy(np.diag([3.0, 1.0, 2.0]), 0.9)
    2
    """
    if not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    e = energy(kernel)
    return int(min(np.searchsorted(e, fraction - 1e-12) + 1, e.size))


def saving_rank(input_dim: int, outputs: int) -> int:
    """The largest rank at which two thin convs cost fewer multiply-adds than one: ``r (I + O) < I O``.

    Examples
    --------
    >>> saving_rank(64, 64), saving_rank(32, 64)
    (31, 21)
    """
    return int(np.ceil(input_dim * outputs / (input_dim + outputs)) - 1)


def _check_rank(rank, full: int, name: str = "") -> int:
    where = f" of layer {name!r}" if name else ""
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
        raise TypeError(f"rank{where} must be an integer, got {rank!r}")
    if not 1 <= int(rank) <= full:
        raise ValueError(f"rank={rank}{where} is out of range: the kernel has rank at most {full} "
                         f"(min of its input and output channels); choose 1..{full}")
    return int(rank)


def svd_factors(kernel, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """The two factors of the rank-``rank`` truncated SVD of a 1x1 conv (or dense) kernel.

    Returns ``(first, second)`` shaped like the input: ``(1, 1, I, r)`` and ``(1, 1, r, O)`` for a
    conv kernel, ``(I, r)`` and ``(r, O)`` for a matrix. ``first @ second`` is the best rank-``r``
    approximation (Eckart-Young); at ``rank = min(I, O)`` it is the kernel itself. The singular
    values are split evenly (``sqrt(S)`` into each factor), so both factors have similar ranges
    (which matters when they are quantized to 8 bits).

    Examples
    --------
    >>> w = np.random.default_rng(0).normal(size=(1, 1, 6, 4))
    >>> a, b = svd_factors(w, 4)
    >>> a.shape, b.shape, bool(np.allclose(a[0, 0] @ b[0, 0], w[0, 0]))
    ((1, 1, 6, 4), (1, 1, 4, 4), True)
    >>> svd_factors(w, 0)
    Traceback (most recent call last):
    ...
    ValueError: rank=0 is out of range: the kernel has rank at most 4 (min of its input and output channels); choose 1..4
    """
    w, shape = _matrix(kernel)
    rank = _check_rank(rank, min(w.shape))
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    root = np.sqrt(s[:rank])
    first, second = u[:, :rank] * root, root[:, None] * vt[:rank]
    if len(shape) == 4:
        return first[None, None], second[None, None]
    return first, second


def pointwise_layers(model) -> list[str]:
    """Names of the 1x1, stride-1 Conv2D layers of a model (the ones :func:`factorize_model` can split).

    Examples
    --------
    >>> from qlib.models import mobilenet_v1
    >>> names = pointwise_layers(mobilenet_v1(alpha=0.25))
    >>> len(names), names[:2]
    (13, ['block1_pw', 'block2_pw'])
    """
    from .graph import as_functional

    return [layer.name for layer in as_functional(model).layers
            if is_weighted(layer) and kind(layer) == "conv2d" and tuple(layer.kernel_size) == (1, 1)
            and tuple(layer.strides) == (1, 1) and getattr(layer, "groups", 1) == 1]


def factorize_model(model, ranks: dict):
    """A copy of ``model`` (BatchNorm folded) with each 1x1 conv in ``ranks`` split into two thinner ones.

    Layer ``name`` becomes ``name + "_lr"`` (``I -> r``, no bias, no activation) followed by
    ``name`` (``r -> O``, with the folded bias and the layer's own activation), built with
    :func:`qlib.folding.rebuild`. Every other layer is unchanged (BN folded).

    Parameters
    ----------
    model : keras.Model
    ranks : dict
        ``{layer name: rank}``; each rank in ``1..min(I, O)``.

    Examples
    --------
    >>> import keras
    >>> inp = keras.Input((4, 4, 8), name="image")
    >>> m = keras.Model(inp, keras.layers.Conv2D(6, 1, name="pw")(inp))
    >>> f = factorize_model(m, {"pw": 6})                     # full rank: the same function
    >>> [(l.name, tuple(l.kernel.shape)) for l in f.layers[1:]]
    [('pw_lr', (1, 1, 8, 6)), ('pw', (1, 1, 6, 6))]
    >>> x = np.random.default_rng(0).normal(size=(2, 4, 4, 8)).astype("float32")
    >>> bool(np.allclose(f(x), m(x), atol=1e-5))
    True
    >>> factorize_model(m, {"pw": 7})
    Traceback (most recent call last):
    ...
    ValueError: rank=7 of layer 'pw' is out of range: the kernel has rank at most 6 (min of its input and output channels); choose 1..6
    """
    import keras

    from .folding import fold_batchnorm, rebuild

    if not isinstance(ranks, dict) or not ranks:
        raise TypeError(f"ranks must be a non-empty dict {{layer name: rank}}, got {ranks!r}")
    folded = fold_batchnorm(model)
    allowed = set(pointwise_layers(folded))
    factors = {}
    for name, rank in ranks.items():
        if name not in allowed:
            raise ValueError(f"layer {name!r} is not a 1x1 stride-1 Conv2D of model {model.name!r}; "
                             f"pointwise layers: {sorted(allowed)[:6]}{' ...' if len(allowed) > 6 else ''}")
        layer = folded.get_layer(name)
        w = layer.get_weights()[0]
        _check_rank(rank, min(w.shape[2:]), name)
        factors[name] = svd_factors(w, rank)
    # pass 1: a placeholder (Identity) before each split layer; pass 2: swap it for the first thin conv
    marked = rebuild(folded, insert_before={n: keras.layers.Identity(name=f"{n}_lr") for n in factors})
    replace, weights = {}, {}
    for name, (first, second) in factors.items():
        old = folded.get_layer(name)
        config = old.get_config()
        config.update(filters=int(old.filters), kernel_regularizer=None)
        replace[f"{name}_lr"] = keras.layers.Conv2D(first.shape[-1], 1, use_bias=False, name=f"{name}_lr")
        replace[name] = keras.layers.Conv2D.from_config(config)
        weights[f"{name}_lr"] = [first.astype(np.float32)]
        weights[name] = [second.astype(np.float32)] + old.get_weights()[1:]
    return rebuild(marked, replace=replace, weights=weights)
