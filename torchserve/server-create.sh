#!/usr/bin/env bash
# Build the vidcap model archive for TorchServe into model_store/.
#
#   ./server-create.sh                       # the model named in model-config.yaml
#   VIDCAP_MODEL=tiny ./server-create.sh     # the bundled test model
#   VIDCAP_MODEL=/data/blip2 ./server-create.sh
#
# The archive holds the handler and model-config.yaml only, never the weights:
# a hub model is downloaded once, here, into the Hugging Face cache (HF_HOME), and
# every worker loads it from there; `tiny` and local directories are used in place.
# The archive is written unzipped (--archive-format no-archive), so nothing is zipped.
#
# Environment: VIDCAP_MODEL (model id, directory or `tiny`), MODEL_STORE (default
# ./model_store), MODEL_NAME (default vidcap), SKIP_DOWNLOAD=1 (no prefetch).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
# The project's virtual environment (make install), unless another one is active, as
# start.sh does: a new shell finds torch-model-archiver and vidcap without activating it.
if [[ -z "${VIRTUAL_ENV:-}" && -x "$repo/.venv/bin/python" ]]; then
    export PATH="$repo/.venv/bin:$PATH"
fi
model_store="${MODEL_STORE:-$here/model_store}"
model_name="${MODEL_NAME:-vidcap}"
python="${PYTHON:-python}"

die() {
    echo "server-create.sh: $*" >&2
    exit 1
}

command -v torch-model-archiver >/dev/null ||
    die "torch-model-archiver not found; run: pip install -r requirements-torchserve.txt"

# torch-model-archiver stages files in $TMPDIR/<model name> and deletes that folder:
# give it a private TMPDIR so it can never touch anybody else's files.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tmp" "$work/config" "$model_store"

# The archive's settings (model-config.yaml's handler: under VIDCAP_*, which start.sh checks
# again), and the model unless SKIP_DOWNLOAD: a typo is one line here, not a traceback or a
# worker failing to start later.
check=(--section "$here/model-config.yaml")
[[ "${SKIP_DOWNLOAD:-0}" == "1" ]] || check+=(--model)
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$python" -m vidcap.serve.config server-create.sh \
    "${check[@]}" || exit 2

# The archive's model-config.yaml: ours, with VIDCAP_MODEL written in when set.
# Prints the model the archive will load.
model="$(
    PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$python" - "$here/model-config.yaml" \
        "$work/config/model-config.yaml" <<'PY'
import os
import sys

import yaml

source, target = sys.argv[1], sys.argv[2]
with open(source, encoding="utf-8") as handle:
    config = yaml.safe_load(handle)
handler = config.setdefault("handler", {})
if os.environ.get("VIDCAP_MODEL"):
    handler["model"] = os.environ["VIDCAP_MODEL"]
with open(target, "w", encoding="utf-8") as handle:
    yaml.safe_dump(config, handle, sort_keys=False)
print(handler["model"])
PY
)"

# Fetch a hub model once, ahead of time, so workers never download it themselves.
if [[ "$model" == "tiny" || -d "$model" || "${SKIP_DOWNLOAD:-0}" == "1" ]]; then
    echo "model: $model (no download needed)"
else
    echo "model: $model: downloading into the Hugging Face cache once (skipped if cached)"
    "$python" - "$model" <<'PY'
import sys

from huggingface_hub import list_repo_files, snapshot_download, try_to_load_from_cache

repo_id = sys.argv[1]
try:
    files = list_repo_files(repo_id)
    # Repos that ship safetensors often ship the same weights as .bin too: take one copy.
    weights = ["*.bin", "*.h5", "*.msgpack", "*.ot"]
    ignore = weights if any(f.endswith(".safetensors") for f in files) else []
    print(f"cached at {snapshot_download(repo_id, ignore_patterns=ignore)}")
except Exception as exc:  # noqa: BLE001 - one line for the user, whatever the hub raised
    try:
        cached = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - (not a hub id: said by the line below)
        cached = None
    if isinstance(cached, str):
        print(f"hub not reachable ({type(exc).__name__}); using the copy already cached")
    else:
        sys.exit(f"server-create.sh: cannot download {repo_id}: {exc}".splitlines()[0])
PY
fi

TMPDIR="$work/tmp" torch-model-archiver \
    --model-name "$model_name" \
    --version 1.0 \
    --handler "$repo/handlers/blip2_handler.py" \
    --config-file "$work/config/model-config.yaml" \
    --archive-format no-archive \
    --export-path "$model_store" \
    --force

echo "archive ready: $model_store/$model_name (model $model); now run ./start.sh"
