#!/usr/bin/env python3
"""Run our `qwen2` and `qwen3` GGUF exports in llama.cpp and compare its next-token distribution
with `bitnet-run logits` on the same weights.

    tools/gguf/llama_cpp_qwen_check.py LLAMA_SERVER WORK_DIR

By hand, not CI (LLAMA_SERVER from tools/bench/build_llama_server.sh; needs numpy and gguf, as in
tools/gguf/requirements.txt). testdata/gguf/qwen2_tq.gguf and qwen3_tq.gguf (written by the gguf
package) are imported, exported again with `--type tq2_0` (qwen3's, which has no tokenizer, gets
llama.cpp's test vocabulary: tools/bench/gguf_test_vocab.py) and loaded in llama-server. For 20
random prompts of 3 to 30 token ids (drawing another where llama-server returns no probabilities:
it holds them back for a token that ends inside a UTF-8 character), llama-server's greedy next token and the log-probabilities of
its top 5 are compared with the softmax of bitnet-run's last logits row. Both run the same ternary
weights but quantize activations differently (llama.cpp: Q8_K per 256 values in the ternary
products, float elsewhere; bitnet-run: int8 per token, as BitNet does), so the figures are a
closeness, not an equality.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np

from llama_server import llama_server, post, run

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "target" / "release"


def completion(prompt):
    reply = post("/completion", {"prompt": prompt, "n_predict": 1, "n_probs": 5, "temperature": 0,
                                 "cache_prompt": False, "ignore_eos": True})
    # llama-server holds back the probabilities of a token that ends inside a UTF-8 character.
    probs = reply.get("completion_probabilities")
    return probs[0]["top_logprobs"] if probs else None


def compare(server, gguf, model, vocab, work):
    with llama_server(server, gguf, 128):
        rng = np.random.default_rng(1)
        agree, worst, n = 0, 0.0, 0
        while n < 20:
            prompt = [int(x) for x in rng.integers(0, vocab, int(rng.integers(3, 31)))]
            top = completion(prompt)
            if top is None:
                continue
            n += 1
            npy = work / "logits.npy"
            run(RELEASE / "bitnet-run", "logits", "-m", model, "--token-ids", ",".join(map(str, prompt)),
                "-o", npy, "--force")
            logits = np.load(npy)[-1].astype(np.float64)
            logp = logits - logits.max()
            logp -= np.log(np.exp(logp).sum())
            agree += int(np.argmax(logits)) == top[0]["id"]
            worst = max(worst, max(abs(logp[t["id"]] - t["logprob"]) for t in top))
        return agree, n, worst


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    server, work = sys.argv[1], Path(sys.argv[2]).resolve()
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "bitnet-convert", "-p", "bitnet-run"],
                   cwd=ROOT, check=True)
    for name, vocab in [("qwen2_tq", 352), ("qwen3_tq", 64)]:
        model, gguf = work / f"{name}.bitnet", work / f"{name}.tq2_0.gguf"
        run(RELEASE / "bitnet-convert", ROOT / "testdata" / "gguf" / f"{name}.gguf", "-o", model, "--force")
        run(RELEASE / "bitnet-convert", "export-gguf", model, "-o", gguf, "--type", "tq2_0", "--force")
        if name == "qwen3_tq":
            with_vocab = work / f"{name}.test-vocab.gguf"
            run(sys.executable, ROOT / "tools" / "bench" / "gguf_test_vocab.py", gguf, with_vocab)
            gguf = with_vocab
        agree, n, worst = compare(server, gguf, model, vocab, work)
        print(f"{name}: llama.cpp's greedy next token equals bitnet-run's in {agree}/{n} random prompts; "
              f"largest |log-probability difference| over llama.cpp's top 5: {worst:.3f}")


if __name__ == "__main__":
    main()
