"""A short real-model run: the demo's code path on two real local LLMs (tens of items)."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("xllamacpp", reason="the demo extra is not installed: pip install -e '.[demo]'")


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


def test_demo_cli_leaves_no_server_behind(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "smartmix.cli", "demo", "--items", "12", "--target", "0.6", "--quiet", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Accuracy against the human labels" in proc.stdout
    leftovers = subprocess.run(["pgrep", "-f", "smartmix.demo.llama_server"], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""
