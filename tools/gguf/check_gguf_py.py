#!/usr/bin/env python3
"""Check bitnet-convert's GGUF import and export against the `gguf` Python package (run by CI).

1. Import: every fixture of testdata/gguf/ (written by the gguf package, tools/gguf/make_fixtures.py)
   is imported with bitnet-convert; the resulting .bitnet, decoded by the independent reader
   tools/spec-check/read_bitnet.py, must hold for every projection exactly the values that
   `gguf.quants.dequantize` gives for the GGUF tensor (ternary value × scale, rows in Hugging Face
   order: llama-architecture q/k rows are compared after llama.cpp's permutation), and for every
   other tensor (embeddings, output, norms; F16, BF16, F32 or block types such as Q8_0, Q6_K and
   Q4_0) exactly the dequantized values.
2. Export: those .bitnet files exported with `export-gguf --type tq2_0` and `--type tq1_0` must
   parse with `gguf.GGUFReader`, name the architecture, keys, pre-tokenizer and tensors as the
   fixture did (llama.cpp's names, e.g. Qwen2's `blk.0.attn_q.bias`), and dequantize with
   `gguf.quants` to the .bitnet ternary values × their scale rounded to f16 and the other tensors
   as imported.
3. q4 embeddings: testdata/demo converted with `--embeddings q4` and exported with `--type tq2_0`
   must store token_embd as Q4_0 that dequantizes with `gguf.quants` to exactly its q4_b32 values.

Usage: check_gguf_py.py BITNET_CONVERT_BINARY WORK_DIR
Prints "N passed, M failed" and exits non-zero on any failure.
"""

import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "spec-check"))
import read_bitnet  # noqa: E402

PROJ = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
passed, failed = 0, 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {what}")


def permute(w, n_head):
    d = w.shape[0] // n_head
    return w.reshape(n_head, 2, d // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(name):
    """The GGUF name of a .bitnet tensor: llama.cpp's `.bias` for q/k/v biases, else `.weight`."""
    return name[:-len("_bias")] + ".bias" if name.endswith("_bias") else name + ".weight"


def field(reader, key):
    f = reader.get_field(key)
    return None if f is None else f.contents()


def dequant(t):
    return gguf.quants.dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)]).astype(np.float32)


def bitnet_weights(path):
    """The ternary tensors (values, scale) and the others (values) of a .bitnet file."""
    header, tensors, _ = read_bitnet.read_file(path)
    out, full = {}, {}
    for t in header["tensors"]:
        vals, scale = tensors[t["name"]]
        if scale is not None:
            out[t["name"]] = (np.array(vals, dtype=np.float32).reshape(t["shape"]), np.float32(scale))
        else:
            full[t["name"]] = (np.array(vals, dtype=np.float32).reshape(t["shape"]), t["encoding"])
    return header, out, full


def run(*args):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
    return r.returncode == 0


def check_q4_export(binary, work):
    src = work / "demo-q4.bitnet"
    ok = run(binary, str(ROOT / "testdata" / "demo"), "-o", str(src), "--embeddings", "q4", "--force")
    check(ok, "convert testdata/demo --embeddings q4")
    if not ok:
        return
    g = work / "demo-q4.tq2_0.gguf"
    ok = run(binary, "export-gguf", str(src), "-o", str(g), "--type", "tq2_0", "--force")
    check(ok, "export demo-q4 --type tq2_0")
    if not ok:
        return
    _, _, full = bitnet_weights(src)
    vals, enc = full["token_embd"]
    check(enc == "q4_b32", f"{src.name}: token_embd is {enc}, not q4_b32")
    t = {t.name: t for t in gguf.GGUFReader(str(g)).tensors}["token_embd.weight"]
    check(t.tensor_type == gguf.GGMLQuantizationType.Q4_0, f"{g.name}: token_embd is {t.tensor_type.name}, not Q4_0")
    check(np.array_equal(dequant(t), vals), f"{g.name}: token_embd (Q4_0) dequantizes to the q4_b32 values")


def main():
    binary, work = sys.argv[1], Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    for fx in sorted((ROOT / "testdata" / "gguf").glob("*.gguf")):
        out = work / (fx.stem + ".bitnet")
        ok = run(binary, str(fx), "-o", str(out), "--force")
        check(ok, f"import {fx.name}")
        if not ok:
            continue
        reader = gguf.GGUFReader(str(fx))
        arch = field(reader, "general.architecture")
        heads = field(reader, f"{arch}.attention.head_count")
        kv = field(reader, f"{arch}.attention.head_count_kv")
        header, weights, full = bitnet_weights(out)
        gt = {t.name: t for t in reader.tensors}
        for name, (vals, scale) in weights.items():
            want = dequant(gt[gguf_name(name)])
            mine = vals * scale
            if arch == "llama" and name.endswith("attn_q"):
                mine = permute(mine, heads)
            elif arch == "llama" and name.endswith("attn_k"):
                mine = permute(mine, kv)
            check(np.array_equal(mine, want), f"{fx.name}: {name} imports as gguf.quants dequantizes it")
        # Embeddings, output and norms: exactly the dequantized values (F16/BF16 kept, block
        # types such as Q8_0 and Q6_K as f32, Q4_0 as q4_b32).
        for name, (vals, enc) in full.items():
            t = gt[gguf_name(name)]
            check(np.array_equal(vals, dequant(t)),
                  f"{fx.name}: {name} ({t.tensor_type.name} -> {enc}) imports as gguf.quants dequantizes it")
            if t.tensor_type == gguf.GGMLQuantizationType.Q4_0:
                check(enc == "q4_b32", f"{fx.name}: {name} Q4_0 imports as q4_b32, not {enc}")

        # Export what was imported, where K allows TQ.
        ks = [v.shape[1] for v, _ in weights.values()]
        if any(k % 256 for k in ks):
            bad = work / "refused.gguf"
            r = subprocess.run([binary, "export-gguf", str(out), "-o", str(bad), "--type", "tq2_0"],
                               capture_output=True, text=True)
            check(r.returncode != 0 and "not a multiple of 256" in r.stderr and not bad.exists(),
                  f"{fx.name}: TQ export of K % 256 != 0 is refused naming the tensor")
            continue
        for ty, qt in [("tq2_0", gguf.GGMLQuantizationType.TQ2_0), ("tq1_0", gguf.GGMLQuantizationType.TQ1_0)]:
            g = work / f"{fx.stem}.{ty}.gguf"
            ok = run(binary, "export-gguf", str(out), "-o", str(g), "--type", ty, "--force")
            check(ok, f"export {fx.stem} --type {ty}")
            if not ok:
                continue
            rd = gguf.GGUFReader(str(g))
            earch = field(rd, "general.architecture")
            check(earch == arch, f"{g.name}: architecture {earch}")
            check(field(rd, f"{earch}.block_count") == header["model"]["num_layers"], f"{g.name}: block_count")
            if header["model"]["activation"] == "relu2":
                check(field(rd, f"{earch}.hidden_act") == "relu2", f"{g.name}: hidden_act relu2 recorded")
            if field(reader, "tokenizer.ggml.tokens") is None:
                check(field(rd, "tokenizer.ggml.model") == "no_vocab", f"{g.name}: no tokenizer, no_vocab")
            else:
                check(len(field(rd, "tokenizer.ggml.tokens")) == header["model"]["vocab_size"], f"{g.name}: token list")
            pre = field(reader, "tokenizer.ggml.pre")
            if pre is not None:
                check(field(rd, "tokenizer.ggml.pre") == pre, f"{g.name}: tokenizer.ggml.pre {pre}")
            et = {t.name: t for t in rd.tensors}
            # The fixture's names are the gguf package's (llama.cpp's): the export must use them.
            check(set(et) == set(gt), f"{g.name}: tensor names {sorted(set(et) ^ set(gt))} differ from {fx.name}'s")
            for name, (vals, enc) in full.items():
                check(np.array_equal(dequant(et[gguf_name(name)]), dequant(gt[gguf_name(name)])),
                      f"{g.name}: {name} exports as it was imported")
            for name, (vals, scale) in weights.items():
                t = et[name + ".weight"]
                check(t.tensor_type == qt, f"{g.name}: {name} is {ty}")
                want = vals * np.float32(np.float16(scale))
                if earch == "llama" and name.endswith("attn_q"):
                    want = permute(want, heads)
                elif earch == "llama" and name.endswith("attn_k"):
                    want = permute(want, kv)
                check(np.array_equal(dequant(t), want), f"{g.name}: {name} dequantizes to ternary × f16(scale)")
    check_q4_export(binary, work)
    print(f"gguf-py checks: {passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
