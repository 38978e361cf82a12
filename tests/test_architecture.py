"""The house rules of qlib, checked on the source: the index, the layers, one place per layer rule.

- ``qlib.MODULES`` lists every module file, each in one layer;
- every module declares ``__all__`` and every name in it exists;
- a module imports (anywhere in it, functions included) only from its own layer, a lower one, or
  the assets; assets use only the core, the graph layer and other assets; the core imports nothing
  but numpy and the standard library;
- the layer rules (which Keras layers are weighted, activations, pass-through) live in
  ``qlib/layers.py`` only: no other module tests ``isinstance`` against the weighted or activation
  classes, or defines its own module-level tuple of Keras layer classes;
- tests, benchmarks and scripts use qlib's public names only: no ``from qlib.x import _private`` and no
  ``module._private`` on a qlib module (what a test needs is public, documented and exampled).
"""

import ast
import importlib
import sys
from pathlib import Path

import pytest

import qlib

QLIB = Path(qlib.__file__).parent
FILES = sorted(p.stem for p in QLIB.glob("*.py") if p.stem != "__init__")
LAYER_OF = {m: layer for layer, mods in qlib.MODULES.items() for m in mods}
RANK = {layer: i for i, layer in enumerate(qlib.LAYERS)}
#: Keras classes whose rules live in qlib/layers.py: no isinstance check against them elsewhere
RULED = {"Conv2D", "DepthwiseConv2D", "Dense", "ReLU", "Activation"}
#: ... and no module-level tuple of these (the pass-through sets) elsewhere either
GROUPED = RULED | {"ZeroPadding2D", "Dropout", "Flatten", "Reshape", "MaxPooling2D", "GlobalAveragePooling2D",
                   "AveragePooling2D", "Add", "BatchNormalization"}


def _tree(name):
    return ast.parse((QLIB / f"{name}.py").read_text())


def _qlib_imports(name):
    """Every qlib module that ``name`` imports, at any depth of its code."""
    out = set()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level == 1:
                out.update(a.name for a in node.names)
            elif node.module and node.module.split(".")[0] == "qlib":
                parts = node.module.split(".")
                out.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "qlib" and len(parts) > 1:
                    out.add(parts[1])
    return out - {name}


def _third_party(name):
    out = set()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return {m for m in out if m not in sys.stdlib_module_names and m not in ("qlib", "__future__")}


def test_the_index_lists_every_module_once():
    listed = [m for mods in qlib.MODULES.values() for m in mods]
    assert len(listed) == len(set(listed)), "a module is listed in two layers"
    assert sorted(listed) == FILES, f"qlib.MODULES and the files differ: {sorted(set(listed) ^ set(FILES))}"
    assert set(qlib.MODULES) == set(qlib.LAYERS) | {"assets"}
    for name in FILES:
        assert f"qlib.{name}" in qlib.__doc__


@pytest.mark.parametrize("name", FILES)
def test_every_module_declares_all(name):
    module = importlib.import_module(f"qlib.{name}")
    assert hasattr(module, "__all__"), f"qlib.{name} has no __all__"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"qlib.{name}.__all__ names missing objects: {missing}"


@pytest.mark.parametrize("name", FILES)
def test_imports_respect_the_layers(name):
    layer = LAYER_OF[name]
    for dep in sorted(_qlib_imports(name)):
        assert dep in LAYER_OF, f"qlib.{name} imports unknown module qlib.{dep}"
        dep_layer = LAYER_OF[dep]
        if dep_layer == "assets":
            continue
        if layer == "assets":
            assert dep_layer in ("core", "graph"), f"asset qlib.{name} imports qlib.{dep} ({dep_layer} layer)"
        else:
            assert RANK[dep_layer] <= RANK[layer], \
                f"qlib.{name} ({layer}) imports qlib.{dep} from the higher {dep_layer} layer"


@pytest.mark.parametrize("name", sorted(qlib.MODULES["core"]))
def test_the_core_is_numpy_only(name):
    assert _third_party(name) <= {"numpy"}, f"qlib.{name} imports {_third_party(name) - {'numpy'}}"
    assert not (_qlib_imports(name) - set(qlib.MODULES["core"])), f"qlib.{name} imports outside the core"


def _ruled_classes(node, names=RULED):
    """Names of ruled Keras layer classes referenced in an expression (keras.layers.X / layers.X / L.X)."""
    return {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute) and n.attr in names}


@pytest.mark.parametrize("name", [f for f in FILES if f not in ("layers", "models")])
def test_layer_rules_live_in_layers_py(name):
    """No isinstance check against, and no module-level tuple of, the layer classes qlib.layers rules on.

    (qlib.models builds networks from those classes, which is not a rule about them.)
    """
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
            assert not _ruled_classes(node.args[1]), \
                f"qlib.{name}:{node.lineno} checks {_ruled_classes(node.args[1])}: use qlib.layers"
    for node in _tree(name).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple):
            assert not _ruled_classes(node.value, GROUPED), f"qlib.{name}:{node.lineno} defines a layer-class tuple"


def _private_uses(source: str) -> list:
    """``(line, name)`` for every private qlib name a file imports or reads off a qlib module."""
    tree, modules, out = ast.parse(source), set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "qlib":
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    out.append((node.lineno, f"{node.module}.{a.name}"))
                elif node.module == "qlib":
                    modules.add(a.asname or a.name)  # from qlib import deploy
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("qlib."):
                    modules.add(a.asname or a.name)  # import qlib.deploy as deploy
            modules.update(["qlib"] if any(a.name == "qlib" for a in node.names) else [])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = ast.unparse(node.value)
            if base in modules or base.startswith("qlib."):
                out.append((node.lineno, f"{base}.{node.attr}"))
    return out


USERS = sorted(p for d in ("tests", "benchmarks", "scripts") for p in (QLIB.parent / d).glob("*.py"))


@pytest.mark.parametrize("path", USERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_tests_and_benchmarks_use_public_names_only(path):
    uses = _private_uses(path.read_text())
    assert not uses, f"{path.name} uses private qlib names: {uses}"


def test_the_private_name_check_can_fail():
    src = ("from qlib.ranges import _greedy_rows, greedy_search\nfrom qlib import deploy\nimport qlib.integer as i\n"
           "deploy._ready(1)\ni._requantize(2)\nqlib.cache._source_file('x')\ndeploy.__name__\n")
    assert [n for _, n in _private_uses(src)] == ["qlib.ranges._greedy_rows", "deploy._ready", "i._requantize",
                                                 "qlib.cache._source_file"]
