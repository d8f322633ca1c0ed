#!/usr/bin/env bash
# The serving comparison: bitnet-serve and llama.cpp's llama-server on the same weights, 8 slots
# and 2 threads each, run one after the other in interleaved rounds, each driven by bitnet-loadgen
# at C = 1, 2, 4, 8, 16 concurrent streams of token-id prompts with ignore_eos. Servers listen on
# 127.0.0.1 only; every level is a bounded number of requests.
#
#   tools/bench/serve_load.sh LLAMA_SERVER MODEL.bitnet MODEL.gguf [OUT.jsonl [OUT.svg]]
#
# LLAMA_SERVER: from tools/bench/build_llama_server.sh. MODEL.gguf: MODEL.bitnet exported for
# llama.cpp; a model without a tokenizer (the synthetic ones) also needs llama.cpp's test
# vocabulary, without which llama-server cannot stream (tools/bench/gguf_test_vocab.py):
#   target/release/bitnet-convert export-gguf MODEL.bitnet -o M.gguf --type tq2_0
#   python3 tools/bench/gguf_test_vocab.py M.gguf MODEL.gguf   # with gguf (tools/gguf/requirements.txt)
# Appends one JSON object per program, round and level to OUT.jsonl (default
# tools/bench/results/serve-load.jsonl), tagged with the program, round, machine and this run's
# start time, then draws this run into OUT.svg (default tools/bench/serve-load.svg).
# Environment, with defaults: ROUNDS=2 CONCURRENCY=1,2,4,8,16 REQUESTS_PER_USER=4 PROMPT_TOKENS=128
# MAX_TOKENS=64 WARMUP=2 PORT=18080; each slot's context is PROMPT_TOKENS + MAX_TOKENS rounded up
# to a multiple of 256.
set -euo pipefail
if [ $# -lt 3 ] || [ $# -gt 5 ]; then
  echo "usage: $0 LLAMA_SERVER MODEL.bitnet MODEL.gguf [OUT.jsonl [OUT.svg]]" >&2
  exit 2
fi
abs() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
llama_server=$(abs "$1")
model=$(abs "$2")
gguf=$(abs "$3")
out=$(abs "${4:-$(dirname "$0")/results/serve-load.jsonl}")
svg=$(abs "${5:-$(dirname "$0")/serve-load.svg}")
cd "$(dirname "$0")/../.."
for f in "$llama_server" "$model" "$gguf"; do
  [ -f "$f" ] || { echo "$f: no such file" >&2; exit 2; }
done
rounds=${ROUNDS:-2}
concurrency=${CONCURRENCY:-1,2,4,8,16}
prompt=${PROMPT_TOKENS:-128}
gen=${MAX_TOKENS:-64}
port=${PORT:-18080}
# llama.cpp rounds each slot's context up to a multiple of 256: both get that.
ctx=$(((prompt + gen + 255) / 256 * 256))
url=http://127.0.0.1:$port
machine=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
run_id=$(date -u +%Y-%m-%dT%H:%M:%SZ)
logs=$(mktemp -d)

cargo build --quiet --release -p bitnet-serve -p bitnet-loadgen
loadgen=target/release/bitnet-loadgen

pid=
stop() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
  fi
}
trap stop EXIT

# Start one server on $port, wait until it has loaded the model (at most 10 minutes).
serve() {
  local name=$1
  shift
  if curl -s -o /dev/null "$url/health"; then
    echo "something already listens on $url: set PORT" >&2
    exit 1
  fi
  "$@" >"$logs/$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    if curl -sf -o /dev/null "$url/health"; then return; fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 1
  done
  tail -20 "$logs/$name.log" >&2
  echo "$name did not come up on $url (log: $logs/$name.log)" >&2
  exit 1
}

for round in $(seq "$rounds"); do
  for program in bitnet-serve llama-server; do
    echo "== round $round: $program"
    if [ "$program" = bitnet-serve ]; then
      serve "$program" target/release/bitnet-serve -m "$model" --host 127.0.0.1 --port "$port" \
        -np 8 -t 2 -c "$ctx"
    else
      # -c is the context of all 8 slots together.
      serve "$program" "$llama_server" -m "$gguf" --host 127.0.0.1 --port "$port" \
        --parallel 8 -t 2 -c $((8 * ctx))
    fi
    "$loadgen" --url "$url" --concurrency "$concurrency" \
      --requests-per-user "${REQUESTS_PER_USER:-4}" --prompt-tokens "$prompt" --max-tokens "$gen" \
      --warmup "${WARMUP:-2}" --json "$out" --tag program="$program" \
      --tag round="$round" --tag machine="$machine" --tag run="$run_id"
    stop
  done
done
python3 tools/bench/plot_serve.py "$out" "$svg" "$run_id"
echo "results: $out, plot: $svg"
