"""The offline photo set: provenance, checksums, a split by photo, deterministic inputs."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import qlib.photos as photos
from qlib.data import MissingDataError

ROOT = Path(__file__).resolve().parents[1]


def test_the_manifest_lists_enough_distinct_photos_with_provenance():
    doc = json.loads(photos.PHOTOS_JSON.read_text())
    recs = doc["photos"]
    assert len(recs) >= 40
    assert len({r["name"] for r in recs}) == len(recs) == len({r["sha256"] for r in recs})
    for r in recs:
        assert r["package"] in doc["packages"] and r["licence"] and r["author"]
        assert len(r["sha256"]) == 64 and r["split"] in ("calibration", "test")
    for p in doc["packages"].values():
        assert p["version"] and p["registry"] in ("debian", "pypi")
    calib, test = photos.photo_records("calibration"), photos.photo_records("test")
    assert not {r["name"] for r in calib} & {r["name"] for r in test}  # split by photo
    assert len(test) * photos.CROPS_PER_PHOTO["test"] >= 1000


def test_photos_load_checked_and_as_rgb():
    imgs = photos.load_photos("calibration")
    assert len(imgs) == len(photos.photo_records("calibration"))
    for img in imgs.values():
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 224


def test_inputs_are_deterministic_normalised_crops_named_by_photo():
    x, photo = photos.photo_inputs("calibration", crops_per_photo=2, size=40)
    assert x.shape == (2 * len(photos.photo_records("calibration")), 40, 40, 3) and x.dtype == np.float32
    assert set(photo) == {r["name"] for r in photos.photo_records("calibration")}
    assert -2.2 < x.min() < x.max() < 2.7  # ImageNet normalisation of [0, 1] pixels
    again, _ = photos.photo_inputs("calibration", crops_per_photo=1, size=40)
    other, _ = photos.photo_inputs("calibration", crops_per_photo=1, size=40, seed=1)
    assert np.array_equal(x[::2], again) and not np.array_equal(again, other)  # a photo's first crop: same
    with pytest.raises(ValueError, match="split"):
        photos.photo_inputs("train")


def _fake_manifest(tmp_path, monkeypatch, record):
    doc = json.loads(photos.PHOTOS_JSON.read_text())
    doc["photos"] = [dict(doc["photos"][-1], **record)]
    path = tmp_path / "photos.json"
    path.write_text(json.dumps(doc))
    monkeypatch.setattr(photos, "PHOTOS_JSON", path)


def test_a_missing_photo_names_the_package_to_install(tmp_path, monkeypatch):
    _fake_manifest(tmp_path, monkeypatch, {"path": str(tmp_path / "gone.jpg"), "package": "mate-backgrounds"})
    with pytest.raises(MissingDataError, match="apt-get install --no-install-recommends mate-backgrounds.*make setup"):
        photos.load_photos()


def test_a_changed_or_foreign_file_is_refused(tmp_path, monkeypatch):
    real = photos.photo_records("test")[-1]
    copy = tmp_path / "copy.jpg"
    shutil.copy(real["path"], copy)
    with copy.open("ab") as f:
        f.write(b"\0")
    _fake_manifest(tmp_path, monkeypatch, {"path": str(copy)})
    with pytest.raises(ValueError, match="corrupted or a different version"):
        photos.load_photos()
    # only JPEG and PNG are decoded, even with a matching checksum
    gif = tmp_path / "x.gif"
    gif.write_bytes(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")
    from qlib.data import sha256_file
    _fake_manifest(tmp_path, monkeypatch, {"path": str(gif), "sha256": sha256_file(gif)})
    with pytest.raises(Exception, match="cannot identify"):
        photos.load_photos()


def test_shipped_imagenet_records_come_from_the_photo_set_with_intervals():
    for name in ("bits", "dfq"):
        data = json.loads((ROOT / "data" / "sweeps" / f"{name}.json").read_text())
        metas = data["meta"].get("parts", [data["meta"]])
        meta = next(m["imagenet"] for m in metas if "imagenet" in m)
        assert meta["distinct_test_photos"] == len(photos.photo_records("test"))
        assert meta["crops"] >= 1000 and not set(meta["calibration_photos"]) & set(meta["test_photos"])
        inet = [r for r in data["records"] if r["model"] == "imagenet_mobilenet_v2"]
        assert inet
        for r in inet:
            assert r["n"] == meta["crops"] == sum(r["n_by_photo"].values())
            assert sum(r["agree_by_photo"].values()) == round(r["agreement"] * r["n"])
            for key in ("agreement_ci95_wilson", "agreement_ci95_photo_bootstrap"):
                lo, hi = r[key]
                assert lo - 1e-12 <= r["agreement"] <= hi + 1e-12


def test_photo_root_override_reads_a_copy(tmp_path, monkeypatch):
    rec = photos.photo_records("calibration")[-1]
    copy = tmp_path / rec["path"].lstrip("/")
    copy.parent.mkdir(parents=True)
    shutil.copy(rec["path"], copy)
    monkeypatch.setenv("QBOOK_PHOTO_ROOT", str(tmp_path))
    assert photos.photo_path(rec) == copy
    monkeypatch.setenv("QBOOK_PHOTO_ROOT", str(tmp_path / "empty"))
    with pytest.raises(MissingDataError):
        photos.load_photos("calibration")
