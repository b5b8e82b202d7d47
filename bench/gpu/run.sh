#!/usr/bin/env bash
# On the GPU machine (the `device` tool: run(command="bash bench/gpu/run.sh", carry=["gpu_kit"])):
# install what it lacks from gpu_kit/ (bench/gpu/kit.sh) beside the repository, write the
# machine's facts, then #19's first measurements: bench/bulk.py gpu (the engine beside
# model-only and decode-only, GPU use, a profile) and bench/model_step.py (the model step's
# candidate speed-ups, with the tokens each gives). Everything lands in
# $OUT (default bench/results/gpu_run/). GPU_DRY_RUN=1: the same steps with --dry-run (tiny
# model on the CPU): what checks this script where there is no GPU.
set -uo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-python3}
out=${OUT:-bench/results/gpu_run}
mkdir -p "$out"
site="$PWD/.gpu_site"
mkdir -p "$site"
for pair in av:av srt:srt webvtt:webvtt_py PIL:pillow; do
    module=${pair%%:*}
    wheel=${pair##*:}
    if ! "$python" -c "import $module" 2>/dev/null; then
        "$python" -m pip install -q --no-deps --no-index --target "$site" gpu_kit/wheels/"$wheel"-*.whl
    fi
done
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
{
    date -u
    nvidia-smi 2>&1 || echo "no nvidia-smi"
    "$python" -c "import platform, torch, transformers, av; print('python', platform.python_version(), '| torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__, '| av', av.__version__)"
    nproc
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
dry=()
[ "${GPU_DRY_RUN:-0}" = 1 ] && dry=(--dry-run)
# Each step writes its JSON as it ends; a step that overruns its share is stopped and the
# next one still runs (the device allows 600 s a call).
# (the clips stay in .gpu_clips/ for bench/gpu/torchserve.sh, the next call)
timeout "${BULK_S:-300}" "$python" bench/bulk.py gpu "${dry[@]}" --clips-dir .gpu_clips \
    --out "$out/bulk_gpu.json"
echo "bulk.py gpu: exit $?"
timeout "${STEP_S:-240}" "$python" bench/model_step.py "${dry[@]}" --out "$out/model_step.json"
echo "model_step.py: exit $?"
