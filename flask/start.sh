#!/usr/bin/env bash
# Start the vidcap Flask caption server under gunicorn.
#
# One worker process (the model is loaded once per process, i.e. once per GPU) with
# THREADS threads for concurrent requests; the micro-batcher merges their frames into
# one model call. Binds 127.0.0.1 unless HOST says otherwise.
#
#   VIDCAP_MODEL=tiny PORT=5000 flask/start.sh      # stop it with flask/stop.sh
#
# Environment: VIDCAP_MODEL (required: hub id, local dir or "tiny"), VIDCAP_DEVICE (auto,
# cpu, cuda, cuda:N), VIDCAP_DTYPE (auto, float16, bfloat16, float32), HOST (127.0.0.1),
# PORT (5000), THREADS (64 requests at once), VIDCAP_MAX_BATCH (the captioner's own
# batch size: 16 on CPU), VIDCAP_MAX_DELAY_MS (10), VIDCAP_MAX_QUEUE (512 frames waiting, then 503),
# VIDCAP_MAX_FRAMES (64 per request), VIDCAP_MAX_PIXELS (8847360 per frame),
# VIDCAP_MAX_REQUEST_PIXELS (auto: VIDCAP_MAX_FRAMES 1080p frames), VIDCAP_MAX_DECODERS
# (auto: CPUs; frames decoded at once), VIDCAP_MAX_REQUEST_MB (64), VIDCAP_READ_TIMEOUT
# (30 s for a whole request body, and for each read of the headers: slower clients get
# 408 or are dropped), VIDCAP_PROMPT / VIDCAP_MAX_NEW_TOKENS / VIDCAP_NUM_BEAMS
# (defaults for requests that send none), VIDCAP_LOG_LEVEL (INFO),
# GUNICORN_TIMEOUT (300 s without a worker heartbeat), MALLOC_ARENA_MAX (2),
# MALLOC_MMAP_THRESHOLD_ (1048576), PID_FILE (flask/logs/gunicorn-$PORT.pid; flask/stop.sh reads it). The limits on slow,
# large and hostile requests (VIDCAP_MAX_PARTS, VIDCAP_MAX_BODIES_MB,
# VIDCAP_MAX_CONNECTIONS) are in docs/serving.md.
set -euo pipefail

# glibc gives each thread its own malloc arena and keeps the freed full-size frame buffers
# in it: with 64 threads, 32 requests of 4K frames peaked at 1.7 GB RSS; 2 arenas: 0.9 GB.
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
# And past its first free of a large buffer glibc serves such buffers from the arena, which
# it never gives back: after a flood of 4K frames (16 threads) the worker stayed at 1.5 GB.
# Buffers over 1 MB mapped on their own go back to the system when freed: 0.66 GB after,
# 1.15 GB at the peak (1.65 GB).
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-1048576}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}"
# The project's virtual environment (make install), unless another one is active: a new
# shell finds gunicorn and the model's packages without activating anything.
if [[ -z "${VIRTUAL_ENV:-}" && -x "$root/.venv/bin/python" ]]; then
    export PATH="$root/.venv/bin:$PATH"
fi

die() {
    echo "start.sh: $*" >&2
    exit 2
}

[[ -n "${VIDCAP_MODEL:-}" ]] ||
    die "set VIDCAP_MODEL to the model to serve (a hub id such as Salesforce/blip2-opt-2.7b, a local directory, or tiny)"
command -v gunicorn >/dev/null || die "gunicorn not found; run: pip install -r flask/requirements.txt"
threads="${THREADS:-64}"
[[ "$threads" =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a whole number >= 1 (got $threads)"
port="${PORT:-5000}"
[[ "$port" =~ ^[0-9]{1,5}$ ]] && ((10#$port >= 1 && 10#$port <= 65535)) ||
    die "PORT must be a port number from 1 to 65535 (got $port)"
# The VIDCAP_* settings, the model and its device, checked here so a mistake is one line,
# not a gunicorn traceback.
"$(dirname "$(command -v gunicorn)")/python" -m vidcap.serve.config start.sh --model --device ||
    exit 2
pid_file="${PID_FILE:-$here/logs/gunicorn-$port.pid}"
mkdir -p "$(dirname "$pid_file")" 2>/dev/null && [[ -w "$(dirname "$pid_file")" ]] ||
    die "cannot write the pid file's folder $(dirname "$pid_file"); give PID_FILE=/a/writable/path"
if [[ -f "$pid_file" ]] && grep -q gunicorn "/proc/$(cat "$pid_file")/cmdline" 2>/dev/null; then
    die "a server already runs with pid file $pid_file (pid $(cat "$pid_file")); flask/stop.sh first"
fi

# Newer gunicorn opens a control socket at one fixed path per user, which a second
# server on the same machine would fight over; this server does not use it.
extra=()
if [[ "$(gunicorn --help)" == *--no-control-socket* ]]; then
    extra+=(--no-control-socket)
fi

exec gunicorn ${extra[@]+"${extra[@]}"} \
    --chdir "$here" \
    --workers 1 \
    --worker-class vidcap.serve.gunicorn_worker.DeadlineThreadWorker \
    --threads "$threads" \
    --bind "${HOST:-127.0.0.1}:$port" \
    --pid "$pid_file" \
    --timeout "${GUNICORN_TIMEOUT:-300}" \
    --graceful-timeout 30 \
    --keep-alive 5 \
    "server:create_app_from_env()"
