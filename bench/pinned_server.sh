# Sourced by the bench/*.sh scripts that run servers one after the other: start one pinned to CPU 0 (the
# load client goes to CPU 1, as the shared harness does) and wait until it listens on $PORT; stop it.

# Our server's per-address caps lifted: the load client opens thousands of sockets and rooms from one
# address, which the caps (meant for floods) would refuse. Put before our server's command.
# shellcheck disable=SC2034  # used by the scripts that source this file
OUR_CAPS=(env COLLAB_MAX_CONNECTIONS_PER_ADDRESS=1000000 COLLAB_MAX_ROOMS_PER_ADDRESS=1000000
          COLLAB_ROOM_LOADS_PER_MINUTE=1000000)
start_pinned() { # log file, server command...; sets SERVER_PID
  local log="$1"; shift
  taskset -c 0 "$@" >"$log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
  done
  sleep 1
}

stop_pinned() { # the server start_pinned started; its start script execs it, so nothing else is left
  kill -INT "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  sleep 1
}
