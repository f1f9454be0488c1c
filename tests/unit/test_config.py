"""Settings groups: read from a given environment, malformed values named, and the table `esm config vars` prints."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from easysmart import cli
from easysmart.config import (
    ConfigError,
    DatabaseSettings,
    KafkaBridgeSettings,
    LoggingSettings,
    MigrationSettings,
    ProcessSettings,
    TokenSettings,
    Variable,
    variables,
)
from easysmart.errors import EasySmartError

REPO = Path(__file__).resolve().parents[2]


def test_unset_variables_take_the_declared_defaults():
    tokens = TokenSettings.from_env({"JWT_SECRET": "k"})

    assert (tokens.jwt_secret, tokens.jwt_issuer, tokens.access_token_ttl_s) == ("k", "easysmart", 900)


def test_an_empty_variable_counts_as_unset():
    assert DatabaseSettings.from_env({"DATABASE_URL": "postgresql://x", "DB_POOL_MAX": ""}).db_pool_max == 16


def test_a_missing_required_variable_is_named():
    with pytest.raises(ConfigError, match="environment variable JWT_SECRET is required"):
        TokenSettings.from_env({})


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("DB_POOL_MAX", "sixteen", "DB_POOL_MAX must be an integer, got 'sixteen'"),
        ("DB_POOL_MAX", "1.5", "DB_POOL_MAX must be an integer"),
    ],
)
def test_a_malformed_integer_is_a_config_error_naming_the_variable(name, raw, expected):
    with pytest.raises(ConfigError, match=expected):
        DatabaseSettings.from_env({"DATABASE_URL": "postgresql://x", name: raw})


def test_a_malformed_number_is_a_config_error_naming_the_variable():
    with pytest.raises(ConfigError, match="BRIDGE_BACKOFF_MAX_S must be a number, got '30s'"):
        KafkaBridgeSettings.from_env({"BRIDGE_BACKOFF_MAX_S": "30s"})


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "Yes", "on", " on "])
def test_true_booleans(raw):
    assert ProcessSettings.from_env({"PROCESS_DELETE_BLOB_AFTER_COMMIT": raw}).process_delete_blob_after_commit is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "no", "OFF"])
def test_false_booleans(raw):
    assert ProcessSettings.from_env({"PROCESS_DELETE_BLOB_AFTER_COMMIT": raw}).process_delete_blob_after_commit is False


@pytest.mark.parametrize("raw", ["ture", "2", "enabled", "y"])
def test_a_misspelt_boolean_is_an_error_not_false(raw):
    with pytest.raises(ConfigError, match="PROCESS_DELETE_BLOB_AFTER_COMMIT must be one of 1/0, true/false"):
        ProcessSettings.from_env({"PROCESS_DELETE_BLOB_AFTER_COMMIT": raw})


def test_a_value_outside_the_choices_is_named():
    assert MigrationSettings.from_env({"DB_MODE": "TimescaleDB"}).db_mode == "timescaledb"
    with pytest.raises(ConfigError, match="DB_MODE must be one of auto, postgres, timescaledb; got 'timescale'"):
        MigrationSettings.from_env({"DB_MODE": "timescale"})
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        LoggingSettings.from_env({"LOG_LEVEL": "verbose"})


def test_lists_are_comma_separated():
    names = Variable("NAMES", "Group", "comma-separated list", (), "a list")

    assert names.parse(" 10.0.0.1, ,::1") == ("10.0.0.1", "::1")


def test_config_errors_are_the_packages_errors():
    assert issubclass(ConfigError, EasySmartError)


def test_every_variable_is_declared_once():
    names = [variable.name for variable in variables()]

    assert len(names) == len(set(names))


def test_the_bridge_no_longer_raises_a_bare_value_error(monkeypatch):
    monkeypatch.setenv("BRIDGE_RETRY_MAX_ELAPSED_S", "an hour")

    with pytest.raises(ConfigError, match="BRIDGE_RETRY_MAX_ELAPSED_S"):
        KafkaBridgeSettings.from_env()


def vars_of(function: str, capsys) -> dict[str, dict]:
    cli.main(["config", "vars", "--function", function, "--root", str(REPO), "--json"])
    return {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)}


def test_config_vars_lists_what_a_function_reads_and_no_more(capsys):
    process = vars_of("process", capsys)

    assert process["DATABASE_URL"]["required"] and process["DATABASE_URL"]["secret"]
    assert process["PROCESS_CHUNK_READINGS"] == {
        "name": "PROCESS_CHUNK_READINGS",
        "group": "ProcessSettings",
        "type": "integer",
        "required": False,
        "secret": False,
        "default": "20000",
        "description": "readings per COPY chunk handed to the database thread",
    }
    assert "WORKERS" in process
    assert not {"JWT_SECRET", "KAFKA_BOOTSTRAP_SERVERS"} & set(process)


def test_config_vars_of_auth_carry_the_signing_key_and_redis_but_no_object_store(capsys):
    auth = vars_of("auth", capsys)

    # Redis: the login rate limit per client address and the copy of each account's state.
    assert {
        "DATABASE_URL",
        "JWT_SECRET",
        "LOGIN_MAX_FAILURES",
        "LOGIN_RATELIMIT_PER_MINUTE",
        "FRONT_PROXY_SECRET",
    } <= set(auth)
    assert auth["FRONT_PROXY_SECRET"]["secret"] and not auth["FRONT_PROXY_SECRET"]["required"]
    assert {"REDIS_URL"} <= set(auth)
    assert not {"S3_SECRET_ACCESS_KEY", "KAFKA_BOOTSTRAP_SERVERS", "RAW_RETENTION_DAYS"} & set(auth)


@pytest.mark.parametrize("function", ["auth", "ingest", "analytics", "process", "retention"])
def test_each_function_reads_its_own_database_timeouts_and_no_other_s(function, capsys):
    timeouts = {name for name in vars_of(function, capsys) if "_DB_" in name and name.endswith("_TIMEOUT_S")}

    assert timeouts == {f"{function.upper()}_DB_STATEMENT_TIMEOUT_S", f"{function.upper()}_DB_LOCK_TIMEOUT_S"}


def test_config_vars_of_a_module(capsys):
    cli.main(["config", "vars", "--source", str(REPO / "easysmart" / "bridges" / "kafka_source.py")])
    lines = capsys.readouterr().out.splitlines()

    assert lines[0].startswith("KAFKA_BOOTSTRAP_SERVERS\trequired\t")
    assert any(line.startswith("BRIDGE_RETRY_MAX_ELAPSED_S\toptional, default '5400.0'") for line in lines)
    assert not any(line.startswith("WORKERS") for line in lines)


def test_env_example_documents_every_variable_of_the_table_once():
    documented = re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), re.MULTILINE)

    assert sorted(documented) == sorted(variable.name for variable in variables())


def test_only_the_table_reads_the_environment():
    # esm config vars finds what a function reads in its main.py: that holds while the package's
    # services are given their groups and only entry points (functions, bridges, the CLI) read them.
    package = REPO / "easysmart"
    sources = {path.relative_to(package).as_posix(): path.read_text() for path in package.rglob("*.py")}
    environ = {name for name, text in sources.items() if "os.environ" in text}
    readers = {name for name, text in sources.items() if ".from_env(" in text}

    # metrics reads PROMETHEUS_MULTIPROC_DIR as prometheus_client itself does.
    assert environ == {"config.py", "metrics.py"}
    assert readers == {
        "config.py",
        "cli.py",
        "bridges/kafka_source.py",
        "bridges/ping_source.py",
        "bridges/outbox_relay.py",
    }
