import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONHASHSEED", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("qbook", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("qbook")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def fmnist():
    """Fashion-MNIST splits (network inputs) and the LPIRC calibration set, loaded once per session."""
    from qlib.data import fashion_mnist_splits, one_per_class

    s = fashion_mnist_splits()
    calib, _ = one_per_class(s["x_val"], s["y_val"])
    return s, calib


@pytest.fixture(scope="session")
def zoo_model():
    """``zoo_model(name)``: a zoo model, loaded once per session (do not modify it in a test)."""
    from qlib.zoo import load_model

    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load_model(name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def imagenet_model():
    """The ImageNet MobileNetV2 (torchvision weights), built once per session (do not modify it)."""
    from qlib.imagenet import mobilenet_v2_imagenet

    return mobilenet_v2_imagenet()
