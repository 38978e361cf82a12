"""Offline data: checked by sha256, parsed without executing anything, clear errors when missing."""

import gzip
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from qlib import data as qdata
from qlib.torchpickle import LEGACY_MAGIC, load_legacy_state_dict


def test_fashion_mnist_train_and_test():
    x, y = qdata.fashion_mnist("train")
    assert x.shape == (60000, 28, 28) and y.shape == (60000,)
    assert np.bincount(y).tolist() == [6000] * 10
    xt, yt = qdata.fashion_mnist("test")
    assert xt.shape == (10000, 28, 28) and xt.dtype == np.uint8 and yt.max() == 9


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        qdata.fashion_mnist("validation")


def test_missing_fashion_mnist_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(qdata, "FASHION_MNIST_DIR", tmp_path)
    with pytest.raises(qdata.MissingDataError, match="make setup"):
        qdata.fashion_mnist("test")


def test_corrupted_file_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(qdata, "FASHION_MNIST_DIR", tmp_path)
    for name, _ in qdata.FASHION_MNIST_FILES.values():
        (tmp_path / name).write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 100))
    with pytest.raises(ValueError, match="corrupted or a different version"):
        qdata.fashion_mnist("test")


def test_mobilenet_v2_weights_load():
    sd = qdata.mobilenet_v2_state_dict()
    assert len(sd) == 314
    assert sd["features.0.0.weight"].shape == (32, 3, 3, 3) and sd["features.0.0.weight"].dtype == np.float32
    assert sd["classifier.1.weight"].shape == (1000, 1280)
    var = np.concatenate([v for k, v in sd.items() if k.endswith("running_var")])
    assert var.size == 17056 and (var < 1e-3).sum() == 5527  # the dead channels of FINDINGS.md


def test_missing_weights_package_says_how_to_fix(monkeypatch):
    monkeypatch.setattr(qdata, "MOBILENET_V2_PACKAGE", "no_such_weights_package")
    with pytest.raises(qdata.MissingDataError, match="make setup"):
        qdata.mobilenet_v2_state_dict()


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/qbook_pwned",))


def test_restricted_unpickler_refuses_code(tmp_path):
    payload = b"".join(pickle.dumps(o) for o in (LEGACY_MAGIC, 1001, {}, _RunsCode()))
    if os.path.exists("/tmp/qbook_pwned"):
        os.remove("/tmp/qbook_pwned")
    with pytest.raises(ValueError, match="refusing to load global"):
        load_legacy_state_dict(payload)
    assert not os.path.exists("/tmp/qbook_pwned")


def test_restricted_unpickler_rejects_junk():
    with pytest.raises(ValueError, match="bad magic"):
        load_legacy_state_dict(pickle.dumps(12345))
    with pytest.raises(ValueError):
        load_legacy_state_dict(b"not a pickle at all")
    with pytest.raises(TypeError):
        load_legacy_state_dict("a path, not bytes")


def test_truncated_weights_rejected():
    path = qdata.mobilenet_v2_weights_path()
    raw = path.read_bytes()
    with pytest.raises(ValueError, match="truncated|cut short"):
        load_legacy_state_dict(raw[: len(raw) // 2])


def test_loading_does_not_import_the_weights_package():
    code = ("import sys, qlib.data as d; d.mobilenet_v2_state_dict(); "
            "print(d.MOBILENET_V2_PACKAGE in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
