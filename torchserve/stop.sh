#!/usr/bin/env bash
# Stop the TorchServe that ./start.sh started from the same run folder, and its protocol
# gate, and make sure none of their processes (gate, front end, model workers) is left behind.
# The clients' inference key ($TS_RUN_DIR/key_file.json) stays for the next start;
# TorchServe's own management and API keys, dead once it stops, are taken out of it.
#
# Environment: TS_RUN_DIR (default ./logs, as for start.sh), STOP_TIMEOUT (seconds the
# front end gets to stop its workers before they are killed; default 60).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
# The project's virtual environment (for the torchserve launcher), unless one is active.
if [[ -z "${VIRTUAL_ENV:-}" && -x "$repo/.venv/bin/python" ]]; then
    export PATH="$repo/.venv/bin:$PATH"
fi
run_dir="$(realpath -m "${TS_RUN_DIR:-$here/logs}")"
pid_file="$run_dir/.model_server.pid"
gate_pid_file="$run_dir/gate.pid"
stop_timeout="${STOP_TIMEOUT:-60}"
[[ "$stop_timeout" =~ ^[0-9]{1,6}$ ]] || {
    echo "stop.sh: STOP_TIMEOUT must be a whole number of seconds (got $stop_timeout)" >&2
    exit 2
}

is_torchserve() {
    grep -q "org.pytorch.serve.ModelServer" "/proc/$1/cmdline" 2>/dev/null
}

descendants() {
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null || true); do
        echo "$child"
        descendants "$child"
    done
}

running() { # a process that still runs: alive, and not a zombie its parent has not reaped
    local state
    state="$(sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
    [[ -n "$state" && "$state" != Z ]]
}

orphan_workers() { # model workers of this run folder whose front end is gone (a failed start)
    local proc pid
    for proc in /proc/[0-9]*; do
        pid="${proc#/proc/}"
        tr '\0' ' ' 2>/dev/null <"$proc/cmdline" | grep -qF -- "--sock-name $run_dir/.ts.sock." &&
            echo "$pid"
    done
    return 0
}

forget_backend_keys() { # TorchServe's keys, dead once it stops: only the clients' key stays
    rm -f "$run_dir/backend/key_file.json"
    [[ -f "$run_dir/key_file.json" ]] || return 0
    python3 - "$run_dir/key_file.json" <<'PY' || true
import json
import os
import sys

path = sys.argv[1]
try:
    with open(path, encoding="utf-8") as handle:
        keys = json.load(handle)
    kept = {"inference": keys["inference"]}
except (OSError, ValueError, KeyError, TypeError):
    sys.exit(0)  # (not ours to mend: start.sh makes a new one)
if kept != keys:
    with open(os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        json.dump(kept, out, indent=2)
    os.replace(path + ".tmp", path)
PY
}

terminate() { # terminate PID...: SIGTERM, and SIGKILL for what still runs 10 s later
    kill -TERM "$@" 2>/dev/null || true
    wait_gone 10 "$@"
    local p
    for p in "$@"; do
        running "$p" && kill -KILL "$p" 2>/dev/null || true
    done
}

stop_orphans() {
    local orphans
    mapfile -t orphans < <(orphan_workers)
    ((${#orphans[@]} > 0)) || return 0
    echo "stopping model workers left by a failed start: ${orphans[*]}"
    terminate "${orphans[@]}"
}

wait_gone() { # wait_gone SECONDS PID...
    local deadline=$((SECONDS + $1)) pid
    shift
    for pid in "$@"; do
        while running "$pid" && ((SECONDS < deadline)); do sleep 0.5; done
    done
}

# The gate first: no new request reaches TorchServe while it stops.
if [[ -f "$gate_pid_file" ]]; then
    gate_pid="$(cat "$gate_pid_file")"
    if grep -q "vidcap.serve.gate" "/proc/$gate_pid/cmdline" 2>/dev/null; then
        kill -TERM "$gate_pid" 2>/dev/null || true
        wait_gone 10 "$gate_pid"
        running "$gate_pid" && kill -KILL "$gate_pid" 2>/dev/null || true
        echo "protocol gate stopped (pid $gate_pid)"
    fi
    rm -f "$gate_pid_file"
fi

if [[ ! -f "$pid_file" ]]; then
    echo "TorchServe is not running from $run_dir"
    stop_orphans
    exit 0
fi
pid="$(cat "$pid_file")"
if ! is_torchserve "$pid"; then
    echo "TorchServe is not running from $run_dir (stale pid file removed)"
    rm -f "$pid_file"
    forget_backend_keys
    stop_orphans
    exit 0
fi

# Note the workers now: once the front end is gone they would be orphans.
mapfile -t children < <(descendants "$pid")
echo "stopping TorchServe (pid $pid, ${#children[@]} child process(es))"
if command -v torchserve >/dev/null; then
    (
        # The launcher finds its pid file under TMPDIR and removes key_file.json from CWD
        # (TorchServe's own keys, in backend/; the clients' key file stays).
        mkdir -p "$run_dir/backend" && cd "$run_dir/backend"
        TMPDIR="$run_dir" torchserve --stop --foreground >>"$run_dir/torchserve.out" 2>&1 || true
    )
else
    echo "torchserve not found on PATH: stopping the front end with SIGTERM"
    kill -TERM "$pid" 2>/dev/null || true
fi
wait_gone "$stop_timeout" "$pid" "${children[@]}"

left=()
for p in "$pid" "${children[@]}"; do
    running "$p" && left+=("$p")
done
if ((${#left[@]} > 0)); then
    echo "killing what did not stop: ${left[*]}"
    terminate "${left[@]}"
fi
stop_orphans
rm -f "$pid_file" "$run_dir"/.ts.sock.*
forget_backend_keys
echo "TorchServe stopped"
