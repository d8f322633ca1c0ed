# Sourced by tools/gguf/llama_cpp_check.sh and tools/bench/build_llama_server.sh: the llama.cpp
# source that llama-cpp-python 0.3.36's sdist vendors, and the Python tools to build it, in $W:
#   venv/    cmake, ninja, numpy, scikit-build-core, tokenizers (pip wheels)
#   sdist/   llama-cpp-python 0.3.36 from PyPI, checked against its SHA-256
#   src/     the sdist unpacked (src/llama_cpp_python-0.3.36/vendor/llama.cpp)
# Needs W (absolute) and a step() function. Sets LLAMA (the llama.cpp source directory),
# LLAMA_COMMIT (the commit it vendors) and PY, and puts venv/bin first on PATH.
LCP_VERSION=0.3.36
LCP_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
SDIST=$W/sdist/llama_cpp_python-$LCP_VERSION.tar.gz
LLAMA=$W/src/llama_cpp_python-$LCP_VERSION/vendor/llama.cpp

step "python tools"
if [ ! -x "$W/venv/bin/cmake" ]; then
    python3 -m venv "$W/venv"
    "$W/venv/bin/pip" install -q cmake==4.4.4 ninja==1.13.2 numpy==2.4.6 \
        scikit-build-core==1.1.2 tokenizers==0.23.3
fi
PY=$W/venv/bin/python
export PATH=$W/venv/bin:$PATH

step "llama-cpp-python $LCP_VERSION sdist"
if [ ! -f "$SDIST" ]; then
    # --no-build-isolation: pip only reads the sdist's metadata with the scikit-build-core
    # installed above, instead of building cmake from source for an isolated build environment.
    "$W/venv/bin/pip" download -q --no-deps --no-build-isolation --no-binary llama-cpp-python \
        "llama-cpp-python==$LCP_VERSION" -d "$W/sdist"
fi
echo "$LCP_SHA256  $SDIST" | sha256sum -c --quiet
if [ ! -f "$LLAMA/CMakeLists.txt" ]; then
    mkdir -p "$W/src"
    tar -xzf "$SDIST" -C "$W/src"
fi
# The sdist has no git history; llama-cpp-python's CHANGELOG names the vendored commit.
LLAMA_COMMIT=$(grep -m1 -o 'ggml-org/llama.cpp@[0-9a-f]*' \
    "$W/src/llama_cpp_python-$LCP_VERSION/CHANGELOG.md" | cut -d@ -f2)
