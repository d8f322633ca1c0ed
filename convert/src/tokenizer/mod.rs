//! The tokenizer and generation settings of a checkpoint, for the header: `tokenizer.json` (or one
//! converted from a SentencePiece `tokenizer.model`), the chat template, special token ids and the
//! sampling defaults of `generation_config.json`.
//!
//! Decisions (README "Converting models" repeats them):
//! - `tokenizer_json` is `tokenizer.json` re-serialised compactly (object keys sorted).
//! - `chat_template`: `tokenizer_config.json`'s (a string, or the `default` entry of a list of named
//!   templates), else the `chat_template.jinja` file.
//! - `bos_token_id`: `config.json`'s, else `tokenizer_config.json`'s `bos_token` looked up.
//! - `eos_token_ids`: `config.json`'s `eos_token_id` (int or list), then `generation_config.json`'s,
//!   then `<|eot_id|>` if the vocabulary has it; in that order, without repeats.
//! - `pad_token_id`: `config.json`'s, else `tokenizer_config.json`'s `pad_token` looked up.
//! - `add_bos_token`: `tokenizer_config.json`'s if given; else true if the tokenizer's
//!   post-processor adds the BOS token; else true for Llama tokenizers (`tokenizer_class`
//!   `LlamaTokenizer*`), which add it in code; else false.

pub mod sentencepiece;

use bitnet_format::{GenerationDefaults, TokenizerInfo};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::source::{Checkpoint, SourceError};

/// Why the tokenizer files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{file}: {detail}")]
    Invalid { file: String, detail: String },
}

fn invalid(file: &str, detail: impl Into<String>) -> TokenizerError {
    TokenizerError::Invalid {
        file: file.to_string(),
        detail: detail.into(),
    }
}

/// What the header gets from the tokenizer files.
#[derive(Debug, Clone, Default)]
pub struct TokenizerSettings {
    pub tokenizer: Option<TokenizerInfo>,
    pub generation: GenerationDefaults,
    pub notes: Vec<String>,
}

/// Read the tokenizer files of `checkpoint`. `config` is its `config.json`.
pub fn read(
    checkpoint: &Checkpoint,
    config: &Value,
    vocab_size: u32,
) -> Result<TokenizerSettings, TokenizerError> {
    let tokenizer_config = checkpoint.read_json("tokenizer_config.json")?;
    let tc = tokenizer_config.as_ref();
    let generation_config = checkpoint.read_json("generation_config.json")?;
    let mut settings = TokenizerSettings {
        generation: generation_defaults(generation_config.as_ref())?,
        ..Default::default()
    };

    let (tokenizer_json, file) = if let Some(t) = checkpoint.read_json("tokenizer.json")? {
        (t, "tokenizer.json")
    } else if let Some(bytes) = checkpoint.read_bytes("tokenizer.model")? {
        let (json, described) = convert_sentencepiece(checkpoint, &bytes, tc)?;
        settings.notes.push(format!(
            "tokenizer.json was made from the SentencePiece tokenizer.model ({described})"
        ));
        (json, "tokenizer.model")
    } else {
        settings.notes.push(
            "the checkpoint has no tokenizer.json or tokenizer.model: the file holds no tokenizer"
                .into(),
        );
        return Ok(settings);
    };
    let vocab = Vocab::new(&tokenizer_json, file)?;
    if let Some((content, id)) = vocab.max_id().filter(|(_, id)| *id >= vocab_size as u64) {
        return Err(invalid(
            file,
            format!("token {content:?} has id {id}, outside the model's vocab_size {vocab_size}"),
        ));
    }

    let token_in = |tc: Option<&Value>, key: &str| -> Option<u32> {
        token_content(tc?.get(key)?).and_then(|c| vocab.id(c))
    };
    let bos_token_id = config_id(config, "bos_token_id").or_else(|| token_in(tc, "bos_token"));
    let pad_token_id = config_id(config, "pad_token_id").or_else(|| token_in(tc, "pad_token"));
    let mut eos_token_ids = Vec::new();
    let mut push = |id: u32| {
        if !eos_token_ids.contains(&id) {
            eos_token_ids.push(id);
        }
    };
    ids(config.get("eos_token_id"))
        .into_iter()
        .for_each(&mut push);
    ids(generation_config
        .as_ref()
        .and_then(|g| g.get("eos_token_id")))
    .into_iter()
    .for_each(&mut push);
    if let Some(id) = vocab.id("<|eot_id|>") {
        push(id);
    }
    for (what, id) in bos_token_id
        .iter()
        .map(|id| ("bos_token_id", id))
        .chain(pad_token_id.iter().map(|id| ("pad_token_id", id)))
        .chain(eos_token_ids.iter().map(|id| ("eos_token_id", id)))
    {
        if *id >= vocab_size {
            return Err(invalid(
                "config.json",
                format!("{what} {id} is outside the model's vocab_size {vocab_size}"),
            ));
        }
    }

    let add_bos_token = match tc
        .and_then(|t| t.get("add_bos_token"))
        .and_then(Value::as_bool)
    {
        Some(b) => b,
        None => {
            let bos = bos_token_id.and_then(|id| vocab.content(id));
            post_processor_adds(&tokenizer_json, bos)
                || tc
                    .and_then(|t| t.get("tokenizer_class"))
                    .and_then(Value::as_str)
                    .is_some_and(|c| c.starts_with("LlamaTokenizer"))
        }
    };

    let chat_template = chat_template(checkpoint, tc)?;
    let compact = sorted_keys(tokenizer_json).to_string();
    settings.tokenizer = Some(TokenizerInfo {
        tokenizer_json: RawValue::from_string(compact)
            .map_err(|e| invalid(file, format!("cannot be embedded: {e}")))?,
        chat_template,
        bos_token_id,
        eos_token_ids,
        pad_token_id,
        add_bos_token,
    });
    Ok(settings)
}

/// The same JSON with every object's keys in sorted order, whatever map type serde_json was built
/// with (its `preserve_order` feature could be switched on by another crate of a build), so the
/// embedded document, and so the file, is the same for every build.
fn sorted_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sorted_keys(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted_keys).collect()),
        other => other,
    }
}

fn convert_sentencepiece(
    checkpoint: &Checkpoint,
    bytes: &[u8],
    tc: Option<&Value>,
) -> Result<(Value, String), TokenizerError> {
    let model = sentencepiece::SentencePieceModel::parse(bytes)
        .map_err(|e| invalid("tokenizer.model", e))?;
    let flag = |key: &str, default: bool| {
        tc.and_then(|t| t.get(key))
            .and_then(Value::as_bool)
            .unwrap_or(default)
    };
    let special_names: Vec<&str> = ["bos_token", "eos_token", "unk_token", "pad_token"]
        .iter()
        .filter_map(|k| tc.and_then(|t| t.get(*k)).and_then(token_content))
        .collect();
    let mut added = Vec::new();
    if let Some(decoder) = tc
        .and_then(|t| t.get("added_tokens_decoder"))
        .and_then(Value::as_object)
    {
        for (id, token) in decoder {
            let id: u32 = id.parse().map_err(|_| {
                invalid(
                    "tokenizer_config.json",
                    format!("added token id {id:?} is not a number"),
                )
            })?;
            let content = token_content(token).ok_or_else(|| {
                invalid(
                    "tokenizer_config.json",
                    format!("added token {id} has no content"),
                )
            })?;
            let special = token
                .get("special")
                .and_then(Value::as_bool)
                .unwrap_or(special_names.contains(&content));
            added.push((id, content.to_string(), special));
        }
    }
    if let Some(extra) = checkpoint.read_json("added_tokens.json")? {
        let extra = extra
            .as_object()
            .ok_or_else(|| invalid("added_tokens.json", "not a JSON object"))?;
        for (content, id) in extra {
            let id = id
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| invalid("added_tokens.json", format!("{content:?} has no id")))?;
            if !added.iter().any(|(i, _, _)| *i == id) {
                added.push((
                    id,
                    content.clone(),
                    special_names.contains(&content.as_str()),
                ));
            }
        }
    }
    let options = sentencepiece::ConvertOptions {
        add_bos: flag("add_bos_token", true),
        add_eos: flag("add_eos_token", false),
        added,
        user_defined: sentencepiece::UserDefinedPieces::SentencePiece,
    };
    let json = sentencepiece::to_tokenizer_json(&model, &options)
        .map_err(|e| invalid("tokenizer.model", e))?;
    Ok((json, model.describe()))
}

/// Token-to-id lookups in a `tokenizer.json` document.
struct Vocab<'a> {
    added: Vec<(&'a str, u64)>,
    model: &'a Value,
}

impl<'a> Vocab<'a> {
    fn new(tokenizer: &'a Value, file: &str) -> Result<Self, TokenizerError> {
        let model = tokenizer
            .get("model")
            .filter(|m| m.is_object())
            .ok_or_else(|| invalid(file, "no \"model\" object"))?;
        let added = tokenizer
            .get("added_tokens")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| Some((t.get("content")?.as_str()?, t.get("id")?.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Vocab { added, model })
    }

    fn id(&self, content: &str) -> Option<u32> {
        let id = self
            .added
            .iter()
            .find(|(c, _)| *c == content)
            .map(|(_, id)| *id)
            .or_else(|| match self.model.get("vocab")? {
                Value::Object(map) => map.get(content)?.as_u64(),
                Value::Array(pieces) => pieces
                    .iter()
                    .position(|p| p.get(0).and_then(Value::as_str) == Some(content))
                    .map(|i| i as u64),
                _ => None,
            })?;
        u32::try_from(id).ok()
    }

    fn content(&self, id: u32) -> Option<&'a str> {
        let id = id as u64;
        self.added
            .iter()
            .find(|(_, i)| *i == id)
            .map(|(c, _)| *c)
            .or_else(|| match self.model.get("vocab")? {
                Value::Object(map) => map
                    .iter()
                    .find(|(_, v)| v.as_u64() == Some(id))
                    .map(|(k, _)| k.as_str()),
                Value::Array(pieces) => pieces.get(id as usize)?.get(0)?.as_str(),
                _ => None,
            })
    }

    /// The token with the largest id.
    fn max_id(&self) -> Option<(String, u64)> {
        let from_vocab: Vec<(String, u64)> = match self.model.get("vocab") {
            Some(Value::Object(map)) => map
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                .collect(),
            Some(Value::Array(pieces)) => pieces
                .last()
                .map(|p| {
                    let c = p.get(0).and_then(Value::as_str).unwrap_or("").to_string();
                    vec![(c, pieces.len() as u64 - 1)]
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        self.added
            .iter()
            .map(|(c, id)| (c.to_string(), *id))
            .chain(from_vocab)
            .max_by_key(|(_, id)| *id)
    }
}

/// A token given as a string or as an `AddedToken` object with `content`.
fn token_content(v: &Value) -> Option<&str> {
    v.as_str()
        .or_else(|| v.get("content").and_then(Value::as_str))
}

fn config_id(config: &Value, key: &str) -> Option<u32> {
    config
        .get(key)
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
}

/// An id or a list of ids.
fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().and_then(|v| u32::try_from(v).ok()))
            .collect(),
        Some(x) => x
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .into_iter()
            .collect(),
        None => Vec::new(),
    }
}

/// Whether a `TemplateProcessing` post-processor (alone or in a sequence) starts single sequences
/// with the BOS token.
fn post_processor_adds(tokenizer: &Value, bos: Option<&str>) -> bool {
    let Some(bos) = bos else {
        return false;
    };
    fn adds(p: &Value, bos: &str) -> bool {
        match p.get("type").and_then(Value::as_str) {
            Some("TemplateProcessing") => {
                p.get("single")
                    .and_then(Value::as_array)
                    .and_then(|s| s.first())
                    .and_then(|first| first.get("SpecialToken"))
                    .and_then(|t| t.get("id"))
                    .and_then(Value::as_str)
                    == Some(bos)
            }
            Some("Sequence") => p
                .get("processors")
                .and_then(Value::as_array)
                .is_some_and(|ps| ps.iter().any(|q| adds(q, bos))),
            _ => false,
        }
    }
    tokenizer
        .get("post_processor")
        .is_some_and(|p| adds(p, bos))
}

fn chat_template(
    checkpoint: &Checkpoint,
    tc: Option<&Value>,
) -> Result<Option<String>, TokenizerError> {
    match tc.and_then(|t| t.get("chat_template")) {
        Some(Value::String(s)) => return Ok(Some(s.clone())),
        Some(Value::Array(list)) => {
            let default = list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"));
            return match default
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
            {
                Some(s) => Ok(Some(s.to_string())),
                None => Err(invalid(
                    "tokenizer_config.json",
                    "chat_template is a list of named templates without a \"default\" one",
                )),
            };
        }
        Some(Value::Null) | None => {}
        Some(_) => {
            return Err(invalid(
                "tokenizer_config.json",
                "chat_template is neither a string nor a list of named templates",
            ));
        }
    }
    match checkpoint.read_bytes("chat_template.jinja")? {
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| invalid("chat_template.jinja", "not UTF-8")),
        None => Ok(None),
    }
}

fn generation_defaults(g: Option<&Value>) -> Result<GenerationDefaults, TokenizerError> {
    let Some(g) = g else {
        return Ok(GenerationDefaults::default());
    };
    let real = |key: &str| -> Result<Option<f64>, TokenizerError> {
        match g.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| invalid("generation_config.json", format!("{key} is not a number"))),
        }
    };
    let int = |key: &str| -> Result<Option<u32>, TokenizerError> {
        match g.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| {
                    invalid(
                        "generation_config.json",
                        format!("{key} is not a small integer"),
                    )
                }),
        }
    };
    Ok(GenerationDefaults {
        temperature: real("temperature")?,
        top_k: int("top_k")?,
        top_p: real("top_p")?,
        min_p: real("min_p")?,
        repetition_penalty: real("repetition_penalty")?,
        max_new_tokens: int("max_new_tokens")?,
    })
}
