"""The layout of docs/ARCHITECTURE.md holds: one-way layers, no import cycle, no hidden imports, small modules.

The import contracts themselves live in pyproject.toml ([tool.importlinter]) and are checked with
import-linter, the well-kept tool for this; these tests run it on the real package, and on a copy with a
planted cycle and a planted upward import, to show that the check fails when someone adds one.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "aelab"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_LINES = 420  # "no module over ~400 lines"
LAZY_MARK = "lazy:"  # the comment a function-level import of an aelab module must carry, saying why


def _lint_imports(src_root: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter with the project's contracts on the package found under ``src_root``."""
    env = dict(os.environ, PYTHONPATH=str(src_root))
    return subprocess.run([str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
                          cwd=src_root, env=env, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold() -> None:
    result = _lint_imports(REPO / "src")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in result.stdout


@pytest.mark.parametrize("where, planted, contract", [
    # models.registry -> models.conv -> models.registry: a cycle inside one layer.
    ("models/registry.py", "from aelab.models import conv  # planted\n", "No import cycle"),
    # data (low) -> training (high): an upward import, and a cycle through the layers.
    ("data/datasets.py", "import aelab.training.trainer  # planted\n", "Layers"),
])
def test_a_planted_cycle_or_upward_import_breaks_the_contracts(tmp_path: Path, where: str, planted: str,
                                                                contract: str) -> None:
    copy = tmp_path / "src" / "aelab"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / where
    text = target.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    target.write_text(head + sep + planted + rest)
    result = _lint_imports(tmp_path / "src")
    assert result.returncode != 0, result.stdout[-3000:]
    broken = [line for line in result.stdout.splitlines() if line.rstrip().endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), result.stdout[-3000:]


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_function_level_import_of_aelab_says_why() -> None:
    """Imports sit at the top of a module, where the dependency graph can be read; an import inside a function
    is allowed only to keep ``import aelab`` or the CLI's start-up light, with a '# lazy: ...' comment."""
    hidden = []
    for path in _modules():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("aelab") or \
                        isinstance(sub, ast.Import) and any(a.name.startswith("aelab") for a in sub.names):
                    around = lines[max(0, sub.lineno - 3):sub.lineno]
                    if not any(LAZY_MARK in line for line in around):
                        hidden.append(f"{path.relative_to(SRC)}:{sub.lineno}: {lines[sub.lineno - 1].strip()}")
    assert not hidden, "function-level imports of aelab without a '# lazy:' reason:\n" + "\n".join(hidden)


def test_modules_stay_small_and_every_package_says_what_it_holds() -> None:
    too_long = [f"{p.relative_to(SRC)} ({n} lines)" for p in _modules()
                if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"
    packages = [p for p in SRC.rglob("__init__.py") if "__pycache__" not in p.parts]
    assert len(packages) >= 9
    for init in packages:
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and doc.strip(), f"{init.relative_to(SRC)} has no docstring saying what the package holds"


def test_the_cli_starts_without_importing_torch() -> None:
    """``aelab --help`` stays fast: the command modules import the heavy layers inside the commands."""
    code = "import sys; from aelab.cli import main; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_architecture_doc_names_every_package() -> None:
    doc = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    for init in SRC.rglob("__init__.py"):
        package = ".".join(init.parent.relative_to(SRC.parent).parts)
        assert package in doc or f"{init.parent.name}/" in doc, f"docs/ARCHITECTURE.md does not mention {package}"
