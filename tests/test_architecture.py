"""The layers of docs/architecture.md hold: the library never imports a front end, and importing it
loads only what a caller needs."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import cxr
from tests.conftest import ROOT

FRONT_ENDS = ("cxr.cli", "app", "train")


def is_main_guard(node: ast.AST) -> bool:
    """``if __name__ == "__main__":``."""
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators)
    )


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement names in ``path``, function-level and ``__main__``-guarded
    ones included; ``from cxr import x`` counts as ``cxr.x``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def names_a(modules: set[str], layers: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == layer or m.startswith(layer + ".") for layer in layers))


LIBRARY = sorted(p for p in (ROOT / "cxr").glob("*.py"))


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.name)
def test_the_library_never_imports_a_front_end(path):
    assert names_a(imported_modules(path), FRONT_ENDS) == []


@pytest.mark.parametrize("path", [ROOT / "app.py", ROOT / "train.py"], ids=lambda p: p.name)
def test_app_and_train_use_the_library_not_the_commands(path):
    assert names_a(imported_modules(path), ("cxr.cli", "app", "train")) == []


@pytest.mark.parametrize("path", sorted((ROOT / "cxr" / "cli").glob("*.py")), ids=lambda p: p.name)
def test_commands_never_import_app_or_train(path):
    assert names_a(imported_modules(path), ("app", "train")) == []


def test_the_rule_sees_a_violation(tmp_path):
    """The check itself: a function-level import of a command is caught, and so is a __main__ hand-over."""
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from cxr.cli import evaluate\n\n"
        "if __name__ == '__main__':\n    from cxr.cli.predict import main\n"
    )
    found = names_a(imported_modules(module), FRONT_ENDS)
    assert found == ["cxr.cli", "cxr.cli.evaluate", "cxr.cli.predict", "cxr.cli.predict.main"]


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.name)
def test_a_library_module_is_no_command(path):
    """Commands are ``python -m cxr.cli.<name>`` and ``cxr-<name>``; no library module runs as a script."""
    assert not any(is_main_guard(node) for node in ast.walk(ast.parse(path.read_text())))


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module → the package's modules it imports, by any import statement (function-level included)."""
    modules = {
        ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in package.rglob("*.py")
    }

    def owner(name: str) -> str:  # cxr.model.load_model → cxr.model
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    return {name: {owner(n) for n in imported_modules(path)} - {"", name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle (its modules, the first repeated at the end), or [] if there is none."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str]:
        if name in path:
            return path[path.index(name) :] + [name]
        if name in done:
            return []
        for imported in sorted(graph.get(name, ())):
            if cycle := visit(imported, [*path, name]):
                return cycle
        done.add(name)
        return []

    return next((cycle for name in sorted(graph) if (cycle := visit(name, []))), [])


def test_no_two_modules_import_each_other_even_through_others():
    assert find_cycle(import_graph(ROOT / "cxr")) == []


def test_the_cycle_check_finds_a_cycle_hidden_in_a_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import g\n")
    (package / "b.py").write_text("def g():\n    from pkg import c\n")
    (package / "c.py").write_text("import pkg.a\n")
    assert find_cycle(import_graph(package)) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]


def test_public_names_are_listed_once():
    assert sorted(cxr.__all__) == sorted(cxr._HOMES)
    for name in cxr.__all__:  # each public name is the object its home module defines
        assert getattr(cxr, name) is getattr(importlib.import_module(cxr._HOMES[name]), name)


def loaded_after(statement: str) -> set[str]:
    heavy = ("torch", "timm", "gradio", "sklearn", "scipy", "matplotlib", "pytorch_grad_cam")
    code = f"import sys; {statement}; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(result.stdout.split())


@pytest.mark.slow
def test_importing_cxr_or_an_http_command_loads_no_torch():
    assert loaded_after("import cxr, cxr.errors") == set()
    assert {"torch", "timm", "pytorch_grad_cam"} & loaded_after("import cxr.cli.loadtest") == set()


@pytest.mark.slow
def test_the_app_path_loads_no_scikit_learn_matplotlib_or_grad_cam():
    """What the first answer does not need stays out of the app's start (README, Speed)."""
    later = {"sklearn", "scipy", "matplotlib", "pytorch_grad_cam"}
    assert loaded_after("import cxr.inference, cxr.hub, cxr.io") & later == set()
    # The default answers with its map from the forward pass: its warm-up answer needs no grad-cam either.
    warm = "import cxr.hub, cxr.service; cxr.service.Screening(cxr.hub.model_choices()).warm_up()"
    assert loaded_after(warm) & later == set()
