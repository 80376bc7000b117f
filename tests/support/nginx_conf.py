"""Read an nginx configuration with crossplane (a parser of nginx's own grammar): the parts the tests
compare with the compose topology and hand to the test proxy (tests/support/hash_proxy.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crossplane


def parse_nginx(path: Path) -> list[dict[str, Any]]:
    """The directive tree of ``path``; ValueError if nginx's grammar refuses it."""
    parsed = crossplane.parse(str(path), single=True, check_ctx=True, check_args=True)
    if parsed["status"] != "ok":
        raise ValueError(f"{path}: {parsed['errors']}")
    directives: list[dict[str, Any]] = parsed["config"][0]["parsed"]
    return directives


@dataclass(frozen=True)
class NginxUpstream:
    """The ``upstream`` block of an nginx configuration, as far as routing goes."""

    name: str
    hash_key: str
    consistent: bool
    servers: list[str]
    next_upstream_tries: int


def read_nginx_upstream(path: Path, name: str) -> NginxUpstream:
    """Parse ``path`` with crossplane (nginx's own grammar) and describe its upstream ``name``."""
    directives = parse_nginx(path)
    upstream = _find(directives, "upstream", [name])
    if upstream is None:
        raise ValueError(f"{path}: no upstream {name!r}")
    block: list[dict[str, Any]] = upstream["block"]
    hashing = _find(block, "hash")
    if hashing is None:
        raise ValueError(f"{path}: upstream {name!r} does not hash")
    tries = _find(directives, "proxy_next_upstream_tries")
    return NginxUpstream(
        name=name,
        hash_key=hashing["args"][0],
        consistent="consistent" in hashing["args"][1:],
        servers=[d["args"][0] for d in block if d["directive"] == "server"],
        next_upstream_tries=int(tries["args"][0]) if tries else 0,
    )


def find_directives(directives: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Every directive called ``name`` in a crossplane tree, at any depth."""
    found = []
    for directive in directives:
        if directive["directive"] == name:
            found.append(directive)
        found.extend(find_directives(directive.get("block", []), name))
    return found


def _find(directives: list[dict[str, Any]], name: str, args: list[str] | None = None) -> dict[str, Any] | None:
    for directive in find_directives(directives, name):
        if args is None or directive["args"][: len(args)] == args:
            return directive
    return None
