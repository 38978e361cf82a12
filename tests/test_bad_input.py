"""Bad input gets a clear error, never a bare numpy/TF/h5py exception and never a result.

A property test throws random bad values (wrong types and dtypes, wrong shapes, NaN and inf,
empty arrays, negative sizes) at qlib's public functions and asserts that only ``ValueError`` /
``TypeError`` (``MissingDataError`` is a ``FileNotFoundError`` and documented) come out. Then the
silent-wrong-answer cases found by hand, one test each.
"""

import warnings

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qlib import analysis, evaluate, exercises, layers, quantizers, ranges, score
from qlib.data import one_per_class, preprocess

NAN = np.array([[1.0, np.nan], [0.5, 2.0]])
BAD_ARRAYS = st.sampled_from([
    None, "weights", b"\x00\x01", [], np.zeros((0, 3)), np.array([np.nan, 1.0]), NAN, np.array([np.inf]),
    np.array([1 + 2j, 3j]), np.array(["a", "b"]), np.array([object(), 1], dtype=object), {"a": 1},
    [[1.0, 2.0], [3.0]],
])
BAD_BITS = st.sampled_from([0, 1, -3, 17, 64, 2.5, "8", None, True, np.nan])
BAD_SIZES = st.sampled_from([0, -1, -100, 1.5, "3", None])

ARRAY_FUNCTIONS = {
    "quantizers.fit_params": lambda a: quantizers.fit_params(a, 8),
    "quantizers.compute_params(min)": lambda a: quantizers.compute_params(a, 1.0),
    "quantizers.compute_params(max)": lambda a: quantizers.compute_params(-1.0, a),
    "quantizers.quantize": lambda a: quantizers.quantize(a, quantizers.compute_params(-1.0, 1.0)),
    "quantizers.fake_quant": lambda a: quantizers.fake_quant(a, quantizers.compute_params(-1.0, 1.0)),
    "quantizers.tensor_min_max": quantizers.tensor_min_max,
    "ranges.minmax": ranges.minmax,
    "ranges.percentile": ranges.percentile,
    "ranges.mse": ranges.mse,
    "ranges.greedy_search": ranges.greedy_search,
    "ranges.histogram": ranges.histogram,
    "analysis.channel_ranges": analysis.channel_ranges,
    "analysis.levels_per_channel": analysis.levels_per_channel,
    "analysis.layer_range_stats": analysis.layer_range_stats,
    "evaluate.fidelity": lambda a: evaluate.fidelity(a, np.ones((2, 2))),
    "data.preprocess": preprocess,
    "data.one_per_class": lambda a: one_per_class(a, a),
}


def _only_clear_errors(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = fn(*args)
        except (ValueError, TypeError) as exc:
            assert str(exc), "an error must say what was wrong"
            return
    pytest.fail(f"returned {type(result).__name__} instead of raising a clear error")


@pytest.mark.parametrize("name", sorted(ARRAY_FUNCTIONS))
@settings(max_examples=25)
@given(bad=BAD_ARRAYS)
def test_bad_arrays_get_clear_errors(name, bad):
    _only_clear_errors(ARRAY_FUNCTIONS[name], bad)


@settings(max_examples=25)
@given(bits=BAD_BITS)
def test_bad_bit_widths_get_clear_errors(bits):
    x = np.linspace(-1, 1, 11)
    for fn in (lambda: quantizers.fit_params(x, bits), lambda: quantizers.integer_range(bits),
               lambda: ranges.greedy_search(x, num_bits=bits), lambda: ranges.mse(x, num_bits=bits),
               lambda: layers.quantize_kernel(keras.layers.Dense(2), np.ones((3, 2)), bits)):
        _only_clear_errors(fn)


@settings(max_examples=25)
@given(n=BAD_SIZES)
def test_bad_sizes_get_clear_errors(n):
    for fn in (lambda: ranges.mse(np.ones(5), grid=n), lambda: ranges.greedy_search(np.ones(5), bins=n),
               lambda: evaluate.wilson_interval(1, n), lambda: score.lpirc_score(0.5, 1.0, n),
               lambda: one_per_class(np.zeros((4, 2)), np.array([0, 1, 0, 1]), per_class=n)):
        _only_clear_errors(fn)


@settings(max_examples=10)
@given(bad=st.sampled_from([None, "model.keras", 3, np.zeros((2, 2)), keras.layers.Dense(2)]))
def test_non_models_get_clear_errors(bad):
    from qlib.dfq import dfq, equalize
    from qlib.folding import fold_batchnorm
    from qlib.simulate import quantize_model

    for fn in (lambda: fold_batchnorm(bad), lambda: equalize(bad), lambda: dfq(bad),
               lambda: quantize_model(bad, activation_bits=None), lambda: exercises.check("ex-none", 1)):
        _only_clear_errors(fn)


# ---- the cases a new user hit (each failed before this test file existed) ----

def _tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.ReLU(name="dw_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inp, keras.layers.Dense(10, name="logits")(x), name="tiny")


@pytest.fixture(scope="module")
def tiny_tflite():
    from qlib.tflite import convert_int8

    model = _tiny_model()
    x = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    return model, convert_int8(model, x)


@pytest.mark.parametrize("shape", [(4, 28, 28, 1), (4, 32, 32, 1), (4, 32, 32, 6)])
def test_evaluate_rejects_inputs_of_the_wrong_shape(tiny_tflite, shape):
    model, tfl = tiny_tflite
    x, y = np.zeros(shape, np.float32), np.zeros(shape[0], int)
    for m in (tfl, model):
        with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\).*got shape \(4, "):
            evaluate.evaluate(m, x, y)


def test_dfq_on_nan_calibration_data_raises():
    from qlib.dfq import dfq

    with pytest.raises(ValueError, match="calibration_data contains"):
        dfq(_tiny_model(), calibration_data=np.full((4, 32, 32, 3), np.nan, np.float32))


def test_non_finite_weights_are_named():
    from qlib.dfq import DFQState

    state = DFQState.from_model(_tiny_model())
    state.kernel["dw"][0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="'dw'"):
        state.to_model()


def test_sequential_models_are_accepted():
    from qlib.dfq import dfq
    from qlib.folding import fold_batchnorm
    from qlib.simulate import quantize_model

    seq = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, use_bias=False),
                            keras.layers.BatchNormalization(), keras.layers.ReLU(),
                            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)], name="seq")
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype(np.float32)
    folded = fold_batchnorm(seq)
    np.testing.assert_allclose(folded(x), seq(x), atol=1e-5)
    q = quantize_model(seq, 8, 8, calibration_data=x)
    assert np.abs(q(x).numpy() - seq(x).numpy()).max() < 0.1
    model, report = dfq(seq, weight_bits=8)
    assert len(report.pairs) == 1


def test_simulator_says_which_shape_it_expected():
    from qlib.simulate import Simulator

    with pytest.raises(ValueError, match=r"shape \(N, 32, 32, 3\).*got shape \(5,\)"):
        Simulator(_tiny_model(), np.zeros(5))


def test_corrupted_weights_file_is_named(tmp_path):
    import json
    import shutil

    from qlib import zoo
    from qlib.data import sha256_file

    shutil.copy(zoo.MODELS_DIR / "manifest.json", tmp_path)
    bad = tmp_path / "v1_standard.weights.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 1000)  # an HDF5 signature, then garbage
    man = json.loads((tmp_path / "manifest.json").read_text())
    man["v1_standard"]["sha256"] = sha256_file(bad)  # the checksum was edited too
    shutil.copy(zoo.MODELS_DIR / "v2_friendly.weights.h5", tmp_path / "v1_friendly.weights.h5")  # wrong file
    man["v1_friendly"]["sha256"] = sha256_file(tmp_path / "v1_friendly.weights.h5")
    (tmp_path / "manifest.json").write_text(json.dumps(man))
    for name in ("v1_standard", "v1_friendly"):
        with pytest.raises(ValueError, match=rf"{name}.*could not be loaded.*Restore data/models"):
            zoo.load_model(name, models_dir=tmp_path)


def test_nothing_to_act_on_is_said():
    from qlib.dfq import dfq, equalize
    from qlib.folding import fold_batchnorm

    inp = keras.Input((5, 3))
    lstm = keras.Model(inp, keras.layers.Dense(2)(keras.layers.LSTM(4)(inp)), name="lstm")
    with pytest.warns(UserWarning, match="nothing was folded"):
        fold_batchnorm(lstm)
    with pytest.warns(UserWarning, match="nothing was equalized"):
        state = equalize(lstm)
    assert state.report.pairs == [] and state.report.converged
    with pytest.warns(UserWarning, match="nothing was equalized"):
        _, report = dfq(lstm)
    assert "0 pairs" in repr(report)


def test_equalization_that_does_not_converge_says_so():
    from factories import randomize_bn
    from qlib.dfq import equalize
    from qlib.models import mobilenet_v1

    model = randomize_bn(mobilenet_v1(alpha=0.25))
    with pytest.warns(UserWarning, match="did not converge in 3 iterations"):
        state = equalize(model, max_iterations=3)
    assert state.report.converged is False and state.report.iterations == 3
    assert "NOT converged" in repr(state.report)
