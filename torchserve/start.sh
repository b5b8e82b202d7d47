#!/usr/bin/env bash
# Start TorchServe with the vidcap archive (built by ./server-create.sh), one worker per
# GPU, and wait until every worker is loaded and the model answers.
#
# Environment (all optional):
#   CUDA_VISIBLE_DEVICES   GPUs TorchServe may use (numeric indices); honoured as is
#   NUM_GPUS               GPUs to use (default: those visible; 0 = CPU only)
#   NUM_WORKERS            workers (default: NUM_GPUS, or 1 on a CPU-only machine)
#   INFERENCE_PORT / MANAGEMENT_PORT / METRICS_PORT   (default 8080 / 8081 / 8082); the
#                          inference port is the protocol gate's (vidcap.serve.gate)
#   BACKEND_INFERENCE_PORT TorchServe's own inference API behind the gate (default 8083;
#                          always 127.0.0.1)
#   INFERENCE_HOST / MANAGEMENT_HOST / METRICS_HOST   bind addresses (default 127.0.0.1)
#   GRPC_INFERENCE_PORT / GRPC_MANAGEMENT_PORT   (default 7070 / 7071; always 127.0.0.1)
#   TOKEN_AUTH             on (default, loopback included) or off (refused unless every
#                          address is loopback); keys in $TS_RUN_DIR/key_file.json, mode 600
#   NEW_KEYS               1: a new inference key; by default the one in key_file.json is
#                          kept across restarts (the gate checks it; it does not expire)
#   TOKEN_EXPIRATION_MIN   minutes TorchServe's own keys stay valid (default 5256000, ten
#                          years: longer than any run; TorchServe 0.12 never renews them)
#   VIDCAP_MODEL           hub id, local directory or `tiny`; overrides the archive's
#                          model-config.yaml, as do VIDCAP_DTYPE, VIDCAP_MAX_CHUNK, ...
#   VIDCAP_MAX_REQUEST_MB / VIDCAP_READ_TIMEOUT   the gate's body limit and whole-request
#                          deadline; VIDCAP_MAX_PARTS, VIDCAP_MAX_BODIES_MB,
#                          VIDCAP_MAX_CONNECTIONS: see docs/serving.md
#   VIDCAP_BATCH_ALLOWANCE seconds one batch may take on the model (default 60): the gate
#                          answers 503 + Retry-After when TorchServe stays silent for
#                          maxBatchDelay + this long (a dead or hung worker)
#   BATCH_SIZE / MAX_BATCH_DELAY_MS   TorchServe batching (default: config.properties)
#   MODEL_STORE            archive folder (default ./model_store); MODEL_NAME (vidcap)
#   TS_RUN_DIR             logs, pid, key_file.json, sockets (default ./logs)
#   TS_CONFIG              config.properties template (default ./config.properties)
#   START_TIMEOUT          seconds to wait for the model (default 900)
#   PYTHON                 the interpreter (default: python from the project's .venv when
#                          no virtual environment is active, else from PATH)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
# The project's virtual environment (make install), unless another one is active: a new
# shell finds torchserve, its Python and vidcap without activating anything.
if [[ -z "${VIRTUAL_ENV:-}" && -x "$repo/.venv/bin/python" ]]; then
    export PATH="$repo/.venv/bin:$PATH"
fi
python="${PYTHON:-python}"
# The gate, the port check and the workers import vidcap from this checkout.
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

model_store="$(realpath -m "${MODEL_STORE:-$here/model_store}")"
model_name="${MODEL_NAME:-vidcap}"
run_dir="$(realpath -m "${TS_RUN_DIR:-$here/logs}")"
template="${TS_CONFIG:-$here/config.properties}"
start_timeout="${START_TIMEOUT:-900}"

die() {
    echo "start.sh: $*" >&2
    exit 1
}

is_loopback() {
    case "$1" in
    127.* | localhost | ::1 | "[::1]") return 0 ;;
    *) return 1 ;;
    esac
}

visible_gpus() {
    if [[ -n "${CUDA_VISIBLE_DEVICES+set}" ]]; then
        # Set but empty hides every GPU.
        local list="${CUDA_VISIBLE_DEVICES//[[:space:]]/}"
        if [[ -z "$list" ]]; then echo 0; else awk -F, '{print NF}' <<<"$list"; fi
    elif command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true
    else
        echo 0
    fi
}

command -v torchserve >/dev/null ||
    die "torchserve not found; run: pip install -r requirements-torchserve.txt"
command -v java >/dev/null || [[ -n "${JAVA_HOME:-}" ]] ||
    die "java not found; TorchServe needs Java 17 (e.g. apt-get install openjdk-17-jre-headless)"
[[ -f "$model_store/$model_name/MAR-INF/MANIFEST.json" ]] ||
    die "no archive at $model_store/$model_name; run ./server-create.sh first"
[[ -f "$template" ]] || die "config template $template not found"
num_gpus="${NUM_GPUS:-$(visible_gpus)}"
[[ "$num_gpus" =~ ^[0-9]+$ ]] || die "NUM_GPUS must be a whole number >= 0 (got $num_gpus)"
if ((num_gpus > 0)); then
    num_workers="${NUM_WORKERS:-$num_gpus}"
else
    num_workers="${NUM_WORKERS:-1}"
fi
[[ "$num_workers" =~ ^[1-9][0-9]*$ ]] || die "NUM_WORKERS must be a whole number >= 1 (got $num_workers)"

inference_host="${INFERENCE_HOST:-127.0.0.1}"
management_host="${MANAGEMENT_HOST:-127.0.0.1}"
metrics_host="${METRICS_HOST:-127.0.0.1}"
all_loopback=true
for host in "$inference_host" "$management_host" "$metrics_host"; do
    is_loopback "$host" || all_loopback=false
done
new_keys="${NEW_KEYS:-0}"
[[ "$new_keys" == 0 || "$new_keys" == 1 ]] || die "NEW_KEYS must be 0 or 1 (got $new_keys)"
token_expiration_min="${TOKEN_EXPIRATION_MIN:-5256000}"
[[ "$token_expiration_min" =~ ^[0-9]+([.][0-9]+)?$ && ! "$token_expiration_min" =~ ^0+([.]0*)?$ ]] ||
    die "TOKEN_EXPIRATION_MIN must be a number of minutes > 0 (got $token_expiration_min)"
case "${TOKEN_AUTH:-on}" in
on) token_auth=on ;;
off)
    $all_loopback ||
        die "TOKEN_AUTH=off is refused while an address is not loopback ($inference_host, $management_host, $metrics_host)"
    token_auth=off
    ;;
*) die "TOKEN_AUTH must be on or off (got ${TOKEN_AUTH})" ;;
esac
# Model names and store paths go into a regular expression (allowed_urls) and a
# properties file: keep them to characters that need no escaping there.
[[ "$model_name" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] ||
    die "MODEL_NAME may hold letters, digits, '_', '.', '-' only (got $model_name)"
[[ "$model_store" =~ ^[A-Za-z0-9_/.+-]+$ ]] ||
    die "MODEL_STORE path may hold letters, digits and _ / . + - only (got $model_store)"

# The archive's handler settings under this run's VIDCAP_* values, the model and its
# device, checked before anything starts: a mistake is one line, not a worker that
# TorchServe restarts until START_TIMEOUT.
check=(--model --device)
[[ ! -f "$model_store/$model_name/model-config.yaml" ]] ||
    check+=(--section "$model_store/$model_name/model-config.yaml")
"$python" -m vidcap.serve.config start.sh "${check[@]}" || exit 2
[[ -z "${BATCH_SIZE:-}" || "${BATCH_SIZE}" =~ ^[1-9][0-9]{0,5}$ ]] ||
    die "BATCH_SIZE must be a whole number >= 1 (got $BATCH_SIZE)"
[[ -z "${MAX_BATCH_DELAY_MS:-}" || "${MAX_BATCH_DELAY_MS}" =~ ^[0-9]{1,6}$ ]] ||
    die "MAX_BATCH_DELAY_MS must be a whole number of milliseconds (got $MAX_BATCH_DELAY_MS)"
[[ "$start_timeout" =~ ^[1-9][0-9]{0,5}$ ]] ||
    die "START_TIMEOUT must be a whole number of seconds >= 1 (got $start_timeout)"

# Worker sockets live in the run folder; a Unix socket path has at most 107 bytes.
((${#run_dir} <= 90)) || die "TS_RUN_DIR path is too long for worker sockets: $run_dir"
mkdir -p "$run_dir"
pid_file="$run_dir/.model_server.pid"
gate_pid_file="$run_dir/gate.pid"
if [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null &&
    grep -q "org.pytorch.serve.ModelServer" "/proc/$(cat "$pid_file")/cmdline" 2>/dev/null; then
    die "TorchServe already runs from $run_dir (pid $(cat "$pid_file")); ./stop.sh first"
fi
if [[ -f "$gate_pid_file" ]] && grep -q "vidcap.serve.gate" "/proc/$(cat "$gate_pid_file")/cmdline" 2>/dev/null; then
    die "the protocol gate already runs from $run_dir (pid $(cat "$gate_pid_file")); ./stop.sh first"
fi
# TorchServe writes its own keys (new at every start) into its working folder; clients
# use the inference key in $run_dir/key_file.json, which the gate checks and which stays
# across restarts unless NEW_KEYS=1.
backend_dir="$run_dir/backend"
key_file="$run_dir/key_file.json"
backend_key_file="$backend_dir/key_file.json"
rm -f "$pid_file" "$gate_pid_file" "$backend_key_file"
((new_keys == 0)) || rm -f "$key_file"
# Keys, logs and sockets are this user's alone; the workflow store stays empty and
# read-only (workflow registration is refused by allowed_urls as well).
chmod 700 "$run_dir"
mkdir -p "$backend_dir" && chmod 700 "$backend_dir"
workflow_store="$run_dir/workflow_store"
mkdir -p "$workflow_store" && chmod 500 "$workflow_store"

# Every port this server binds, free before it starts: a taken one is named here
# rather than found in a Java stack trace.
grpc_inference_port="${GRPC_INFERENCE_PORT:-7070}"
grpc_management_port="${GRPC_MANAGEMENT_PORT:-7071}"
backend_port="${BACKEND_INFERENCE_PORT:-8083}"
# With SO_REUSEADDR, as the servers bind: connections left in TIME_WAIT by a server
# stopped a moment ago do not make its port look taken.
"$python" -m vidcap.serve.ports "$inference_host" "${INFERENCE_PORT:-8080}" INFERENCE_PORT \
    127.0.0.1 "$backend_port" BACKEND_INFERENCE_PORT \
    "$management_host" "${MANAGEMENT_PORT:-8081}" MANAGEMENT_PORT \
    "$metrics_host" "${METRICS_PORT:-8082}" METRICS_PORT \
    127.0.0.1 "$grpc_inference_port" GRPC_INFERENCE_PORT \
    127.0.0.1 "$grpc_management_port" GRPC_MANAGEMENT_PORT || exit 1

url() { if [[ "$1" == *:* && "$1" != \[* ]]; then echo "http://[$1]:$2"; else echo "http://$1:$2"; fi; }
inference_url="$(url "$inference_host" "${INFERENCE_PORT:-8080}")"
# Where this server's inference API answers: vidcap's client sends the key it reads from
# key_file.json here, and to no other address.
echo "$inference_url" >"$run_dir/inference_url"
backend_url="$(url 127.0.0.1 "$backend_port")"
management_url="$(url "$management_host" "${MANAGEMENT_PORT:-8081}")"
metrics_url="$(url "$metrics_host" "${METRICS_PORT:-8082}")"

# The run's config.properties: the template, then this run's values (last one wins).
config="$run_dir/config.properties"
disable_token_auth="$([[ $token_auth == off ]] && echo true || echo false)"
# Prints the model's maxBatchDelay (ms), which the gate's stall timeout starts from, and
# the most requests one client may have in the gate: what the workers run at once
# (workers x batchSize) plus half of TorchServe's job queue, so one client flooding the
# server leaves half the queue to the others.
batch_settings="$("$python" - "$template" "$config" "$model_name" "$num_workers" "${BATCH_SIZE:-}" \
    "${MAX_BATCH_DELAY_MS:-}" "inference_address=$backend_url" \
    "management_address=$management_url" "metrics_address=$metrics_url" \
    "number_of_gpu=$num_gpus" "model_store=$model_store" "load_models=$model_name" \
    "disable_token_authorization=$disable_token_auth" "workflow_store=$workflow_store" \
    "allowed_urls=$model_store/$model_name" \
    "grpc_inference_address=127.0.0.1" "grpc_management_address=127.0.0.1" \
    "grpc_inference_port=$grpc_inference_port" "grpc_management_port=$grpc_management_port" \
    "token_expiration_min=$token_expiration_min" \
    <<'PY'
import json
import sys

template, target, name, workers, batch_size, batch_delay = sys.argv[1:7]
overrides = dict(arg.split("=", 1) for arg in sys.argv[7:])
# Only this server's own archive, by its absolute path: a Java regex (full match) with
# every character that is not a letter, digit, '/', '_' or '-' made literal as [c].
archive = overrides["allowed_urls"]
literal = "".join(c if c.isalnum() or c in "/_-" else f"[{c}]" for c in archive)
overrides["allowed_urls"] = f"file://{literal}([.]mar)?"
with open(template, encoding="utf-8") as handle:
    text = handle.read()
props = {}
for line in text.splitlines():
    key, sep, value = line.strip().partition("=")
    if sep and not key.startswith("#"):
        props[key.strip()] = value.strip()


def refuse(what: str) -> None:  # one line, as TorchServe would fail on it after a while
    sys.exit(f"start.sh: {template}: {what}")


try:
    versions = next(iter(json.loads(props.get("models", "{}")).values()), {})
    model = next(iter(versions.values()), {})
    model["batchSize"] = int(batch_size or model.get("batchSize", 1))
    model["maxBatchDelay"] = int(batch_delay or model.get("maxBatchDelay", 100))
except (ValueError, TypeError, AttributeError) as exc:
    refuse(f"models must be TorchServe's JSON of one model's settings ({exc})")
if model["batchSize"] < 1 or model["maxBatchDelay"] < 0:
    refuse("a model's batchSize must be >= 1 and its maxBatchDelay >= 0")
model.update(defaultVersion=True, marName=name, minWorkers=int(workers), maxWorkers=int(workers))
try:
    queue = int(props.get("job_queue_size", 100))  # (TorchServe's default)
except ValueError:
    refuse(f"job_queue_size must be a whole number, got {props['job_queue_size']!r}")
overrides["models"] = json.dumps({name: {"1.0": model}})
with open(target, "w", encoding="utf-8") as handle:
    handle.write(text.rstrip("\n") + "\n\n# written by start.sh for this run\n")
    handle.writelines(f"{key}={value}\n" for key, value in overrides.items())
running = int(workers) * model["batchSize"]  # requests the workers run at once
# (the gate: one client's share; requests forwarded at once, the next batches ready)
print(model["maxBatchDelay"], running + queue // 2, 2 * running)
PY
)" || exit 1
read -r batch_delay_ms max_client_requests max_forwarded <<<"$batch_settings"

# CPU workers share the cores instead of each starting one thread per core.
if ((num_gpus == 0)) && [[ -z "${OMP_NUM_THREADS:-}" ]]; then
    cores="$(nproc)"
    export OMP_NUM_THREADS=$((cores / num_workers > 0 ? cores / num_workers : 1))
fi

# The clients' inference key: the one already in key_file.json (a restart keeps it), or
# a new one. TorchServe's own keys are added to the file once it has written them.
gate_keys=()
if [[ "$token_auth" == on ]]; then
    (umask 077 && "$python" - "$key_file" <<'PY') || die "could not write $key_file"
import json
import os
import secrets
import sys

path = sys.argv[1]
try:
    with open(path, encoding="utf-8") as handle:
        keys = json.load(handle)
    kept = isinstance(keys["inference"]["key"], str) and len(keys["inference"]["key"]) >= 16
except (OSError, ValueError, KeyError, TypeError):
    kept = False
if kept:
    print("keeping the inference key in key_file.json (NEW_KEYS=1 for a new one)")
else:
    keys = {"inference": {"key": secrets.token_urlsafe(32), "expiration time": "never"}}
    with open(os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        json.dump(keys, out, indent=2)
    os.replace(path + ".tmp", path)
    print("new inference key in key_file.json")
os.chmod(path, 0o600)
PY
    gate_keys=(--key-file "$key_file" --backend-key-file "$backend_key_file" --management "$management_url")
fi

# The protocol gate on the public inference address: the token, then the wire
# protocol's method, size, deadline and multipart rules, then TorchServe's inference API
# on loopback. Started first, so a bad VIDCAP_* setting stops the start before
# TorchServe runs.
nohup "$python" -m vidcap.serve.gate --host "$inference_host" --port "${INFERENCE_PORT:-8080}" \
    --upstream "$backend_url" --max-batch-delay-ms "$batch_delay_ms" \
    --max-client-requests "$max_client_requests" --max-forwarded "$max_forwarded" \
    ${gate_keys[@]+"${gate_keys[@]}"} \
    </dev/null >"$run_dir/gate.log" 2>&1 &
echo $! >"$gate_pid_file"
"$python" - "$inference_host" "${INFERENCE_PORT:-8080}" "$(cat "$gate_pid_file")" <<'PY' || {
import os
import socket
import sys
import time

host, port, pid = sys.argv[1].strip("[]"), int(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)
    try:
        socket.create_connection((host, port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
    kill "$(cat "$gate_pid_file")" 2>/dev/null || true
    rm -f "$gate_pid_file"
    die "the protocol gate did not start: $(tail -n 3 "$run_dir/gate.log" 2>/dev/null | tr '\n' ' ')"
}

# Where this run's lines begin in the logs TorchServe appends to (a reason read there is
# this start's, not an earlier one's).
ts_log_from="$(stat -c %s "$run_dir/ts_log.log" 2>/dev/null || echo 0)"
model_log_from="$(stat -c %s "$run_dir/model_log.log" 2>/dev/null || echo 0)"
echo "starting TorchServe: $num_workers worker(s), $num_gpus GPU(s), model store $model_store"
echo "  inference $inference_url (gate; TorchServe on $backend_url)  management $management_url  metrics $metrics_url/metrics"
echo "  token authorization: $token_auth; logs in $run_dir"
(
    # TorchServe writes its pid file under TMPDIR, worker sockets under TEMP, logs under
    # LOG_LOCATION (all in the run folder) and its key_file.json in the current folder.
    cd "$backend_dir"
    # Nothing TorchServe writes here (key file, logs) is readable by other users.
    umask 077
    TMPDIR="$run_dir" TEMP="$run_dir" LOG_LOCATION="$run_dir" METRICS_LOCATION="$run_dir" \
        torchserve --start --ncs --ts-config "$config" --model-store "$model_store" \
        >"$run_dir/torchserve.out" 2>&1
) || {
    TS_RUN_DIR="$run_dir" "$here/stop.sh" >&2 || true
    die "torchserve --start failed; see $run_dir/torchserve.out"
}

# Wait until every worker is READY and a prediction answers.
waited=0
"$python" - "$run_dir" "$inference_url" "$management_url" "$model_name" "$num_workers" \
    "$start_timeout" "$token_auth" "$ts_log_from" "$model_log_from" <<'PY' || waited=$?
import io
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

run_dir, inference, management, name = sys.argv[1:5]
workers, timeout, token_auth = int(sys.argv[5]), float(sys.argv[6]), sys.argv[7] == "on"
since = {"ts_log.log": int(sys.argv[8]), "model_log.log": int(sys.argv[9])}
# A reason in TorchServe's words: its configuration refused, Java missing, an exception.
REASON = re.compile(r"Invalid configuration|not found|Exception|ERROR|Error:")
# A worker that cannot start: vidcap's own error (a model, a setting), or any other raised
# in the worker, once it died this often (TorchServe restarts it until the timeout).
VIDCAP_ERROR = re.compile(r"vidcap\.errors\.\w+: (.+)$")
RAISED = re.compile(r"(?:MODEL_LOG - |^)(\w+(?:Error|Exception): .+)$")
DEATHS = 3


def this_run(name: str) -> list[str]:
    """The lines of one of the run folder's logs written since this start."""
    try:
        with open(os.path.join(run_dir, name), "rb") as handle:
            handle.seek(since.get(name, 0))
            return handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def test_image() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, format="PNG")
    return buffer.getvalue()


def alive() -> bool:
    try:
        with open(os.path.join(run_dir, ".model_server.pid"), encoding="utf-8") as handle:
            os.kill(int(handle.read().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


def cause() -> str:
    """The front end's own reason, from this start's lines: the first the launcher printed
    (what followed it is its consequence), else the last of the front end's log."""
    for name, lines in (("torchserve.out", this_run("torchserve.out")),
                        ("ts_log.log", this_run("ts_log.log")[::-1])):  # fmt: skip
        for line in lines:
            if REASON.search(line):
                return f"{line.strip()[:300]} (from {run_dir}/{name})"
    return f"no reason logged; see {run_dir}/torchserve.out and {run_dir}/ts_log.log"


def worker_failure() -> str | None:
    """Why the workers cannot start, once that is sure, from this start's model log."""
    lines = this_run("model_log.log")
    for line in lines:
        if found := VIDCAP_ERROR.search(line):
            return found.group(1).strip()[:300]
    if sum("Backend worker process died" in line for line in lines) >= DEATHS:
        raised = [found.group(1) for line in lines if (found := RAISED.search(line.strip()))]
        return f"the model worker died {DEATHS} times" + (f": {raised[-1][:300]}" if raised else "")
    return None


def publish_keys() -> bool:
    """TorchServe's management and API keys into the clients' key_file.json, beside the
    inference key kept there; True once done (TorchServe has written its file)."""
    public = os.path.join(run_dir, "key_file.json")
    try:
        with open(os.path.join(run_dir, "backend", "key_file.json"), encoding="utf-8") as handle:
            backend = json.load(handle)
        with open(public, encoding="utf-8") as handle:
            keys = json.load(handle)
        keys.update({kind: backend[kind] for kind in ("management", "API") if kind in backend})
    except (OSError, ValueError, KeyError, TypeError):
        return False
    with open(os.open(public + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        json.dump(keys, out, indent=2)
    os.replace(public + ".tmp", public)
    return True


def key(kind: str) -> dict[str, str]:
    if not token_auth:
        return {}
    with open(os.path.join(run_dir, "key_file.json"), encoding="utf-8") as handle:
        return {"Authorization": f"Bearer {json.load(handle)[kind]['key']}"}


def call(url: str, headers: dict[str, str], data: bytes | None = None) -> object:
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(io.TextIOWrapper(response, encoding="utf-8"))


deadline = time.monotonic() + timeout
state = "TorchServe not answering yet"
published = not token_auth
while time.monotonic() < deadline:
    if not alive():
        print(f"TorchServe exited during start: {cause()}", file=sys.stderr)
        sys.exit(3)
    if failure := worker_failure():
        print(f"the model worker cannot start: {failure} (from {run_dir}/model_log.log)",
              file=sys.stderr)  # fmt: skip
        sys.exit(3)
    published = published or publish_keys()
    if not published:
        state = "TorchServe has not written its keys yet"
        time.sleep(0.5)
        continue
    try:
        described = call(f"{management}/models/{name}", key("management"))
        ready = sum(w["status"] == "READY" for w in described[0]["workers"])
        state = f"{ready}/{workers} workers ready"
        if ready >= workers:
            headers = {**key("inference"), "Content-Type": "image/png"}
            answer = call(f"{inference}/predictions/{name}", headers, test_image())
            print(f"ready: {state}; test caption {answer}")
            sys.exit(0)
    except (OSError, ValueError, KeyError, IndexError, urllib.error.URLError) as exc:
        state = f"waiting ({exc})"
    time.sleep(0.5)  # (a management call a poll: cheap; a start is ready 0.75 s sooner on average)
print(f"model not ready after {timeout:.0f}s: {state}", file=sys.stderr)
sys.exit(1)
PY
if ((waited != 0)); then
    if ((waited != 3)); then # (else the reason, the front end's or a worker's, is said already)
        echo "start.sh: TorchServe did not come up; this start's last lines of $run_dir/model_log.log:" >&2
        tail -c "+$((model_log_from + 1))" "$run_dir/model_log.log" 2>/dev/null | tail -n 30 >&2 || true
    fi
    TS_RUN_DIR="$run_dir" "$here/stop.sh" >&2 || true
    exit 1
fi

if [[ "$token_auth" == on ]]; then
    echo "token authorization is on: keys are in $run_dir/key_file.json"
    echo "  clients send: Authorization: Bearer <inference key> (kept across restarts; NEW_KEYS=1 for a new one)"
fi
echo "TorchServe is up; stop it with ./stop.sh"
