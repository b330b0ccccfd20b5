"""The package's imports run one way: down the layer table of ``landscape.LAYERS``."""

from __future__ import annotations

import ast
from pathlib import Path

import landscape

PACKAGE = Path(landscape.__file__).parent


def _layer_of(module: str) -> int:
    """The index in LAYERS of ``landscape.X...`` (its top-level module or folder)."""
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(landscape.LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer of landscape.LAYERS")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every ``landscape.*`` module imported anywhere in the file (functions included)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("landscape."):
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.module == "landscape":
            out += [(node.lineno, f"landscape.{a.name}") for a in node.names
                    if a.name not in ("__version__",)]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("landscape.")]
    return out


def _sources() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.parent != PACKAGE or
            p.name != "__init__.py"]


def test_every_module_has_a_layer():
    for path in _sources():
        _layer_of(_module_name(path))


def test_no_import_goes_up_the_layers():
    upward = []
    for path in _sources():
        mine = _layer_of(_module_name(path))
        for line, target in _imports(path):
            if _layer_of(target) > mine:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not upward, "imports that go up landscape.LAYERS:\n" + "\n".join(upward)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rule can fail: a module of the run-file layer importing a figure module."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from landscape.draw import plot\n")
    [(line, target)] = _imports(bad)
    assert _layer_of(target) > _layer_of("landscape.runfile.store")


def test_at_most_six_modules_directly_under_the_package():
    assert len([p for p in PACKAGE.glob("*.py")]) <= 6
