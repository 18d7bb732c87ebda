"""Enforces the layering rules of DESIGN.md §2 by walking every module's AST.

* ``rgpt4d_core`` never imports ``ray``, ``pipelines``, ``fastapi`` or ``starlette``;
* ``mlflow`` is imported only inside ``rgpt4d_core/tracking.py``, and only lazily (inside a function);
* ``pipelines`` defines no ``nn.Module`` subclass (no model or loss math in the wiring layer);
* ``conf/`` holds YAML only; every YAML file there begins with a comment showing its command.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "rgpt4d_core"
PIPELINES = ROOT / "pipelines"
FORBIDDEN_IN_CORE = {"ray", "pipelines", "fastapi", "starlette", "uvicorn"}


def _imports(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    out: list[tuple[str, ast.AST]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name.split(".")[0], node) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module.split(".")[0], node))
    return out


def _module_level_imports(tree: ast.Module) -> set[str]:
    """Top-level packages imported at module level (outside any function or class body)."""
    names: set[str] = set()

    def visit(stmts: list[ast.stmt]) -> None:
        for st in stmts:
            if isinstance(st, ast.Import):
                names.update(a.name.split(".")[0] for a in st.names)
            elif isinstance(st, ast.ImportFrom) and st.module and st.level == 0:
                names.add(st.module.split(".")[0])
            elif isinstance(st, ast.If | ast.Try | ast.With):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    for sub in getattr(st, field, []) or []:
                        visit(sub.body if isinstance(sub, ast.ExceptHandler) else [sub])

    visit(tree.body)
    return names


def _py_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _py_files(CORE), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_does_not_import_ray_pipelines_or_web(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = sorted({name for name, _ in _imports(tree) if name in FORBIDDEN_IN_CORE})
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: rgpt4d_core must stay free of Ray/web/pipelines"


@pytest.mark.parametrize("path", _py_files(CORE), ids=lambda p: str(p.relative_to(ROOT)))
def test_mlflow_only_lazily_in_tracking(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    uses = [n for n, _ in _imports(tree) if n == "mlflow"]
    if path.name == "tracking.py" and path.parent == CORE:
        assert "mlflow" not in _module_level_imports(tree), "tracking.py must import mlflow lazily"
    else:
        assert not uses, f"{path.relative_to(ROOT)} imports mlflow; only rgpt4d_core/tracking.py may"


@pytest.mark.parametrize("path", _py_files(PIPELINES), ids=lambda p: str(p.relative_to(ROOT)))
def test_pipelines_define_no_modules(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = {ast.unparse(b) for b in node.bases}
            assert not bases & {"nn.Module", "torch.nn.Module", "Module"}, (
                f"{path.relative_to(ROOT)}:{node.lineno} defines nn.Module {node.name}; models live in rgpt4d_core"
            )


def test_conf_is_yaml_only_with_command_comment() -> None:
    files = [p for p in (ROOT / "conf").rglob("*") if p.is_file()]
    for p in files:
        assert p.suffix in {".yaml", ".yml"}, f"conf/ holds YAML only, found {p.relative_to(ROOT)}"
        first = p.read_text().lstrip().splitlines()[0] if p.read_text().strip() else ""
        assert first.startswith("#"), f"{p.relative_to(ROOT)} must begin with a comment showing its command"


def test_rule_checker_catches_a_violation(tmp_path: Path) -> None:
    """The walkers above must actually detect forbidden imports (guards against a check that cannot fail)."""
    tree = ast.parse("import os\ndef f():\n    import mlflow\nfrom ray import data\n")
    assert {n for n, _ in _imports(tree)} == {"os", "mlflow", "ray"}
    assert _module_level_imports(tree) == {"os", "ray"}
