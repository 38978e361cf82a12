"""The trained Fashion-MNIST model zoo shipped in ``data/models`` (see its ``manifest.json``).

``scripts/train_zoo.py`` trained each model and recorded its architecture, seed, command,
training time, float test accuracy and the sha256 of its ``.weights.h5`` file. Loading rebuilds
the architecture with :mod:`qlib.models` and reads the weights from HDF5 (data only: no code
is deserialised), after checking the checksum.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from .data import sha256_file

__all__ = ["MODELS_DIR", "manifest", "load_model"]

MODELS_DIR = Path(__file__).resolve().parents[1] / "data" / "models"


def manifest(models_dir: Path | str = MODELS_DIR) -> dict:
    """The zoo's manifest: ``{name: {config, sha256, float_test_accuracy, train_seconds, ...}}``.

    Examples
    --------
    >>> sorted(manifest())
    ['teacher', 'v1_friendly', 'v1_standard', 'v2_friendly', 'v2_standard']
    >>> manifest()["v2_friendly"]["config"]["variant"]
    'friendly'
    """
    path = Path(models_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no model manifest at {path}; the zoo ships in data/models (git checkout)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"the model manifest {path} is corrupted: {exc}") from exc


def load_model(name: str, models_dir: Path | str = MODELS_DIR):
    """Rebuild a zoo model and load its trained weights (sha256 checked first).

    Examples
    --------
    >>> m = load_model("v1_standard")
    >>> m.name, m.output_shape
    ('mobilenet_v1_0.5_standard', (None, 10))
    """
    from .models import build

    entries = manifest(models_dir)
    if name not in entries:
        raise ValueError(f"unknown model {name!r}; the zoo has {sorted(entries)}")
    entry = entries[name]
    path = Path(models_dir) / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} is missing; restore data/models from git")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise ValueError(
            f"weights file {path} is corrupted or was replaced: sha256 {digest[:16]}..., manifest "
            f"says {entry['sha256'][:16]}...; restore it from git or retrain with: {entry['command']}"
        )
    config = dict(entry["config"])
    config["input_shape"] = tuple(config["input_shape"])
    model = build(**config)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Keras only warns when objects of the file cannot be loaded
            model.load_weights(path)
    except Exception as exc:  # h5py OSError, Keras ValueError or warning: a file that does not fit
        raise ValueError(
            f"weights file {path} could not be loaded into zoo model {name!r} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}); the file is corrupted or belongs to another architecture "
            f"(its manifest entry says {entry['config']}). Restore data/models from git (git checkout -- "
            f"{Path('data/models') / entry['file']} data/models/manifest.json) or retrain with: {entry['command']}"
        ) from exc
    return model
