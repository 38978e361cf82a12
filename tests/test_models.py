"""Model builders, the graph helper, and the shipped zoo."""

import shutil

import keras
import numpy as np
import pytest

from qlib import zoo
from qlib.graph import batchnorm_pairs, depthwise_pairs, depthwise_triplets, separable_blocks
from qlib.models import build, mobilenet_v1, mobilenet_v2


@pytest.mark.parametrize("arch", ["mobilenet_v1", "mobilenet_v2"])
@pytest.mark.parametrize("variant", ["standard", "friendly"])
def test_output_shapes(arch, variant):
    m = build(arch, input_shape=(32, 32, 3), num_classes=7, alpha=0.25, variant=variant)
    assert m.output_shape == (None, 7)
    y = m(np.zeros((2, 32, 32, 3), np.float32))
    assert y.shape == (2, 7)
    big = build(arch, input_shape=(96, 96, 3), alpha=0.25, variant=variant, small_input=False)
    assert big.get_layer("pool").input.shape[1] == 3  # 96 / 32


@pytest.mark.parametrize("builder", [mobilenet_v1, mobilenet_v2])
def test_variants_differ_only_in_the_separable_block(builder):
    std, fr = builder(variant="standard"), builder(variant="friendly")
    for b in separable_blocks(std):
        assert b.after and "_bn" in b.after[0]  # depthwise -> BN -> ReLU6 -> pointwise
    for b in separable_blocks(fr):
        assert b.after == ()  # depthwise feeds the pointwise directly
    relu6 = [l for l in fr.layers if isinstance(l, keras.layers.ReLU) and l.max_value is not None]
    assert relu6 == []  # ReLU instead of ReLU6 everywhere
    std_relu6 = [l for l in std.layers if isinstance(l, keras.layers.ReLU)]
    assert std_relu6 and all(float(l.max_value) == 6.0 for l in std_relu6)
    n_dw = len(separable_blocks(std))
    assert len(batchnorm_pairs(std)) - len(batchnorm_pairs(fr)) == n_dw
    # same convolutions, same kernel shapes
    convs = lambda m: [(l.name, l.kernel.shape) for l in m.layers if hasattr(l, "kernel")]
    assert convs(std) == convs(fr)


def test_graph_walks_v1_triplets():
    m = mobilenet_v1()
    assert len(depthwise_pairs(m)) == 13
    assert depthwise_triplets(m)[0] == ("conv1", "block1_dw", "block1_pw")


def test_graph_walks_keras_applications_mobilenet_v2():
    m = keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None, alpha=0.35)
    blocks = separable_blocks(m)
    assert len(blocks) == 17 and all(b.pointwise and b.previous for b in blocks)
    assert blocks[1].before[-1] == "block_1_pad" and blocks[1].previous == "block_1_expand"
    assert len(batchnorm_pairs(m)) == 52


@pytest.mark.parametrize("kwargs,match", [
    (dict(variant="quantized"), "variant"), (dict(alpha=0), "alpha"), (dict(num_classes=1), "num_classes"),
    (dict(input_shape=(4, 4, 3)), "input_shape")])
def test_builder_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mobilenet_v2(**kwargs)
    with pytest.raises(ValueError, match="arch"):
        build("resnet50")


def test_zoo_manifest_is_complete():
    man = zoo.manifest()
    assert set(man) == {"v1_standard", "v1_friendly", "v2_standard", "v2_friendly", "teacher"}
    for name, e in man.items():
        assert e["bytes"] < 10_000_000 and len(e["sha256"]) == 64 and "train_zoo.py" in e["command"]
        assert e["float_test_accuracy"] > 0.9 and e["train_seconds"] > 0 and isinstance(e["seed"], int)


@pytest.mark.parametrize("name", ["v1_standard", "v2_friendly"])
def test_zoo_model_reaches_its_manifest_accuracy(name, fmnist, zoo_model):
    """Trained with JAX on a GPU, evaluated here with TensorFlow on the CPU, on 2,500 test images.

    The manifest's accuracy is on all 10,000; on a 2,500-image subset the standard error of the
    accuracy is about 0.5 points (a quarter of the set, so less in fact), and wrongly loaded weights
    score about 10%: a 2-point tolerance is four standard errors and still catches any load error.
    The full-set reproduction is recorded by ``scripts/train_zoo.py`` in the manifest.
    """
    s, _ = fmnist
    m = zoo_model(name)
    n = 2500
    acc = float(np.mean(m.predict(s["x_test"][:n], batch_size=500, verbose=0).argmax(1) == s["y_test"][:n]))
    assert abs(acc - zoo.manifest()[name]["float_test_accuracy"]) <= 0.02


def test_zoo_rejects_tampered_weights(tmp_path):
    shutil.copy(zoo.MODELS_DIR / "manifest.json", tmp_path / "manifest.json")
    man = zoo.manifest()
    (tmp_path / man["v2_standard"]["file"]).write_bytes(b"\x89HDF\r\n\x1a\n tampered")
    with pytest.raises(ValueError, match="corrupted or was replaced.*retrain with"):
        zoo.load_model("v2_standard", tmp_path)
    with pytest.raises(FileNotFoundError, match="missing"):
        zoo.load_model("v1_standard", tmp_path)
    with pytest.raises(ValueError, match="unknown model"):
        zoo.load_model("resnet", tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupted"):
        zoo.manifest(tmp_path)
