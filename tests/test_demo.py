"""A short real-model run: the demo's code path on two real local LLMs (tens of items).

Marked ``slow`` (minutes on two cores): part of the default run and of CI; ``-m "not slow"`` skips them
while iterating.
"""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytest.importorskip("xllamacpp", reason="the demo extra is not installed: pip install -e '.[demo]'")
pytestmark = pytest.mark.slow


def processes_tagged(tag: str) -> list[int]:
    """Live processes whose environment holds ``SMARTMIX_TEST_TAG=tag``: only ones this test started
    (children inherit the environment), whatever else runs on the machine."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone, or not ours to read
            continue
        if f"SMARTMIX_TEST_TAG={tag}".encode() in environ.split(b"\0") and state != "Z":
            found.append(int(proc.name))
    return found


def test_demo_on_real_local_models(tmp_path):
    from smartmix.demo.run import run_demo

    outcome = run_demo(n_items=30, method="mix", target=0.7, confidence=0.9, seed=1, out_dir=tmp_path)
    result = outcome.result
    df = result.to_pandas()
    assert len(df) == 30 and df["answer"].isin(["positive", "negative"]).all()
    assert not result.failures
    assert df["cost"].sum() == pytest.approx(result.total_cost)
    assert 0.4 <= outcome.accuracy <= 1.0
    assert (tmp_path / "demo.png").stat().st_size > 1000
    assert json.loads((tmp_path / "summary.json").read_text())["accuracy_vs_labels"] == pytest.approx(outcome.accuracy)


def test_demo_cascade_uses_real_logprobs(tmp_path):
    from smartmix.demo.run import run_demo

    outcome = run_demo(n_items=24, method="margin", target=0.7, confidence=0.9, seed=2, out_dir=tmp_path)
    df = outcome.result.to_pandas()
    assert len(df) == 24 and not outcome.result.failures
    # margin escalates the least confident answers: it needs first-token logprobs from the real server
    assert set(df["model"]) == {"smollm2-135m", "gemma3-270m"}


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find the processes it started")
def test_demo_cli_leaves_no_server_behind(tmp_path):
    tag = uuid.uuid4().hex
    proc = subprocess.run(
        [sys.executable, "-m", "smartmix.cli", "demo", "--items", "12", "--target", "0.6", "--quiet", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=240, env={**os.environ, "SMARTMIX_TEST_TAG": tag},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Accuracy against the human labels" in proc.stdout
    assert processes_tagged(tag) == []  # the llama.cpp servers the demo started are gone


def test_install_models_sets_up_the_local_models_and_runs_nothing(tmp_path, monkeypatch):
    """The test command's set-up step: with every local model present it installs nothing and writes nothing."""
    from typer.testing import CliRunner

    from smartmix.cli import app
    from smartmix.demo.local_models import missing_requirements
    from smartmix.router.embedding import find_model_dir

    assert missing_requirements() == () and find_model_dir().is_dir()  # the test command installed them
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["install-models"])
    assert result.exit_code == 0, result.output
    assert "already installed" in result.output
    assert list(tmp_path.iterdir()) == []
