"""The job-file schema: every table refuses unknown keys with one line naming the table and the key, each
default is defined once, and docs/config.md's tables are the schema's."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from smartmix import config_docs, defaults
from smartmix.config import JobConfig, load_config, parse_config
from smartmix.config_schema import CascadeRoute, ModelTable, RouterRoute, RunTable
from smartmix.errors import ConfigError, UnknownModelError

REPO = Path(__file__).resolve().parents[1]

MODELS = '[models.small]\ninput_price = 0.1\noutput_price = 0.4\n[models.big]\ninput_price = 2.0\noutput_price = 8.0\n'


def parse(text: str) -> JobConfig:
    return parse_config(tomllib.loads(text))


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_the_example_job_file_loads_with_every_setting():
    config = load_config(REPO / "examples" / "job.toml")
    assert config.reference == "gpt-4o" and list(config.models)[:2] == ["gpt-4o", "gpt-4o-mini"]
    assert config.models["llama-3.1-8b"].provider_model == "meta-llama/Llama-3.1-8B-Instruct"
    assert config.models["llama-3.1-8b"].name == "llama-3.1-8b"
    assert config.models["claude-haiku"].litellm == "anthropic/claude-3-5-haiku-latest"
    assert config.models["gpt-4o"].max_concurrency == 32 and config.models["gpt-4o-mini"].max_concurrency == 16
    assert config.labels == ["positive", "negative"] and config.max_tokens == 4 and config.max_cost == 5.0
    assert (config.target, config.confidence, config.method, config.concurrency) == (0.9, 0.95, "mix", 32)


def test_defaults_come_from_one_place():
    from smartmix.backends.openai_compat import EndpointConfig
    from smartmix.engine import EngineOptions

    config = parse(MODELS)
    assert config.concurrency == defaults.CONCURRENCY == EngineOptions().concurrency == RunTable().concurrency
    assert (config.target, config.confidence, config.method) == (defaults.TARGET, defaults.CONFIDENCE, defaults.METHOD)
    assert (config.seed, config.max_tokens, config.run_dir) == (defaults.SEED, defaults.MAX_TOKENS, defaults.RUN_DIR)
    small, endpoint = config.models["small"], EndpointConfig(model="small")
    assert small.max_concurrency == endpoint.max_concurrency == defaults.MODEL_CONCURRENCY
    assert small.timeout_s == endpoint.timeout_s == defaults.TIMEOUT_S
    assert small.max_attempts == endpoint.max_attempts == defaults.MAX_ATTEMPTS
    assert config.server.upstream_connections == defaults.UPSTREAM_CONNECTIONS
    assert parse(MODELS + '[routes.auto]\ntype = "cascade"\nchain = ["small"]\n').routes["auto"].threshold == (
        defaults.CASCADE_THRESHOLD
    )


@pytest.mark.parametrize(
    ("text", "table", "key"),
    [
        (MODELS + "[run]\nmax_cots = 5\n", "[run]", "max_cots"),
        (MODELS + "[task]\ntemplte = 'x'\n", "[task]", "templte"),
        (MODELS + "[guarantee]\ntarge = 0.9\n", "[guarantee]", "targe"),
        (MODELS.replace("[models.big]\n", "[models.big]\nmax_concurency = 3\n"), "[models.big]", "max_concurency"),
        (MODELS + "[server]\nkey_env = 'K'\n", "[server]", "key_env"),
        (MODELS + "[routes.auto]\ntype = 'cascade'\nchain = ['small']\nthreshhold = 0.5\n", "[routes.auto]", "threshhold"),
        (MODELS + "[routes.r]\ntype = 'router'\npredictor = 'p.npz'\ntheta = 0.8\ntheat = 1\n", "[routes.r]", "theat"),
        (MODELS + "[routes.m]\nmodel = 'small'\nchain = ['small']\n", "[routes.m]", "chain"),
    ],
)
def test_every_table_refuses_unknown_keys_naming_table_and_key(text, table, key):
    message = refused(text)
    assert message.startswith(table) and f"unknown key '{key}'" in message and "allowed:" in message


def test_a_typo_gets_a_suggestion_and_an_unknown_section_is_named():
    assert "Did you mean 'max_cost'?" in refused(MODELS + "[run]\nmax_cots = 5\n")
    message = refused(MODELS + "[gaurantee]\ntarget = 0.9\n")
    assert "unknown section 'gaurantee'" in message and "guarantee" in message


def test_wrong_types_and_ranges_name_the_key():
    assert refused(MODELS + "[run]\nmax_cost = '5'\n").startswith("[run]: max_cost:")
    assert refused(MODELS + "[run]\nconcurrency = 0\n").startswith("[run]: concurrency:")
    assert refused(MODELS + "[guarantee]\nconfidence = 1.0\n").startswith("[guarantee]: confidence:")
    assert refused(MODELS + "[task]\nlabels = 'yes'\n").startswith("[task]: labels:")  # not the labels y, e, s
    assert "non-blank" in refused(MODELS + "[task]\nlabels = ['a', ' ']\n")
    assert refused(MODELS + "[server]\nupstream_connections = true\n").startswith("[server]: upstream_connections:")
    assert refused('[models.a]\napi = "responses"\n').startswith("[models.a]: api:")
    assert refused("[models]\na = 3\n").startswith("[models.a] must be a table")


def test_keys_never_go_in_the_file_and_are_never_echoed():
    message = refused('[models.a]\napi_key = "sk-live-1234567890"\n')
    assert "unknown key 'api_key'" in message and "environment variable" in message and "sk-live" not in message
    message = refused('[models.a]\napi_key_env = "sk-live-1234567890"\n')
    assert "NAME of an environment variable" in message and "sk-live" not in message
    message = refused(MODELS + '[server]\nkeys_env = "sk-live-1234567890"\n')
    assert message.startswith("[server]") and "sk-live" not in message


def test_a_dotted_model_name_must_be_quoted():
    assert 'must be quoted, e.g. [models."llama-3.1-8b"]' in refused("[models.llama-3.1-8b]\ninput_price = 1\n")


def test_reference_from_any_of_its_three_places():
    assert parse('reference = "big"\n' + MODELS).reference == "big"
    assert parse(MODELS + '[guarantee]\nreference = "small"\n').reference == "small"
    assert parse(MODELS.replace("[models.big]\n", "[models.big]\nreference = true\n")).reference == "big"
    with pytest.raises(UnknownModelError, match="'huge'"):
        parse('reference = "huge"\n' + MODELS)


def test_routes_are_typed_and_checked_against_the_models():
    config = parse(
        MODELS
        + '[routes.auto]\ntype = "cascade"\nchain = ["small"]\nthreshold = 0.7\n'
        + '[routes.pick]\ntype = "router"\npredictor = "router.npz"\nbudget = 0.001\nlambda = 20.0\n'
        + '[routes.fast]\nmodel = "small"\n'
    )
    assert isinstance(config.routes["auto"], CascadeRoute) and config.routes["auto"].chain == ["small"]
    assert isinstance(config.routes["pick"], RouterRoute) and config.routes["pick"].lambda_ == 20.0
    # the plain tables the server reads, with the TOML names
    assert config.extra["routes"] == {
        "auto": {"type": "cascade", "chain": ["small"], "threshold": 0.7},
        "pick": {"type": "router", "predictor": "router.npz", "budget": 0.001, "lambda": 20.0},
        "fast": {"type": "model", "model": "small"},
    }
    assert "chain is required" in refused(MODELS + '[routes.auto]\ntype = "cascade"\n')
    assert "type must be 'model', 'cascade' or 'router'" in refused(MODELS + '[routes.x]\ntype = "cascad"\n')
    assert "names model(s) gpt-9" in refused(MODELS + '[routes.x]\ntype = "cascade"\nchain = ["gpt-9"]\n')
    assert "theta" in refused(MODELS + '[routes.x]\ntype = "router"\npredictor = "p.npz"\n')
    assert "lambda" in refused(MODELS + '[routes.x]\ntype = "router"\npredictor = "p.npz"\nbudget = 1.0\n')


def test_server_table():
    config = parse(MODELS + '[server]\nkeys_env = "CLIENT_KEYS"\njournal = "served.sqlite"\nupstream_connections = 64\n')
    assert config.extra["server"] == {
        "keys_env": "CLIENT_KEYS", "keys": [], "journal": "served.sqlite", "upstream_connections": 64,
        "max_body_bytes": defaults.MAX_BODY_BYTES,
    }


def test_compare_and_its_options_and_calibration():
    config = parse(MODELS + '[task]\ncompare = "numeric"\n[task.compare_options]\ntolerance = 0.01\n'
                   + '[run]\ncalibration = "past.jsonl"\n')
    assert (config.compare, config.compare_options, config.calibration) == ("numeric", {"tolerance": 0.01}, "past.jsonl")
    public = config.to_public_dict()
    assert public["compare"] == "numeric" and public["calibration"] == "past.jsonl"
    assert "compare" not in parse(MODELS).to_public_dict()  # job files without it keep their run ids
    assert refused(MODELS + '[task]\ncompare = "nums"\n').startswith("[task]: compare:")
    assert "add compare" in refused(MODELS + "[task.compare_options]\ntolerance = 0.01\n")


def test_public_dict_has_no_secret_and_names_each_model():
    public = parse('[models.a]\napi_key_env = "OPENAI_API_KEY"\ninput_price = 1\noutput_price = 2\n').to_public_dict()
    assert public["models"]["a"]["name"] == "a" and public["models"]["a"]["api_key_env"] == "OPENAI_API_KEY"
    assert "reference" not in public["models"]["a"]


def test_bad_job_file_on_the_command_line_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    from smartmix.cli import main

    job = tmp_path / "job.toml"
    job.write_text(MODELS + "[run]\nmax_cots = 5\n")
    items = tmp_path / "items.csv"
    items.write_text("id,text\na,hello\n")
    monkeypatch.setattr(sys, "argv", ["smartmix", "run", "--config", str(job), "--data", str(items), "-q"])
    with pytest.raises(SystemExit) as exited:
        main()
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and "Traceback" not in err
    assert err.startswith("error:") and "max_cots" in err and "[run]" in err and "\n\n" not in err


def test_docs_tables_are_the_schemas():
    text = config_docs.DOCS_PATH.read_text()
    assert config_docs.render(text) == text, "docs/config.md is stale: run python -m smartmix.config_docs"
    for table in ("ModelTable", "TaskTable", "GuaranteeTable", "RunTable", "ModelRoute", "CascadeRoute",
                  "RouterRoute", "ServerTable"):
        assert f"<!-- schema: {table} -->" in text
    for key in ("`max_concurrency`", "`upstream_connections`", "`chain`", "`lambda`", "`compare_options`",
                "`calibration`"):
        assert key in text


def test_the_docs_check_notices_a_stale_table(tmp_path):
    stale = tmp_path / "config.md"
    stale.write_text(config_docs.DOCS_PATH.read_text().replace("| `timeout_s` |", "| `timeout` |"))
    assert config_docs.main(["--check", str(stale)]) == 1
    assert config_docs.main([str(stale)]) == 0 and config_docs.main(["--check", str(stale)]) == 0
    assert "| `timeout_s` |" in stale.read_text()


def test_every_key_is_documented():
    for model in (ModelTable, RunTable, CascadeRoute, RouterRoute):
        assert all(field.description for field in model.model_fields.values())
