"""Bad inputs, tried the way a new user would: the CLI as a subprocess, one mistake at a time.

Usage::

    PYTHONPATH=src python benchmarks/bad_inputs.py [--out benchmarks/results/bad_inputs.md]

Each case is a command line, a file or a job file that is wrong. For every one the report gives the exit
code and the first line of the message, and flags: a traceback anywhere in the output, exit 0 where the
result cannot be right, an input file changed, a temporary or half-written output left behind. Cases
that need an endpoint use ``tests/openai_server.py`` on 127.0.0.1 (or a closed port next to it).
Exits 1 when any case is flagged.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
SHARED = Path(os.environ.get("SMARTMIX_SHARED_DATA", ROOT.parent / "shared" / "data"))


@dataclass
class Case:
    name: str
    args: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)  # written into the work dir first
    ok_codes: tuple[int, ...] = (2,)  # what a right answer exits with
    outputs: tuple[str, ...] = ()  # files the command must not leave half-written


def job(base_url: str, *, extra_model: str = "", extra_task: str = "", reference: str = "big",
        template: str = "Answer yes or no. {text}", models_override: str | None = None, run: str = "") -> str:
    models = models_override if models_override is not None else (
        f'[models.cheap]\nbase_url = "{base_url}"\ninput_price = 0.1\noutput_price = 0.4\nmax_attempts = 1\n\n'
        f'[models.big]\nbase_url = "{base_url}"\ninput_price = 10\noutput_price = 40\nmax_attempts = 1\n{extra_model}\n'
    )
    return (f'reference = "{reference}"\n\n{models}\n[task]\ntemplate = "{template}"\nlabels = ["yes", "no"]\n'
            f"max_tokens = 4\n{extra_task}\n[run]\n{run}\n")


ITEMS = "id,text\n" + "".join(f"q{i},Is claim {i} true?\n" for i in range(20))


def cases(base_url: str, closed_url: str, recorded: str) -> list[Case]:
    good = job(base_url)
    sim = ["run", "--simulated", "imdb", "-q"]
    rec = ["run", "--data", "rec.jsonl", "-q"]
    cfg = ["run", "--config", "job.toml", "--data", "items.csv", "-q"]
    base_files = {"job.toml": good, "items.csv": ITEMS}
    return [
        # ---- command line
        Case("unknown option", ["run", "--bogus"]),
        Case("unknown command", ["frobnicate"]),
        Case("no command at all (help)", [], ok_codes=(0, 2)),
        Case("option missing its value", ["run", "--data"]),
        Case("--target not a number", [*sim, "--target", "abc"]),
        Case("--target above 1", [*sim, "--target", "1.5"]),
        Case("--target 0", [*sim, "--target", "0"]),
        Case("--confidence 1", [*sim, "--confidence", "1"]),
        Case("--confidence negative", [*sim, "--confidence", "-0.5"]),
        Case("--seed -1", [*sim, "--seed", "-1"]),
        Case("--seed not a number", [*sim, "--seed", "x"]),
        Case("--concurrency 0", [*sim, "--concurrency", "0"]),
        Case("--batch-size 0", [*sim, "--batch-size", "0"]),
        Case("--max-cost negative", [*sim, "--max-cost", "-1"]),
        Case("unknown --method", [*sim, "--method", "nope"]),
        Case("unknown --simulated profile", ["run", "--simulated", "nope"]),
        Case("run without data", ["run", "-q"]),
        Case("--data file missing", ["run", "--data", "missing.jsonl", "-q"]),
        Case("--data is a folder", ["run", "--data", "folder", "-q"], files={"folder/x.txt": "x"}),
        Case("plain items without a config", ["run", "--data", "items.csv", "-q"], files={"items.csv": ITEMS}),
        Case("recorded: unknown --reference", [*rec, "--reference", "nope"], files={"rec.jsonl": recorded}),
        Case("recorded: unknown --models", [*rec, "--models", "nope"], files={"rec.jsonl": recorded}),
        Case("--out with an unknown format", [*rec, "--out", "answers.txt"], files={"rec.jsonl": recorded},
             outputs=("answers.txt",)),
        Case("--out is the --data file", [*rec, "--out", "rec.jsonl"], files={"rec.jsonl": recorded}),
        Case("--out is the --data file (other spelling)", [*rec, "--out", "./sub/../rec.jsonl"],
             files={"rec.jsonl": recorded, "sub/keep": ""}),
        Case("--report is the --data file", [*rec, "--report", "rec.jsonl"], files={"rec.jsonl": recorded}),
        Case("--report is the config", [*cfg, "--report", "job.toml"], files=base_files),
        Case("--report is the journal", [*cfg, "--report", "runs/journal.sqlite", "--run-dir", "runs"],
             files=base_files),
        Case("--out and --report the same file", [*rec, "--out", "a.jsonl", "--report", "a.jsonl"],
             files={"rec.jsonl": recorded}),
        Case("--out is the items file (with a config)", [*cfg, "--out", "items.csv"], files=base_files),
        Case("--price malformed", [*rec, "--price", "bad"], files={"rec.jsonl": recorded}),
        Case("--price not numbers", [*rec, "--price", "gpt-4o=abc/1"], files={"rec.jsonl": recorded}),
        Case("--method router without --router", [*sim, "--method", "router"]),
        Case("logs: no journal there", ["logs", "--run-dir", "nowhere"]),
        Case("logs: unknown run id", ["logs", "--run-dir", "runs", "0123456789ab"],
             files={"runs/journal.sqlite": b""}),
        Case("preview without data", ["preview"]),
        Case("router train: data missing", ["router", "train", "--data", "missing.jsonl"]),
        Case("serve: config missing", ["serve", "--config", "missing.toml"]),
        Case("--run-dir is a file", [*cfg, "--run-dir", "afile"], files={**base_files, "afile": "x"}),
        # ---- files
        Case("empty items file", cfg, files={**base_files, "items.csv": ""}),
        Case("items: header only", cfg, files={**base_files, "items.csv": "id,text\n"}),
        Case("items: malformed CSV row", cfg, files={**base_files, "items.csv": "id,text\nq1,a\nq2,b,c,d\n"}),
        Case("items: duplicate ids", cfg, files={**base_files, "items.csv": "id,text\nq1,a\nq1,b\n"}),
        Case("items: broken JSONL line", ["run", "--config", "job.toml", "--data", "items.jsonl", "-q"],
             files={"job.toml": good, "items.jsonl": '{"id": "a", "text": "x"}\n{"id": "b", "text": \n'}),
        Case("items: binary garbage", ["run", "--config", "job.toml", "--data", "items.parquet", "-q"],
             files={"job.toml": good, "items.parquet": os.urandom(256)}),
        Case("items: missing template field", ["run", "--config", "job.toml", "--data", "items.csv", "-q"],
             files={"job.toml": job(base_url, template="{text} {topic}"), "items.csv": ITEMS}),
        Case("recorded: broken line", rec, files={"rec.jsonl": recorded + '{"id": "x", "outputs": \n'}),
        Case("journal is not SQLite", [*cfg, "--run-dir", "runs"],
             files={**base_files, "runs/journal.sqlite": b"this is not a database" * 100}),
        # ---- job files
        Case("config file missing", ["run", "--config", "missing.toml", "--data", "items.csv"],
             files={"items.csv": ITEMS}),
        Case("config not TOML", cfg, files={**base_files, "job.toml": "this is = = not toml ["}),
        Case("config: unknown key", cfg, files={**base_files, "job.toml": good + "\nbogus_key = 1\n"}),
        Case("config: no models", cfg, files={**base_files, "job.toml": job(base_url, models_override="")}),
        Case("config: reference not a model", cfg, files={**base_files, "job.toml": job(base_url, reference="nope")}),
        Case("config: negative price", cfg, files={**base_files, "job.toml": job(base_url).replace(
            "input_price = 0.1", "input_price = -1")}),
        Case("config: labels a string", cfg, files={**base_files, "job.toml": good.replace(
            'labels = ["yes", "no"]', 'labels = "yes"')}),
        Case("config: max_tokens 0", cfg, files={**base_files, "job.toml": good.replace(
            "max_tokens = 4", "max_tokens = 0")}),
        Case("config: api_key_env not set", cfg, files={**base_files, "job.toml": good.replace(
            "max_attempts = 1\n\n[models.big]", 'max_attempts = 1\napi_key_env = "SMARTMIX_UNSET_KEY_VAR"\n\n'
                                                "[models.big]")}),
        Case("config: endpoint at a closed port", cfg, ok_codes=(3,),
             files={**base_files, "job.toml": job(closed_url)}),
    ]


def digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def try_case(case: Case, work: Path) -> dict[str, object]:
    for name, content in case.files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    before = digest_tree(work)
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", LITELLM_LOCAL_MODEL_COST_MAP="True", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    env.pop("SMARTMIX_UNSET_KEY_VAR", None)
    r = subprocess.run([sys.executable, "-m", "smartmix.cli", *case.args], capture_output=True, text=True,
                       env=env, cwd=work, timeout=300)
    after = digest_tree(work)
    text = r.stdout + r.stderr
    first = next((line.strip() for line in r.stderr.splitlines() if line.strip()), "")
    if not first:
        first = next((line.strip() for line in r.stdout.splitlines() if line.strip()), "")
    flags = []
    if "Traceback" in text:
        flags.append("traceback")
    if r.returncode == 0 and 0 not in case.ok_codes:
        flags.append("exit 0 on a wrong result")
    if r.returncode not in case.ok_codes and r.returncode != 0:
        flags.append(f"exit {r.returncode}, expected {'/'.join(map(str, case.ok_codes))}")
    changed = [name for name, h in before.items() if after.get(name) != h]
    if changed:
        flags.append(f"input changed: {', '.join(changed)}")
    leftovers = [name for name in after if name not in before and (".tmp" in name or name in case.outputs)]
    if leftovers:
        flags.append(f"left behind: {', '.join(leftovers)}")
    return {"case": case.name, "command": "smartmix " + " ".join(case.args), "exit": r.returncode,
            "message": first[:160], "flags": flags}


def code_version() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    from openai_server import free_port, start_server_process

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bad_inputs.md")
    args = parser.parse_args(argv)
    source = SHARED / "mmlu-qwen-oai" / "test.jsonl"
    recorded = "".join(source.read_text().splitlines(keepends=True)[:40])
    t0 = time.monotonic()
    version = code_version()
    rows = []
    with start_server_process() as server, tempfile.TemporaryDirectory(prefix="smartmix-bad-") as tmp:
        closed = f"http://127.0.0.1:{free_port()}/v1"
        for n, case in enumerate(cases(server.base_url, closed, recorded)):
            work = Path(tmp) / f"case{n:02d}"
            work.mkdir()
            row = try_case(case, work)
            rows.append(row)
            print(f"{row['exit']:>3} {'FLAG ' + '; '.join(row['flags']) if row['flags'] else 'ok  '} "
                  f"{case.name}: {row['message']}", flush=True)
    flagged = [r for r in rows if r["flags"]]
    lines = [
        "# Bad inputs",
        "",
        "Command: `PYTHONPATH=src python benchmarks/bad_inputs.py`  ",
        f"Code version: `{version}` (at the start)  ",
        f"{len(rows)} cases, {len(flagged)} flagged, {time.monotonic() - t0:.0f} s. Flags: a traceback, exit 0 on a "
        "wrong result, an exit code other than expected, an input changed, a temporary or half-written output left.",
        "",
        "| # | case | command | exit | first line of the message | flags |",
        "|---|---|---|---|---|---|",
    ]
    for n, r in enumerate(rows, 1):
        cells = [str(n), str(r["case"]), f"`{r['command']}`", str(r["exit"]), str(r["message"]),
                 "; ".join(r["flags"]) or "none"]  # type: ignore[arg-type]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}: {len(rows)} cases, {len(flagged)} flagged")
    return 1 if flagged else 0


if __name__ == "__main__":
    sys.exit(main())
