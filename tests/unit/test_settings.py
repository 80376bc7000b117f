"""Settings from COLLAB_* variables and CLI flags: strict casts, errors that name the key."""

from __future__ import annotations

import pytest

from collab_server.cli_args import build_parser, parse_settings
from collab_server.errors import ConfigError
from collab_server.secrets import Secret
from collab_server.settings import Settings


def test_defaults_need_no_configuration() -> None:
    settings = Settings.from_env({})
    assert settings.database_url.reveal().startswith("sqlite:///")
    assert settings.broker_url.reveal() == "memory://"
    assert settings.replica_id  # generated


def test_environment_values_are_cast_to_the_field_types() -> None:
    settings = Settings.from_env(
        {"COLLAB_PORT": "9001", "COLLAB_WS_DEFLATE": "yes", "COLLAB_ROOM_GRACE": "2.5", "UNRELATED": "x"}
    )
    assert (settings.port, settings.ws_deflate, settings.room_grace) == (9001, True, 2.5)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COLLAB_PORT": "eighty"}, "COLLAB_PORT='eighty' is not a valid int"),
        ({"COLLAB_WS_DEFLATE": "maybe"}, "COLLAB_WS_DEFLATE='maybe' is not a valid bool"),
        ({"COLLAB_SEND_QUEUE_MESSAGES": "0"}, "COLLAB_SEND_QUEUE_MESSAGES must be positive"),
        ({"COLLAB_LOG_LEVEL": "loud"}, "COLLAB_LOG_LEVEL must be"),
        ({"COLLAB_CRDT_WORKER_NICE": "20"}, "COLLAB_CRDT_WORKER_NICE must be between 0 and 19"),
        ({"COLLAB_FRESH_SYNC_BYTES": "-1"}, "COLLAB_FRESH_SYNC_BYTES must be 0 .keep none. or positive"),
        ({"COLLAB_LARGE_ROOM_BYTES": "-1"}, "COLLAB_LARGE_ROOM_BYTES must be 0 .no workers for large rooms."),
        ({"COLLAB_LARGE_ROOM_WORKERS": "0"}, "COLLAB_LARGE_ROOM_WORKERS must be positive"),
        ({"COLLAB_IDLE_DOCUMENT_SECONDS": "-1"}, "COLLAB_IDLE_DOCUMENT_SECONDS must be 0 .keep every document."),
        ({"COLLAB_GC_THRESHOLDS": "2000,10"}, "COLLAB_GC_THRESHOLDS must be three positive integers"),
        ({"COLLAB_GC_THRESHOLDS": "2000,0,100"}, "COLLAB_GC_THRESHOLDS must be three positive integers"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_gc_thresholds_are_three_integers_or_cpythons_default() -> None:
    assert Settings.from_env({}).gc_threshold_values == (1000, 4, 500)
    assert Settings.from_env({"COLLAB_GC_THRESHOLDS": "2000, 10, 100"}).gc_threshold_values == (2000, 10, 100)
    assert Settings.from_env({"COLLAB_GC_THRESHOLDS": "default"}).gc_threshold_values is None


def test_flags_override_the_environment() -> None:
    settings = parse_settings(["--port", "7000", "--log-level", "debug"], {"COLLAB_PORT": "6000"})
    assert settings.port == 7000
    assert settings.log_level == "debug"


def test_help_lists_every_setting_with_its_variable() -> None:
    help_text = build_parser().format_help()
    for name in ("--database-url", "COLLAB_DATABASE_URL", "--max-message-bytes", "--room-grace", "--ws-deflate"):
        assert name in help_text


def test_passwords_in_urls_never_show_in_repr_logs_or_help() -> None:
    env = {"COLLAB_DATABASE_URL": "postgresql://collab:hunter2@db:5432/collab", "COLLAB_BROKER_URL": "redis://:s3cret@r:6379/0"}
    settings = Settings.from_env(env)
    shown = f"{settings!r} {settings} {settings.database_url} {settings.broker_url}"
    assert "hunter2" not in shown and "s3cret" not in shown
    assert "postgresql://collab:***@db:5432/collab" in shown  # where it points stays visible
    assert settings.database_url.reveal() == env["COLLAB_DATABASE_URL"]
    help_text = build_parser().format_help()
    assert "hunter2" not in help_text


def test_a_secret_shows_only_that_it_is_set() -> None:
    key = Secret("top-secret-key")
    assert "top-secret" not in f"{key} {key!r}"
    assert key.reveal() == "top-secret-key"
    assert bool(key) and not Secret("")
    assert Secret("a") == Secret("a") != Secret("b")


def test_a_subcommand_takes_the_settings_flags(capsys: pytest.CaptureFixture[str]) -> None:
    from collab_server.cli import main

    assert main(["migrate", "--database-url", "memory://"]) == 0
    assert "memory://: this store has no schema to migrate" in capsys.readouterr().out
