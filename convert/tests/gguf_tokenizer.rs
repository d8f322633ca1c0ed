//! A tokenizer rebuilt from GGUF `tokenizer.ggml.*` metadata (without the exact
//! `tokenizer.huggingface.json`) tokenizes exactly like the original: byte-level BPE with the
//! Llama 3 pre-tokenizer (the 2B-4T fixture's `tokenizer.json`), with Qwen2's (`qwen2`), with
//! Falcon-E's `falcon_e` one (the falcon-e fixture's `tokenizer.json` and transformers' ids), and SentencePiece (the 1bitLLM
//! fixture, against Python sentencepiece's ids).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use bitnet_convert::gguf::{self, ExportOptions, ExportType, ImportOptions};
use bitnet_convert::{ConvertOptions, SourceSpec, convert};
use bitnet_format::BitnetFile;
use serde_json::Value;
use tokenizers::Tokenizer;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/fixtures")
        .join(name)
}

/// Convert a fixture, export it to GGUF without the exact tokenizer.json, import it back.
fn through_gguf(name: &str) -> (bitnet_format::TokenizerInfo, bitnet_format::TokenizerInfo) {
    let dir = tempfile::tempdir().unwrap();
    let bitnet = dir.path().join("m.bitnet");
    let mut options = ConvertOptions::new(
        SourceSpec::Directory {
            path: fixture(name),
        },
        &bitnet,
    );
    options.hub.offline = true;
    convert(&options).unwrap();
    let gguf_path = dir.path().join("m.gguf");
    let mut export = ExportOptions::new(&bitnet, &gguf_path, ExportType::I2s);
    export.embed_hf_tokenizer = false;
    gguf::export_gguf(&export).unwrap();
    let back = dir.path().join("back.bitnet");
    let report = gguf::import_gguf(&ImportOptions::new(&gguf_path, &back)).unwrap();
    assert!(
        report.summary.notes.iter().any(|n| n.contains("rebuilt")),
        "{:?}",
        report.summary.notes
    );
    let original = BitnetFile::open(&bitnet)
        .unwrap()
        .header()
        .tokenizer
        .clone()
        .unwrap();
    let rebuilt = BitnetFile::open(&back)
        .unwrap()
        .header()
        .tokenizer
        .clone()
        .unwrap();
    (original, rebuilt)
}

const TEXTS: &[&str] = &[
    "Hello world",
    "The capital of France is Paris.",
    "  leading spaces and trailing  ",
    "line one\nline two\n\n\ttabbed",
    "numbers 1234567 and 3.14159",
    "don't won't I'm you're",
    "unicode: café naïve 日本語 🙂",
    "<|begin_of_text|>special<|eot_id|> tokens",
    "",
    "a",
    "romeo and juliet, wherefore art thou",
];

#[test]
fn byte_level_bpe_from_gguf_metadata_tokenizes_like_the_original() {
    let (original, rebuilt) = through_gguf("bitnet-2b4t");
    let reference = Tokenizer::from_file(fixture("bitnet-2b4t").join("tokenizer.json")).unwrap();
    let ours = Tokenizer::from_str(rebuilt.tokenizer_json.get()).unwrap();
    for text in TEXTS {
        for special in [false, true] {
            let want = reference.encode(*text, special).unwrap();
            let got = ours.encode(*text, special).unwrap();
            assert_eq!(got.get_ids(), want.get_ids(), "{text:?} special={special}");
            assert_eq!(
                ours.decode(got.get_ids(), false).unwrap(),
                reference.decode(want.get_ids(), false).unwrap()
            );
        }
    }
    assert_eq!(rebuilt.chat_template, original.chat_template);
    assert_eq!(rebuilt.bos_token_id, original.bos_token_id);
    assert_eq!(rebuilt.eos_token_ids, original.eos_token_ids);
    assert_eq!(rebuilt.add_bos_token, original.add_bos_token);
}

/// Qwen2's pre-tokenizer (single digits) travels as llama.cpp's `qwen2`.
#[test]
fn qwen2_pre_tokenizer_travels_as_qwen2_and_tokenizes_like_the_original() {
    let (original, rebuilt) = through_gguf("qwen2-bitnet");
    let reference = Tokenizer::from_file(fixture("qwen2-bitnet").join("tokenizer.json")).unwrap();
    let ours = Tokenizer::from_str(rebuilt.tokenizer_json.get()).unwrap();
    for text in TEXTS.iter().chain(&["In 2024: 1024 × 768 = 786432 pixels"]) {
        for special in [false, true] {
            let want = reference.encode(*text, special).unwrap();
            let got = ours.encode(*text, special).unwrap();
            assert_eq!(got.get_ids(), want.get_ids(), "{text:?} special={special}");
        }
    }
    assert_eq!(rebuilt.chat_template, original.chat_template);
    assert_eq!(rebuilt.eos_token_ids, original.eos_token_ids);
}

#[test]
fn falcon_e_pre_tokenizer_travels_as_falcon_e_and_tokenizes_like_the_original() {
    let (original, rebuilt) = through_gguf("falcon-e");
    let reference = Tokenizer::from_file(fixture("falcon-e").join("tokenizer.json")).unwrap();
    let ours = Tokenizer::from_str(rebuilt.tokenizer_json.get()).unwrap();
    let falcon_texts = [
        "In 2024, 3 models: 1024/2048 tokens; x^2+y^2=z^2 ~ $5 | `a` <=> b!!",
        "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n",
        "…«quotes» and ½ ² ³ ١٢٣ digits",
        "!!!??? ... ---",
    ];
    for text in TEXTS.iter().chain(&falcon_texts) {
        for special in [false, true] {
            let want = reference.encode(*text, special).unwrap();
            let got = ours.encode(*text, special).unwrap();
            assert_eq!(got.get_ids(), want.get_ids(), "{text:?} special={special}");
            assert_eq!(
                ours.decode(got.get_ids(), false).unwrap(),
                reference.decode(want.get_ids(), false).unwrap()
            );
        }
    }
    // Transformers' ids for the fixture's example and chat (no BOS: add_bos_token is false).
    let reference_json: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("falcon-e").join("reference.json")).unwrap(),
    )
    .unwrap();
    let example = &reference_json["tokenizer_example"];
    let chat: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("falcon-e").join("chat.json")).unwrap(),
    )
    .unwrap();
    for (text, want) in [
        (&example["text"], &example["ids_without_special_tokens"]),
        (&chat["rendered"], &chat["token_ids"]),
    ] {
        let want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let text = text.as_str().unwrap();
        assert_eq!(ours.encode(text, true).unwrap().get_ids(), want, "{text:?}");
    }
    assert_eq!(rebuilt.chat_template, original.chat_template);
    assert_eq!(rebuilt.bos_token_id, original.bos_token_id);
    assert_eq!(rebuilt.eos_token_ids, original.eos_token_ids);
    assert_eq!(rebuilt.pad_token_id, original.pad_token_id);
    assert_eq!(rebuilt.add_bos_token, original.add_bos_token);
}

#[test]
fn sentencepiece_from_gguf_metadata_tokenizes_like_python_sentencepiece() {
    let (original, rebuilt) = through_gguf("bitnet-1bitllm");
    let ours = Tokenizer::from_str(rebuilt.tokenizer_json.get()).unwrap();
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("bitnet-1bitllm").join("sentencepiece_ids.json")).unwrap(),
    )
    .unwrap();
    for case in expected["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            ours.encode(text, false).unwrap().get_ids(),
            want.as_slice(),
            "{text:?}"
        );
        assert_eq!(
            ours.decode(&want, true).unwrap(),
            case["decoded"].as_str().unwrap(),
            "{text:?}"
        );
    }
    assert_eq!(rebuilt.bos_token_id, original.bos_token_id);
    assert_eq!(rebuilt.eos_token_ids, original.eos_token_ids);
    assert_eq!(rebuilt.pad_token_id, original.pad_token_id);
    assert_eq!(rebuilt.add_bos_token, original.add_bos_token);
}
