"""CPU time of the command line's start-up: ``smartmix --help``, ``smartmix methods``, ``smartmix run --help``.

Each command runs in a fresh interpreter; its CPU time is the child's user + system time (``os.wait4``),
so other load on the machine inflates it far less than wall time. Reports the median (and min/max) of
``--repeat`` runs per command, and writes a Markdown report that starts with the command and code version.

    python benchmarks/startup.py --repeat 15 --out benchmarks/results/startup.md
    python benchmarks/startup.py --compare /path/to/other/checkout/src   # the same table for another tree
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (("--help",), ("methods",), ("run", "--help"))
TARGET_S = 0.3


def cpu_seconds(src: Path, args: tuple[str, ...]) -> tuple[float, float]:
    """(user + system CPU seconds, wall seconds) of ``python -m smartmix.cli ARGS`` with ``src`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(src), "COLUMNS": "100"}
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "smartmix.cli", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"smartmix {' '.join(args)} exited {child.returncode}: {child.stderr.read().decode()[-500:]}")
    child.stderr.close()
    return usage.ru_utime + usage.ru_stime, wall


def version(src: Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(src), "describe", "--always", "--dirty", "--tags"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def measure(src: Path, repeat: int) -> list[tuple[str, list[float], list[float]]]:
    rows = []
    for args in COMMANDS:
        cpu_seconds(src, args)  # warm the file cache and .pyc files: not counted
        runs = [cpu_seconds(src, args) for _ in range(repeat)]
        rows.append((f"smartmix {' '.join(args)}", [c for c, _ in runs], [w for _, w in runs]))
    return rows


def table(rows: list[tuple[str, list[float], list[float]]]) -> list[str]:
    lines = ["| command | CPU s (median) | min | max | wall s (median) | ≤ 0.3 s CPU |", "|---|---|---|---|---|---|"]
    for name, cpu, wall in rows:
        med = statistics.median(cpu)
        lines.append(
            f"| `{name}` | {med:.3f} | {min(cpu):.3f} | {max(cpu):.3f} | {statistics.median(wall):.3f} | "
            f"{'yes' if med <= TARGET_S else 'no'} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="runs per command (median reported)")
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    parser.add_argument("--compare", type=Path, help="another checkout's src/ folder, measured the same way")
    args = parser.parse_args()
    command = "python benchmarks/startup.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    src = ROOT / "src"
    lines = [
        "# Start-up CPU time of the command line",
        "",
        f"Command: `{command}`  ",
        f"Code version: `{version(ROOT)}`  ",
        f"Python {sys.version.split()[0]}; {args.repeat} runs per command after one warm-up run; CPU = user + "
        "system time of the child process. Target: ≤ 0.3 s CPU. Load average of the machine (2 cores) when "
        f"the measurement started: {os.getloadavg()[0]:.1f} — CPU time grows with contention (caches, "
        "frequency), so compare rows of the same report.",
        "",
        *table(measure(src, args.repeat)),
    ]
    if args.compare is not None:
        lines += ["", f"The same for `{version(args.compare)}` ({args.compare}):", "", *table(measure(args.compare, args.repeat))]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
