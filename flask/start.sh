#!/usr/bin/env bash
# Start the vidcap Flask caption server under gunicorn.
#
# One worker process (the model is loaded once per process, i.e. once per GPU) with
# THREADS threads for concurrent requests; the micro-batcher merges their frames into
# one model call. Binds 127.0.0.1 unless HOST says otherwise.
#
#   VIDCAP_MODEL=tiny PORT=5000 flask/start.sh
#
# Environment: VIDCAP_MODEL (hub id, local dir or "tiny"), VIDCAP_DEVICE (auto, cpu,
# cuda, cuda:N), VIDCAP_DTYPE (auto, float16, bfloat16, float32), HOST (127.0.0.1),
# PORT (5000), THREADS (16), VIDCAP_MAX_BATCH (8), VIDCAP_MAX_DELAY_MS (10),
# VIDCAP_MAX_FRAMES (64 per request), VIDCAP_MAX_REQUEST_MB (64), VIDCAP_LOG_LEVEL (INFO),
# GUNICORN_TIMEOUT (300 s without a worker heartbeat).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}"

# Newer gunicorn opens a control socket at one fixed path per user, which a second
# server on the same machine would fight over; this server does not use it.
extra=()
if [[ "$(gunicorn --help)" == *--no-control-socket* ]]; then
    extra+=(--no-control-socket)
fi

exec gunicorn ${extra[@]+"${extra[@]}"} \
    --chdir "$here" \
    --workers 1 \
    --worker-class gthread \
    --threads "${THREADS:-16}" \
    --bind "${HOST:-127.0.0.1}:${PORT:-5000}" \
    --timeout "${GUNICORN_TIMEOUT:-300}" \
    --graceful-timeout 30 \
    --keep-alive 5 \
    "server:create_app_from_env()"
