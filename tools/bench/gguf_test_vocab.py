#!/usr/bin/env python3
"""Give a GGUF file without a tokenizer llama.cpp's "test" vocabulary, so that llama-server can
stream from it.

`bitnet-convert export-gguf` writes a .bitnet without a tokenizer (such as the synthetic benchmark
models) with `tokenizer.ggml.model = "no_vocab"`. llama.cpp loads such a file and llama-bench runs
it, but llama-server aborts on the first generated token: turning a token into text asserts that
the vocabulary is not "no_vocab". Its "test" vocabulary (LLAMA_VOCAB_TYPE_TEST, "dummy tokenizer
for testing") needs only a token list, and renders every token as its id in hex, so each token
streams as one non-empty piece of ASCII text. No id is end-of-generation.

The copy has the same metadata but for the tokenizer keys, and the same tensors byte for byte.

Usage: gguf_test_vocab.py IN.gguf OUT.gguf   (needs the `gguf` package, tools/gguf/requirements.txt)
"""

import sys

import gguf


def main(src, dst):
    reader = gguf.GGUFReader(src)
    model = reader.fields.get("tokenizer.ggml.model")
    if model is None or model.contents() != "no_vocab":
        sys.exit(f"{src}: expected tokenizer.ggml.model = no_vocab (a file without a tokenizer)")
    arch = reader.fields["general.architecture"].contents()
    vocab = reader.fields[f"{arch}.vocab_size"].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for field in reader.fields.values():
        # GGUF.* are the reader's view of the header; the writer adds the architecture itself.
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        if field.name.startswith("tokenizer."):
            continue
        if field.name == "general.alignment":
            writer.data_alignment = field.contents()
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type)
    writer.add_tokenizer_model("test")
    writer.add_token_list([f"<{i}>" for i in range(vocab)])
    for t in reader.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data)
    writer.close()
    print(f"{dst}: {len(reader.tensors)} tensors, test vocabulary of {vocab} tokens")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
