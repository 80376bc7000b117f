#!/usr/bin/env bash
# Side-by-side benchmark: this server against the peer servers (reference y-websocket, Hocuspocus,
# pycrdt-websocket) with the shared harness in ../shared/yjs-bench, all in one run so that ratios are
# meaningful on a noisy machine. Server pinned to CPU 0, load client to CPU 1.
#
#   bench/compare.sh [--runs N] [--scenarios fanout,rooms,connections,coldsync] [--only NAME,...]
#
# Our server runs twice: "ours-memory" (in-memory store, like the peers) and "ours-sqlite" (the
# embedded default, every update committed to SQLite), and a third time on PostgreSQL when
# COLLAB_BENCH_POSTGRES holds a database URL ("ours-postgres"). Results land in $YJS_BENCH/results/;
# `bench/loop_lag.py RESULTS_DIR` then prints our event loop lag and CPU split per scenario.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HARNESS="${YJS_BENCH:-$ROOT/../shared/yjs-bench}"
[ -x "$ROOT/.venv/bin/collab-server" ] || { echo "run scripts/serve --help (or scripts/test) once first" >&2; exit 2; }
"$HARNESS/setup.sh" >/dev/null
db="$(mktemp -d)"
trap 'rm -rf "$db"' EXIT
# The harness's clients all come from 127.0.0.1: lift the per-address caps, which would otherwise
# refuse its thousands of sockets and rooms from one address (they are for floods, not for this).
caps="env COLLAB_MAX_CONNECTIONS_PER_ADDRESS=1000000 COLLAB_MAX_ROOMS_PER_ADDRESS=1000000 COLLAB_ROOM_LOADS_PER_MINUTE=1000000"
postgres=()
if [ -n "${COLLAB_BENCH_POSTGRES:-}" ]; then
  postgres=(--extra "ours-postgres|$caps COLLAB_AUTH=off $ROOT/.venv/bin/collab-server --port {port} --database-url $COLLAB_BENCH_POSTGRES|ws://127.0.0.1:{port}/ws|ywebsocket")
fi
exec "$HARNESS/compare.sh" \
  --extra "ours-memory|$caps $ROOT/.venv/bin/collab-server --port {port} --database-url memory://|ws://127.0.0.1:{port}/ws|ywebsocket" \
  --extra "ours-sqlite|$caps $ROOT/.venv/bin/collab-server --port {port} --database-url sqlite:///$db/{port}.sqlite3|ws://127.0.0.1:{port}/ws|ywebsocket" \
  "${postgres[@]}" \
  "$@"
