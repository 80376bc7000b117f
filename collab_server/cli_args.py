"""Command-line flags for every subcommand, generated from the one ``Settings`` dataclass: each setting is
a flag and a ``COLLAB_*`` variable, and flags win. Subcommand modules import this, never ``cli`` (which
imports them)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from collab_server import __version__
from collab_server.errors import ConfigError
from collab_server.settings import ENV_PREFIX, Settings, cast_value, setting_fields


def build_parser(
    prog: str = "collab-server",
    description: str = "A Yjs-compatible collaboration server. Clients connect to ws://HOST:PORT/ws/{room}.",
) -> argparse.ArgumentParser:
    """A parser with one flag per setting; subcommands add their own arguments to it."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    for f in setting_fields():
        env_key = ENV_PREFIX + f.name.upper()
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            metavar=env_key,
            help=f"{f.metadata['help']} (default: {f.default!r})",
        )
    return parser


def settings_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    """Settings from the environment, overridden by the flags present in ``args``."""
    settings = Settings.from_env(env)
    overrides = {}
    for f in setting_fields():
        raw = getattr(args, f.name)
        if raw is not None:
            overrides[f.name] = cast_value("--" + f.name.replace("_", "-"), f.type, raw)
    return settings.replace(**overrides) if overrides else settings


def parse_settings(
    argv: Sequence[str] | None, env: dict[str, str] | None = None, *, parser: argparse.ArgumentParser | None = None
) -> Settings:
    return settings_from_args((parser or build_parser()).parse_args(argv), env)


class UsageError(SystemExit):
    """A setting could not be read: the message was printed, exit with status 2."""


def settings_or_exit(argv: Sequence[str], parser: argparse.ArgumentParser) -> Settings:
    """The settings for a subcommand; on a bad value print why (naming the key) and exit with 2."""
    try:
        return parse_settings(argv, parser=parser)
    except ConfigError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        raise UsageError(2) from None
