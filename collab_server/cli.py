"""``collab-server``: start the server. Every setting is a flag and a ``COLLAB_*`` variable; flags win."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from collab_server import __version__
from collab_server.errors import ConfigError
from collab_server.settings import ENV_PREFIX, Settings, cast_value, setting_fields


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collab-server",
        description="A Yjs-compatible collaboration server. Clients connect to ws://HOST:PORT/ws/{room}.",
    )
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


def parse_settings(argv: Sequence[str] | None, env: dict[str, str] | None = None) -> Settings:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env(env)
    overrides = {}
    for f in setting_fields():
        raw = getattr(args, f.name)
        if raw is not None:
            overrides[f.name] = cast_value("--" + f.name.replace("_", "-"), f.type, raw)
    return settings.replace(**overrides) if overrides else settings


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_settings(argv)
    except ConfigError as exc:
        print(f"collab-server: {exc}", file=sys.stderr)
        return 2
    from collab_server.server import serve  # imported late: --help must not pay for uvicorn

    try:
        serve(settings)
    except KeyboardInterrupt:
        # uvicorn re-raises Ctrl-C once its graceful shutdown (rooms saved) has finished
        return 130
    return 0
