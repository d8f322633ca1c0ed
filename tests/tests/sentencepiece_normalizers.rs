//! SentencePiece models trained with each normalizer setting (BPE and Unigram; `nmt_nfkc`, `nfkc`,
//! `nmt_nfkc_cf`, `nfkc_cf` with their character maps; the identity normalizer with and without
//! `remove_extra_whitespaces`, `add_dummy_prefix` and `escape_whitespaces`) tokenize through
//! bitnet-convert's tokenizer.json and bitnet-run's tokenizer exactly as Python sentencepiece does:
//! the ids in `testdata/sentencepiece/*/ids.json` come from `tools/fixtures/sentencepiece_normalizers.py`.

mod convert_support;

use std::path::{Path, PathBuf};

use bitnet_convert::gguf::vocab::{self, Meta};
use bitnet_convert::tokenizer::sentencepiece::SentencePieceModel;
use bitnet_format::BitnetFile;
use bitnet_format::TokenizerInfo;
use bitnet_run::tokenizer::Tokenizer;
use convert_support::{
    Metadata, assert_decodes_like_sentencepiece, bad_checkpoint, bare_tokenizer, convert_dir, ids,
    read_json, sentencepiece_json, testdata_dirs,
};
use serde_json::Value;

fn fixtures() -> Vec<PathBuf> {
    testdata_dirs("sentencepiece")
}

fn model_and_info(dir: &Path) -> (SentencePieceModel, TokenizerInfo) {
    let (model, json) = sentencepiece_json(dir);
    (model, bare_tokenizer(&json))
}

fn tokenizer(dir: &Path) -> (SentencePieceModel, Tokenizer) {
    let (model, info) = model_and_info(dir);
    (model, Tokenizer::from_info(Some(&info)).unwrap())
}

fn cases(dir: &Path) -> Vec<Value> {
    read_json(&dir.join("ids.json"))["cases"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn every_normalizer_setting_gives_python_sentencepieces_ids() {
    let dirs = fixtures();
    assert_eq!(dirs.len(), 8, "{dirs:?}");
    let mut with_charsmap = 0;
    for dir in &dirs {
        let (model, tok) = tokenizer(dir);
        with_charsmap += !model.precompiled_charsmap.is_empty() as usize;
        let cases = cases(dir);
        assert!(cases.len() >= 15, "{dir:?}");
        for case in &cases {
            let text = case["text"].as_str().unwrap();
            let got = tok.encode(text, false).unwrap();
            assert_eq!(got, ids(&case["ids"]), "{}: {text:?}", dir.display());
        }
    }
    assert_eq!(with_charsmap, 5);
}

/// Decoding gives sentencepiece's text back wherever sentencepiece renders every piece as its own
/// text: not for the unknown piece (sentencepiece prints " ⁇ ", the tokenizer "<unk>") nor for
/// `▁` pieces at the start of text that also starts with a `▁` character (sentencepiece drops
/// every leading `▁` piece, the decoder one space).
#[test]
fn decoding_gives_sentencepieces_text() {
    let mut compared = 0;
    for dir in fixtures() {
        let (model, tok) = tokenizer(&dir);
        let decode = |ids: &[u32]| tok.decode(ids).unwrap();
        compared +=
            assert_decodes_like_sentencepiece(decode, model.unk_id as u32, &cases(&dir), &dir);
    }
    assert!(compared >= 80, "{compared}");
}

/// Through GGUF and back: a Unigram tokenizer becomes llama.cpp's `t5` vocabulary with its
/// character map and whitespace options, and the re-imported tokenizer still gives
/// sentencepiece's ids. What `tokenizer.ggml.*` cannot say (a character map or
/// remove_extra_whitespaces for a BPE model, unescaped spaces) is a note of the export.
#[test]
fn gguf_export_keeps_unigram_normalizers_and_names_what_it_drops() {
    let mut round_trips = 0;
    for dir in fixtures() {
        let (model, info) = model_and_info(&dir);
        let exported = vocab::export(&info, model.pieces.len() as u32, false).unwrap();
        let notes = exported.notes.join("\n");
        let meta = Metadata(exported.metadata.into_iter().collect());
        let kind = meta.meta_str("tokenizer.ggml.model").unwrap().to_string();
        let lossy_bpe = model.model_type == 2
            && (!model.precompiled_charsmap.is_empty() || model.remove_extra_whitespaces);
        if model.model_type == 1 {
            assert_eq!(kind, "t5", "{}", dir.display());
            let map: Vec<u8> = meta
                .meta_array("tokenizer.ggml.precompiled_charsmap")
                .unwrap_or_default()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8)
                .collect();
            assert_eq!(map, model.precompiled_charsmap, "{}", dir.display());
        } else {
            assert_eq!(kind, "llama", "{}", dir.display());
        }
        assert_eq!(
            notes.contains("applies neither a character map nor remove_extra_whitespaces"),
            lossy_bpe,
            "{}: {notes}",
            dir.display()
        );
        assert_eq!(
            notes.contains("always escapes spaces"),
            model.model_type == 1 && !model.escape_whitespaces,
            "{}: {notes}",
            dir.display()
        );
        assert_eq!(
            notes.contains("no byte fallback"),
            model.model_type == 1 && model.byte_fallback,
            "{}: {notes}",
            dir.display()
        );
        if lossy_bpe || !model.escape_whitespaces {
            continue;
        }
        let imported = vocab::import(&meta).unwrap().unwrap();
        let tok = Tokenizer::from_info(Some(&bare_tokenizer(&imported.tokenizer_json))).unwrap();
        for case in cases(&dir) {
            let text = case["text"].as_str().unwrap();
            assert_eq!(
                tok.encode(text, false).unwrap(),
                ids(&case["ids"]),
                "{}: {text:?}",
                dir.display()
            );
        }
        round_trips += 1;
    }
    assert_eq!(round_trips, 4);
}

/// A checkpoint whose tokenizer.model is a Unigram model with the `nmt_nfkc` character map
/// converts, and the converted file's tokenizer (the one `bitnet-run`, `--chat` and the server
/// load) prompts with BOS followed by sentencepiece's ids.
#[test]
fn a_checkpoint_with_a_normalizing_tokenizer_converts_and_prompts_like_sentencepiece() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = bad_checkpoint(dir.path(), "bitnet-1bitllm", |_| {}, |_| {});
    let spm = root.join("testdata/sentencepiece/unigram-nmt_nfkc");
    std::fs::copy(
        spm.join("tokenizer.model"),
        checkpoint.join("tokenizer.model"),
    )
    .unwrap();

    let out = dir.path().join("m.bitnet");
    let report = convert_dir(&checkpoint, &out);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("Unigram, normalizer nmt_nfkc")),
        "{:?}",
        report.notes
    );
    let file = BitnetFile::open(&out).unwrap();
    let tok = Tokenizer::from_info(file.header().tokenizer.as_ref()).unwrap();
    for case in cases(&spm) {
        let text = case["text"].as_str().unwrap();
        let mut want = vec![1];
        want.extend(ids(&case["ids"]));
        assert_eq!(tok.encode_prompt(text).unwrap(), want, "{text:?}");
    }
}
