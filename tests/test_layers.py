"""The package layers: archspace < ghn < train. A lower layer never imports a higher one (the ``ghn`` command's
subcommands from ``train`` register through the ``ghn.commands`` entry points instead)."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAYERS = ["archspace", "ghn", "train"]


def imported_packages(path: pathlib.Path) -> list[tuple[int, str]]:
    """``(line, top-level package)`` of every absolute import in a source file, also those inside functions, and of
    every ``importlib.import_module("...")`` / ``__import__("...")`` call with a literal name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value.split(".")[0]))
    return found


@pytest.mark.parametrize("layer", LAYERS[:-1])
def test_lower_layers_never_import_higher_ones(layer):
    higher = set(LAYERS[LAYERS.index(layer) + 1:])
    files = sorted((ROOT / layer).rglob("*.py"))
    assert files, f"no sources under {ROOT / layer}"
    bad = [f"{f.relative_to(ROOT)}:{line} imports {pkg}" for f in files for line, pkg in imported_packages(f)
           if pkg in higher]
    assert not bad, "\n".join(bad)


def test_the_check_sees_imports_inside_functions(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from train.rank_cli import add_rank_parser\n    import importlib\n"
                   "    importlib.import_module('train.cli')\n")
    assert imported_packages(src) == [(2, "train"), (3, "importlib"), (4, "train")]
