"""Tests of the package layout (docs/architecture.md): who may import whom, no cycles, the public API.

The import graph is read from the source with `ast` (every `import` and `from ... import`
of keras_lottery, at module level or inside a function), so a new module that imports a
higher layer, or two modules that import each other, fail here rather than in a review.
"""

import ast
import pathlib

import pytest

import keras_lottery as kl
from keras_lottery import keras

PACKAGE_ROOT = pathlib.Path(kl.__file__).parent

# What each subpackage may import besides itself: lower layers only (docs/architecture.md).
ALLOWED = {
    "foundations": set(),
    "compat": set(),
    "sparsity": {"foundations", "compat"},
    "data": {"foundations", "compat"},
    "models": {"foundations", "compat"},
    "training": {"foundations", "compat", "models"},
    "fusion": {"foundations", "compat", "sparsity"},
    "methods": {"foundations", "compat", "sparsity"},
    "experiments": {"foundations", "compat", "sparsity", "methods", "data", "models", "training", "fusion"},
    "export": {"foundations", "compat", "sparsity", "fusion"},
    "report": {"foundations", "compat", "models", "sparsity", "experiments"},
}


def _module_name(path):
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def _resolve(name):
    """The module `name` names: itself if it is one, else the package that defines the name."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(module):
    """The keras_lottery modules that `module` imports, each with its line number."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.split(".")[0] == "keras_lottery"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "keras_lottery":
            for alias in node.names:
                found.append((_resolve(f"{node.module}.{alias.name}"), node.lineno))
    return [(_resolve(name), line) for name, line in found]


GRAPH = {module: _imports(module) for module in MODULES}


def _subpackage(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_belongs_to_a_known_subpackage():
    assert {_subpackage(module) for module in MODULES} - {None} == set(ALLOWED)


@pytest.mark.parametrize("module", sorted(module for module in MODULES if module != "keras_lottery"))
def test_modules_import_only_lower_layers(module):
    own = _subpackage(module)
    wrong = [f"line {line}: {target}" for target, line in GRAPH[module]
             if target == "keras_lottery" or _subpackage(target) not in ALLOWED[own] | {own}]
    assert not wrong, f"{module} ({own}/) may import only {sorted(ALLOWED[own])}; it imports {wrong}"


def test_no_import_cycles():
    # keras_lottery/__init__.py is the public API: it imports everything, and nothing imports it.
    graph = {module: {target for target, _ in targets if target != module}
             for module, targets in GRAPH.items() if module != "keras_lottery"}
    state, cycles = {}, []

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_checker_sees_a_violation_and_a_cycle(tmp_path, monkeypatch):
    """The two checks above fail on a layout that breaks their rules (so they can fail)."""
    sparsity, experiments = tmp_path / "sparsity.py", tmp_path / "experiments.py"
    sparsity.write_text("from keras_lottery.experiments import imp\n")
    experiments.write_text("def f():\n    from keras_lottery.sparsity import masks\n")
    monkeypatch.setitem(MODULES, "keras_lottery.sparsity.masks", sparsity)
    monkeypatch.setitem(MODULES, "keras_lottery.experiments.imp", experiments)
    imports = {module: _imports(module) for module in ("keras_lottery.sparsity.masks", "keras_lottery.experiments.imp")}
    assert imports["keras_lottery.sparsity.masks"] == [("keras_lottery.experiments.imp", 1)]
    assert imports["keras_lottery.experiments.imp"] == [("keras_lottery.sparsity.masks", 2)]
    monkeypatch.setitem(GRAPH, "keras_lottery.sparsity.masks", imports["keras_lottery.sparsity.masks"])
    monkeypatch.setitem(GRAPH, "keras_lottery.experiments.imp", imports["keras_lottery.experiments.imp"])
    with pytest.raises(AssertionError, match="may import only"):
        test_modules_import_only_lower_layers("keras_lottery.sparsity.masks")
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycles()


def test_public_api_names_exist_and_are_listed():
    for name in kl.__all__:
        assert getattr(kl, name) is not None, name
    documented = kl.__doc__
    for name in kl.__all__:
        assert f"`{name}`" in documented or f"`{name}." in documented, f"{name} is not in the package docstring"


@pytest.mark.parametrize("old, new", [
    ("callbacks", "keras_lottery.sparsity.callbacks"),
    ("wrappers", "keras_lottery.sparsity.wrappers"),
    ("early_bird_flow", "keras_lottery.experiments.early_bird_flow"),
    ("tuning", "keras_lottery.experiments.tuning"),
    ("tflite", "keras_lottery.export.tflite"),
])
def test_modules_of_the_flat_layout_are_still_reachable(old, new):
    import importlib

    namespace = {}
    exec(f"from keras_lottery import {old} as module", namespace)  # the import an old script makes
    assert namespace["module"] is importlib.import_module(new)
    with pytest.raises(AttributeError, match="no attribute 'no_such_module'"):
        kl.no_such_module  # noqa: B018


def test_saved_model_class_names_are_unchanged():
    # Files saved before the layout move name these classes; loading finds them by these names.
    for cls in (kl.PruneLowMagnitude, kl.PruneLowSignFlip, kl.EarlyBirdSchedule, kl.OneShot, kl.Iterative, kl.Gradual):
        assert keras.utils.get_registered_name(cls) == f"keras_lottery>{cls.__name__}"
