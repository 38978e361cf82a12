"""Cache the results of expensive sweeps under ``data/cache``, keyed by model hash + configuration.

A book rebuild reads the cached JSON instead of recomputing; ``refresh=True`` (the scripts'
``--refresh`` flag) recomputes and overwrites. Each file records its key and the command that
made it, so every cached number has a provenance.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

__all__ = ["CACHE_DIR", "model_hash", "cache_key", "cached"]

CACHE_DIR = Path(__file__).resolve().parents[1] / "data" / "cache"


def model_hash(model) -> str:
    """sha256 of a Keras model's architecture and weights (changes when either does).

    Examples
    --------
    >>> import keras
    >>> inp = keras.Input((2,))
    >>> m = keras.Model(inp, keras.layers.Dense(1, kernel_initializer="ones", name="d")(inp))
    >>> h = model_hash(m); len(h)
    64
    >>> m.get_layer("d").set_weights([np.zeros((2, 1)), np.zeros(1)]); model_hash(m) == h
    False
    """
    h = hashlib.sha256()
    h.update(json.dumps([(l.name, type(l).__name__) for l in model.layers]).encode())
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def cache_key(**config) -> str:
    """A short stable hash of a JSON-able configuration.

    Examples
    --------
    >>> cache_key(model="abc", bits=8) == cache_key(bits=8, model="abc")
    True
    """
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached(name: str, config: dict, compute, refresh: bool = False, cache_dir: Path | str = CACHE_DIR):
    """``compute()``'s JSON-able result, from ``cache_dir/name-<key>.json`` when present.

    Examples
    --------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> calls = []
    >>> f = lambda: calls.append(1) or {"acc": 0.9}
    >>> cached("demo", {"bits": 8}, f, cache_dir=d), cached("demo", {"bits": 8}, f, cache_dir=d)
    ({'acc': 0.9}, {'acc': 0.9})
    >>> len(calls)
    1
    """
    path = Path(cache_dir) / f"{name}-{cache_key(**config)}.json"
    if path.is_file() and not refresh:
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"cache file {path} is corrupted ({exc}); delete it or pass refresh=True") from exc
        if record.get("config") != json.loads(json.dumps(config, default=str)):
            raise ValueError(f"cache file {path} holds another configuration; delete it or pass refresh=True")
        return record["result"]
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"config": config, "result": result, "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])}
    path.write_text(json.dumps(record, indent=1, sort_keys=True, default=float) + "\n")
    return result
