#!/usr/bin/env bash
# Stop the Flask caption server that flask/start.sh started (in any shell), by its pid file:
# gunicorn finishes the requests in progress (up to its 30 s grace), then exits; what is
# still running after STOP_TIMEOUT seconds is killed.
#
#   PORT=5000 flask/stop.sh
#
# Environment: PORT (5000) or PID_FILE (flask/logs/gunicorn-$PORT.pid), as given to
# start.sh; STOP_TIMEOUT (40).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${PORT:-5000}"
pid_file="${PID_FILE:-$here/logs/gunicorn-$port.pid}"
stop_timeout="${STOP_TIMEOUT:-40}"
[[ "$stop_timeout" =~ ^[0-9]{1,6}$ ]] || {
    echo "stop.sh: STOP_TIMEOUT must be a whole number of seconds (got $stop_timeout)" >&2
    exit 2
}

running() { # a process that still runs: alive, and not a zombie its parent has not reaped
    local state
    state="$(sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
    [[ -n "$state" && "$state" != Z ]]
}

if [[ ! -f "$pid_file" ]]; then
    echo "no Flask server is running with pid file $pid_file"
    exit 0
fi
pid="$(cat "$pid_file")"
if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! grep -q gunicorn "/proc/$pid/cmdline" 2>/dev/null; then
    echo "no Flask server is running with pid file $pid_file (stale file removed)"
    rm -f "$pid_file"
    exit 0
fi
mapfile -t workers < <(ps -o pid= --ppid "$pid" 2>/dev/null || true)
echo "stopping the Flask server (gunicorn pid $pid)"
kill -TERM "$pid" 2>/dev/null || true
deadline=$((SECONDS + stop_timeout))
while running "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
for p in "$pid" "${workers[@]}"; do
    p="${p// /}"
    [[ -n "$p" ]] && running "$p" && kill -KILL "$p" 2>/dev/null || true
done
rm -f "$pid_file"
echo "Flask server stopped"
