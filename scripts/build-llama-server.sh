#!/usr/bin/env bash
# Build llama.cpp's llama-server from the llama.cpp that the installed llama-cpp-python vendors, so the server the tests
# start (tests/test_llama_server.py) runs the same llama.cpp as credo's llamacpp engine. Idempotent: an existing binary
# is only reported. Usage: scripts/build-llama-server.sh [VENV] (default .venv); the binary goes to VENV/bin/llama-server.
set -euo pipefail

VENV=${1:-.venv}
PY="$VENV/bin/python"
BIN="$VENV/bin/llama-server"
WORK=${LLAMA_SERVER_BUILD_DIR:-build/llama-server}  # the sdist and the cmake tree; /build/ is git-ignored
JOBS=${JOBS:-2}

if [ -x "$BIN" ]; then
  echo "llama-server already built: $("$BIN" --version 2>&1 | grep -m1 version)"
  exit 0
fi

VERSION=$("$PY" -c "import importlib.metadata as m; print(m.version('llama_cpp_python'))")
SDIST="$WORK/llama_cpp_python-$VERSION.tar.gz"
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
mkdir -p "$WORK"
if [ ! -f "$SDIST" ]; then
  "$PY" -m pip download -q "llama_cpp_python==$VERSION" --no-binary :all: --no-deps -d "$WORK"
fi
if [ ! -f "$SRC/CMakeLists.txt" ]; then
  tar -xzf "$SDIST" -C "$WORK"
fi

start=$(date +%s)
# GGML_NATIVE=OFF: a baseline x86-64 binary that runs on any CI CPU (it builds as fast as a native one; speed is no
# matter on tiny models). Static libraries keep the binary self-contained once copied into the venv. No web UI (the
# prebuilt one would be downloaded), no HTTPS, no tests, examples or other tools.
cmake -S "$SRC" -B "$WORK/cmake" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_OPENMP=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON >"$WORK/cmake.log"
cmake --build "$WORK/cmake" --config Release --target llama-server -j "$JOBS" >"$WORK/build.log"
install -m 755 "$WORK/cmake/bin/llama-server" "$BIN"
echo "built llama-server from llama-cpp-python $VERSION in $(($(date +%s) - start)) s: $("$BIN" --version 2>&1 | grep -m1 version)"
