"""``collab-server``: one entry point, one subcommand per job.

    collab-server [serve] [flags]   run the server (the default when no subcommand is given)
    collab-server migrate [flags]   apply pending schema migrations to COLLAB_DATABASE_URL and exit
    collab-server token --sub USER  print a token for local use (collab_server.cli_token)
    collab-server rooms check [--repair] [flags]
                                    report stored rooms that do not load (and quarantine what breaks them)
    collab-server worker [--burst]  run export jobs (exports/command.py)

Every setting is a flag and a ``COLLAB_*`` variable (flags win) for every subcommand, generated from the
one ``Settings`` dataclass. A subcommand is a function ``(argv) -> exit code`` registered in ``COMMANDS``;
it imports what it needs when it runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from collab_server.cli_args import (
    UsageError,
    build_parser,
    settings_from_args,
    settings_or_exit,
)
from collab_server.errors import ConfigError


@dataclass(frozen=True)
class Command:
    summary: str
    run: Callable[[Sequence[str]], int]


def serve_main(argv: Sequence[str]) -> int:
    """``collab-server serve``: run the server until SIGTERM or Ctrl-C."""
    settings = settings_or_exit(argv, build_parser(description=_overview()))
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
        "Apply pending schema migrations to the SQL database named by COLLAB_DATABASE_URL and exit.",
    )
    settings = settings_or_exit(argv, parser)
    import asyncio

    from collab_server.errors import StoreError
    from persistence.factory import migrate_store

    try:
        applied = asyncio.run(migrate_store(settings.database_url.reveal(), timeout=settings.database_timeout))
    except StoreError as exc:
        print(f"collab-server migrate: {exc}", file=sys.stderr)
        return 1
    if applied is None:
        print(f"{settings.database_url}: this store has no schema to migrate")
    elif applied:
        print(f"{settings.database_url}: applied {', '.join(map(str, applied))}")
    else:
        print(f"{settings.database_url}: schema is up to date")
    return 0


def token_main(argv: Sequence[str]) -> int:
    from collab_server.cli_token import token_main as run

    return run(argv)


def rooms_main(argv: Sequence[str]) -> int:
    """``collab-server rooms check [--repair]``: see ``collab_server.rooms_check``."""
    parser = build_parser(
        "collab-server rooms",
        "check: load every stored room in a CRDT worker and report those that do not load, and what the "
        "quarantine holds; --repair moves the rows that break a room to quarantine.",
    )
    parser.add_argument("action", choices=["check"])
    parser.add_argument("--repair", action="store_true", help="move rows that do not load to quarantine")
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"collab-server rooms: {exc}", file=sys.stderr)
        return 2
    import asyncio

    from collab_server.crdt.pool import WorkerPool
    from collab_server.errors import StoreError
    from collab_server.rooms_check import check_rooms
    from persistence.factory import open_store

    async def run() -> int:
        store = await open_store(
            settings.database_url.reveal(),
            keep_versions=settings.snapshot_versions,
            max_version_age=settings.snapshot_max_age,
            auto_migrate=settings.auto_migrate,
            pool_size=settings.database_pool_size,
            timeout=settings.database_timeout,
        )
        engine = await WorkerPool(1, document_workers=0, deadline=settings.crdt_deadline, poison_ttl=0).start()
        try:
            return await check_rooms(store, engine, repair=args.repair, out=sys.stdout)
        finally:
            await engine.close()
            await store.close()

    try:
        return asyncio.run(run())
    except StoreError as exc:
        print(f"collab-server rooms: {exc}", file=sys.stderr)
        return 1
def worker_main(argv: Sequence[str]) -> int:
    from exports.command import worker_main as run  # imported late: --help must not pay for the worker

    return run(argv)


COMMANDS: dict[str, Command] = {
    "serve": Command("run the server (the default)", serve_main),
    "migrate": Command("apply pending schema migrations and exit", migrate_main),
    "token": Command("print a user or room token for local use", token_main),
    "rooms": Command("rooms check [--repair]: report (and quarantine) stored rows that do not load", rooms_main),
    "worker": Command("run export jobs (--burst: until the queue is empty)", worker_main),
}


def _overview() -> str:
    lines = [f"  {name:<10} {command.summary}" for name, command in COMMANDS.items()]
    return (
        "A Yjs-compatible collaboration server. Clients connect to ws://HOST:PORT/ws/{room}.\n\n"
        "usage: collab-server [COMMAND] [flags]; commands:\n" + "\n".join(lines)
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] in COMMANDS:
            return COMMANDS[args[0]].run(args[1:])
        return serve_main(args)
    except UsageError as exc:
        return int(exc.code or 2)
