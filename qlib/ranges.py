"""Range setters: choose the real range ``(min, max)`` a quantizer covers.

Every setter has the signature ``setter(x, axis=None, num_bits=8, symmetric=False) -> (min, max)``
and returns scalars (``axis=None``) or one value per slice along ``axis``; pass any of them as
``range_setter`` to :func:`qlib.quantizers.fit_params`.

- :func:`minmax`: the whole observed range; no clipping, the coarsest grid.
- :func:`percentile`: ignore the outermost tails.
- :func:`mse`: the clipping ratio that minimises the mean squared quantization error.
- :func:`greedy_search`: the LPIRC 2018 winner's search over step size and offset that
  minimises quantization loss plus saturation loss on a histogram of the tensor;
  :func:`greedy_ranges` runs the same search on histograms already made, one row at a time
  (the plain reference) or all rows at once (what :func:`greedy_search` uses), and
  :func:`pairwise_sum` is the numpy-exact summation that makes the two agree bit for bit.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ._checks import check_array, check_axis, check_count, check_num_bits
from .quantizers import TFLITE_MIN_RANGE, compute_params, tensor_min_max

__all__ = ["minmax", "percentile", "mse", "histogram", "quantization_loss", "greedy_search", "greedy_ranges",
           "pairwise_sum", "RANGE_SETTERS"]


def _channels_first(x: np.ndarray, axis: int | None) -> np.ndarray:
    """Reshape to ``(channels, values)`` (one row when ``axis`` is None)."""
    if axis is None:
        return x.reshape(1, -1)
    return np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)


def _prepare(x, axis, num_bits):
    x = check_array(x, "x")
    ax = check_axis(axis, x.ndim)
    check_num_bits(num_bits)
    return x, ax


def _finish(lo, hi, axis):
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    return (lo.reshape(()), hi.reshape(())) if axis is None else (lo, hi)


def minmax(x, axis: int | None = None, num_bits: int = 8, symmetric: bool = False):
    """The observed minimum and maximum.

    Examples
    --------
    >>> [float(v) for v in minmax(np.array([-1.0, 0.5, 3.0]))]
    [-1.0, 3.0]
    """
    x, ax = _prepare(x, axis, num_bits)
    return tensor_min_max(x, ax)


def percentile(x, axis: int | None = None, num_bits: int = 8, symmetric: bool = False,
               percent: float = 99.99):
    """Clip the tails: ``min``/``max`` at the ``100 - percent`` and ``percent`` percentiles.

    Use ``functools.partial(percentile, percent=99.9)`` to pass another percent as a setter.

    Examples
    --------
    >>> x = np.r_[np.linspace(-1, 1, 999), 100.0]      # one outlier
    >>> lo, hi = percentile(x, percent=99.0)
    >>> round(float(lo), 3), round(float(hi), 3)
    (-0.98, 0.982)
    """
    x, ax = _prepare(x, axis, num_bits)
    if not 50.0 < float(percent) <= 100.0:
        raise ValueError(f"percent must be in (50, 100], got {percent!r}")
    rows = _channels_first(x, ax)
    lo = np.percentile(rows, 100.0 - percent, axis=1)
    hi = np.percentile(rows, percent, axis=1)
    return _finish(lo, hi, ax)


def _fq_rows(rows: np.ndarray, lo: np.ndarray, hi: np.ndarray, num_bits: int, symmetric: bool):
    """Fake-quantize each row with its own range (rows: channels x values)."""
    p = compute_params(lo, hi, num_bits, symmetric, False, axis=0)
    return p.fake_quant(rows)


def mse(x, axis: int | None = None, num_bits: int = 8, symmetric: bool = False,
        grid: int = 100):
    """Shrink the min-max range by the factor in ``(0, 1]`` that minimises mean squared error.

    For each candidate ``alpha`` in ``linspace(1/grid, 1, grid)`` the range
    ``alpha * (min, max)`` is tried; the one with the smallest ``mean((x - fake_quant(x))**2)``
    wins, per channel when ``axis`` is given.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal(10_000)
    >>> lo, hi = mse(x, num_bits=4)
    >>> bool(hi < x.max()), bool(lo > x.min())        # clipped: 4 bits cannot afford the tails
    (True, True)
    """
    x, ax = _prepare(x, axis, num_bits)
    grid = check_count(grid, "grid", 1)
    rows = _channels_first(x, ax).astype(np.float64)
    lo0, hi0 = rows.min(axis=1), rows.max(axis=1)
    best = np.full(rows.shape[0], np.inf)
    best_lo, best_hi = lo0.copy(), hi0.copy()
    for alpha in np.linspace(1.0 / grid, 1.0, int(grid)):
        lo, hi = alpha * lo0, alpha * hi0
        err = np.mean((rows - _fq_rows(rows, lo, hi, num_bits, symmetric)) ** 2, axis=1)
        better = err < best
        best = np.where(better, err, best)
        best_lo, best_hi = np.where(better, lo, best_lo), np.where(better, hi, best_hi)
    return _finish(best_lo, best_hi, ax)


def histogram(x, bins: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Counts and bin centres of ``x`` over its min-max range.

    Examples
    --------
    >>> counts, centres = histogram([0.0, 0.0, 1.0], bins=2)
    >>> counts.tolist(), centres.tolist()
    ([2, 1], [0.25, 0.75])
    """
    x = check_array(x, "x").ravel()
    lo, hi = float(x.min()), float(x.max())
    if hi == lo:
        hi = lo + TFLITE_MIN_RANGE
    counts, edges = np.histogram(x, bins=int(bins), range=(lo, hi))
    return counts, (edges[:-1] + edges[1:]) / 2


def quantization_loss(counts, centres, min_val: float, max_val: float, num_bits: int = 8,
                      symmetric: bool = False) -> tuple[float, float]:
    """The two losses the greedy search trades off, for the range ``[min_val, max_val]``.

    With the grid of :func:`~qlib.quantizers.compute_params` and a histogram (``counts`` at
    ``centres``)::

        quantization loss = sum over bins inside the grid   of count * (c - fake_quant(c))**2
        saturation loss   = sum over bins outside the grid  of count * (c - clip(c))**2

    Both are divided by the total count (a mean squared error). A wider range lowers the
    saturation loss and raises the quantization loss (a coarser step); a narrower one the reverse.

    Examples
    --------
    >>> counts, centres = histogram(np.linspace(0, 1, 1001), bins=200)
    >>> q_full, s_full = quantization_loss(counts, centres, 0.0, 1.0, num_bits=3)
    >>> q_clip, s_clip = quantization_loss(counts, centres, 0.0, 0.5, num_bits=3)
    >>> s_full == 0.0, bool(s_clip > 0), bool(q_clip < q_full)
    (True, True, True)
    """
    counts = np.asarray(counts, np.float64)
    centres = np.asarray(centres, np.float64)
    p = compute_params(min_val, max_val, num_bits, symmetric, False)
    lo, hi = (float(v) for v in p.range)
    err = counts * (centres - p.fake_quant(centres)) ** 2
    inside = (centres >= lo) & (centres <= hi)
    total = counts.sum()
    return float(err[inside].sum() / total), float(err[~inside].sum() / total)


#: from this many rows (channels) on, :func:`greedy_search` searches them all at once
_VECTORIZE_FROM = 4


def _greedy_row_reference(counts, centres, num_bits, symmetric, max_steps):
    """Greedy coordinate descent on (min, max) over histogram bin positions, one row at a time.

    The original (scalar) implementation, kept as the reference that :func:`_greedy_rows`
    must reproduce exactly: ``greedy_ranges(..., method="loop")`` (``tests/test_ranges.py``,
    ``benchmarks/greedy_speed.py``).
    """
    n = centres.size
    width = centres[1] - centres[0] if n > 1 else TFLITE_MIN_RANGE
    edges = np.r_[centres - width / 2, centres[-1] + width / 2]

    def loss(i, j):  # range = [edges[i], edges[j]]
        if symmetric:
            half = max(abs(edges[i]), abs(edges[j]))
            return sum(quantization_loss(counts, centres, -half, half, num_bits, True))
        return sum(quantization_loss(counts, centres, edges[i], edges[j], num_bits, False))

    if symmetric:
        # one free parameter: the half-width t; shrink the larger side's magnitude
        t_candidates = np.abs(edges)
        order = np.argsort(t_candidates)
        t_sorted = t_candidates[order]
        k = n  # index into t_sorted, start at the largest magnitude
        best = loss(order[k], order[k])
        step = max(1, n // 8)
        for _ in range(max_steps):
            moved = False
            for cand in (k - step, k + step):
                if 0 < cand <= n:
                    c_loss = loss(order[cand], order[cand])
                    if c_loss < best:
                        best, k, moved = c_loss, cand, True
                        break
            if not moved:
                if step == 1:
                    break
                step //= 2
        half = t_sorted[k]
        return -half, half

    i, j = 0, n
    best = loss(i, j)
    step = max(1, n // 8)
    for _ in range(max_steps):
        moves = [(i + step, j), (i, j - step), (i - step, j), (i, j + step)]
        moves = [(a, b) for a, b in moves if 0 <= a < b <= n]
        losses = [loss(a, b) for a, b in moves]
        if losses and min(losses) < best:
            best = min(losses)
            i, j = moves[int(np.argmin(losses))]
        elif step == 1:
            break
        else:
            step //= 2
    return edges[i], edges[j]


def pairwise_sum(a: np.ndarray, start: np.ndarray, n: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """``[a[r, s:s + m].sum() for r, s, m in zip(rows, start, n)]`` for ``a >= 0``, bit for bit.

    numpy sums a float array pairwise: fewer than 8 values in order; up to 128 in eight running
    sums (values ``0, 8, 16...`` into the first, ``1, 9, 17...`` into the second...) combined as
    ``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))``, then the values past the last full
    block of 8 in order; longer runs split at ``n // 2`` rounded down to a multiple of 8, each half
    summed the same way. Replaying that order for every row at once keeps the vectorized greedy
    search's losses, and so its choices, identical to the one-row-at-a-time reference. Adding
    ``+0.0`` leaves a sum of non-negative values unchanged, so windows are padded with zeros.

    Parameters
    ----------
    a : ndarray of shape (rows, width)
        Non-negative values (the greedy search's per-bin losses).
    start, n : ndarray of int, one per summed window
        Where each window starts in its row and how many values it holds.
    rows : ndarray of int, optional
        The row of each window (default: window ``k`` is in row ``k``).

    Returns
    -------
    ndarray of float64: one sum per window, equal bit for bit to ``a[row, start:start + n].sum()``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = rng.exponential(size=(3, 300)) * 10.0 ** rng.integers(-8, 8, size=(3, 300))
    >>> start, n = np.array([0, 5, 17]), np.array([300, 140, 9])
    >>> sums = pairwise_sum(a, start, n)
    >>> [bool(sums[k] == a[k, s:s + m].sum()) for k, (s, m) in enumerate(zip(start, n))]
    [True, True, True]
    """
    a = _two_d(a, "a")
    start, n = np.asarray(start), np.asarray(n)
    if start.shape != n.shape or start.ndim != 1:
        raise ValueError(f"start and n must be 1-D and the same length, got shapes {start.shape} and {n.shape}")
    if np.any(a < 0):
        raise ValueError("pairwise_sum pads windows with +0.0 and so needs a >= 0; it got negative values")
    if np.any(n < 0) or np.any(start < 0) or np.any(start + n > a.shape[1]):
        raise ValueError(f"every window must lie in its row: 0 <= start and start + n <= {a.shape[1]}")
    return _pairwise_sum(a, start, n, rows)


def _pairwise_sum(a: np.ndarray, start: np.ndarray, n: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """:func:`pairwise_sum` without the checks (the greedy search's inner loop)."""
    rows = np.arange(a.shape[0]) if rows is None else rows
    out = np.empty(rows.shape[0])
    big = n > 128
    if big.any():
        s, m, r = start[big], n[big], rows[big]
        half = m // 2 - (m // 2) % 8
        out[big] = _pairwise_sum(a, s, half, r) + _pairwise_sum(a, s + half, m - half, r)
    leaf = ~big
    if not leaf.any():
        return out
    s, m, r = start[leaf], n[leaf], rows[leaf]
    pos = np.arange(136)  # 128 values and room for the 7 past the last block
    win = a[r[:, None], np.minimum(s[:, None] + pos, a.shape[1] - 1)]
    win[pos >= m[:, None]] = 0.0
    full = np.where(m < 8, 0, m - m % 8)  # under 8 values numpy adds them all in order
    k = np.arange(r.shape[0])
    tail = [win[k, full + t] for t in range(7)]  # zero past the end
    win[pos >= full[:, None]] = 0.0
    blocks = win[:, :128].reshape(-1, 16, 8)
    acc = blocks[:, 0].copy()
    for b in range(1, 16):
        acc += blocks[:, b]
    res = ((acc[:, 0] + acc[:, 1]) + (acc[:, 2] + acc[:, 3])) + ((acc[:, 4] + acc[:, 5]) + (acc[:, 6] + acc[:, 7]))
    for t in tail:
        res += t
    out[leaf] = res
    return out


def _nonempty_bins(counts, centres):
    """Each row's non-empty bins, in bin order: (bin index, count, centre), padded to the longest row.

    Empty bins add exactly 0 to both losses, so only these need the quantizer; padding entries
    point at a spare column ``n`` and have count 0.
    """
    n = counts.shape[1]
    nnz = np.count_nonzero(counts, axis=1)
    width = max(int(nnz.max()), 1)
    order = np.argsort(counts == 0, axis=1, kind="stable")[:, :width]
    real = np.arange(width) < nnz[:, None]
    return (np.where(real, order, n), np.where(real, np.take_along_axis(counts, order, 1), 0.0),
            np.where(real, np.take_along_axis(centres, order, 1), centres[:, :1]))


def _losses(hist, rows, lo, hi, num_bits, symmetric):
    """``sum(quantization_loss(counts[r], centres[r], l, h))`` for many (row, l, h) at once, bit for bit.

    ``hist``: ``(counts, centres, totals, _nonempty_bins(counts, centres))`` of all rows.
    """
    counts, centres, totals, (bin_idx, bin_cnt, bin_cen) = hist
    p = compute_params(lo, hi, num_bits, symmetric, False, axis=0)
    grid_lo, grid_hi = p.range
    cen = bin_cen[rows]
    n = counts.shape[1]
    err = np.zeros((rows.shape[0], n + 1))
    err[np.arange(rows.shape[0])[:, None], bin_idx[rows]] = bin_cnt[rows] * (cen - p.fake_quant(cen)) ** 2
    err = err[:, :n]
    # centres ascend, so the bins inside the grid are one run [a, b): sum it, then the rest
    a = np.count_nonzero(centres[rows] < grid_lo[:, None], axis=1)
    b = np.maximum(a, np.count_nonzero(centres[rows] <= grid_hi[:, None], axis=1))
    inside = _pairwise_sum(err, a, b - a)
    pos = np.arange(n)
    outside = np.take_along_axis(err, np.where(pos < a[:, None], pos, np.minimum(pos + (b - a)[:, None], n - 1)),
                                 axis=1)
    outside = _pairwise_sum(outside, np.zeros_like(a), n - (b - a))
    total = totals[rows]
    return inside / total + outside / total


def _greedy_rows(counts, centres, num_bits, symmetric, max_steps):
    """:func:`_greedy_row_reference` for every row of ``counts``/``centres`` (channels x bins) at once.

    Every row takes the same decisions as in the reference: the losses are computed with the
    same float operations in the same order (:func:`pairwise_sum`), moves are tried in the same
    order, ties go to the first move, and a row stops when the reference would.
    """
    counts = np.asarray(counts, np.float64)
    rows_n, n = counts.shape
    # the bin edges keep the histogram's dtype (float32 for float32 data), the losses use float64,
    # both as in the reference
    centres64 = np.asarray(centres, np.float64)
    hist = (counts, centres64, counts.sum(axis=1), _nonempty_bins(counts, centres64))
    width = centres[:, 1] - centres[:, 0] if n > 1 else np.full(rows_n, TFLITE_MIN_RANGE)
    edges = np.concatenate([centres - width[:, None] / 2, (centres[:, -1] + width / 2)[:, None]], axis=1)
    step = np.full(rows_n, max(1, n // 8))
    active = np.ones(rows_n, bool)
    every = np.arange(rows_n)

    if symmetric:
        t_sorted = np.sort(np.abs(edges), axis=1)

        def loss(r, k):
            half = t_sorted[r, k]
            return _losses(hist, r, -half, half, num_bits, True)

        k = np.full(rows_n, n)
        best = loss(every, k)
        for _ in range(max_steps):
            r = np.flatnonzero(active)
            if r.size == 0:
                break
            # both candidates at once; the reference tries shrinking first and takes the first that helps
            down, up = k[r] - step[r], k[r] + step[r]
            ok_down, ok_up = (down > 0) & (down <= n), (up > 0) & (up <= n)
            c_loss = np.full((2, r.size), np.inf)
            both = np.r_[r[ok_down], r[ok_up]]
            if both.size:
                vals = loss(both, np.r_[down[ok_down], up[ok_up]])
                c_loss[0, ok_down], c_loss[1, ok_up] = vals[:ok_down.sum()], vals[ok_down.sum():]
            take_down = c_loss[0] < best[r]
            take_up = ~take_down & (c_loss[1] < best[r])
            best[r] = np.where(take_down, c_loss[0], np.where(take_up, c_loss[1], best[r]))
            k[r] = np.where(take_down, down, np.where(take_up, up, k[r]))
            stay = r[~(take_down | take_up)]
            active[stay[step[stay] == 1]] = False
            step[stay] = np.maximum(step[stay] // 2, 1)
        half = t_sorted[every, k]
        return -half, half

    i, j = np.zeros(rows_n, np.int64), np.full(rows_n, n)
    best = _losses(hist, every, edges[every, i], edges[every, j], num_bits, False)
    for _ in range(max_steps):
        r = np.flatnonzero(active)
        if r.size == 0:
            break
        s = step[r]
        moves = [(i[r] + s, j[r]), (i[r], j[r] - s), (i[r] - s, j[r]), (i[r], j[r] + s)]
        ok = np.array([(a >= 0) & (a < b) & (b <= n) for a, b in moves])  # (4, rows)
        losses = np.full((4, r.size), np.inf)
        m_idx, r_idx = np.nonzero(ok)  # all valid moves of all rows in one batch
        if m_idx.size:
            a = np.array([mv[0] for mv in moves])[m_idx, r_idx]
            b = np.array([mv[1] for mv in moves])[m_idx, r_idx]
            losses[m_idx, r_idx] = _losses(hist, r[r_idx], edges[r[r_idx], a], edges[r[r_idx], b], num_bits, False)
        pick = np.argmin(losses, axis=0)  # the first of equal losses, like the reference
        low = losses[pick, np.arange(r.size)]
        better = low < best[r]
        win = r[better]
        best[win] = low[better]
        i[win] = np.choose(pick[better], [mv[0][better] for mv in moves])
        j[win] = np.choose(pick[better], [mv[1][better] for mv in moves])
        stay = r[~better]
        active[stay[step[stay] == 1]] = False
        step[stay] = np.maximum(step[stay] // 2, 1)
    return edges[every, i], edges[every, j]


def greedy_search(x, axis: int | None = None, num_bits: int = 8, symmetric: bool = False,
                  bins: int = 512, max_steps: int = 1000):
    """LPIRC 2018 winner's range search: step size and offset minimising quantization + saturation loss.

    The grid of a uniform quantizer is fixed by its step size ``Delta = (max - min) / (2**b - 1)``
    and its offset (``min``; the zero point). The search starts from the min-max range and walks
    ``min`` and ``max`` over the positions of a ``bins``-bin histogram of the tensor, greedily
    taking whichever single move (raise ``min``, lower ``max``, or undo either) most lowers

    .. math:: L(\\min, \\max) = \\underbrace{\\textstyle\\sum_{c \\in [\\min,\\max]} n_c\\,(c - Q(c))^2}_{\\text{quantization loss}}
              + \\underbrace{\\textstyle\\sum_{c \\notin [\\min,\\max]} n_c\\,(c - \\mathrm{clip}(c))^2}_{\\text{saturation loss}}

    (see :func:`quantization_loss`), with a move length that starts at ``bins / 8`` and halves
    whenever no move helps, until a move of one bin cannot lower the loss. Symmetric
    quantizers search the half-width alone. The losses are evaluated with the exact grid the
    quantizer will use (zero point rounded, so 0 stays representable).

    Per channel (``axis`` given), all channels are searched at once, as arrays: each channel
    makes exactly the choices it would make searched alone (same losses to the last bit, same
    order of moves, same ties), so the ranges are identical to a loop over channels, several
    times faster (``benchmarks/greedy_speed.py``).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.r_[rng.standard_normal(10_000), 12.0]          # a single far outlier
    >>> lo, hi = greedy_search(x, num_bits=4)
    >>> bool(hi < 6.0)                                          # the outlier is clipped
    True
    >>> def total(lo, hi):
    ...     return sum(quantization_loss(*histogram(x, 512), lo, hi, num_bits=4))
    >>> bool(total(lo, hi) < total(x.min(), x.max()))
    True
    """
    x, ax = _prepare(x, axis, num_bits)
    bins = check_count(bins, "bins", 2)
    rows = _channels_first(x, ax)
    hists = [histogram(row, bins) for row in rows]
    counts, centres = np.stack([h[0] for h in hists]), np.stack([h[1] for h in hists])
    lo, hi = _greedy(counts, centres, num_bits, symmetric, int(max_steps), "auto")
    return _finish(lo, hi, ax)


def greedy_ranges(counts, centres, num_bits: int = 8, symmetric: bool = False, max_steps: int = 1000,
                  method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """:func:`greedy_search` on histograms already made: one ``(min, max)`` per row.

    Parameters
    ----------
    counts, centres : ndarray of shape (rows, bins)
        One histogram per row, as :func:`histogram` makes them (``centres`` evenly spaced).
    num_bits, symmetric, max_steps
        As in :func:`greedy_search`.
    method : {"auto", "rows", "loop"}
        ``"loop"``: one row at a time in plain Python (the original implementation, the
        reference); ``"rows"``: every row at once, as arrays (same losses to the last bit,
        same moves, same ties, so the same ranges); ``"auto"``: the loop below 4 rows
        (less overhead), else the arrays.

    Returns
    -------
    (min, max): two float arrays of shape (rows,).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> hists = [histogram(rng.laplace(size=500) * s, 256) for s in (0.1, 1.0, 10.0, 0.01, 3.0)]
    >>> counts, centres = np.stack([h[0] for h in hists]), np.stack([h[1] for h in hists])
    >>> loop = greedy_ranges(counts, centres, num_bits=4, method="loop")
    >>> rows = greedy_ranges(counts, centres, num_bits=4, method="rows")
    >>> all(np.array_equal(a, b) for a, b in zip(loop, rows))
    True
    """
    if method not in ("auto", "rows", "loop"):
        raise ValueError(f"method must be 'auto', 'rows' or 'loop', got {method!r}")
    counts, centres = _two_d(counts, "counts"), _two_d(centres, "centres")
    if counts.shape != centres.shape:
        raise ValueError(f"counts and centres must have the same shape (rows, bins), got {counts.shape} and {centres.shape}")
    if np.any(counts < 0):
        raise ValueError("counts must be non-negative (a histogram)")
    num_bits = check_num_bits(num_bits)
    max_steps = check_count(max_steps, "max_steps", 0)
    return _greedy(counts, centres, num_bits, bool(symmetric), int(max_steps), method)


def _two_d(x, name):
    x = check_array(x, name)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, bins), got shape {x.shape}")
    return x


def _greedy(counts, centres, num_bits, symmetric, max_steps, method):
    if method == "loop" or (method == "auto" and counts.shape[0] < _VECTORIZE_FROM):
        res = np.array([_greedy_row_reference(c, m, num_bits, symmetric, max_steps) for c, m in zip(counts, centres)])
        return res[:, 0], res[:, 1]
    return _greedy_rows(counts, centres, num_bits, symmetric, max_steps)


#: Setters by name, for sweeps and figures.
RANGE_SETTERS = {
    "minmax": minmax,
    "percentile": partial(percentile, percent=99.99),
    "mse": mse,
    "greedy": greedy_search,
}
