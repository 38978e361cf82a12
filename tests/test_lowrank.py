"""Low-rank pointwise convolutions: full rank reproduces the layer, truncation is the best, bad ranks fail."""

import keras
import numpy as np
import pytest

from factories import randomize_bn
from qlib import lowrank
from qlib.folding import fold_batchnorm
from qlib.models import layer_costs


def test_full_rank_reproduces_the_kernel(rng):
    for shape in [(12, 20), (20, 12), (1, 1, 16, 16)]:
        w = rng.normal(size=shape)
        a, b = lowrank.svd_factors(w, min(shape[-2:]))
        prod = a @ b if w.ndim == 2 else np.einsum("io,or->ir", a[0, 0], b[0, 0])[None, None]
        np.testing.assert_allclose(prod, w, atol=1e-10)


def test_truncation_error_is_the_dropped_energy(rng):
    w = rng.normal(size=(24, 32))
    s = lowrank.singular_values(w)
    for r in (1, 5, 23):
        a, b = lowrank.svd_factors(w, r)
        err2 = np.linalg.norm(w - a @ b) ** 2 / np.linalg.norm(w) ** 2
        assert err2 == pytest.approx(1 - lowrank.energy(w)[r - 1], abs=1e-10)
        assert err2 == pytest.approx(np.sum(s[r:] ** 2) / np.sum(s ** 2), abs=1e-10)
    assert lowrank.rank_for_energy(w, 1.0) == 24


def _tiny(seed=0):
    """conv -> BN -> ReLU6 -> depthwise -> 1x1 conv -> BN -> ReLU6 -> 1x1 conv -> BN: two pointwise layers."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(inp)
    x = keras.layers.ReLU(6.0, name="conv1_relu")(keras.layers.BatchNormalization(name="conv1_bn")(x))
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = keras.layers.Conv2D(32, 1, use_bias=False, name="pw1")(x)
    x = keras.layers.ReLU(6.0, name="pw1_relu")(keras.layers.BatchNormalization(name="pw1_bn")(x))
    x = keras.layers.Conv2D(24, 1, use_bias=False, name="pw2")(x)
    x = keras.layers.BatchNormalization(name="pw2_bn")(x)
    return randomize_bn(keras.Model(inp, x, name="tiny"), seed)


def test_factorized_model_at_full_rank_reproduces_the_network():
    model = _tiny(1)
    assert lowrank.pointwise_layers(model) == ["pw1", "pw2"]
    factored = lowrank.factorize_model(model, {"pw1": 16, "pw2": 24})
    x = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(factored(x).numpy(), fold_batchnorm(model)(x).numpy(), atol=1e-4)
    names = [l.name for l in factored.layers]
    assert names.index("pw1_lr") + 1 == names.index("pw1") and "pw1_bn" not in names


def test_factorized_layers_are_two_thin_convs_with_fewer_macs():
    model = _tiny(2)
    f = lowrank.factorize_model(model, {"pw1": 4})
    first, second = f.get_layer("pw1_lr"), f.get_layer("pw1")
    assert tuple(first.kernel.shape) == (1, 1, 16, 4) and not first.use_bias
    assert tuple(second.kernel.shape) == (1, 1, 4, 32) and second.use_bias
    macs = {c["name"]: c["macs"] for c in layer_costs(f)}
    before = {c["name"]: c["macs"] for c in layer_costs(model)}["pw1"]
    assert macs["pw1_lr"] + macs["pw1"] == before * 4 * (16 + 32) // (16 * 32)
    assert lowrank.saving_rank(256, 256) == 127
    # the truncated model is the best rank-4 kernel: its pw1 output error is the dropped energy's share
    w = fold_batchnorm(model).get_layer("pw1").get_weights()[0][0, 0]
    approx = first.get_weights()[0][0, 0] @ second.get_weights()[0][0, 0]
    assert np.linalg.norm(w - approx) ** 2 / np.linalg.norm(w) ** 2 == pytest.approx(1 - lowrank.energy(w)[3], abs=1e-5)


def test_bad_ranks_and_layers_get_clear_errors(rng):
    w = rng.normal(size=(1, 1, 8, 6))
    with pytest.raises(ValueError, match="rank=0 is out of range"):
        lowrank.svd_factors(w, 0)
    with pytest.raises(ValueError, match=r"rank=7 is out of range.*choose 1\.\.6"):
        lowrank.svd_factors(w, 7)
    with pytest.raises(TypeError, match="rank must be an integer"):
        lowrank.svd_factors(w, 2.5)
    with pytest.raises(ValueError, match="only 1x1 convolutions"):
        lowrank.svd_factors(rng.normal(size=(3, 3, 8, 6)), 2)
    with pytest.raises(ValueError, match="fraction"):
        lowrank.rank_for_energy(w, 0.0)
    model = _tiny()
    with pytest.raises(ValueError, match="'dw' is not a 1x1 stride-1 Conv2D"):
        lowrank.factorize_model(model, {"dw": 2})
    with pytest.raises(ValueError, match="rank=17 of layer 'pw1' is out of range"):
        lowrank.factorize_model(model, {"pw1": 17})
    with pytest.raises(ValueError, match="rank=0 of layer 'pw2'"):
        lowrank.factorize_model(model, {"pw2": 0})
    dw = keras.layers.DepthwiseConv2D(3)
    dw.build((None, 8, 8, 4))
    with pytest.raises(ValueError, match="not a 1x1 Conv2D"):
        lowrank.singular_values(dw)


def test_shipped_sweep_is_consistent():
    """data/sweeps/lowrank.json (scripts/lowrank_sweep.py): ranks save MACs, MACs follow from the ranks."""
    from qlib import results
    from qlib.zoo import manifest

    sweep = results.load("lowrank")
    zoo = sweep.one(config="zoo")
    assert zoo["macs"] == 12167168 and zoo["int8_ms_ratio"] == 1.0
    assert manifest()["v1_standard"]["float_test_accuracy"] == pytest.approx(zoo["accuracy"], abs=2e-4)
    control = sweep.one(config="original")
    assert control["macs"] == zoo["macs"] and not control["ranks"]
    # the control has the original's architecture: its timing measures the timings' scatter
    assert control["int8_ms_ratio"] == pytest.approx(1.0, abs=0.05), "latencies too noisy to compare"
    for r in sweep:
        if r.get("energy") is None:
            continue
        assert r["macs"] < zoo["macs"] and r["factorized_layers"] == len(r["ranks"]) > 0
        assert r["epochs"] == control["epochs"] and r["seed"] == control["seed"] and r["limit"] == control["limit"]
        assert r["int8_ms_ratio"] == pytest.approx(r["int8_ms"] / zoo["int8_ms"])
