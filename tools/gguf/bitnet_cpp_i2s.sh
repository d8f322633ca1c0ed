#!/usr/bin/env bash
# How testdata/gguf/bitnet_cpp/falcon_e_i2s.gguf was made: the Falcon-E fixture
# (testdata/fixtures/falcon-e) put through bitnet.cpp's own pipeline, as its setup_env.py runs it
# for `-q i2_s` on x86: utils/convert-hf-to-gguf-bitnet.py --outtype f32, then
# build/bin/llama-quantize ... I2_S 1. Nothing of bitnet.cpp is in this repository, and this
# script does not build it.
#
#   tools/gguf/bitnet_cpp_i2s.sh BITNET_CPP PYTHON [OUT.gguf]
#
# BITNET_CPP  a bitnet.cpp tree with build/bin/llama-quantize built. The committed file came from
#             microsoft/BitNet @ 1876a3e8 (its 3rdparty/llama.cpp = Eddie-Wang1120/llama.cpp
#             @ 1f86f058), the default x86 I2_S configuration of its setup_env.py (TL2 off),
#             Debian clang 14.0.6, native flags on an x86-64 machine with AVX-512 (every x86
#             build writes the same I2_S layout, 128-element blocks; ARM builds write 64).
# PYTHON      a Python with torch, numpy, safetensors, transformers, sentencepiece, PyYAML, tqdm
#             and BITNET_CPP's own 3rdparty/llama.cpp/gguf-py (gguf 0.10.0) importable. Used:
#             Python 3.11.7 with tools/fixtures/requirements.txt (torch 2.15.0, numpy 2.4.6,
#             transformers 5.23.0) plus `pip install --no-deps BITNET_CPP/3rdparty/llama.cpp/gguf-py`.
#             The converter only unpacks the packed ternary weights and divides them by
#             weight_scale in f32, so the torch version does not change the result.
# OUT.gguf    defaults to testdata/gguf/bitnet_cpp/falcon_e_i2s.gguf.
#
# Two departures from setup_env.py, both outside the ternary tensors:
# 1. The converter names a byte-level BPE pre-tokenizer by hashing the token ids of a test text
#    and refuses tokenizers it does not know. The fixture's tokenizer is a tiny one built like
#    Falcon-E's (see tools/fixtures/README.md), so its hash is not Falcon-E's; the converter's
#    get_vocab_base_pre is replaced by one returning "falcon_e", which is what it returns for the
#    real tiiuae/Falcon-E-* tokenizers (hash a6b57017...). Nothing else of the converter changes.
# 2. --output-tensor-type f16: llama-quantize stores output.weight as Q8_0 when its row length is
#    not a multiple of 256 (the fixture's 96), and as F16 for I2_S otherwise (real Falcon-E,
#    2048 and wider). F16 keeps the fixture's bf16 lm_head exactly, as the real files do.
#
# The run is deterministic: the same inputs give the same bytes, including the 28 bytes after each
# I2_S tensor's scale, which llama-quantize never writes (they hold whatever its reused work buffer
# held from the tensor before). Writes into a temporary directory, then OUT.gguf; prints sha256.
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: $0 BITNET_CPP PYTHON [OUT.gguf]" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BITNET_CPP=$(cd "$1" && pwd)
PYTHON=$2
OUT=${3:-$ROOT/testdata/gguf/bitnet_cpp/falcon_e_i2s.gguf}
QUANTIZE=$BITNET_CPP/build/bin/llama-quantize
[ -x "$QUANTIZE" ] || { echo "no $QUANTIZE" >&2; exit 1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# A copy, so that nothing is written next to the committed fixture.
cp -r "$ROOT/testdata/fixtures/falcon-e" "$TMP/falcon-e"

cd "$BITNET_CPP"
"$PYTHON" - "$TMP/falcon-e" --outtype f32 --outfile "$TMP/falcon-e-f32.gguf" <<'EOF'
import importlib.util
import sys

sys.argv[0] = "utils/convert-hf-to-gguf-bitnet.py"
sys.path.insert(0, "utils")  # for its `from convert import ...`
spec = importlib.util.spec_from_file_location("convert_hf_to_gguf_bitnet", sys.argv[0])
conv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(conv)
conv.Model.get_vocab_base_pre = lambda self, tokenizer: "falcon_e"
conv.args = conv.parse_args()
conv.main()
EOF
"$QUANTIZE" --output-tensor-type f16 "$TMP/falcon-e-f32.gguf" "$TMP/out.gguf" I2_S 1 \
    > "$TMP/quantize.log" 2>&1 || { cat "$TMP/quantize.log" >&2; exit 1; }
grep -E "converting to|quant size" "$TMP/quantize.log"
mv "$TMP/out.gguf" "$OUT"
sha256sum "$OUT"
