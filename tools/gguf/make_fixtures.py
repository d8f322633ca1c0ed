#!/usr/bin/env python3
"""Write the GGUF fixtures of testdata/gguf/ with the `gguf` package's own writer and quantizers.

They are files another program wrote (not bitnet-convert), for the import tests:

- bitnet_tq.gguf: llama.cpp architecture `bitnet` with `bitnet.hidden_act = relu2` (2B-4T style:
  sub-norms, tied embeddings), projections alternately TQ2_0 and TQ1_0 as quantized by
  `gguf.quants`, some 256-blocks all zero (the quantizer writes d = 0 for them), F16 embedding,
  F32 norms, and the byte-level BPE tokenizer of testdata/fixtures/bitnet-2b4t/tokenizer.json as
  `tokenizer.ggml.*` (pre `llama-bpe`, no `tokenizer.huggingface.json`).
- llama_q8_0_q6_k.gguf: architecture `llama` with quantized embeddings, as llama.cpp's quantized
  files have them: `token_embd` Q8_0 (quantized by `gguf.quants`), `output` Q6_K (random blocks
  with finite scales: `gguf.quants` has no Q6_K quantizer), TQ2_0 and F16 projections, no
  tokenizer (hidden 256: K-quant rows are whole 256-element super-blocks).
- bitnet_q4_0.gguf: architecture `bitnet` (tied) with a Q4_0 `token_embd` (quantized by
  `gguf.quants`), which imports without loss as `.bitnet`'s `q4_b32`; F16 ternary projections, no
  tokenizer.
- blocks/dequant.gguf: not a model but test vectors of every block type bitnet-convert
  dequantizes (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K): tensor `<TYPE>` holds random
  blocks with finite f16 scales, `<TYPE>.f32` what `gguf.quants.dequantize` makes of them.
- qwen2_tq.gguf: architecture `qwen2` (tied, q/k/v biases in F32), TQ2_0 and TQ1_0 projections,
  and the byte-level BPE tokenizer of testdata/fixtures/qwen2-bitnet/tokenizer.json with
  `tokenizer.ggml.pre = qwen2`; every tensor named by the `gguf` package's own map from the
  Hugging Face names (as llama.cpp's converter names them: `blk.0.attn_q.bias`).
- qwen3_tq.gguf: architecture `qwen3` (untied, per-head q/k RMSNorm, heads × head_dim ≠ hidden),
  TQ2_0 projections, named the same way, no tokenizer.
- llama_f16_ternary.gguf: architecture `llama` (no sub-norms, SiLU, untied, head_dim 40 as
  Falcon3) whose projections are F16, BF16 and F32 tensors holding ternary values times one
  scale (what llama.cpp's converter writes for --outtype f16; K need not be a multiple of 256),
  `attn_q`/`attn_k` rows in llama.cpp's interleaved RoPE order, and the SentencePiece tokenizer
  of testdata/fixtures/bitnet-1bitllm/tokenizer.model (`tokenizer.ggml.model = llama`).

The weights are deterministic (numpy's PCG64 with fixed seeds). `--check DIR` writes them to a
temporary directory and fails unless they equal the files in DIR byte for byte.

Usage: make_fixtures.py OUT_DIR | make_fixtures.py --check testdata/gguf
Needs: gguf, numpy, sentencepiece (versions in requirements.txt beside this file).
"""

import json
import os
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "testdata" / "fixtures"


def ternary(rng, rows, cols, zero_blocks=0):
    t = rng.integers(-1, 2, size=(rows, cols)).astype(np.float32)
    flat = t.reshape(-1)
    for b in range(zero_blocks):
        flat[b * 512: b * 512 + 256] = 0  # every other 256-block of the first ones
    return t


def permute(w, n_head):
    """HF rotate-half rows to llama.cpp's interleaved pairs (as convert_hf_to_gguf's LlamaModel)."""
    d = w.shape[0] // n_head
    return w.reshape(n_head, 2, d // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def add_bpe_tokenizer(w, fixture="bitnet-2b4t", pre="llama-bpe"):
    tj = json.loads((FIX / fixture / "tokenizer.json").read_text())
    cfg = json.loads((FIX / fixture / "tokenizer_config.json").read_text())
    vocab = tj["model"]["vocab"]
    added = {t["id"]: t for t in tj["added_tokens"]}
    n = max(list(vocab.values()) + list(added)) + 1
    tokens, types = [None] * n, [gguf.TokenType.NORMAL] * n
    for tok, i in vocab.items():
        tokens[i] = tok
    for i, t in added.items():
        tokens[i] = t["content"]
        types[i] = gguf.TokenType.CONTROL if t["special"] else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|begin_of_text|>"))
    w.add_eos_token_id(tokens.index("<|end_of_text|>"))
    w.add_eot_token_id(tokens.index("<|eot_id|>"))
    w.add_add_bos_token(True)
    w.add_chat_template(cfg["chat_template"])
    return n


def add_spm_tokenizer(w):
    import sentencepiece as spm

    path = FIX / "bitnet-1bitllm" / "tokenizer.model"
    sp = spm.SentencePieceProcessor(model_file=str(path))

    def kind(i):
        if sp.is_unknown(i):
            return gguf.TokenType.UNKNOWN
        if sp.is_control(i):
            return gguf.TokenType.CONTROL
        if sp.is_byte(i):
            return gguf.TokenType.BYTE
        if sp.is_unused(i):
            return gguf.TokenType.UNUSED
        return gguf.TokenType.NORMAL

    tokens = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    scores = [sp.get_score(i) for i in range(sp.get_piece_size())]
    types = [kind(i) for i in range(sp.get_piece_size())]
    added = json.loads((FIX / "bitnet-1bitllm" / "added_tokens.json").read_text())
    for content, i in sorted(added.items(), key=lambda kv: kv[1]):
        assert i == len(tokens), (content, i)
        tokens.append(content)
        scores.append(-1000.0)
        types.append(gguf.TokenType.CONTROL)
    cfg = json.loads((FIX / "bitnet-1bitllm" / "config.json").read_text())
    n = cfg["vocab_size"]
    while len(tokens) < n:
        tokens.append(f"[PAD{len(tokens)}]")
        scores.append(-1000.0)
        types.append(gguf.TokenType.UNUSED)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_pad_token_id(cfg["pad_token_id"])
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    return n


def model_keys(w, h, ff, layers, heads, kv, ctx=128, theta=500000.0, eps=1e-5, vocab=None):
    w.add_context_length(ctx)
    w.add_embedding_length(h)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(eps)
    w.add_rope_dimension_count(h // heads)
    if vocab:
        w.add_vocab_size(vocab)


def proj(w, name, t, scale, qtype, rng_dtype=None):
    x = (t * np.float32(scale)).astype(np.float32)
    if qtype in (T.TQ1_0, T.TQ2_0):
        w.add_tensor(name, gguf.quants.quantize(x, qtype), raw_dtype=qtype)
    elif qtype == T.F16:
        w.add_tensor(name, x.astype(np.float16))
    elif qtype == T.BF16:
        w.add_tensor(name, gguf.quants.quantize(x, T.BF16), raw_dtype=T.BF16)
    else:
        w.add_tensor(name, x)


def norms(w, rng, name, n):
    w.add_tensor(name, (1.0 + rng.standard_normal(n) * 0.05).astype(np.float32))


def bitnet_tq(path):
    rng = np.random.default_rng(2024)
    w = gguf.GGUFWriter(str(path), "bitnet")
    w.add_name("bitnet-2b4t-fixture")
    h, ff, heads, kv, hd = 256, 256, 4, 2, 64
    n_vocab = add_bpe_tokenizer(w)
    model_keys(w, h, ff, 1, heads, kv, vocab=n_vocab)
    w.add_string("bitnet.hidden_act", "relu2")
    w.add_tensor("token_embd.weight", (rng.standard_normal((n_vocab, h)) * 0.5).astype(np.float16))
    norms(w, rng, "output_norm.weight", h)
    p = "blk.0."
    norms(w, rng, p + "attn_norm.weight", h)
    norms(w, rng, p + "attn_sub_norm.weight", h)
    norms(w, rng, p + "ffn_norm.weight", h)
    norms(w, rng, p + "ffn_sub_norm.weight", ff)
    shapes = {"attn_q": (heads * hd, h), "attn_k": (kv * hd, h), "attn_v": (kv * hd, h),
              "attn_output": (h, heads * hd), "ffn_gate": (ff, h), "ffn_up": (ff, h), "ffn_down": (h, ff)}
    for i, (name, shape) in enumerate(shapes.items()):
        qtype = T.TQ2_0 if i % 2 == 0 else T.TQ1_0
        proj(w, p + name + ".weight", ternary(rng, *shape, zero_blocks=2), 0.0625 + i / 64, qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def qwen(path, arch):
    """A one-layer Qwen2 or Qwen3 model, its tensors named by gguf's map from Hugging Face names."""
    rng = np.random.default_rng({"qwen2": 2, "qwen3": 3}[arch])
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"{arch}-bitnet-fixture")
    h, ff, heads, kv = 256, 512, 4, 2
    hd = 64 if arch == "qwen2" else 128  # qwen3: heads x head_dim = 512 != 256
    n_vocab = add_bpe_tokenizer(w, "qwen2-bitnet", "qwen2") if arch == "qwen2" else 64
    model_keys(w, h, ff, 1, heads, kv, theta=1000000.0, eps=1e-6, vocab=n_vocab)
    if arch == "qwen3":
        w.add_key_length(hd)
        w.add_value_length(hd)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2 if arch == "qwen2" else gguf.MODEL_ARCH.QWEN3, 1)

    def name(hf):
        return names.get_name(hf, try_suffixes=(".weight", ".bias"))

    w.add_tensor(name("model.embed_tokens.weight"), (rng.standard_normal((n_vocab, h)) * 0.5).astype(np.float16))
    if arch == "qwen3":
        w.add_tensor(name("lm_head.weight"), (rng.standard_normal((n_vocab, h)) * 0.5).astype(np.float16))
    norms(w, rng, name("model.norm.weight"), h)
    p = "model.layers.0."
    norms(w, rng, name(p + "input_layernorm.weight"), h)
    norms(w, rng, name(p + "post_attention_layernorm.weight"), h)
    shapes = {"self_attn.q_proj": (heads * hd, h), "self_attn.k_proj": (kv * hd, h),
              "self_attn.v_proj": (kv * hd, h), "self_attn.o_proj": (h, heads * hd),
              "mlp.gate_proj": (ff, h), "mlp.up_proj": (ff, h), "mlp.down_proj": (h, ff)}
    for i, (hf, shape) in enumerate(shapes.items()):
        qtype = T.TQ1_0 if arch == "qwen2" and i % 2 else T.TQ2_0
        proj(w, name(p + hf + ".weight"), ternary(rng, *shape), 0.125 + i / 32, qtype)
        if arch == "qwen2" and hf in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            w.add_tensor(name(p + hf + ".bias"), (rng.standard_normal(shape[0]) * 0.1).astype(np.float32))
    if arch == "qwen3":
        norms(w, rng, name(p + "self_attn.q_norm.weight"), hd)
        norms(w, rng, name(p + "self_attn.k_norm.weight"), hd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_f16_ternary(path):
    rng = np.random.default_rng(11)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("falcon3-bitnet-fixture")
    h, ff, heads, kv, hd = 64, 96, 2, 1, 40  # head_dim 40 != 64 / 2, as Falcon3
    n_vocab = add_spm_tokenizer(w)
    model_keys(w, h, ff, 1, heads, kv, theta=1000042.0, eps=1e-6, vocab=n_vocab)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_tensor("token_embd.weight", (rng.standard_normal((n_vocab, h)) * 0.5).astype(np.float16))
    w.add_tensor("output.weight", gguf.quants.quantize((rng.standard_normal((n_vocab, h)) * 0.5).astype(np.float32), T.BF16), raw_dtype=T.BF16)
    norms(w, rng, "output_norm.weight", h)
    p = "blk.0."
    norms(w, rng, p + "attn_norm.weight", h)
    norms(w, rng, p + "ffn_norm.weight", h)
    shapes = {"attn_q": (heads * hd, h), "attn_k": (kv * hd, h), "attn_v": (kv * hd, h),
              "attn_output": (h, heads * hd), "ffn_gate": (ff, h), "ffn_up": (ff, h), "ffn_down": (h, ff)}
    kinds = [T.F16, T.BF16, T.F32, T.F16, T.BF16, T.F32, T.F16]
    for i, (name, shape) in enumerate(shapes.items()):
        t = ternary(rng, *shape)
        if name == "attn_q":
            t = permute(t, heads)
        elif name == "attn_k":
            t = permute(t, kv)
        proj(w, p + name + ".weight", t, 0.5 ** (i + 1), kinds[i])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


BLOCK_TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K]


def random_blocks(rng, qtype, rows, cols):
    """Random blocks of `qtype` whose f16 scales (d, and dmin or m where the type has one) are
    finite, so every code and scale bit pattern is exercised without NaN payloads to compare."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
    # Byte offsets of the f16 scales in each block (ggml's block_* structs).
    halves = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
              T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}[qtype]
    for at in halves:
        d = (rng.standard_normal(raw.shape[0]) * 0.01).astype(np.float16)
        raw[:, at:at + 2] = d.view(np.uint8).reshape(-1, 2)
    return raw.reshape(rows, cols // block * size)


def dequant_vectors(path):
    rng = np.random.default_rng(77)
    w = gguf.GGUFWriter(str(path), "test-vectors")
    for qtype in BLOCK_TYPES:
        raw = random_blocks(rng, qtype, 2, 256)
        w.add_tensor(qtype.name, raw, raw_dtype=qtype)
        w.add_tensor(qtype.name + ".f32", gguf.quants.dequantize(raw, qtype).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_q8_0_q6_k(path):
    rng = np.random.default_rng(808)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("llama-quantized-embeddings-fixture")
    h, ff, heads, kv, hd, n_vocab = 256, 32, 2, 1, 8, 64
    model_keys(w, h, ff, 1, heads, kv, vocab=n_vocab)
    w.add_key_length(hd)
    w.add_value_length(hd)
    embd = (rng.standard_normal((n_vocab, h)) * 0.5).astype(np.float32)
    w.add_tensor("token_embd.weight", gguf.quants.quantize(embd, T.Q8_0), raw_dtype=T.Q8_0)
    w.add_tensor("output.weight", random_blocks(rng, T.Q6_K, n_vocab, h), raw_dtype=T.Q6_K)
    norms(w, rng, "output_norm.weight", h)
    p = "blk.0."
    norms(w, rng, p + "attn_norm.weight", h)
    norms(w, rng, p + "ffn_norm.weight", h)
    shapes = {"attn_q": (heads * hd, h), "attn_k": (kv * hd, h), "attn_v": (kv * hd, h),
              "attn_output": (h, heads * hd), "ffn_gate": (ff, h), "ffn_up": (ff, h), "ffn_down": (h, ff)}
    for i, (name, shape) in enumerate(shapes.items()):
        t = ternary(rng, *shape)
        if name == "attn_q":
            t = permute(t, heads)
        elif name == "attn_k":
            t = permute(t, kv)
        proj(w, p + name + ".weight", t, 0.25, T.TQ2_0 if shape[1] % 256 == 0 else T.F16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def bitnet_q4_0(path):
    rng = np.random.default_rng(404)
    w = gguf.GGUFWriter(str(path), "bitnet")
    w.add_name("bitnet-q4_0-embeddings-fixture")
    h, ff, heads, kv, n_vocab = 32, 32, 2, 2, 48
    model_keys(w, h, ff, 1, heads, kv, vocab=n_vocab)
    embd = (rng.standard_normal((n_vocab, h)) * 0.5).astype(np.float32)
    w.add_tensor("token_embd.weight", gguf.quants.quantize(embd, T.Q4_0), raw_dtype=T.Q4_0)
    norms(w, rng, "output_norm.weight", h)
    p = "blk.0."
    norms(w, rng, p + "attn_norm.weight", h)
    norms(w, rng, p + "attn_sub_norm.weight", h)
    norms(w, rng, p + "ffn_norm.weight", h)
    norms(w, rng, p + "ffn_sub_norm.weight", ff)
    shapes = {"attn_q": (h, h), "attn_k": (h, h), "attn_v": (h, h), "attn_output": (h, h),
              "ffn_gate": (ff, h), "ffn_up": (ff, h), "ffn_down": (h, ff)}
    for name, shape in shapes.items():
        proj(w, p + name + ".weight", ternary(rng, *shape), 0.125, T.F16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


FIXTURES = {
    "bitnet_tq.gguf": bitnet_tq,
    "llama_f16_ternary.gguf": llama_f16_ternary,
    "llama_q8_0_q6_k.gguf": llama_q8_0_q6_k,
    "bitnet_q4_0.gguf": bitnet_q4_0,
    "qwen2_tq.gguf": lambda path: qwen(path, "qwen2"),
    "qwen3_tq.gguf": lambda path: qwen(path, "qwen3"),
    "blocks/dequant.gguf": dequant_vectors,
}


def write_all(out):
    for name, make in FIXTURES.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        make(out / name)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        with tempfile.TemporaryDirectory() as tmp:
            write_all(Path(tmp))
            bad = [n for n in FIXTURES
                   if (Path(tmp) / n).read_bytes() != (Path(sys.argv[2]) / n).read_bytes()]
        if bad:
            print(f"FAIL: regenerated fixtures differ from {sys.argv[2]}: {', '.join(bad)}")
            return 1
        print(f"OK: {len(FIXTURES)} GGUF fixtures regenerate byte for byte")
        return 0
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    write_all(Path(sys.argv[1]))
    for n in FIXTURES:
        print(n, os.path.getsize(Path(sys.argv[1]) / n), "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
