"""Natural photographs that ship offline, as ImageNet-like inputs for the pretrained MobileNetV2.

No ImageNet image ships in any package, but natural photos do: four of scikit-image's samples
and the photographs among the desktop backgrounds of four Debian packages (``mate-backgrounds``,
``lomiri-wallpapers-16.04``, ``palapeli-data``, ``lxqt-themes``), all installed by
``make setup``. ``data/photos.json`` lists each file with its package, version, licence, author
and sha256, and whether it belongs to the calibration or the test split: the split is by photo,
so no crop of a calibration photo is ever tested.

- :func:`load_photos`: the photos as RGB uint8 arrays, each checked by sha256 first;
- :func:`photo_inputs`: deterministic random crops and flips of them, resized to 224x224 and
  normalised like the network's training data (at least 1,000 test inputs by default).

Images are decoded by Pillow, restricted to JPEG and PNG: reading them runs no code. On a
machine without the Debian packages, copy the files (same paths) under a folder and set
``QBOOK_PHOTO_ROOT`` to it; the checksums still apply.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
from pathlib import Path

import numpy as np

from .data import MissingDataError, verified_bytes

__all__ = ["PHOTOS_JSON", "CROPS_PER_PHOTO", "photo_records", "photo_path", "load_photos", "photo_inputs"]

PHOTOS_JSON = Path(__file__).resolve().parents[1] / "data" / "photos.json"

#: crops per photo in each split: 37 test photos x 28 = 1,036 test inputs, 8 x 8 = 64 for calibration
CROPS_PER_PHOTO = {"calibration": 8, "test": 28}

SPLITS = ("calibration", "test")
_SHORT_SIDE = 320  # each photo is first resized so its shorter side has this many pixels


def _check_split(split):
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be 'calibration', 'test' or None (all photos), got {split!r}")


def photo_records(split: str | None = None) -> list[dict]:
    """The entries of ``data/photos.json`` (name, package, path, licence, author, sha256, split).

    Examples
    --------
    >>> recs = photo_records()
    >>> len(recs), sorted({r["split"] for r in recs})
    (45, ['calibration', 'test'])
    >>> len(photo_records("calibration")), photo_records("test")[0]["licence"]
    (8, 'public domain')
    """
    _check_split(split)
    records = json.loads(PHOTOS_JSON.read_text(encoding="utf-8"))["photos"]
    return [r for r in records if split is None or r["split"] == split]


def photo_path(record: dict) -> Path:
    """Where a photo of :func:`photo_records` lies on this machine: inside the installed
    scikit-image package, or at its Debian path (under ``$QBOOK_PHOTO_ROOT`` when that is set, for
    a copy of the files elsewhere with the same layout). Finds; reads and checks nothing.

    Examples
    --------
    >>> photo_path(photo_records("calibration")[0]).name
    'rocket.jpg'
    """
    if record["package"] != "scikit-image":
        root = os.environ.get("QBOOK_PHOTO_ROOT")  # a copy of the files elsewhere, same layout under it
        return Path(root) / record["path"].lstrip("/") if root else Path(record["path"])
    spec = importlib.util.find_spec("skimage")  # locates the package; imports nothing
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataError("scikit-image (PyPI, pinned in requirements.txt) is not installed; "
                               "run `make setup` from the repository root")
    return Path(list(spec.submodule_search_locations)[0]) / record["path"]


def _decode(data: bytes, name: str, min_short: int | None = None):
    from PIL import Image

    image = Image.open(io.BytesIO(data), formats=["JPEG", "PNG"])
    if min_short is not None and image.format == "JPEG":
        # decode at 1/2, 1/4 or 1/8 scale (in the DCT) while the shorter side stays >= min_short
        w, h = image.size
        f = min_short / min(w, h)
        image.draft("RGB", (int(np.ceil(w * f)), int(np.ceil(h * f))))
    if image.mode not in ("RGB", "RGBA", "L"):
        raise ValueError(f"photo {name!r} has colour mode {image.mode}, expected RGB")
    return image.convert("RGB")


def _load(record: dict, min_short: int | None = None):
    pkg = record["package"]
    how = ("pip install scikit-image" if pkg == "scikit-image"
           else f"Debian package {pkg}: apt-get install --no-install-recommends {pkg}")
    data = verified_bytes(photo_path(record), record["sha256"], f"the photo {record['name']!r} ({how})")
    return _decode(data, record["name"], min_short)


def load_photos(split: str | None = None) -> dict[str, np.ndarray]:
    """``{name: RGB uint8 array (H, W, 3)}`` for the photos of ``split`` (``None``: all), checked by sha256.

    Raises :class:`qlib.data.MissingDataError` naming the package to install when a file is
    missing, and ``ValueError`` when a file differs from the one listed.

    Examples
    --------
    >>> photos = load_photos("calibration")
    >>> len(photos), photos["rocket"].shape, photos["rocket"].dtype.name
    (8, (427, 640, 3), 'uint8')
    """
    return {r["name"]: np.asarray(_load(r)) for r in photo_records(split)}


def photo_inputs(split: str, crops_per_photo: int | None = None, size: int = 224,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random crops and flips of the photos of ``split``, normalised: ``(x, photo)``.

    Each photo is resized so its shorter side is 320 pixels; each crop is a random square of
    224 to 320 pixels of it, resized to ``size`` (bilinear, antialiased), flipped left-right
    with probability 1/2, scaled to [0, 1] and normalised by the ImageNet mean and std
    (:data:`qlib.imagenet.IMAGENET_MEAN`, ``IMAGENET_STD``). A photo's crops depend only on
    ``seed`` and the photo's own sha256, so they are the same on every machine and do not change
    when photos are added. ``photo[i]`` names the photo that input ``x[i]`` was cut from.

    Parameters
    ----------
    split : {"calibration", "test"}
        Which photos (never both: the split is by photo).
    crops_per_photo : int, optional
        Default :data:`CROPS_PER_PHOTO` ``[split]`` (8 for calibration, 28 for test).
    size : int
        Side of the square network input.
    seed : int
        Seed of the crops.

    Examples
    --------
    >>> x, photo = photo_inputs("calibration", crops_per_photo=2, size=32)
    >>> x.shape, x.dtype.name, photo[:3].tolist()
    ((16, 32, 32, 3), 'float32', ['rocket', 'rocket', 'LadyBird'])
    >>> bool(np.array_equal(x, photo_inputs("calibration", crops_per_photo=2, size=32)[0]))
    True
    """
    from PIL import Image

    from .imagenet import IMAGENET_MEAN, IMAGENET_STD

    if split not in SPLITS:
        raise ValueError(f"split must be 'calibration' or 'test', got {split!r}")
    crops = CROPS_PER_PHOTO[split] if crops_per_photo is None else int(crops_per_photo)
    if crops < 1 or int(size) < 1:
        raise ValueError(f"crops_per_photo and size must be >= 1, got {crops_per_photo!r} and {size!r}")
    xs, names = [], []
    for record in photo_records(split):
        image = _load(record, min_short=2 * _SHORT_SIDE)
        w, h = image.size
        scale = _SHORT_SIDE / min(w, h)
        base = image.resize((max(_SHORT_SIDE, round(w * scale)), max(_SHORT_SIDE, round(h * scale))),
                            Image.Resampling.BILINEAR)
        rng = np.random.default_rng([int(seed), int(record["sha256"][:12], 16)])
        for _ in range(crops):
            side = int(rng.integers(224, _SHORT_SIDE + 1))
            left = int(rng.integers(0, base.size[0] - side + 1))
            top = int(rng.integers(0, base.size[1] - side + 1))
            crop = np.asarray(base.resize((size, size), Image.Resampling.BILINEAR,
                                          box=(left, top, left + side, top + side)))
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            xs.append(((crop / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32))
            names.append(record["name"])
    return np.stack(xs), np.array(names)
