#!/usr/bin/env bash
# The hot room (1 writer → 1,000 readers) with bench/hot_room.mjs, a load client light enough that the
# servers saturate: Hocuspocus and ours (memory and SQLite) one after the other, --rounds times, each server
# pinned to CPU 0 and the client to CPU 1 (as the shared harness does). Other arguments go to hot_room.mjs.
#
#   YJS_BENCH=/tmp/yjs-bench bench/hot_room.sh [--rounds 3] --readers 1000 --updates 3000
#
# Needs the harness set up (its setup.sh: Hocuspocus's packages), our .venv and tests/js (scripts/test
# installs both). Prints one line per run; the JSON of each lands in $OUT (default: a temporary folder).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
YJS_BENCH="${YJS_BENCH:?set YJS_BENCH to a copy of ../shared/yjs-bench (after its setup.sh)}"
PORT="${PORT:-18960}"
rounds=3
if [ "${1:-}" = "--rounds" ]; then rounds="$2"; shift 2; fi
db="$(mktemp -d)"
OUT="${OUT:-$db}"
trap 'rm -rf "$db"' EXIT
# shellcheck source=bench/pinned_server.sh
. "$ROOT/bench/pinned_server.sh"

run() { # name, kind, url, server command...
  local name="$1" kind="$2" url="$3"; shift 3
  start_pinned "$db/$name.log" "$@"
  local summary
  summary="$(taskset -c 1 node "$ROOT/bench/hot_room.mjs" --url "$url" --kind "$kind" --server-pid "$SERVER_PID" \
    --json "$OUT/$name-$round.json" "${BENCH_ARGS[@]}" 2>&1 | awk '
      /^(throughput_updates_per_s|throughput_reps|latency_p99_ms|server_cpu_pct|client_cpu_pct|cpu0_busy_pct|cpu1_busy_pct) / {
        key = $1; $1 = ""; printf "%s=%s ", key, substr($0, 2) }
      /failed/ { print }')" || true
  echo "$name round $round: $summary"
  stop_pinned
}

BENCH_ARGS=("$@")
for round in $(seq "$rounds"); do
  run hocuspocus hocuspocus "ws://127.0.0.1:$PORT" "$YJS_BENCH/peers/hocuspocus.sh" "$PORT"
  run ours-memory ywebsocket "ws://127.0.0.1:$PORT/ws" "${OUR_CAPS[@]}" "$ROOT/.venv/bin/collab-server" --port "$PORT" \
    --database-url memory://
  rm -f "$db/bench.sqlite3"*
  run ours-sqlite ywebsocket "ws://127.0.0.1:$PORT/ws" "${OUR_CAPS[@]}" "$ROOT/.venv/bin/collab-server" --port "$PORT" \
    --database-url "sqlite:///$db/bench.sqlite3"
done
