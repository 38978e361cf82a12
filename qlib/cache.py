"""Cache the results of expensive sweeps under ``data/cache``, keyed by model hash + configuration
+ the version of the code that computed them.

A book rebuild reads the cached JSON instead of recomputing; ``refresh=True`` (the scripts'
``--refresh`` flag) recomputes and overwrites. Each file records its key and the command that
made it, so every cached number has a provenance. ``cached(..., code=[modules])`` adds
:func:`code_version` of those modules to the key: edit any of them (or any module of the same
package they import) and the old entry is no longer found, so a changed library never serves a
stale result.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

__all__ = ["CACHE_DIR", "cache_key", "cached", "code_version", "model_hash"]

CACHE_DIR = Path(__file__).resolve().parents[1] / "data" / "cache"


def _source_file(name: str) -> Path | None:
    """The ``.py`` file of module ``name``, found on disk without importing it (``None``: not a module)."""
    top, _, rest = name.partition(".")
    try:
        spec = importlib.util.find_spec(top)  # locates a top-level module; imports nothing
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    if not spec.submodule_search_locations:  # a single-file module
        return Path(spec.origin) if not rest and spec.origin.endswith(".py") else None
    base = Path(list(spec.submodule_search_locations)[0]).joinpath(*rest.split(".")) if rest else \
        Path(list(spec.submodule_search_locations)[0])
    for path in (base / "__init__.py", base.with_suffix(".py") if rest else None):
        if path is not None and path.is_file():
            return path
    return None


def _imported_names(tree: ast.AST, name: str, is_package: bool) -> set[str]:
    """Absolute names of the modules (or module attributes) a module's source imports, anywhere in it."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)  # `from . import x`
    return found


def code_version(*modules: ModuleType | str) -> str:
    """A short hash of the source of ``modules`` and of every module of their package they import.

    Imports are followed through the source text (inside functions too) but only within each
    module's top-level package: ``code_version("qlib.simulate")`` covers ``qlib.quantizers``,
    ``qlib.ranges``... which it imports, not numpy or Keras. Pass modules or dotted names.

    Examples
    --------
    >>> v = code_version("qlib.ranges")
    >>> len(v), v == code_version("qlib.ranges"), v == code_version("qlib.ranges", "qlib.cache")
    (16, True, False)
    """
    if not modules:
        raise ValueError("code_version needs at least one module (a module object or a dotted name)")
    todo = []
    for m in modules:
        name = m.__name__ if isinstance(m, ModuleType) else m
        if not isinstance(name, str) or _source_file(name) is None:
            raise ValueError(f"{m!r} is not an importable module with Python source")
        todo.append(name)
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        path = _source_file(name)
        if name in seen or path is None:
            continue
        seen[name] = path
        top = name.split(".")[0]
        tree = ast.parse(path.read_bytes(), filename=str(path))
        todo += [n for n in _imported_names(tree, name, path.name == "__init__.py")
                 if n.split(".")[0] == top and n not in seen]
    h = hashlib.sha256()
    for name in sorted(seen):
        h.update(name.encode() + b"\0" + seen[name].read_bytes() + b"\0")
    return h.hexdigest()[:16]


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


def cached(name: str, config: dict, compute, refresh: bool = False, cache_dir: Path | str = CACHE_DIR,
           code=()):
    """``compute()``'s JSON-able result, from ``cache_dir/name-<key>.json`` when present.

    ``code``: the modules (or dotted names) the result depends on, or their :func:`code_version`
    computed beforehand; it is added to the configuration as ``"code_version"``, so editing them
    makes a new key (a miss). A long run should compute the version once, when it imports the
    modules, and pass the string: the key then describes the code that is running even if a
    file is edited meanwhile.

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
    >>> cached("demo", {"bits": 8}, f, cache_dir=d, code=["qlib.ranges"]) and len(calls)  # another key
    2
    """
    if code:
        config = {**config, "code_version": code if isinstance(code, str) else code_version(*code)}
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
