#!/usr/bin/env bash
# Per-room delivery latency beside the reference server: bench/rooms_spread.mjs against the reference
# y-websocket server and ours (memory and SQLite), one after the other, each server pinned to CPU 0 and
# the load client to CPU 1 (as the shared harness does). Arguments go to rooms_spread.mjs.
#
#   YJS_BENCH=/tmp/yjs-bench bench/rooms_spread.sh --rooms 1000 --per-room 4 --edits 20 --spread-ms 10000
#
# Needs the harness set up (its setup.sh: the reference server's packages), our .venv and tests/js
# (scripts/test installs both).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
YJS_BENCH="${YJS_BENCH:?set YJS_BENCH to a copy of ../shared/yjs-bench (after its setup.sh)}"
PORT="${PORT:-18950}"
db="$(mktemp -d)"
trap 'rm -rf "$db"' EXIT
# shellcheck source=bench/pinned_server.sh
. "$ROOT/bench/pinned_server.sh"

run() { # name, url, server command...
  local name="$1" url="$2"; shift 2
  start_pinned "$db/$name.log" "$@"
  echo "== $name"
  taskset -c 1 node "$ROOT/bench/rooms_spread.mjs" --url "$url" --server-pid "$SERVER_PID" "${BENCH_ARGS[@]}" \
    | sed 's/^/  /' || true
  stop_pinned
}

BENCH_ARGS=("$@")
run reference "ws://127.0.0.1:$PORT" "$YJS_BENCH/peers/ywebsocket.sh" "$PORT"
run ours-memory "ws://127.0.0.1:$PORT/ws" "${OUR_CAPS[@]}" "$ROOT/.venv/bin/collab-server" --port "$PORT" \
  --database-url memory://
run ours-sqlite "ws://127.0.0.1:$PORT/ws" "${OUR_CAPS[@]}" "$ROOT/.venv/bin/collab-server" --port "$PORT" \
  --database-url "sqlite:///$db/bench.sqlite3"
