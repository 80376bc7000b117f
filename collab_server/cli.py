"""``collab-server``: start the server. Every setting is a flag and a ``COLLAB_*`` variable; flags win."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from collab_server import __version__
from collab_server.errors import ConfigError
from collab_server.settings import ENV_PREFIX, Settings, cast_value, setting_fields


def build_parser(
    prog: str = "collab-server",
    description: str = "A Yjs-compatible collaboration server. Clients connect to ws://HOST:PORT/ws/{room}. "
    "`collab-server migrate [flags]` applies pending PostgreSQL migrations and exits.",
) -> argparse.ArgumentParser:
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


def parse_settings(
    argv: Sequence[str] | None, env: dict[str, str] | None = None, *, parser: argparse.ArgumentParser | None = None
) -> Settings:
    args = (parser or build_parser()).parse_args(argv)
    settings = Settings.from_env(env)
    overrides = {}
    for f in setting_fields():
        raw = getattr(args, f.name)
        if raw is not None:
            overrides[f.name] = cast_value("--" + f.name.replace("_", "-"), f.type, raw)
    return settings.replace(**overrides) if overrides else settings


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["migrate"]:
        return migrate_main(args[1:])
    try:
        settings = parse_settings(args)
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


def migrate_main(argv: Sequence[str]) -> int:
    """``collab-server migrate``: apply pending migrations to COLLAB_DATABASE_URL, then exit."""
    parser = build_parser(
        "collab-server migrate",
        "Apply pending schema migrations to the PostgreSQL database named by COLLAB_DATABASE_URL and exit.",
    )
    try:
        settings = parse_settings(argv, parser=parser)
    except ConfigError as exc:
        print(f"collab-server migrate: {exc}", file=sys.stderr)
        return 2
    if urlsplit(settings.database_url).scheme not in {"postgres", "postgresql"}:
        print(f"{settings.database_url}: only PostgreSQL has migrations; other stores create their schema on open")
        return 0

    import asyncio

    from collab_server.errors import StoreError
    from persistence.migrate import migrate_url
    from persistence.postgres import redact

    try:
        applied = asyncio.run(migrate_url(settings.database_url, timeout=settings.database_timeout))
    except StoreError as exc:
        print(f"collab-server migrate: {exc}", file=sys.stderr)
        return 1
    target = redact(settings.database_url)
    if applied:
        print(f"{target}: applied {', '.join(map(str, applied))}")
    else:
        print(f"{target}: schema is up to date")
    return 0
