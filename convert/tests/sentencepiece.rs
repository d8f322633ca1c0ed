//! The tokenizer.json that bitnet-convert makes from a SentencePiece tokenizer.model encodes text
//! exactly as Python sentencepiece does: ids from `tools/fixtures/sentencepiece_ids.py`, checked with
//! the Hugging Face `tokenizers` crate on the tokenizer embedded in the converted file.

use std::path::{Path, PathBuf};

use bitnet_convert::{ConvertOptions, SourceSpec, convert};
use bitnet_format::BitnetFile;
use serde_json::Value;
use std::str::FromStr;

use tokenizers::Tokenizer;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/fixtures/bitnet-1bitllm")
}

fn converted_tokenizer() -> (Tokenizer, bitnet_format::TokenizerInfo) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("1bitllm.bitnet");
    let source = SourceSpec::Directory { path: fixture() };
    let mut options = ConvertOptions::new(source, &out);
    options.hub.offline = true;
    convert(&options).unwrap();
    let file = BitnetFile::open(&out).unwrap();
    let info = file.header().tokenizer.clone().expect("a tokenizer");
    let tokenizer = Tokenizer::from_str(info.tokenizer_json.get()).unwrap();
    (tokenizer, info)
}

#[test]
fn converted_tokenizer_matches_python_sentencepiece() {
    let (tokenizer, info) = converted_tokenizer();
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture().join("sentencepiece_ids.json")).unwrap(),
    )
    .unwrap();
    let cases = expected["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tokenizer.encode(text, false).unwrap();
        assert_eq!(got.get_ids(), want.as_slice(), "{text:?}");
        let decoded = tokenizer.decode(&want, true).unwrap();
        assert_eq!(decoded, case["decoded"].as_str().unwrap(), "{text:?}");
        // With special tokens the BOS (and only the BOS) is added, as Llama's tokenizer does.
        let with_bos = tokenizer.encode(text, true).unwrap();
        assert_eq!(with_bos.get_ids()[0], 1, "{text:?}");
        assert_eq!(&with_bos.get_ids()[1..], want.as_slice(), "{text:?}");
    }
    assert_eq!(info.bos_token_id, Some(1));
    assert_eq!(info.eos_token_ids, vec![2]);
    assert_eq!(info.pad_token_id, Some(352));
    assert!(info.add_bos_token);
}

#[test]
fn converted_tokenizer_reproduces_the_fixture_reference_example() {
    let (tokenizer, _) = converted_tokenizer();
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("reference.json")).unwrap())
            .unwrap();
    let example = &reference["tokenizer_example"];
    let ids: Vec<u32> = example["ids_with_special_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let got = tokenizer
        .encode(example["text"].as_str().unwrap(), true)
        .unwrap();
    assert_eq!(got.get_ids(), ids.as_slice());
    let tokens: Vec<&str> = example["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(got.get_tokens(), tokens.as_slice());
    // The added <pad> token is known by id.
    assert_eq!(tokenizer.token_to_id("<pad>"), Some(352));
}
