"""Range setters: shapes, ordering, and that each optimises what it claims."""

from functools import partial

import numpy as np
import pytest

from qlib.quantizers import fit_params
from qlib.ranges import (
    RANGE_SETTERS,
    greedy_search,
    histogram,
    minmax,
    mse,
    percentile,
    quantization_loss,
)


@pytest.fixture
def heavy(rng):
    return np.r_[rng.laplace(size=20_000), 25.0, -18.0]


@pytest.mark.parametrize("name", sorted(RANGE_SETTERS))
def test_setters_return_ranges_inside_minmax(name, rng):
    x = rng.normal(size=(3, 3, 16)) * np.logspace(-2, 1, 16)
    lo, hi = RANGE_SETTERS[name](x, axis=-1, num_bits=6)
    assert lo.shape == hi.shape == (16,)
    assert np.all(lo <= hi)
    assert np.all(lo >= x.min(axis=(0, 1)) - 1e-12) and np.all(hi <= x.max(axis=(0, 1)) + 1e-12)
    lo_t, hi_t = RANGE_SETTERS[name](x, num_bits=6)
    assert np.ndim(lo_t) == 0 and float(lo_t) <= float(hi_t)


def test_minmax_and_percentile_values():
    x = np.arange(101.0)
    assert [float(v) for v in minmax(x)] == [0.0, 100.0]
    lo, hi = percentile(x, percent=90.0)
    assert float(lo) == pytest.approx(10.0) and float(hi) == pytest.approx(90.0)
    with pytest.raises(ValueError, match="percent"):
        percentile(x, percent=20)


def _mse_of(x, setter, bits):
    p = fit_params(x, bits, range_setter=setter)
    return float(np.mean((x - p.fake_quant(x)) ** 2))


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_mse_setter_beats_minmax_on_heavy_tails(heavy, bits):
    assert _mse_of(heavy, mse, bits) < _mse_of(heavy, minmax, bits)


@pytest.mark.parametrize("bits", [3, 4, 6])
def test_greedy_lowers_its_objective_and_is_a_local_minimum(heavy, bits):
    counts, centres = histogram(heavy, 512)
    lo, hi = greedy_search(heavy, num_bits=bits, bins=512)

    def total(a, b):
        return sum(quantization_loss(counts, centres, a, b, bits))

    best = total(lo, hi)
    assert best < total(heavy.min(), heavy.max())
    step = centres[1] - centres[0]
    for a, b in [(lo + step, hi), (lo, hi - step), (lo - step, hi), (lo, hi + step)]:
        if a < b:
            assert total(a, b) >= best - 1e-15
    # and it does as well on the real MSE as the MSE grid search, within 10%
    assert _mse_of(heavy, partial(greedy_search, bins=512), bits) <= 1.1 * _mse_of(heavy, mse, bits)


def test_greedy_symmetric_is_symmetric(heavy):
    lo, hi = greedy_search(heavy, num_bits=4, symmetric=True)
    assert float(lo) == -float(hi) and float(hi) < 18.0


def test_quantization_loss_terms_trade_off():
    counts, centres = histogram(np.linspace(0, 1, 2001), 400)
    qs, ss = zip(*[quantization_loss(counts, centres, 0.0, h, 4) for h in (0.25, 0.5, 0.75, 1.0)])
    assert all(a > b for a, b in zip(ss, ss[1:]))  # saturation falls as the range widens
    assert all(a < b for a, b in zip(qs, qs[1:]))  # quantization noise grows with the step


def test_setters_reject_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        greedy_search(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="empty"):
        mse(np.array([]))
    with pytest.raises(ValueError, match="num_bits"):
        minmax(np.ones(3), num_bits=1)
    with pytest.raises(ValueError, match="axis"):
        percentile(np.ones((2, 2)), axis=5)


# --- the vectorized greedy search against the per-row reference it replaced ----------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from qlib.ranges import greedy_ranges, pairwise_sum  # noqa: E402


def _reference(counts, centres, bits, symmetric, max_steps=1000):
    return np.stack(greedy_ranges(counts, centres, bits, symmetric, max_steps, method="loop"), axis=1)


def _vectorized(counts, centres, bits, symmetric, max_steps=1000):
    return np.stack(greedy_ranges(counts, centres, bits, symmetric, max_steps, method="rows"), axis=1)


@st.composite
def histograms(draw):
    """A few rows of (counts, centres) as ``histogram`` makes them: sparse, dense, mirrored, with ties."""
    bins = draw(st.sampled_from([2, 3, 7, 8, 9, 16, 64, 127, 128, 129, 200, 512]))
    rows = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["normal", "heavy", "few", "mirrored", "offset", "equal"]))
    dtype = draw(st.sampled_from([np.float64, np.float32]))  # activations are float32: so are their bins
    rng = np.random.default_rng(seed)
    counts, centres = [], []
    for _ in range(rows):
        if kind == "normal":
            x = rng.normal(size=int(rng.integers(1, 2000))) * rng.uniform(1e-3, 10)
        elif kind == "heavy":
            x = np.r_[rng.laplace(size=300), rng.uniform(-40, 40, 3)]
        elif kind == "few":  # a depthwise channel: nine values in many bins
            x = rng.normal(size=9)
        elif kind == "mirrored":  # exactly symmetric data: mirrored moves tie
            h = rng.normal(size=100)
            x = np.r_[h, -h]
        elif kind == "offset":  # one-sided, e.g. a ReLU output
            x = np.abs(rng.normal(size=500)) + rng.uniform(0, 3)
        else:  # repeated values: many equal counts
            x = np.repeat(np.linspace(-1, 1, int(rng.integers(2, 9))), 5)
        c, m = histogram(x.astype(dtype), bins)
        counts.append(c)
        centres.append(m)
    return np.stack(counts), np.stack(centres)


@settings(max_examples=40)
@given(histograms(), st.sampled_from([2, 3, 4, 6, 8, 16]), st.booleans())
def test_vectorized_greedy_equals_the_per_row_reference(hist, bits, symmetric):
    counts, centres = hist
    assert np.array_equal(_vectorized(counts, centres, bits, symmetric), _reference(counts, centres, bits, symmetric))


@pytest.mark.parametrize("symmetric", [False, True])
def test_vectorized_greedy_equals_reference_on_exact_ties_and_few_steps(symmetric):
    # a histogram symmetric about 0: raising min and lowering max give the same grid up to the
    # sign, so the two moves' losses tie (or differ in the last bit): the first move must win in both
    centres = np.linspace(-1, 1, 64)
    counts = np.r_[np.arange(32), np.arange(32)[::-1]]
    rows = np.stack([counts, counts[::-1], np.ones(64, int)])
    cen = np.stack([centres] * 3)
    for bits in (2, 3, 5):
        for max_steps in (0, 1, 3, 1000):
            assert np.array_equal(_vectorized(rows, cen, bits, symmetric, max_steps),
                                  _reference(rows, cen, bits, symmetric, max_steps))


def test_greedy_search_is_per_channel_reference_on_a_real_layer_shape(rng):
    w = rng.normal(size=(1, 1, 64, 16)) * rng.uniform(0.01, 2, size=16)
    for symmetric in (False, True):
        lo, hi = greedy_search(w, axis=-1, num_bits=4, symmetric=symmetric)
        rows = np.moveaxis(w, -1, 0).reshape(16, -1)
        hists = [histogram(r, 512) for r in rows]
        ref = _reference(np.stack([h[0] for h in hists]), np.stack([h[1] for h in hists]), 4, symmetric)
        assert np.array_equal(np.stack([lo, hi], 1), ref)


@given(st.integers(0, 2**32 - 1), st.integers(1, 700))
def test_pairwise_sum_is_numpys_sum_bit_for_bit(seed, width):
    rng = np.random.default_rng(seed)
    a = rng.exponential(size=(20, width)) * 10.0 ** rng.integers(-8, 8, size=(20, width))
    n = rng.integers(0, width + 1, size=20)
    start = np.array([rng.integers(0, width - m + 1) for m in n])
    expected = np.array([a[k, s:s + m].sum() for k, (s, m) in enumerate(zip(start, n))])
    assert np.array_equal(pairwise_sum(a, start, n), expected)


def test_greedy_ranges_and_pairwise_sum_reject_bad_input():
    c, m = histogram(np.arange(10.0), 8)
    with pytest.raises(ValueError, match="method"):
        greedy_ranges(c[None], m[None], method="fast")
    with pytest.raises(ValueError, match="2-D"):
        greedy_ranges(c, m)
    with pytest.raises(ValueError, match="same shape"):
        greedy_ranges(c[None], m[None, :4])
    with pytest.raises(ValueError, match="a >= 0"):
        pairwise_sum(-np.ones((1, 4)), np.array([0]), np.array([4]))
    with pytest.raises(ValueError, match="lie in its row"):
        pairwise_sum(np.ones((1, 4)), np.array([2]), np.array([4]))
