"""Every public function and class in qlib has a runnable example, and every example passes."""

import doctest
import importlib
import inspect
import pkgutil

import numpy as np
import pytest

import qlib

MODULES = [importlib.import_module(f"qlib.{m.name}") for m in pkgutil.iter_modules(qlib.__path__)
           if not m.name.startswith("_")]


def _public(module):
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            yield name, obj


def test_modules_found():
    names = {m.__name__ for m in MODULES}
    assert {"qlib.quantizers", "qlib.ranges", "qlib.folding", "qlib.graph", "qlib.tflite"} <= names


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_public_callable_has_an_example(module):
    missing = [name for name, obj in _public(module)
               if ">>>" not in (inspect.getdoc(obj) or "") and not _is_plain_record(obj)]
    assert not missing, f"{module.__name__}: no docstring example in {missing}"


def _is_plain_record(obj):
    """Small result records (dataclasses returned by functions) are shown in their producer's example."""
    return inspect.isclass(obj) and hasattr(obj, "__dataclass_fields__") and \
        "QuantParams" not in obj.__name__


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_pass(module):
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, globs={"np": np, **vars(module)}) if t.examples]
    assert tests, f"no examples collected from {module.__name__}"
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} example(s) failed in {module.__name__}"
