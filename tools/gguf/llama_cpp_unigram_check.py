#!/usr/bin/env python3
"""Tokenize through llama.cpp the SentencePiece Unigram tokenizers that `export-gguf` writes as
llama.cpp's `t5` vocabulary, and compare with Python sentencepiece's ids.

    tools/gguf/llama_cpp_unigram_check.py LLAMA_SERVER WORK_DIR

By hand, not CI (LLAMA_SERVER from tools/bench/build_llama_server.sh). For every Unigram model of
testdata/sentencepiece: a `synthetic --like bitnet-large --hf` checkpoint (K = 1536, so TQ2_0 can
hold it) gets that tokenizer.model, is converted, exported with `--type tq2_0`, and loaded in
llama-server, whose /tokenize is compared with the fixture's sentencepiece ids for each text (no
BOS). Prints per model how many texts agree, how many differ only by llama.cpp's lack of byte
fallback (each character sentencepiece spells in byte pieces is one <unk>), and the first differing
position of the others; the export's notes say where llama.cpp's tokenizer is known to differ. Exits 0 when it could run.
"""

import json
import subprocess
import sys
from pathlib import Path

from llama_server import llama_server, post, run

ROOT = Path(__file__).resolve().parents[2]
CONVERT = ROOT / "target" / "release" / "bitnet-convert"


def tokenize(text):
    return post("/tokenize", {"content": text, "add_special": False})["tokens"]


def without_byte_fallback(case, unk):
    """The case's ids with the byte pieces (`<0xE2>` ...) of consecutive unknown characters as one
    unknown id: what a Unigram tokenizer without byte fallback gives (sentencepiece fuses unknowns)."""
    ids, pieces, out, after_unknown = case["ids"], case["pieces"], [], False
    for i, piece in zip(ids, pieces):
        byte = piece.startswith("<0x") and piece.endswith(">")
        if not byte:
            out.append(i)
        elif not after_unknown:
            out.append(unk)
        after_unknown = byte
    return out


def check(server, gguf, cases, unk):
    with llama_server(server, gguf, 256):
        diffs, byte_fallback_only = [], 0
        for case in cases:
            got, want = tokenize(case["text"]), case["ids"]
            if got != want and got == without_byte_fallback(case, unk):
                byte_fallback_only += 1
            elif got != want:
                i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                diffs.append(f"  {case['text'][:50]!r}: at {i}, llama.cpp {got[i:i + 4]}, "
                             f"sentencepiece {want[i:i + 4]} {case['pieces'][i:i + 4]}")
        return diffs, byte_fallback_only


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    server, work = sys.argv[1], Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "bitnet-convert"], cwd=ROOT, check=True)
    hf = work / "hf"
    if not (hf / "model.safetensors").exists():
        run(CONVERT, "synthetic", "--like", "bitnet-large", "--hf", "-o", hf, "--force")
    for fixture in sorted((ROOT / "testdata" / "sentencepiece").glob("unigram-*")):
        (hf / "tokenizer.model").write_bytes((fixture / "tokenizer.model").read_bytes())
        model, gguf = work / f"{fixture.name}.bitnet", work / f"{fixture.name}.tq2_0.gguf"
        run(CONVERT, hf, "-o", model, "--force")
        notes = [n for n in run(CONVERT, "export-gguf", model, "-o", gguf, "--type", "tq2_0", "--force").splitlines()
                 if "llama.cpp" in n]
        doc = json.loads((fixture / "ids.json").read_text())
        diffs, byte_fallback_only = check(server, gguf, doc["cases"], 0)
        n = len(doc["cases"])
        print(f"{fixture.name} (byte_fallback {doc['byte_fallback']}): of {n} texts, llama.cpp gives "
              f"{n - len(diffs) - byte_fallback_only} sentencepiece's ids, {byte_fallback_only} the same "
              f"except <unk> for byte-fallback characters, {len(diffs)} other ids")
        for line in notes + diffs:
            print(f"  {line.strip()}")


if __name__ == "__main__":
    main()
