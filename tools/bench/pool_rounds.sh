#!/usr/bin/env bash
# The thread-pool comparison of BENCHMARKS.md ("Thread pools"): interleaved rounds of the
# spinning pool and rayon (BITNET_POOL), and optionally an older bitnet-run binary, on both x86
# kernel paths at 1 and 2 threads.
# Usage: tools/bench/pool_rounds.sh MODEL.bitnet [OLD_BITNET_RUN] > results.jsonl
set -euo pipefail
cd "$(dirname "$0")/../.."
model=$1
old=${2:-}
cargo build --quiet --release -p bitnet-run
new=target/release/bitnet-run
for round in 1 2; do
  for kernel in avx512 avx2; do
    for t in 2 1; do
      for which in old-spin new-spin new-rayon; do
        bin=$new pool=spin
        if [ "$which" = old-spin ]; then [ -n "$old" ] || continue; bin=$old; fi
        if [ "$which" = new-rayon ]; then pool=rayon; fi
        BITNET_POOL=$pool "$bin" bench -m "$model" -p 128 -n 64 -t "$t" -r 3 --kernel "$kernel" --json \
          2>/dev/null | sed "s/^{/{\"round\":$round,\"which\":\"$which\",/"
      done
    done
  done
done
