#!/usr/bin/env bash
# Build gpu_ts_kit/: TorchServe for the GPU machine, whose image has no Java and no
# TorchServe, in one `device` carry (64 MiB a call; #19 item 4):
#   jre.tar.xz  a Java 17 runtime cut to the modules TorchServe's frontend uses (jlink,
#               --strip-debug --compress=2)
#   site/       torchserve and torch-model-archiver (as installed here) and psutil, with
#               TorchServe's model-server.jar repacked without what it never loads on Linux
#               (Groovy, JavaParser, Ant, JUnit/TestNG, macOS/Windows native libraries)
#   bin/        the two commands, as launchers of those packages (no pip on the machine)
# Needs gpu_kit/ (bench/gpu/kit.sh) beside it there: PyAV etc. for the client's decoding.
#
#   bash bench/gpu/ts_kit.sh    # then, after run.sh in the same warm machine:
#   run(command="bash bench/gpu/torchserve.sh", carry=["gpu_ts_kit"])
set -euo pipefail
cd "$(dirname "$0")/../.."
pip=".venv/bin/pip"
[ -x "$pip" ] || { echo "ts_kit.sh: run 'make install' first" >&2; exit 2; }
command -v jlink >/dev/null || { echo "ts_kit.sh: jlink not found (a JDK 17)" >&2; exit 2; }
version() { .venv/bin/python -c "from importlib.metadata import version; print(version('$1'))"; }
kit="$PWD/gpu_ts_kit"
rm -rf "$kit"
mkdir -p "$kit/bin" "$kit/site"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

jlink --add-modules java.base,java.logging,java.management,java.naming,java.sql,java.xml,java.desktop,java.scripting,jdk.unsupported,jdk.management,jdk.crypto.ec \
    --strip-debug --compress=2 --no-header-files --no-man-pages --output "$work/jre"
tar -C "$work" -cJf "$kit/jre.tar.xz" jre

"$pip" download --no-deps -q -d "$work/wheels" \
    "torchserve==$(version torchserve)" "torch-model-archiver==$(version torch-model-archiver)" \
    "psutil==$(version psutil)"
"$pip" install --no-deps -q --no-compile --target "$kit/site" "$work"/wheels/*.whl
rm -rf "$kit"/site/bin "$kit"/site/*.dist-info/RECORD

jar="$kit/site/ts/frontend/model-server.jar"
mkdir "$work/jar"
(cd "$work/jar" && unzip -q "$jar" &&
    rm -rf groovy groovyjarjar* org/codehaus org/apache/groovy com/github/javaparser \
        org/apache/tools junit org/testng testng* META-INF/groovy* \
        META-INF/native/*windows* META-INF/native/*osx* META-INF/native/*macos* \
        META-INF/native/*.jnilib META-INF/native/*.dll META-INF/native/*aarch* \
        META-INF/native/osx META-INF/native/windows32 META-INF/native/windows64 &&
    rm -f "$jar" && zip -q -r -9 "$jar" .)

cat > "$kit/bin/torchserve" <<'SH'
#!/bin/sh
exec "${PYTHON:-python3}" -c 'import sys; from ts.model_server import start; sys.argv[0] = "torchserve"; start()' "$@"
SH
cat > "$kit/bin/torch-model-archiver" <<'SH'
#!/bin/sh
exec "${PYTHON:-python3}" -c 'import sys; from model_archiver.model_packaging import generate_model_archive as g; sys.argv[0] = "torch-model-archiver"; g()' "$@"
SH
chmod +x "$kit"/bin/*
ls -l "$kit" "$kit/site/ts/frontend"
du -sh "$kit"
