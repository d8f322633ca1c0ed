#!/usr/bin/env bash
# Reproduce BENCHMARKS.md: synthetic models of the real shapes, then bitnet-run bench.
# Usage: tools/bench/run.sh [MODEL_DIR] [RESULTS_DIR]   (needs ~12 GB of disk for the models)
set -euo pipefail
cd "$(dirname "$0")/../.."
models=${1:-target/bench-models}
results=${2:-tools/bench/results}
mkdir -p "$models" "$results"
cargo build --release -p bitnet-convert -p bitnet-run
convert=target/release/bitnet-convert
run=target/release/bitnet-run

for emb in f16 i8 q4; do
  [ -f "$models/2b4t-$emb.bitnet" ] || $convert synthetic --like bitnet-2b4t --embeddings $emb -o "$models/2b4t-$emb.bitnet"
done
for shape in llama3-8b-1.58 falcon3-10b; do
  [ -f "$models/$shape.bitnet" ] || $convert synthetic --like $shape -o "$models/$shape.bitnet"
done

for emb in f16 i8 q4; do
  $run bench -m "$models/2b4t-$emb.bitnet" -p 128,512 -n 64 -t 1,2 -r 5 --bandwidth --json > "$results/2b4t-$emb.jsonl"
done
for shape in llama3-8b-1.58 falcon3-10b; do
  $run bench -m "$models/$shape.bitnet" -p 128 -n 32 -t 2 -r 3 --bandwidth --json > "$results/$shape.jsonl"
done
tools/bench/pool_rounds.sh "$models/2b4t-f16.bitnet" > "$results/pool-rounds.jsonl"
python3 tools/bench/plot.py "$results" tools/bench/tokens-per-second.svg
