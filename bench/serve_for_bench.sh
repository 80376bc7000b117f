#!/usr/bin/env bash
# collab-server for the side-by-side harness (bench/compare.sh): the same server, plus, when the harness
# stops it (SIGTERM), a dump of the metrics a throughput table leaves out, into the server's log:
# the event loop's lag histogram (collab_loop_lag_seconds), compactions, CRDT worker restarts, and peers
# slowed or refused by the rate limits. `bench/loop_lag.py RESULTS_DIR` reads them back.
#
#   bench/serve_for_bench.sh --port PORT [collab-server flags...]
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
port=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  [ "${args[$i]}" = "--port" ] && port="${args[$((i + 1))]}"
done
# Its own session: the harness stops the whole process group, and the metrics must be read first.
setsid "$ROOT/.venv/bin/collab-server" "$@" &
server=$!
dump() {
  echo "== bench metrics at exit"
  curl -s --max-time 5 "http://127.0.0.1:$port/metrics" |
    grep -E '^collab_(loop_lag_seconds|compactions_total|crdt_worker_restarts_total|peer_slowed_seconds_total|quota_refusals_total|peers_closed_total)' || true
  echo "== end of bench metrics"
  kill -TERM "$server" 2>/dev/null
  wait "$server"
  exit 0
}
trap dump TERM INT
wait "$server"
