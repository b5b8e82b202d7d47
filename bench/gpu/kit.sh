#!/usr/bin/env bash
# Build gpu_kit/: the wheels the GPU machine lacks, for the `device` tool's carry (64 MiB a
# call). Its image has torch, transformers, opencv-python-headless, aiohttp and tqdm; vidcap
# also needs PyAV (decoding: 36 MB, abi3 for CPython >= 3.11), srt and webvtt-py (subtitles)
# and Pillow (transformers' image processor; installed there only if missing). No ffmpeg
# command: bench/bulk.py makes its clips and decodes them with PyAV then.
#
#   bash bench/gpu/kit.sh        # then: run(command="bash bench/gpu/run.sh", carry=["gpu_kit"])
set -euo pipefail
cd "$(dirname "$0")/../.."
pip=".venv/bin/pip"
[ -x "$pip" ] || { echo "kit.sh: run 'make install' first" >&2; exit 2; }
version() { .venv/bin/python -c "from importlib.metadata import version; print(version('$1'))"; }
rm -rf gpu_kit
mkdir -p gpu_kit/wheels
"$pip" wheel --no-deps -q -w gpu_kit/wheels \
    "av==$(version av)" "srt==$(version srt)" "webvtt-py==$(version webvtt-py)" \
    "pillow==$(version pillow)"
ls -l gpu_kit/wheels
du -sh gpu_kit
