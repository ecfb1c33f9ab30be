"""Run the whole benchmark (or part of it) without the smartmix CLI: the same options as ``smartmix bench``.

    python benchmarks/run_all.py                 # the full default run (about 20 minutes on 2 cores)
    python benchmarks/run_all.py --quick         # a subset, under 2 minutes
    python benchmarks/run_all.py --suite adversarial --trials 1000   # a longer validity run

Run it from the repository root so that ../shared/data is found (or pass --data).
"""

from __future__ import annotations

import sys

import typer

from smartmix.bench.command import bench
from smartmix.errors import SmartmixError


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(bench)
    try:
        app()
    except SmartmixError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
