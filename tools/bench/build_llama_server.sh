#!/usr/bin/env bash
# Build llama.cpp's llama-server for the serving comparison (tools/bench/serve_load.sh), from the
# same source as tools/gguf/llama_cpp_check.sh: llama-cpp-python 0.3.36's sdist (see
# tools/gguf/llama_cpp_source.sh), CPU-only, Release, GGML_NATIVE=ON, statically linked, without
# the web UI.
#
#   tools/bench/build_llama_server.sh WORK_DIR   -> WORK_DIR/llama-server-build/bin/llama-server
#
# By hand, not CI (it downloads and builds llama.cpp). A second run reuses the download and the build.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 WORK_DIR" >&2
    exit 2
fi
mkdir -p "$1"
W=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$W/llama-server-build
T0=$(date +%s)
step() { echo "== [$(( $(date +%s) - T0 ))s] $*"; }

# shellcheck source=../gguf/llama_cpp_source.sh
source "$ROOT/tools/gguf/llama_cpp_source.sh"

step "build llama-server $LLAMA_COMMIT"
if ! {
    if [ ! -f "$BUILD/CMakeCache.txt" ]; then
        # The web UI would be downloaded at build time (LLAMA_USE_PREBUILT_UI): off, the API is
        # all the benchmark needs.
        cmake -S "$LLAMA" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
            -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
            -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
            -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
            -DLLAMA_BUILD_COMMIT="$LLAMA_COMMIT" -DLLAMA_BUILD_NUMBER=0
    fi
    nice -n 10 cmake --build "$BUILD" -j2 --target llama-server
} >"$W/llama-server-build.log" 2>&1; then
    tail -30 "$W/llama-server-build.log"
    echo "llama-server build failed: $W/llama-server-build.log" >&2
    exit 1
fi
step "done: $BUILD/bin/llama-server"
