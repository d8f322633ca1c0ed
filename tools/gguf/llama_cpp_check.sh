#!/usr/bin/env bash
# Load our GGUF exports of the demo model in llama.cpp itself and compare its logits with bitnet-run.
#
#   tools/gguf/llama_cpp_check.sh WORK_DIR
#
# By hand, not CI (it downloads and builds llama.cpp: 8¼ minutes on 2 busy cores the first time).
# Everything goes into WORK_DIR, and a second run reuses the download and the build:
#   venv/              cmake, ninja, numpy, tokenizers (pip wheels)
#   sdist/             llama-cpp-python 0.3.36 from PyPI (its vendor/llama.cpp is the llama.cpp we build)
#   llama.cpp-build/   CPU-only Release build of libllama and llama-bench
#   llama_logits       tools/gguf/llama_logits.c linked against that libllama
#   check/             the GGUF files, token ids, logits and results.txt
#
# What it checks, for the demo model exported to TQ2_0 and TQ1_0:
#   1. llama.cpp's tokenizer (rebuilt from our tokenizer.ggml.* keys) gives the same ids for
#      heldout.txt as tokenizer.json;
#   2. logits of the first N_TOKENS tokens of heldout.txt, llama.cpp vs `bitnet-run logits`;
#   3. the same against `bitnet-run` on a SiLU copy of the model (the demo checkpoint with
#      config.json's hidden_act set to silu): llama.cpp's `bitnet` graph uses SiLU whatever
#      `bitnet.hidden_act` says, and this tells a wrong activation apart from anything else;
#   4. greedy generation in llama.cpp (through its KV cache) checked token by token against
#      bitnet-run's argmax on the same sequence.
# It reports numbers (also in check/results.txt), it does not pass or fail on them.
# Environment: N_TOKENS (128), THREADS (2), SKIP_CARGO_BUILD=1 to use target/release as it is.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 WORK_DIR" >&2
    exit 2
fi
mkdir -p "$1"
W=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
N_TOKENS=${N_TOKENS:-128}
THREADS=${THREADS:-2}
BUILD=$W/llama.cpp-build
OUT=$W/check
T0=$(date +%s)
step() { echo "== [$(( $(date +%s) - T0 ))s] $*"; }

# shellcheck source=llama_cpp_source.sh
source "$ROOT/tools/gguf/llama_cpp_source.sh"

step "build llama.cpp $LLAMA_COMMIT (libllama, llama-bench)"
if ! {
    if [ ! -f "$BUILD/CMakeCache.txt" ]; then
        cmake -S "$LLAMA" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
            -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
            -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
            -DLLAMA_BUILD_COMMIT="$LLAMA_COMMIT" -DLLAMA_BUILD_NUMBER=0
    fi
    nice -n 10 cmake --build "$BUILD" -j2 --target llama llama-bench
} >"$W/llama.cpp-build.log" 2>&1; then
    tail -30 "$W/llama.cpp-build.log"
    echo "llama.cpp build failed: $W/llama.cpp-build.log" >&2
    exit 1
fi
cc -O2 -std=c11 -Wall -I"$LLAMA/include" -I"$LLAMA/ggml/include" "$ROOT/tools/gguf/llama_logits.c" \
    -L"$BUILD/bin" -lllama -Wl,-rpath,"$BUILD/bin" -o "$W/llama_logits"

step "build bitnet-convert and bitnet-run"
if [ "${SKIP_CARGO_BUILD:-0}" != 1 ]; then  # SKIP_CARGO_BUILD=1: use target/release as it is
    (cd "$ROOT" && cargo build --release -q -p bitnet-convert -p bitnet-run)
fi
CONVERT=$ROOT/target/release/bitnet-convert
RUN=$ROOT/target/release/bitnet-run

step "export the demo model"
mkdir -p "$OUT"
DEMO=$ROOT/testdata/demo
for ty in tq2_0 tq1_0; do
    "$CONVERT" export-gguf "$DEMO/demo.bitnet" -o "$OUT/demo-$ty.gguf" --type "$ty" --force >/dev/null
done
# The SiLU copy: the same checkpoint with hidden_act = silu, converted like the demo model.
rm -rf "$OUT/demo-silu-src"
mkdir -p "$OUT/demo-silu-src"
cp "$DEMO"/{config.json,generation_config.json,model.safetensors,tokenizer.json,tokenizer_config.json} \
    "$OUT/demo-silu-src/"
sed -i 's/"hidden_act": "relu2"/"hidden_act": "silu"/' "$OUT/demo-silu-src/config.json"
grep -q '"hidden_act": "silu"' "$OUT/demo-silu-src/config.json"
"$CONVERT" "$OUT/demo-silu-src" -o "$OUT/demo-silu.bitnet" --force >/dev/null

step "token ids"
"$W/llama_logits" -m "$OUT/demo-tq2_0.gguf" --tokenize "$DEMO/heldout.txt" >"$OUT/ids_llama_cpp.txt"
"$PY" - "$DEMO" "$OUT" "$N_TOKENS" <<'EOF'
import sys
from tokenizers import Tokenizer
demo, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
tok = Tokenizer.from_file(f"{demo}/tokenizer.json")
text = open(f"{demo}/heldout.txt", encoding="utf-8").read()
ours = [3056] + tok.encode(text, add_special_tokens=False).ids  # <|begin_of_text|> + text
theirs = [int(x) for x in open(f"{out}/ids_llama_cpp.txt").read().split()]
same = ours == theirs
first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
with open(f"{out}/tokenizer.txt", "w") as f:
    f.write(f"heldout.txt: tokenizer.json {len(ours)} ids, llama.cpp {len(theirs)} ids, "
            + ("identical\n" if same else f"first difference at {first}\n"))
open(f"{out}/ids.txt", "w").write(",".join(map(str, ours[:n])))
open(f"{out}/prompt_ids.txt", "w").write(",".join(map(str, ours[:16])))
EOF
cat "$OUT/tokenizer.txt"

step "logits: bitnet-run and llama.cpp ($N_TOKENS tokens)"
IDS=$(cat "$OUT/ids.txt")
"$RUN" logits -m "$DEMO/demo.bitnet" -t "$THREADS" -ctk f32 -ctv f32 --token-ids "$IDS" -o "$OUT/bitnet_run.npy"
"$RUN" logits -m "$OUT/demo-silu.bitnet" -t "$THREADS" -ctk f32 -ctv f32 --token-ids "$IDS" -o "$OUT/bitnet_run_silu.npy"
for ty in tq2_0 tq1_0; do
    "$W/llama_logits" -m "$OUT/demo-$ty.gguf" -t "$THREADS" -i "$OUT/ids.txt" -o "$OUT/llama_cpp_$ty.npy"
    # greedy: 16 prompt tokens + 48 generated, then bitnet-run on the whole sequence
    gen=$("$W/llama_logits" -m "$OUT/demo-$ty.gguf" -t "$THREADS" -i "$OUT/prompt_ids.txt" -n 48)
    echo "$(cat "$OUT/prompt_ids.txt"),$gen" >"$OUT/greedy_$ty.txt"
    for m in demo:"$DEMO/demo.bitnet" silu:"$OUT/demo-silu.bitnet"; do
        "$RUN" logits -m "${m#*:}" -t "$THREADS" -ctk f32 -ctv f32 --token-ids "$(cat "$OUT/greedy_$ty.txt")" \
            -o "$OUT/greedy_${ty}_bitnet_run_${m%%:*}.npy"
    done
done

step "compare"
"$PY" - "$OUT" "$DEMO" "$LLAMA_COMMIT" <<'EOF' | tee "$OUT/results.txt"
import sys
import numpy as np
out, demo, commit = sys.argv[1], sys.argv[2], sys.argv[3]
ref = {"relu2": np.load(f"{out}/bitnet_run.npy"), "silu": np.load(f"{out}/bitnet_run_silu.npy")}
hf = np.load(f"{demo}/logits_heldout.npy")  # transformers f32, positions 0..31 of the same ids
n = ref["relu2"].shape[0]
print(f"llama.cpp {commit} (llama-cpp-python 0.3.36) vs bitnet-run, demo model, "
      f"first {n} tokens of heldout.txt, logits of every position")
print(open(f"{out}/tokenizer.txt").read().strip())

def stats(a, b):
    d = np.abs(a - b)
    rel = np.linalg.norm(a - b) / np.linalg.norm(b)
    agree = int((a.argmax(-1) == b.argmax(-1)).sum())
    return d.max(), d.mean(), rel, agree

print(f"{'llama.cpp':10} {'bitnet-run model':22} {'max|d|':>8} {'mean|d|':>8} "
      f"{'rel L2':>8} {'argmax':>9} {'greedy':>7}")
for ty in ["tq2_0", "tq1_0"]:
    l = np.load(f"{out}/llama_cpp_{ty}.npy")
    assert l.shape == ref["relu2"].shape, (l.shape, ref["relu2"].shape)
    seq = [int(x) for x in open(f"{out}/greedy_{ty}.txt").read().split(",")]
    for name, label in [("relu2", "demo.bitnet (ReLU²)"), ("silu", "SiLU copy")]:
        mx, mn, rel, agree = stats(l, ref[name])
        g = np.load(f"{out}/greedy_{ty}_bitnet_run_{'demo' if name == 'relu2' else 'silu'}.npy")
        ok = sum(int(g[i].argmax()) == seq[i + 1] for i in range(15, len(seq) - 1))
        print(f"{ty:10} {label:22} {mx:8.4f} {mn:8.4f} {rel:8.4f} {agree:4d}/{n:<4d} {ok:3d}/{len(seq) - 16}")
r, s = ref["relu2"], ref["silu"]
mx, mn, rel, agree = stats(s, r)
print(f"for scale: bitnet-run SiLU copy vs ReLU² model: max|d| {mx:.4f}, mean|d| {mn:.4f}, "
      f"rel L2 {rel:.4f}, argmax {agree}/{n}")
k = hf.shape[0]
mx, mn, rel, agree = stats(r[:k], hf)
print(f"for scale: bitnet-run vs transformers f32 (positions 0..{k - 1}): max|d| {mx:.4f}, "
      f"mean|d| {mn:.4f}, rel L2 {rel:.4f}, argmax {agree}/{k}")
print("rel L2 = ||a - b||_2 / ||b||_2 over all logits; argmax = positions whose top token agrees; "
      "greedy = llama.cpp's greedy tokens (16-token prompt + 48 through its KV cache) that are also "
      "bitnet-run's argmax on the same sequence")
EOF
step "done: $OUT/results.txt"
