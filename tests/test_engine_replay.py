"""The replay path end to end: recorded outputs -> engine -> policy -> answers, bill and certificate."""

import json
import subprocess
import sys

import pandas as pd
import pytest

import smartmix
from smartmix.backends.replay import RecordedOutputs
from smartmix.errors import ConfigError, DataError, PriceError, UnknownModelError
from smartmix.tasks import ExactComparator


@pytest.fixture(scope="module")
def mmlu(shared_data):
    return shared_data / "mmlu-qwen-oai" / "test.jsonl"


@pytest.mark.parametrize("method", ["reference", "exhaustive", "efficient", "mix", "paper", "cascade", "margin"])
def test_every_method_runs_on_recorded_outputs(mmlu, method):
    result = smartmix.run(mmlu, reference="gpt-4o", target=0.8, confidence=0.95, method=method, seed=1)
    df = result.to_pandas()
    assert len(df) == 1531 and df["id"].is_unique
    assert df["cost"].sum() == pytest.approx(result.total_cost, rel=1e-9)
    assert not df["answer"].isna().any()
    # the answers really are what the models said: agreement with the recorded reference answers
    recorded = RecordedOutputs.load(mmlu)
    comparator = ExactComparator()
    agree = [
        comparator.agree(a, recorded.output(i, "gpt-4o").answer) for i, a in zip(df["id"], df["answer"], strict=True)
    ]
    assert sum(agree) / len(agree) >= (0.8 if method not in ("paper", "margin") else 0.5)
    shares = df["model"].value_counts(normalize=True)
    estimated = result.certificate.details.get("shares_estimated_from_profiling", False)
    for model, share in result.certificate.shares.items():
        assert shares[model] == pytest.approx(share, abs=0.1 if estimated else 1e-9)


def test_reference_method_cost_is_the_recorded_total(mmlu):
    result = smartmix.run(mmlu, reference="gpt-4o", target=0.9, method="reference")
    recorded = RecordedOutputs.load(mmlu)
    total = sum(recorded.output(item.id, "gpt-4o").cost_usd for item in recorded.items)
    assert result.total_cost == pytest.approx(total)
    assert result.reference_cost_measured and result.savings == pytest.approx(1.0)


def test_outputs_in_three_formats(mmlu, tmp_path):
    result = smartmix.run(mmlu, reference="gpt-4o", target=0.8, method="efficient")
    for name in ("a.jsonl", "a.csv", "a.parquet"):
        path = result.write(tmp_path / name)
        back = pd.read_parquet(path) if name.endswith("parquet") else (
            pd.read_csv(path) if name.endswith("csv") else pd.read_json(path, lines=True)
        )
        assert len(back) == 1531 and set(back.columns) >= {"id", "answer", "model", "cost"}
    with pytest.raises(ConfigError, match=".jsonl, .csv or .parquet"):
        result.write(tmp_path / "a.txt")


def test_file_with_only_ids_prompts_and_answers_needs_prices(shared_data, tmp_path):
    src = shared_data / "triviaqa-llama" / "test.jsonl"
    bare = tmp_path / "bare.jsonl"
    with open(src) as f, open(bare, "w") as g:
        for line in list(f)[:300]:
            row = json.loads(line)
            row["gold"] = None
            for out in row["outputs"].values():
                for key in ("cost_usd", "input_tokens", "output_tokens", "confidence", "correct", "latency_ms"):
                    out[key] = None
            g.write(json.dumps(row) + "\n")
    with pytest.raises(PriceError, match="--price"):
        smartmix.run(bare, reference="llama3.1-405b", method="mix")
    prices = {
        "llama3.2-1b": (1e-7, 1e-7), "llama3.2-3b": (1e-7, 1e-7), "llama3.1-8b": (2e-7, 2e-7),
        "llama3.1-70b": (9e-7, 9e-7), "llama3.1-405b": (3e-6, 3e-6),
    }
    result = smartmix.run(bare, reference="llama3.1-405b", prices=prices, target=0.8, method="mix")
    assert result.total_cost > 0 and len(result.items) == 300


def test_unknown_reference_and_missing_file_are_clear(mmlu, tmp_path):
    with pytest.raises(UnknownModelError, match="recorded models"):
        smartmix.run(mmlu, reference="gpt-5")
    with pytest.raises(DataError, match="does not exist"):
        smartmix.run(tmp_path / "nope.jsonl")


def test_seed_reproduces_the_run(mmlu):
    a = smartmix.run(mmlu, reference="gpt-4o", target=0.8, method="mix", seed=5).to_pandas()
    b = smartmix.run(mmlu, reference="gpt-4o", target=0.8, method="mix", seed=5).to_pandas()
    pd.testing.assert_frame_equal(a, b)


def test_simulated_paper_experiment_runs_through_the_engine():
    result = smartmix.run(simulated="sms-spam", target=0.85, method="efficient", seed=0)
    assert len(result.items) == 5574
    assert result.savings > 1.5
    assert result.certificate.valid


def cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "smartmix.cli", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


def test_cli_run_prints_certificate_and_bill_and_writes_answers(mmlu, tmp_path):
    out, report = tmp_path / "answers.jsonl", tmp_path / "cert.json"
    proc = cli(
        "run", "--data", str(mmlu), "--reference", "gpt-4o", "--target", "0.9", "--confidence", "0.95",
        "--method", "mix", "--out", str(out), "--report", str(report), "--quiet",
    )
    assert "With probability at least 0.95" in proc.stdout and "savings" in proc.stdout
    df = pd.read_json(out, lines=True)
    cert = json.loads(report.read_text())
    assert df["cost"].sum() == pytest.approx(cert["total_cost_usd"])
    assert cert["valid"] and cert["target"] == 0.9


def test_cli_errors_are_one_clear_line_not_a_traceback(mmlu, tmp_path):
    proc = cli("run", "--data", str(mmlu), "--reference", "gpt-5", "--quiet", check=False)
    assert proc.returncode == 2
    assert "gpt-5" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("run", "--data", str(mmlu), "--target", "1.5", "--quiet", check=False)
    assert proc.returncode == 2 and "target" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("run", "--data", str(mmlu), "--method", "magic", "--quiet", check=False)
    assert proc.returncode == 2 and "unknown method" in proc.stderr


def test_cli_cascade_takes_a_router_and_other_methods_refuse_it(mmlu, shared_data, tmp_path):
    router = tmp_path / "router.npz"
    cli("router", "train", "--data", str(shared_data / "mmlu-qwen-oai" / "train.jsonl"), "--features", "hashing",
        "--out", str(router))
    out, report = tmp_path / "answers.jsonl", tmp_path / "cert.json"
    proc = cli("run", "--data", str(mmlu), "--reference", "gpt-4o", "--method", "mix", "--router", str(router),
               "--out", str(out), "--quiet", check=False)
    assert proc.returncode == 2 and "--router is used by" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    cli("run", "--data", str(mmlu), "--reference", "gpt-4o", "--target", "0.9", "--method", "cascade",
        "--router", str(router), "--out", str(out), "--report", str(report), "--quiet")
    cert = json.loads(report.read_text())
    # 1,531 items: the pilot joins the certificate, so nothing is routed, and the run is certified as usual
    assert cert["valid"] and cert["details"]["routed_to_reference"] is None
    assert len(pd.read_json(out, lines=True)) == 1531
