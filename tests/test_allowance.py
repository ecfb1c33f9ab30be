"""``--allowance``: the never-worse allowance of the profiling methods, set by the user.

By default profiling stops before candidate calls a fallback would waste could lift the bill above 1.025× the
reference-only bill. A model that needs a large profiled share before it can be certified (its agreement a
few points below T) is then given up on; a user who accepts more risk raises the allowance."""

import json
import subprocess
import sys

import numpy as np
import pytest

import smartmix
from smartmix.errors import ConfigError

N = 2_000


def recorded(path, n: int = N, rate: float = 0.86, seed: int = 0):
    """A recorded-outputs file: one candidate agreeing on exactly ``rate`` of the items (placed at random) at a
    tenth of the reference's price."""
    agrees = np.zeros(n, dtype=bool)
    agrees[np.random.default_rng(seed).choice(n, round(rate * n), replace=False)] = True
    with open(path, "w") as f:
        for i in range(n):
            outputs = {
                "cheap": {"answer": "A" if agrees[i] else "B", "cost_usd": 1e-5},
                "ref": {"answer": "A", "cost_usd": 1e-4},
            }
            f.write(json.dumps({"id": str(i), "prompt": f"Item {i}", "outputs": outputs}) + "\n")
    return path


def cli(*args):
    return subprocess.run([sys.executable, "-m", "smartmix.cli", *args], capture_output=True, text=True, timeout=300)


def test_a_larger_allowance_lets_efficient_certify_a_model_a_few_points_short(tmp_path):
    data = recorded(tmp_path / "batch.jsonl")
    reports = {}
    for allowance in (None, "0.3"):
        report = tmp_path / f"cert-{allowance}.json"
        extra = ["--allowance", allowance] if allowance else []
        proc = cli("run", "--data", str(data), "--reference", "ref", "--method", "efficient", "--target", "0.9",
                   "--report", str(report), "--quiet", *extra)
        assert proc.returncode == 0, proc.stderr
        reports[allowance] = json.loads(report.read_text())
    default, raised = reports[None], reports["0.3"]
    assert "1.025x" in default["details"]["profiling_allowance"]
    assert "fallback_reason" in default["details"]  # at 2.5% the model is given up on
    assert default["shares"] == {"ref": 1.0}
    assert "1.3x" in raised["details"]["profiling_allowance"]
    assert "fallback_reason" not in raised["details"]
    assert raised["shares"]["cheap"] > 0.5  # certified after a large profiled share
    assert raised["valid"]


def test_the_allowance_is_part_of_the_run_identity(tmp_path):
    """A rerun with another allowance is another run: it must not resume the first one's plan."""
    data = recorded(tmp_path / "batch.jsonl", n=500)
    runs = tmp_path / "runs"
    first = smartmix.run(data, reference="ref", method="efficient", run_dir=runs)
    again = smartmix.run(data, reference="ref", method="efficient", run_dir=runs)
    other = smartmix.run(data, reference="ref", method="efficient", run_dir=runs, allowance=0.3)
    assert first.outputs == again.outputs
    assert other.outputs != first.outputs


@pytest.mark.parametrize(
    ("method", "allowance", "message"),
    [
        ("efficient", 1.5, "between 0 and 1"),
        ("mix", -0.1, "between 0 and 1"),
        ("cascade", 0.1, "cascade does not profile that way"),
        ("reference", 0.1, "reference does not profile that way"),
    ],
)
def test_a_wrong_allowance_is_refused_before_any_call(tmp_path, method, allowance, message):
    data = recorded(tmp_path / "batch.jsonl", n=200)
    out = tmp_path / "answers.jsonl"
    with pytest.raises(ConfigError, match=message):
        smartmix.run(data, reference="ref", method=method, allowance=allowance, out=out)
    assert not out.exists()


def test_the_cli_says_what_is_wrong_with_the_allowance(tmp_path):
    data = recorded(tmp_path / "batch.jsonl", n=200)
    proc = cli("run", "--data", str(data), "--reference", "ref", "--method", "cascade", "--allowance", "0.2", "--quiet")
    assert proc.returncode == 2
    assert "--allowance sets how far the profiling methods" in proc.stderr and "Traceback" not in proc.stderr
