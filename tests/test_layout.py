"""The package's dependency direction (../shared/STYLE.md, "The shape of the house"), checked by import.

- `otseg_hf/model/` is the remote-code closure: a saved Hub folder carries exactly these files, flat, so they may
  import each other only with single-dot relative imports, and nothing else of otseg_hf.
- Nothing in the package imports `training/`.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "otseg_hf"
CLOSURE = PACKAGE / "model"


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            yield node.level, node.module or ""
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name


@pytest.mark.parametrize("path", sorted(CLOSURE.glob("*.py")), ids=lambda p: p.name)
def test_closure_imports_only_itself_with_single_dots(path):
    for level, module in _imports(path):
        assert level in (0, 1), f"{path.name}: `from {'.' * level}{module}` reaches outside the closure"
        if level == 0:
            assert not module.startswith(("otseg_hf", "training")), f"{path.name} imports {module}"
        elif module:
            assert (CLOSURE / f"{module}.py").is_file(), f"{path.name} imports .{module}, not a closure file"


def test_closure_runs_as_a_flat_folder_without_the_package(tmp_path):
    """Copy the closure flat into a package of another name, as transformers does for remote code, and import every
    file with otseg_hf made unimportable: nothing may reach the rest of the package."""
    copy = tmp_path / "remote_copy"
    copy.mkdir()
    for path in CLOSURE.glob("*.py"):
        if path.name != "__init__.py":
            shutil.copy(path, copy / path.name)
    (copy / "__init__.py").write_text("")
    modules = sorted(p.stem for p in copy.glob("*.py") if p.stem != "__init__")
    script = textwrap.dedent(
        f"""
        import importlib, sys
        sys.modules["otseg_hf"] = None  # any import of otseg_hf now fails
        sys.path.insert(0, {str(tmp_path)!r})
        for name in {modules!r}:
            importlib.import_module("remote_copy." + name)
        print("ok", len({modules!r}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")


def test_package_never_imports_training():
    for path in PACKAGE.rglob("*.py"):
        for _, module in _imports(path):
            assert not module.split(".")[0] == "training", f"{path.relative_to(ROOT)} imports {module}"
    script = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        import otseg_hf
        for info in pkgutil.walk_packages(otseg_hf.__path__, "otseg_hf."):
            if not info.name.endswith("__main__"):
                importlib.import_module(info.name)
        training = [m for m, mod in sys.modules.items() if "/training/" in (getattr(mod, "__file__", "") or "")]
        print(training)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
