"""The command line's own figure: ``smartmix run`` on a recorded set, as a user types it, over several seeds.

Each seed runs ``smartmix run --data FILE --reference REF --target T --method METHOD --seed S`` in a fresh
process and a fresh run directory, reads the certificate it writes (``--report``) for the bill and the
savings, and checks the answers it writes (``--out``) against the reference's recorded answers. Seed 0 is
the command without ``--seed`` (its default).

    python benchmarks/cli_run.py --data ../shared/data/mmlu-qwen-oai/test.jsonl --reference gpt-4o \\
        --target 0.9 --method cascade --seeds 20 --out benchmarks/results/cli_run.md
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from smartmix.bench.command import code_version


def _reference_answers(path: Path, reference: str) -> dict[str, str]:
    answers = {}
    with path.open() as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                answers[row["id"]] = row["outputs"][reference]["answer"]
    return answers


def run_once(data: Path, reference: str, target: float, method: str, seed: int) -> dict:
    """One ``smartmix run`` in a fresh directory: savings, bill and realised agreement with the reference."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["run", "--data", str(data), "--reference", reference, "--target", str(target), "--method", method]
        if seed:
            args += ["--seed", str(seed)]
        args += ["--report", "certificate.json", "--out", "answers.csv", "--quiet"]
        done = subprocess.run([sys.executable, "-m", "smartmix.cli", *args], cwd=tmp, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"smartmix run failed (seed {seed}):\n{done.stderr[-2000:]}")
        certificate = json.loads((Path(tmp) / "certificate.json").read_text())
        with (Path(tmp) / "answers.csv").open() as f:
            rows = list(csv.DictReader(f))
    expected = _reference_answers(data, reference)
    agreeing = sum(row["answer"] == expected[row["id"]] for row in rows)
    return {
        "seed": seed,
        "savings": certificate["savings"],
        "cost": certificate["total_cost_usd"],
        "reference_cost": certificate["reference_cost_usd"],
        "agreement": agreeing / len(rows),
        "shares": certificate["shares"],
        "fallback": certificate["details"].get("fallback_reason"),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--method", default="cascade")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)

    results = [run_once(args.data.resolve(), args.reference, args.target, args.method, s) for s in range(args.seeds)]
    savings = [r["savings"] for r in results]
    command = "python benchmarks/cli_run.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    typed = shlex.join(["smartmix", "run", "--data", str(args.data), "--reference", args.reference, "--target",
                        f"{args.target:g}", "--method", args.method])
    lines = [
        "# `smartmix run` on a recorded set, as typed",
        "",
        f"Command: `{command}`",
        "",
        f"Code version: `{code_version()}`. Each seed is `{typed} --seed S` in a fresh process and run directory "
        "(seed 0: without `--seed`). Savings = the certificate's reference-only estimate ÷ the bill; agreement = "
        f"answers written equal to {args.reference}'s recorded answer.",
        "",
        f"Seed 0 (the command as typed): **{results[0]['savings']:.2f}×**. Over {len(results)} seeds: median "
        f"{statistics.median(savings):.2f}×, min {min(savings):.2f}×, max {max(savings):.2f}×; agreement ≥ "
        f"{args.target:g} in {sum(r['agreement'] >= args.target for r in results)} of {len(results)}.",
        "",
        "| seed | savings | bill (USD) | reference-only (USD) | agreement | shares | fallback |",
        "| ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in results:
        shares = ", ".join(f"{m} {v:.1%}" for m, v in r["shares"].items())
        lines.append(f"| {r['seed']} | {r['savings']:.2f}× | {r['cost']:.4f} | {r['reference_cost']:.4f} | "
                     f"{r['agreement']:.4f} | {shares} | {r['fallback'] or ''} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:9]))


if __name__ == "__main__":
    main()
