#!/usr/bin/env bash
# On the GPU machine, right after bench/gpu/run.sh in the same warm machine (#19 item 4):
#   run(command="bash bench/gpu/torchserve.sh", carry=["gpu_ts_kit"])
# `vidcap caption --server` through TorchServe (the protocol gate in front, one worker on
# the GPU) beside the embedded engine, on run.sh's clips (.gpu_clips/), with the
# BLIP-2-sized model saved once as a directory (7.7 GB, .gpu_model/) that both load.
# run.sh installed PyAV etc. into .gpu_site/; gpu_ts_kit/ (bench/gpu/ts_kit.sh) brings Java
# and TorchServe. JSON into $OUT (default bench/results/gpu_run/). GPU_DRY_RUN=1: the tiny
# model on the CPU, 2 clips' worth (checks this script where there is no GPU).
set -uo pipefail
cd "$(dirname "$0")/../.."
repo="$PWD"
python=${PYTHON:-python3}
out=${OUT:-bench/results/gpu_run}
mkdir -p "$out"
die() { echo "torchserve.sh: $*" | tee -a "$out/serving_gpu.err" >&2; exit 2; }
[ -f gpu_ts_kit/jre.tar.xz ] || die "no gpu_ts_kit/ here: carry it (bash bench/gpu/ts_kit.sh builds it)"
export PYTHONPATH="$repo:$repo/.gpu_site:$repo/gpu_ts_kit/site${PYTHONPATH:+:$PYTHONPATH}"
"$python" -c "import av, srt, webvtt" 2>/dev/null ||
    die "PyAV/srt/webvtt missing: run bench/gpu/run.sh (carry gpu_kit) first in this warm machine"
if [ ! -x .gpu_java/jre/bin/java ]; then
    mkdir -p .gpu_java && tar -C .gpu_java -xJf gpu_ts_kit/jre.tar.xz || die "cannot unpack the JRE"
fi
export JAVA_HOME="$repo/.gpu_java/jre"
export PATH="$repo/gpu_ts_kit/bin:$JAVA_HOME/bin:$PATH"
export PYTHON="$python" VIRTUAL_ENV="${VIRTUAL_ENV:-none}"  # (start.sh: no .venv to look for)
java -version 2>&1 | head -1
clips="$repo/.gpu_clips"
if [ "${GPU_DRY_RUN:-0}" = 1 ]; then
    model=tiny device=cpu fps=2 extra=(--batch-size 16 --repeats 1)
    [ -d "$clips" ] || timeout 300 "$python" bench/bulk.py gpu --dry-run --clips-dir "$clips" \
        --out "$out/bulk_for_clips.json" >/dev/null
else
    model="$repo/.gpu_model" device=cuda fps=${SERVE_FPS:-1}
    # the client's requests (64 frames, 8 in flight) and TorchServe's batches (4 requests)
    # sized like the engine's auto batch of 256; the handler takes 256 frames a call
    extra=(--batch-size auto --repeats 1 --prebatch 64 --inflight 8 --ts-batch 4 --max-batch 256)
    if [ ! -f "$model/model.safetensors" ]; then
        timeout 180 "$python" bench/blip2_sized.py --save "$model" --device cuda || die "saving the model failed"
    fi
fi
[ -f "$clips/clips.json" ] || die "no clips in $clips: run bench/gpu/run.sh first (it keeps them there)"
timeout "${SERVE_S:-420}" "$python" -m bench.serving --model "$model" --device "$device" --warm \
    --videos "$clips" --fps "$fps" --max-new-tokens 20 --no-direct "${extra[@]}" \
    --out "$out/serving_gpu.json"
echo "bench.serving: exit $?"
