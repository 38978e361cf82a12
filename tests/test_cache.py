"""The results cache: code versions in keys, so a changed library never serves a stale result."""

import importlib
import json

import pytest

from qlib.cache import cached, code_version


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A throwaway package: ``a`` imports ``b`` inside a function; ``c`` is imported by no one."""
    root = tmp_path / "cachepkg_demo"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("def f():\n    from .b import g\n    return g()\n")
    (root / "b.py").write_text("import numpy\nfrom cachepkg_demo import d\ndef g():\n    return 1\n")
    (root / "c.py").write_text("X = 1\n")
    (root / "d.py").write_text("Y = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return root


def test_code_version_follows_imports_within_the_package(package):
    v = code_version("cachepkg_demo.a")
    (package / "c.py").write_text("X = 2\n")  # not imported by a: same version
    assert code_version("cachepkg_demo.a") == v
    (package / "b.py").write_text("import numpy\nfrom cachepkg_demo import d\ndef g():\n    return 2\n")
    v2 = code_version("cachepkg_demo.a")  # imported inside a function: a new version
    assert v2 != v
    (package / "d.py").write_text("Y = 2\n")  # imported by b as `from pkg import d`
    assert code_version("cachepkg_demo.a") != v2
    assert code_version("cachepkg_demo.a", "cachepkg_demo.c") != code_version("cachepkg_demo.a")


def test_code_version_accepts_modules_and_names_and_rejects_the_rest():
    import qlib.ranges

    assert code_version(qlib.ranges) == code_version("qlib.ranges")
    assert len(code_version("qlib.simulate")) == 16  # found on disk: nothing is imported
    with pytest.raises(ValueError, match="not an importable module"):
        code_version("qlib.no_such_module")
    with pytest.raises(ValueError, match="at least one module"):
        code_version()


def test_a_changed_module_is_a_cache_miss(package, tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"accuracy": 0.5}

    cache = tmp_path / "cache"
    key = {"model": "abc", "bits": 8}
    for _ in range(2):
        assert cached("sweep", key, compute, cache_dir=cache, code=["cachepkg_demo.a"]) == {"accuracy": 0.5}
    assert len(calls) == 1  # the second call is a hit
    (package / "b.py").write_text("def g():\n    return 3\n")
    cached("sweep", key, compute, cache_dir=cache, code=["cachepkg_demo.a"])
    assert len(calls) == 2  # b changed: a miss, recomputed
    files = sorted(cache.glob("sweep-*.json"))
    assert len(files) == 2
    versions = {json.loads(f.read_text())["config"]["code_version"] for f in files}
    assert len(versions) == 2
    cached("sweep", key, compute, cache_dir=cache)  # no code given: the key has no version
    assert len(calls) == 3


def test_a_version_computed_beforehand_is_used_as_is(tmp_path):
    v = code_version("qlib.ranges")
    assert cached("x", {"a": 1}, lambda: 1, cache_dir=tmp_path, code=v) == 1
    assert cached("x", {"a": 1}, lambda: 2, cache_dir=tmp_path, code=["qlib.ranges"]) == 1  # same key: a hit
    record = json.loads(next(tmp_path.glob("x-*.json")).read_text())
    assert record["config"]["code_version"] == v
