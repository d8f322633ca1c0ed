#!/usr/bin/env python3
"""Write testdata/demo/samples.txt: greedy and sampled continuations from the demo checkpoint.

The checkpoint is loaded with transformers in float32 (online BitNet quantization, as in
reference.py). Each prompt is encoded with the tokenizer's post-processor, i.e. with one
<|begin_of_text|> in front. Greedy: argmax, max_new_tokens tokens. Sampled: temperature 0.8,
top_k 40, torch.manual_seed(SEED + prompt index) before each call. Generation stops early at
<|end_of_text|> or <|eot_id|> (generation_config.json).

Usage (from the repository root):
    OMP_NUM_THREADS=1 /work/venv/bin/python tools/demo/sample.py --model testdata/demo
"""

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

PROMPTS = [
    "ROMEO.\nBut soft, what light",
    "HAMLET.\nTo be, or not to be,",
    "KING.\nMy lords,",
    "PROSPERO.\n",
    "LADY MACBETH.\n",  # Macbeth is held out: never seen in training
    "ACT I.\n\nScene I.",
]
SEED = 1234


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="testdata/demo")
    ap.add_argument("--out", default=None, help="default: <model>/samples.txt")
    ap.add_argument("--greedy-tokens", type=int, default=60)
    ap.add_argument("--sampled-tokens", type=int, default=120)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = args.out or os.path.join(args.model, "samples.txt")

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()

    lines = [
        "Samples from the tiny BitNet b1.58 Shakespeare demo model (tools/demo/sample.py).",
        f"transformers {transformers.__version__}, torch {torch.__version__}, float32, online BitNet quantization.",
        "Each prompt is prefixed with <|begin_of_text|>. Greedy = argmax; sampled = temperature 0.8, top_k 40,",
        f"torch.manual_seed({SEED} + prompt index). The prompt is shown, then the continuation up to the",
        "token limit or <|end_of_text|>/<|eot_id|>.",
        "",
    ]
    for i, prompt in enumerate(PROMPTS):
        enc = tok(prompt, return_tensors="pt")
        n0 = enc["input_ids"].shape[1]
        with torch.no_grad():
            g = model.generate(**enc, do_sample=False, max_new_tokens=args.greedy_tokens)
            torch.manual_seed(SEED + i)
            s = model.generate(**enc, do_sample=True, temperature=0.8, top_k=40, top_p=1.0,
                               max_new_tokens=args.sampled_tokens)
        for kind, ids in (("greedy", g), ("sampled", s)):
            text = prompt + tok.decode(ids[0, n0:], skip_special_tokens=False)
            lines.append(f"===== prompt {i + 1} ({kind}, {ids.shape[1] - n0} new tokens): {prompt!r}")
            lines.append(text)
            lines.append("")
    with open(out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
