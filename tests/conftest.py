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
