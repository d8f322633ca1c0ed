//! Tokenizers between GGUF's `tokenizer.ggml.*` metadata and Hugging Face `tokenizer.json`.
//!
//! Import: `tokenizer.huggingface.json`, when the file has it, is used as is (exact). Otherwise the
//! document is rebuilt from `tokenizer.ggml.*`:
//! - `model = "gpt2"` (byte-level BPE): vocabulary from the tokens of type normal, byte, unknown,
//!   and from control and user-defined tokens placed before one of those; control tokens are
//!   special added tokens, user-defined ones non-special added tokens (each keeps its id);
//!   unused `[PAD…]` fillers are dropped; merges from `tokenizer.ggml.merges`; the pre-tokenizer
//!   named by `tokenizer.ggml.pre` (table [`PRE_TOKENIZERS`]; another name is an error naming it).
//! - `model = "llama"` (SentencePiece BPE): the same document the converter makes from a
//!   `tokenizer.model` (see `tokenizer::sentencepiece`), from the tokens, their scores and types,
//!   except that user-defined tokens split the text before it is normalized, as llama.cpp does.
//!
//! Export writes `tokenizer.ggml.*` (padding the token list to the model's vocabulary with unused
//! `[PAD{id}]` tokens, as llama.cpp's converter does) and, optionally, the exact document as
//! `tokenizer.huggingface.json`.

use base64::prelude::{BASE64_STANDARD, Engine as _};
use gguf_rs_lib::format::metadata::MetadataValue;
use gguf_rs_lib::format::types::GGUFValueType;
use serde_json::{Value, json};

use super::container::{array, integer, string};
use crate::tokenizer::sentencepiece::{self, Piece, PieceType, SentencePieceModel};

/// The Llama 3 pre-tokenizer regex (llama.cpp's `llama-bpe`).
pub const LLAMA3_REGEX: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/// The Qwen2 pre-tokenizer regex (llama.cpp's `qwen2`): Llama 3's with single digits.
pub const QWEN2_REGEX: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/// `tokenizer.ggml.pre` names this importer understands.
pub const PRE_TOKENIZERS: &[&str] = &[
    "llama-bpe",
    "llama3",
    "qwen2",
    "default",
    "gpt2",
    "falcon_e",
];

/// A pre-tokenizer that splits by `regex`, then maps bytes to characters (Llama 3's and Qwen2's
/// form).
fn split_then_byte_level(regex: &str) -> Value {
    json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]})
}

/// Falcon-E's pre-tokenizer (`falcon_e`) as `tokenizer.json` writes it: punctuation runs, the GPT-2
/// regex, single digits. This is the Hugging Face form of the three regexes llama.cpp forks give
/// `falcon_e` (ik_llama.cpp c8e6d9cfe, `LLAMA_VOCAB_PRE_TYPE_FALCON_E`): ``[\p{P}\$\+<=>\^~\|`]+``
/// (what `Punctuation` splits: Unicode punctuation plus ASCII symbols), the GPT-2 regex of
/// `ByteLevel`, and `[0-9]` (`Digits` one by one), in the order of Falcon's own `tokenizer.json`.
fn falcon_e_pre_tokenizer() -> Value {
    json!({"type": "Sequence", "pretokenizers": [
        {"type": "Punctuation", "behavior": "Contiguous"},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        {"type": "Digits", "individual_digits": true}]})
}

/// Key of bitnet-convert's exports holding every end-of-generation token id.
pub const EOS_IDS_KEY: &str = "bitnet_rs.eos_token_ids";

const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

/// Read-only view of the metadata the tokenizer needs.
pub trait Meta {
    fn meta(&self, key: &str) -> Option<&MetadataValue>;

    fn meta_str(&self, key: &str) -> Option<&str> {
        match self.meta(key)? {
            MetadataValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// An integer of any integer type that fits in u32 (llama.cpp wants u32; the value is what counts).
    fn meta_u32(&self, key: &str) -> Option<u32> {
        integer(self.meta(key)?).and_then(|v| u32::try_from(v).ok())
    }

    fn meta_bool(&self, key: &str) -> Option<bool> {
        self.meta(key)?.as_bool()
    }

    fn meta_array(&self, key: &str) -> Option<&[MetadataValue]> {
        match self.meta(key)? {
            MetadataValue::Array(a) => Some(&a.values),
            _ => None,
        }
    }
}

/// What the header's tokenizer section gets.
#[derive(Debug, Clone)]
pub struct ImportedTokenizer {
    pub tokenizer_json: Value,
    pub chat_template: Option<String>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    pub add_bos_token: bool,
    pub notes: Vec<String>,
    /// What may make the tokenizer behave otherwise than its writer meant.
    pub warnings: Vec<String>,
}

fn strings(v: &[MetadataValue], key: &str) -> Result<Vec<String>, String> {
    v.iter()
        .enumerate()
        .map(|(i, x)| match x {
            MetadataValue::String(s) => Ok(s.clone()),
            _ => Err(format!("{key}[{i}] is not a string")),
        })
        .collect()
}

/// Build the tokenizer from GGUF metadata, or `None` when the file has none.
pub fn import(m: &impl Meta) -> Result<Option<ImportedTokenizer>, String> {
    // `no_vocab`: llama.cpp's marker for a model without a vocabulary (token ids only).
    let Some(kind) = m
        .meta_str("tokenizer.ggml.model")
        .filter(|&k| k != "no_vocab")
    else {
        return Ok(None);
    };
    let tokens = strings(
        m.meta_array("tokenizer.ggml.tokens")
            .ok_or("tokenizer.ggml.tokens is missing or not an array")?,
        "tokenizer.ggml.tokens",
    )?;
    let n = tokens.len();
    let types: Vec<i32> = match m.meta_array("tokenizer.ggml.token_type") {
        Some(t) if t.len() == n => t
            .iter()
            .map(|x| x.as_i64().unwrap_or(NORMAL as i64) as i32)
            .collect(),
        Some(t) => {
            return Err(format!(
                "tokenizer.ggml.token_type has {} entries for {n} tokens",
                t.len()
            ));
        }
        None => vec![NORMAL; n],
    };
    let mut notes = Vec::new();
    let mut warnings = Vec::new();
    // An id outside the vocabulary is ignored, as llama.cpp does ("bad special token"): the
    // weights do not depend on it.
    let mut special = |what: &str| {
        let key = format!("tokenizer.ggml.{what}_token_id");
        let id = m.meta_u32(&key)?;
        if (id as usize) < n {
            return Some(id);
        }
        warnings.push(format!(
            "{key} {id} is outside the {n} tokens: ignored, as llama.cpp does"
        ));
        None
    };
    let bos = special("bos");
    let eos = special("eos");
    let eot = special("eot");
    let pad = special("padding");
    let add_bos = m
        .meta_bool("tokenizer.ggml.add_bos_token")
        .unwrap_or(kind == "llama");
    let add_eos = m.meta_bool("tokenizer.ggml.add_eos_token").unwrap_or(false);

    let tokenizer_json = if let Some(hf) = m.meta_str("tokenizer.huggingface.json") {
        notes.push("tokenizer.json taken verbatim from tokenizer.huggingface.json".into());
        serde_json::from_str(hf)
            .map_err(|e| format!("tokenizer.huggingface.json is not JSON: {e}"))?
    } else {
        match kind {
            "gpt2" => {
                let pre = m.meta_str("tokenizer.ggml.pre").unwrap_or("default");
                let merges = strings(
                    m.meta_array("tokenizer.ggml.merges")
                        .ok_or("tokenizer.ggml.merges is missing (a gpt2 tokenizer needs it)")?,
                    "tokenizer.ggml.merges",
                )?;
                notes.push(format!(
                    "tokenizer.json rebuilt from tokenizer.ggml.* (byte-level BPE, pre-tokenizer {pre:?})"
                ));
                bpe_json(
                    &tokens,
                    &types,
                    &merges,
                    pre,
                    if add_bos { bos } else { None },
                )?
            }
            "llama" => {
                notes.push(
                    "tokenizer.json rebuilt from tokenizer.ggml.* (SentencePiece BPE with byte fallback)"
                        .into(),
                );
                spm_json(m, &tokens, &types, add_bos, add_eos, false)?
            }
            "t5" => {
                notes.push(
                    "tokenizer.json rebuilt from tokenizer.ggml.* (SentencePiece Unigram)".into(),
                );
                spm_json(m, &tokens, &types, add_bos, add_eos, true)?
            }
            other => {
                return Err(format!(
                    "tokenizer.ggml.model {other:?} is not supported (gpt2, llama or t5)"
                ));
            }
        }
    };
    let mut eos_token_ids = Vec::new();
    for id in [eos, eot].into_iter().flatten() {
        if !eos_token_ids.contains(&id) {
            eos_token_ids.push(id);
        }
    }
    // bitnet-convert's own exports list every stop token (llama.cpp's keys hold two).
    for id in m
        .meta_array(EOS_IDS_KEY)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_u64().and_then(|v| u32::try_from(v).ok()))
    {
        if (id as usize) < n && !eos_token_ids.contains(&id) {
            eos_token_ids.push(id);
        }
    }
    if let Some(id) = tokens.iter().position(|t| t == "<|eot_id|>")
        && !eos_token_ids.contains(&(id as u32))
    {
        eos_token_ids.push(id as u32);
    }
    Ok(Some(ImportedTokenizer {
        tokenizer_json,
        chat_template: m.meta_str("tokenizer.chat_template").map(str::to_string),
        bos_token_id: bos,
        eos_token_ids,
        pad_token_id: pad,
        add_bos_token: add_bos,
        notes,
        warnings,
    }))
}

fn added(id: usize, content: &str, special: bool) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false,
           "rstrip": false, "normalized": false, "special": special})
}

fn bpe_json(
    tokens: &[String],
    types: &[i32],
    merges: &[String],
    pre: &str,
    bos: Option<u32>,
) -> Result<Value, String> {
    let (pre_tokenizer, ignore_merges) = match pre {
        // llama.cpp ignores merges for a word in the vocabulary only with Llama 3's.
        "llama-bpe" | "llama3" => (split_then_byte_level(LLAMA3_REGEX), true),
        "qwen2" => (split_then_byte_level(QWEN2_REGEX), false),
        "default" | "gpt2" => (
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}),
            false,
        ),
        "falcon_e" => (falcon_e_pre_tokenizer(), false),
        other => {
            return Err(format!(
                "tokenizer.ggml.pre {other:?} is not supported (supported: {})",
                PRE_TOKENIZERS.join(", ")
            ));
        }
    };
    let mut vocab = serde_json::Map::new();
    let mut added_tokens = Vec::new();
    // `tokenizers` ignores the ids of `added_tokens` when loading: a token the model does not know
    // gets the next id after the vocabulary. That is right for added tokens after every normal
    // token (Llama 3's), and collides with a normal token for one before (Falcon's `>>TITLE<<` = 0,
    // Falcon-E's): those are in the model's vocabulary too, as in Hugging Face's own files.
    let last_normal = tokens
        .iter()
        .zip(types)
        .rposition(|(tok, &ty)| {
            let added_or_filler =
                matches!(ty, CONTROL | USER_DEFINED) || (ty == UNUSED && tok.starts_with("[PAD"));
            !added_or_filler
        })
        .unwrap_or(0);
    for (id, (tok, &ty)) in tokens.iter().zip(types).enumerate() {
        match ty {
            CONTROL | USER_DEFINED => {
                added_tokens.push(added(id, tok, ty == CONTROL));
                if id > last_normal {
                    continue;
                }
            }
            UNUSED if tok.starts_with("[PAD") => continue,
            _ => {}
        }
        vocab.insert(tok.clone(), json!(id));
    }
    let merges: Vec<Value> = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| json!([a, b]))
                .ok_or_else(|| format!("tokenizer.ggml.merges[{i}] {m:?} is not two tokens"))
        })
        .collect::<Result<_, _>>()?;
    let post_processor = match bos {
        Some(id) => {
            let b = &tokens[id as usize];
            json!({"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": b, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {b.as_str(): {"id": b, "ids": [id], "tokens": [b]}}})
        }
        None => Value::Null,
    };
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges}
    }))
}

fn spm_json(
    m: &impl Meta,
    tokens: &[String],
    types: &[i32],
    add_bos: bool,
    add_eos: bool,
    unigram: bool,
) -> Result<Value, String> {
    let scores: Vec<f32> = match m.meta_array("tokenizer.ggml.scores") {
        Some(s) if s.len() == tokens.len() => s
            .iter()
            .map(|x| match x {
                MetadataValue::F32(f) => Ok(*f),
                _ => Err("tokenizer.ggml.scores holds a value that is not f32".to_string()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("tokenizer.ggml.scores is missing or has the wrong length".into()),
    };
    let in_range = |v: u32| (v as usize) < tokens.len();
    let id = |key: &str, fallback: &str| -> i32 {
        m.meta_u32(key)
            .filter(|&v| in_range(v))
            .map(|v| v as i32)
            .or_else(|| tokens.iter().position(|t| t == fallback).map(|i| i as i32))
            .unwrap_or(-1)
    };
    let pieces: Vec<Piece> = tokens
        .iter()
        .zip(types)
        .zip(&scores)
        .map(|((t, &ty), &score)| Piece {
            piece: t.clone(),
            score,
            kind: match ty {
                UNKNOWN => PieceType::Unknown,
                CONTROL => PieceType::Control,
                USER_DEFINED => PieceType::UserDefined,
                UNUSED => PieceType::Unused,
                BYTE => PieceType::Byte,
                _ => PieceType::Normal,
            },
        })
        .collect();
    // llama.cpp's `llama` tokenizer has no character map and keeps runs of spaces; its `t5`
    // (Unigram) one reads both from the file, removing extra spaces unless told not to.
    let precompiled_charsmap = match m.meta_array("tokenizer.ggml.precompiled_charsmap") {
        Some(bytes) if unigram => bytes
            .iter()
            .map(|b| match b {
                MetadataValue::U8(b) => Ok(*b),
                MetadataValue::I8(b) => Ok(*b as u8),
                _ => Err("tokenizer.ggml.precompiled_charsmap holds a value that is not a byte"),
            })
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    let remove_extra_whitespaces = unigram
        && m.meta_bool("tokenizer.ggml.remove_extra_whitespaces")
            .unwrap_or(true);
    let model = SentencePieceModel {
        byte_fallback: pieces.iter().any(|p| p.kind == PieceType::Byte),
        pieces,
        model_type: if unigram { 1 } else { 2 },
        treat_whitespace_as_suffix: false,
        unk_id: id("tokenizer.ggml.unknown_token_id", "<unk>"),
        bos_id: id("tokenizer.ggml.bos_token_id", "<s>"),
        eos_id: id("tokenizer.ggml.eos_token_id", "</s>"),
        pad_id: m
            .meta_u32("tokenizer.ggml.padding_token_id")
            .filter(|&v| in_range(v))
            .map(|v| v as i32)
            .unwrap_or(-1),
        normalizer_name: "identity".into(),
        precompiled_charsmap,
        denormalizer_charsmap: false,
        add_dummy_prefix: m
            .meta_bool("tokenizer.ggml.add_space_prefix")
            .unwrap_or(true),
        remove_extra_whitespaces,
        escape_whitespaces: true,
    };
    let options = sentencepiece::ConvertOptions {
        add_bos,
        add_eos,
        added: Vec::new(),
        // llama.cpp splits the text at user-defined tokens before normalizing it.
        user_defined: sentencepiece::UserDefinedPieces::SplitFirst,
    };
    sentencepiece::to_tokenizer_json(&model, &options)
}

/// The `tokenizer.ggml.*` metadata for a `tokenizer.json` document, padded to `vocab_size` tokens.
pub struct ExportedTokenizer {
    pub metadata: Vec<(String, MetadataValue)>,
    pub notes: Vec<String>,
}

/// What a SentencePiece-style `tokenizer.json` normalizer (as [`sentencepiece::to_tokenizer_json`]
/// writes it) does, in the terms of the `tokenizer.ggml.*` keys.
struct SentencePieceNormalizer {
    charsmap: Option<Vec<u8>>,
    dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escapes_spaces: bool,
}

impl SentencePieceNormalizer {
    fn of(normalizer: &Value) -> Result<Self, String> {
        let steps: Vec<&Value> = match normalizer["type"].as_str() {
            Some("Sequence") => normalizer["normalizers"]
                .as_array()
                .into_iter()
                .flatten()
                .collect(),
            Some(_) => vec![normalizer],
            None => Vec::new(),
        };
        let mut out = SentencePieceNormalizer {
            charsmap: None,
            dummy_prefix: false,
            remove_extra_whitespaces: false,
            escapes_spaces: false,
        };
        for step in steps {
            match step["type"].as_str() {
                Some("Precompiled") => {
                    let text = step["precompiled_charsmap"].as_str().unwrap_or_default();
                    out.charsmap = Some(BASE64_STANDARD.decode(text).map_err(|e| {
                        format!("the normalizer's precompiled_charsmap is not base64: {e}")
                    })?);
                }
                Some("Prepend") => out.dummy_prefix = true,
                Some("Replace") if step["pattern"]["Regex"].is_string() => {
                    out.remove_extra_whitespaces = true;
                }
                Some("Replace") if step["pattern"]["String"] == " " => out.escapes_spaces = true,
                _ => {}
            }
        }
        Ok(out)
    }
}

fn json_str(v: &Value) -> Option<&str> {
    v.as_str()
}

/// `tokenizer.ggml.*` entries for a `.bitnet` file's tokenizer.
pub fn export(
    info: &bitnet_format::TokenizerInfo,
    vocab_size: u32,
    embed_hf_json: bool,
) -> Result<ExportedTokenizer, String> {
    let doc: Value = serde_json::from_str(info.tokenizer_json.get())
        .map_err(|e| format!("the embedded tokenizer.json is not JSON: {e}"))?;
    let model = &doc["model"];
    let unigram = match model["type"].as_str() {
        Some("BPE") => false,
        Some("Unigram") => true,
        _ => {
            return Err(format!(
                "only BPE and Unigram tokenizers can be written to GGUF, not {}",
                model["type"]
            ));
        }
    };
    let mut notes = Vec::new();
    let n = vocab_size as usize;
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let mut types = vec![NORMAL; n];
    let mut special = vec![false; n];
    // Unigram: `[piece, score]` in id order; BPE: a `piece → id` object.
    let mut unigram_scores = vec![0f32; n];
    if unigram {
        let vocab = model["vocab"]
            .as_array()
            .ok_or("tokenizer.json's Unigram model has no vocab list")?;
        if vocab.len() > n {
            return Err(format!(
                "the Unigram vocab has {} pieces, more than vocab_size {n}",
                vocab.len()
            ));
        }
        for (id, entry) in vocab.iter().enumerate() {
            let (Some(piece), Some(score)) = (entry[0].as_str(), entry[1].as_f64()) else {
                return Err(format!("Unigram vocab entry {id} is not [piece, score]"));
            };
            tokens[id] = Some(piece.to_string());
            unigram_scores[id] = score as f32;
        }
    } else {
        let vocab = model["vocab"]
            .as_object()
            .ok_or("tokenizer.json's model has no vocab object")?;
        for (tok, id) in vocab {
            let id = id.as_u64().ok_or("a vocab id is not a number")? as usize;
            if id >= n {
                return Err(format!("token {tok:?} has id {id}, outside vocab_size {n}"));
            }
            tokens[id] = Some(tok.clone());
        }
    }
    for t in doc["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (t["id"].as_u64(), t["content"].as_str()) else {
            continue;
        };
        let id = id as usize;
        if id >= n {
            return Err(format!(
                "added token {content:?} has id {id}, outside vocab_size {n}"
            ));
        }
        let is_special = t["special"].as_bool().unwrap_or(false);
        tokens[id] = Some(content.to_string());
        special[id] = is_special;
        types[id] = if is_special { CONTROL } else { USER_DEFINED };
    }
    let spm = model["byte_fallback"].as_bool() == Some(true);
    let mut meta: Vec<(String, MetadataValue)> = Vec::new();
    let mut push = |k: &str, v: MetadataValue| meta.push((k.to_string(), v));
    let padded = tokens.iter().filter(|t| t.is_none()).count();
    if padded > 0 {
        notes.push(format!(
            "{padded} ids without a token are written as unused [PAD{{id}}] tokens"
        ));
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                types[i] = UNUSED;
                format!("[PAD{i}]")
            })
        })
        .collect();
    let merges: Vec<String> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Value::String(s) => Some(s.clone()),
            Value::Array(p) if p.len() == 2 => {
                Some(format!("{} {}", json_str(&p[0])?, json_str(&p[1])?))
            }
            _ => None,
        })
        .collect();
    let normalizer = SentencePieceNormalizer::of(&doc["normalizer"])?;
    let in_normalization = doc["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["normalized"] == true && t["special"] != true);
    if doc["normalizer"]["user_defined_pieces"] == "sentencepiece" && in_normalization {
        notes.push(
            "llama.cpp splits the text at user-defined pieces and normalizes each part on its own (a dummy prefix each); this tokenizer normalizes the whole text as sentencepiece does, so text around user-defined pieces tokenizes differently there"
                .into(),
        );
    }
    if unigram {
        push("tokenizer.ggml.model", string("t5"));
        push("tokenizer.ggml.pre", string("default"));
        if let Some(u) = model["unk_id"].as_u64().filter(|&u| (u as usize) < n) {
            types[u as usize] = UNKNOWN;
            push(
                "tokenizer.ggml.unknown_token_id",
                MetadataValue::U32(u as u32),
            );
        }
        for (i, t) in tokens.iter().enumerate() {
            if types[i] == NORMAL && t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') {
                types[i] = BYTE;
            }
        }
        push(
            "tokenizer.ggml.add_space_prefix",
            MetadataValue::Bool(normalizer.dummy_prefix),
        );
        push(
            "tokenizer.ggml.remove_extra_whitespaces",
            MetadataValue::Bool(normalizer.remove_extra_whitespaces),
        );
        if let Some(map) = &normalizer.charsmap {
            push(
                "tokenizer.ggml.precompiled_charsmap",
                array(
                    GGUFValueType::U8,
                    map.iter().map(|&b| MetadataValue::U8(b)).collect(),
                ),
            );
        }
        if !normalizer.escapes_spaces {
            notes.push(
                "llama.cpp's Unigram (t5) tokenizer always escapes spaces as ▁; this tokenizer does not, so llama.cpp tokenizes spaces differently"
                    .into(),
            );
        }
        if model["byte_fallback"].as_bool() == Some(true) {
            notes.push(
                "llama.cpp's Unigram (t5) tokenizer has no byte fallback: a character outside the vocabulary becomes the unknown token there, where this tokenizer gives its bytes"
                    .into(),
            );
        }
        push(
            "tokenizer.ggml.tokens",
            array(GGUFValueType::String, tokens.iter().map(string).collect()),
        );
        push(
            "tokenizer.ggml.scores",
            array(
                GGUFValueType::F32,
                unigram_scores
                    .iter()
                    .map(|&s| MetadataValue::F32(s))
                    .collect(),
            ),
        );
    } else if spm {
        if normalizer.charsmap.is_some() || normalizer.remove_extra_whitespaces {
            notes.push(
                "llama.cpp's SentencePiece BPE (llama) tokenizer applies neither a character map nor remove_extra_whitespaces: text they change tokenizes differently there"
                    .into(),
            );
        }
        push("tokenizer.ggml.model", string("llama"));
        push("tokenizer.ggml.pre", string("default"));
        let unk = model["unk_token"].as_str();
        // Scores that order merges as tokenizer.json does: a piece made by the merge of rank r
        // scores -r; other pieces score below every merge.
        let mut rank = std::collections::HashMap::new();
        for (r, m) in merges.iter().enumerate() {
            if let Some((a, b)) = m.split_once(' ') {
                rank.entry(format!("{a}{b}")).or_insert(r);
            }
        }
        let base = merges.len() as f32;
        let scores: Vec<MetadataValue> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                MetadataValue::F32(match rank.get(t) {
                    Some(&r) => -(r as f32),
                    None => -(base + i as f32),
                })
            })
            .collect();
        for (i, t) in tokens.iter().enumerate() {
            if types[i] == NORMAL {
                if Some(t.as_str()) == unk {
                    types[i] = UNKNOWN;
                } else if t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') {
                    types[i] = BYTE;
                }
            }
        }
        if let Some(u) = unk.and_then(|u| tokens.iter().position(|t| t == u)) {
            push(
                "tokenizer.ggml.unknown_token_id",
                MetadataValue::U32(u as u32),
            );
        }
        push(
            "tokenizer.ggml.add_space_prefix",
            MetadataValue::Bool(normalizer.dummy_prefix),
        );
        push(
            "tokenizer.ggml.tokens",
            array(GGUFValueType::String, tokens.iter().map(string).collect()),
        );
        push("tokenizer.ggml.scores", array(GGUFValueType::F32, scores));
    } else {
        let pre = &doc["pre_tokenizer"];
        let pre_text = pre.to_string();
        let split_regex = pre["pretokenizers"][0]["pattern"]["Regex"].as_str();
        let name = if pre_text.contains("Split") && pre_text.contains("\\\\p{N}{1,3}") {
            "llama-bpe"
        } else if split_regex == Some(QWEN2_REGEX) {
            "qwen2"
        } else if *pre == falcon_e_pre_tokenizer() {
            notes.push(
                "pre-tokenizer written as \"falcon_e\" (bitnet.cpp knows it; ggml-org llama.cpp does not)"
                    .into(),
            );
            "falcon_e"
        } else if pre["type"] == "ByteLevel" && pre["use_regex"] == true {
            "gpt2"
        } else {
            notes.push(format!(
                "the pre-tokenizer {pre_text:.80} has no llama.cpp name: written as \"default\""
            ));
            "default"
        };
        if !doc["normalizer"].is_null() {
            notes.push(format!(
                "tokenizer.ggml.* cannot express the normalizer {}: llama.cpp will not apply it",
                doc["normalizer"]
            ));
        }
        push("tokenizer.ggml.model", string("gpt2"));
        push("tokenizer.ggml.pre", string(name));
        push(
            "tokenizer.ggml.tokens",
            array(GGUFValueType::String, tokens.iter().map(string).collect()),
        );
        push(
            "tokenizer.ggml.merges",
            array(GGUFValueType::String, merges.iter().map(string).collect()),
        );
    }
    push(
        "tokenizer.ggml.token_type",
        array(
            GGUFValueType::I32,
            types.iter().map(|&t| MetadataValue::I32(t)).collect(),
        ),
    );
    if let Some(b) = info.bos_token_id {
        push("tokenizer.ggml.bos_token_id", MetadataValue::U32(b));
    }
    if let Some(&e) = info.eos_token_ids.first() {
        push("tokenizer.ggml.eos_token_id", MetadataValue::U32(e));
    }
    if let Some(eot) = info
        .eos_token_ids
        .iter()
        .find(|&&id| tokens.get(id as usize).is_some_and(|t| t == "<|eot_id|>"))
    {
        push("tokenizer.ggml.eot_token_id", MetadataValue::U32(*eot));
    }
    push(
        EOS_IDS_KEY,
        array(
            GGUFValueType::U32,
            info.eos_token_ids
                .iter()
                .map(|&id| MetadataValue::U32(id))
                .collect(),
        ),
    );
    if let Some(p) = info.pad_token_id {
        push("tokenizer.ggml.padding_token_id", MetadataValue::U32(p));
    }
    push(
        "tokenizer.ggml.add_bos_token",
        MetadataValue::Bool(info.add_bos_token),
    );
    if let Some(t) = &info.chat_template {
        push("tokenizer.chat_template", string(t.clone()));
    }
    if embed_hf_json {
        push(
            "tokenizer.huggingface.json",
            string(info.tokenizer_json.get().to_string()),
        );
    }
    Ok(ExportedTokenizer {
        metadata: meta,
        notes,
    })
}
