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
