"""Properties of the uniform affine quantizer (hypothesis), and its errors on bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qlib.quantizers import (
    compute_params,
    fake_quant,
    fit_params,
    integer_range,
    quantize,
    round_half_away,
)

bits = st.integers(2, 16)
flags = st.booleans()
finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=64)
tensors = hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6), elements=finite)


def _eps(params, x):
    """Float slack: a few ulps of the largest magnitude involved."""
    return 1e-9 * (1.0 + np.max(np.abs(x)))


@given(x=tensors, num_bits=bits, symmetric=flags, narrow=flags)
def test_error_within_half_step_inside_range(x, num_bits, symmetric, narrow):
    p = fit_params(x, num_bits, symmetric, narrow)
    lo, hi = p.range
    inside = (x >= lo) & (x <= hi)
    err = np.abs(x - p.fake_quant(x))
    assert np.all(err[inside] <= p.scale / 2 + _eps(p, x))
    # min-max ranges cover the tensor up to the half-step shift of a rounded zero point
    assert np.all(err <= p.scale / 2 + _eps(p, x))


@given(x=tensors, num_bits=bits, symmetric=flags, narrow=flags)
def test_fake_quant_is_idempotent(x, num_bits, symmetric, narrow):
    p = fit_params(x, num_bits, symmetric, narrow)
    once = p.fake_quant(x)
    np.testing.assert_array_equal(p.quantize(once), p.quantize(x))
    np.testing.assert_allclose(p.fake_quant(once), once, rtol=0, atol=_eps(p, x))


@given(x=tensors, num_bits=bits, symmetric=flags, narrow=flags, lo=finite, width=st.floats(0, 1e3))
def test_integers_stay_in_range(x, num_bits, symmetric, narrow, lo, width):
    p = compute_params(min(lo, lo + width), lo + width, num_bits, symmetric, narrow)
    q = p.quantize(x * 10)  # far outside the range too
    qmin, qmax = integer_range(num_bits, narrow)
    assert q.dtype == np.int64 and q.min() >= qmin and q.max() <= qmax


@given(lo=finite, hi=finite, num_bits=bits, narrow=flags)
def test_zero_is_exact_in_asymmetric_mode(lo, hi, num_bits, narrow):
    lo, hi = min(lo, hi), max(lo, hi)
    p = compute_params(lo, hi, num_bits, symmetric=False, narrow_range=narrow)
    assert p.fake_quant(np.array([0.0]))[0] == 0.0
    assert p.qmin <= int(p.zero_point) <= p.qmax


@given(
    values=hnp.arrays(np.float64, st.integers(1, 8),
                      elements=st.one_of(st.just(0.0), st.floats(1e-3, 1e3), st.floats(-1e3, -1e-3))),
    num_bits=bits, symmetric=flags, narrow=flags, axis=st.integers(0, 2),
)
def test_per_channel_constant_channels_are_exact(values, num_bits, symmetric, narrow, axis):
    shape = [3, 4, 5]
    shape[axis] = values.size
    bshape = [1, 1, 1]
    bshape[axis] = values.size
    x = np.broadcast_to(values.reshape(bshape), shape).copy()
    p = fit_params(x, num_bits, symmetric, narrow, axis=axis)
    np.testing.assert_allclose(p.fake_quant(x), x, rtol=1e-12, atol=0)


def test_all_zero_channels_are_safe():
    w = np.zeros((3, 3, 4))
    w[..., 1] = np.linspace(-1, 1, 9).reshape(3, 3)
    for symmetric in (True, False):
        for min_range in (0.0, 1e-6):
            p = fit_params(w, 8, symmetric, axis=-1, min_range=min_range)
            assert np.all(np.isfinite(p.scale)) and np.all(p.scale > 0)
            out = p.fake_quant(w)
            assert np.all(np.isfinite(out))
            np.testing.assert_array_equal(out[..., [0, 2, 3]], 0.0)
    zero = fit_params(np.zeros(5), 8)
    np.testing.assert_array_equal(zero.fake_quant(np.zeros(5)), 0.0)


def test_per_channel_beats_per_tensor_on_mismatched_channels(rng):
    w = rng.normal(size=(3, 3, 8)) * np.logspace(-2, 0, 8)  # channel ranges 100x apart
    per_tensor = fit_params(w, 8, symmetric=True)
    per_channel = fit_params(w, 8, symmetric=True, axis=-1)
    err_t = np.abs(w - per_tensor.fake_quant(w))[..., 0].max()
    err_c = np.abs(w - per_channel.fake_quant(w))[..., 0].max()
    assert err_c < err_t / 10


def test_round_half_away_matches_c_round():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49999999999999994, -0.49999999999999994])
    np.testing.assert_array_equal(round_half_away(x), [-3, -2, -1, 1, 2, 3, 0, 0])
    assert not np.array_equal(round_half_away(x[:6]), np.round(x[:6]))  # numpy rounds half to even


def test_known_int8_values():
    p = compute_params(-1.0, 1.0, 8, symmetric=True, narrow_range=True)
    assert p.scale == pytest.approx(1 / 127)
    np.testing.assert_array_equal(p.quantize([-1.0, 0.0, 1.0, 2.0]), [-127, 0, 127, 127])
    a = compute_params(0.0, 6.0, 8)  # a ReLU6 output: zero point at qmin
    assert int(a.zero_point) == -128 and a.scale == pytest.approx(6 / 255)


def test_repr_is_readable():
    assert "per tensor" in repr(compute_params(-1, 1))
    r = repr(fit_params(np.ones((2, 3)), axis=1))
    assert "axis=1" in r and "3 channels" in r


@pytest.mark.parametrize("num_bits", [1, 17, 0, -8])
def test_num_bits_out_of_range(num_bits):
    with pytest.raises(ValueError, match="num_bits must be in 2..16"):
        compute_params(-1, 1, num_bits)


@pytest.mark.parametrize("num_bits", [8.0, "8", True, None])
def test_num_bits_wrong_type(num_bits):
    with pytest.raises(TypeError, match="num_bits"):
        fit_params(np.ones(3), num_bits)


def test_min_greater_than_max():
    with pytest.raises(ValueError, match="min_val must be <= max_val"):
        compute_params(1.0, -1.0)
    with pytest.raises(ValueError, match="at channel 1"):
        compute_params([0.0, 2.0], [1.0, 1.0], axis=0)


def test_axis_out_of_range():
    with pytest.raises(ValueError, match="axis=3 is out of range"):
        fit_params(np.ones((2, 2, 2)), axis=3)
    with pytest.raises(TypeError, match="axis"):
        fit_params(np.ones((2, 2)), axis=1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_rejected(bad):
    x = np.array([0.0, 1.0, bad])
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_params(x)
    p = compute_params(0, 1)
    with pytest.raises(ValueError, match="NaN or inf"):
        p.fake_quant(x)


def test_empty_and_non_numeric_rejected():
    with pytest.raises(ValueError, match="empty"):
        fit_params(np.array([]))
    with pytest.raises(TypeError, match="numeric"):
        fit_params("weights")
    with pytest.raises(TypeError, match="QuantParams"):
        quantize([1.0], params=(0.1, 0))
    with pytest.raises(TypeError, match="integer array"):
        compute_params(0, 1).dequantize(np.array([0.5]))


def test_per_channel_shape_mismatch():
    p = fit_params(np.ones((2, 3)), axis=1)
    with pytest.raises(ValueError, match="3 channels"):
        p.quantize(np.ones((2, 4)))


def test_fake_quant_ste_matches_numpy_and_passes_gradient(rng):
    tf = pytest.importorskip("tensorflow")
    from qlib.simulate import fake_quant_ste

    x = rng.uniform(-2, 3, size=1000).astype(np.float32)
    p = compute_params(-1.0, 2.0, 4)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = fake_quant_ste(xt, -1.0, 2.0, num_bits=4)
    np.testing.assert_allclose(y.numpy(), fake_quant(x, p), atol=1e-6)
    lo, hi = p.range
    grad = tape.gradient(y, xt).numpy()
    np.testing.assert_array_equal(grad, ((x >= lo) & (x <= hi)).astype(np.float32))
