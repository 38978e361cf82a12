"""Evaluation harness (Keras and TFLite), confidence intervals, fidelity, the results cache."""

import json

import numpy as np
import pytest

from qlib.cache import cached, model_hash
from qlib.data import one_per_class
from qlib.evaluate import evaluate, fidelity, wilson_interval
from qlib.tflite import convert_int8


def test_wilson_interval_brackets_the_estimate():
    lo, hi = wilson_interval(930, 1000)
    assert lo < 0.93 < hi and hi - lo < 0.04
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_fidelity_of_identical_logits():
    ref = np.random.default_rng(0).normal(size=(20, 10))
    f = fidelity(ref, ref)
    assert f["agreement"] == 1.0 and f["sqnr_db"] == float("inf") and f["kl"] == 0.0
    with pytest.raises(ValueError, match="same"):
        fidelity(ref, ref[:5])


def test_keras_and_int8_tflite_on_real_data(fmnist, zoo_model):
    s, _ = fmnist
    x, y = s["x_test"][:1000], s["y_test"][:1000]
    model = zoo_model("v1_standard")
    ref = model.predict(x, batch_size=500, verbose=0)
    fp = evaluate(model, x, y, reference=ref)
    assert fp.agreement == 1.0 and fp.accuracy > 0.9 and fp.ci_low < fp.accuracy < fp.ci_high
    calib, _ = one_per_class(s["x_val"], s["y_val"], per_class=10)
    tfl = convert_int8(model, calib)
    q = evaluate(tfl, x, y, reference=ref)
    assert q.n == 1000 and q.agreement > 0.95 and q.sqnr_db > 10
    assert abs(q.accuracy - fp.accuracy) < 0.03
    assert "agreement" in repr(q)


def test_evaluate_rejects_bad_input():
    from qlib.models import mobilenet_v1

    m = mobilenet_v1()
    with pytest.raises(ValueError, match="empty"):
        evaluate(m, np.zeros((0, 32, 32, 3)), np.zeros(0))
    with pytest.raises(ValueError, match="one label per example"):
        evaluate(m, np.zeros((2, 32, 32, 3)), np.zeros(3))
    with pytest.raises(TypeError, match="keras.Model"):
        evaluate(object(), np.zeros((1, 3)), np.zeros(1))


def test_one_per_class_calibration_set(fmnist):
    s, _ = fmnist
    x, y = one_per_class(s["x_val"], s["y_val"])
    assert x.shape == (10, 32, 32, 3) and sorted(y.tolist()) == list(range(10))
    with pytest.raises(ValueError, match="only"):
        one_per_class(x, y, per_class=2)


def test_cache_keys_on_model_hash_and_refreshes(tmp_path, zoo_model):
    m = zoo_model("v2_friendly")
    key = {"model": model_hash(m), "bits": 8}
    calls = []
    compute = lambda: calls.append(1) or {"accuracy": 0.5}
    assert cached("sweep", key, compute, cache_dir=tmp_path) == {"accuracy": 0.5}
    cached("sweep", key, compute, cache_dir=tmp_path)
    assert len(calls) == 1
    cached("sweep", key, compute, refresh=True, cache_dir=tmp_path)
    assert len(calls) == 2
    files = list(tmp_path.glob("sweep-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["config"] == key
    files[0].write_text("{broken")
    with pytest.raises(ValueError, match="corrupted"):
        cached("sweep", key, compute, cache_dir=tmp_path)
