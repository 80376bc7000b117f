#!/usr/bin/env bash
# Per-room delivery latency beside the reference server: bench/rooms_spread.mjs against the reference
# y-websocket server and ours (memory and SQLite), one after the other, --rounds times, each server pinned to
# CPU 0 and the load client to CPU 1 (as the shared harness does). Other arguments go to rooms_spread.mjs.
#
#   YJS_BENCH=/tmp/yjs-bench bench/rooms_spread.sh [--rounds 3] --rooms 1000 --per-room 4 --edits 20 --spread-ms 10000
#
# Needs the harness set up (its setup.sh: the reference server's packages), our .venv and tests/js
# (scripts/test installs both). Prints one line per run; the whole output of each lands in $OUT (default: a
# temporary folder).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
YJS_BENCH="${YJS_BENCH:?set YJS_BENCH to a copy of ../shared/yjs-bench (after its setup.sh)}"
PORT="${PORT:-18950}"
rounds=1
if [ "${1:-}" = "--rounds" ]; then rounds="$2"; shift 2; fi
db="$(mktemp -d)"
OUT="${OUT:-$db}"
trap 'rm -rf "$db"' EXIT
# shellcheck source=bench/pinned_server.sh
. "$ROOT/bench/pinned_server.sh"

run() { # name, url, server command...
  local name="$1" url="$2"; shift 2
  start_pinned "$db/$name.log" "$@"
  taskset -c 1 node "$ROOT/bench/rooms_spread.mjs" --url "$url" --server-pid "$SERVER_PID" "${BENCH_ARGS[@]}" \
    >"$OUT/$name-$round.txt" 2>&1 || true
  echo "$name round $round: $(awk '
    /^(delivered_fraction|latency_p50_ms|latency_p99_ms|room_p99_max_ms|room_p99_spread|server_cpu_pct|client_cpu_pct|client_loop_delay_p99_ms|cpu1_busy_pct) / {
      printf "%s=%s ", $1, $2 }
    /failed|Error/ { print }' "$OUT/$name-$round.txt")"
  stop_pinned
}

BENCH_ARGS=("$@")
for round in $(seq "$rounds"); do
  run reference "ws://127.0.0.1:$PORT" "$YJS_BENCH/peers/ywebsocket.sh" "$PORT"
  run ours-memory "ws://127.0.0.1:$PORT/ws" "${OUR_CAPS[@]}" "$ROOT/.venv/bin/collab-server" --port "$PORT" \
    --database-url memory://
  rm -f "$db/bench.sqlite3"*
  run ours-sqlite "ws://127.0.0.1:$PORT/ws" "${OUR_CAPS[@]}" "$ROOT/.venv/bin/collab-server" --port "$PORT" \
    --database-url "sqlite:///$db/bench.sqlite3"
done
