//! sentencepiece's user-defined pieces in a `tokenizer.json` (SPEC §3.2): when the normalizer has
//! `"user_defined_pieces": "sentencepiece"`, the non-special added tokens with `normalized: true`
//! are matched the way sentencepiece matches them instead of being split from the text before it
//! is normalized (the `tokenizers` library's way, which gives every part its own dummy prefix).
//! sentencepiece normalizes the whole text once, taking at each step the longest piece the rest
//! starts with as it is (the character map does not touch it); its BPE then takes the longest
//! piece at each position of the normalized text, from the left, as a symbol of its own, and its
//! Unigram lattice holds the pieces like any other (with the score the converter wrote).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use tokenizers::tokenizer::normalizer::Range;
use tokenizers::{Model, NormalizedString, PreTokenizedString, PreTokenizerWrapper, Token};

/// The value of the normalizer's `user_defined_pieces` this module implements.
const SENTENCEPIECE: &str = "sentencepiece";

/// Why a tokenizer.json's user-defined pieces cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UserDefinedError {
    #[error("the normalizer's user_defined_pieces is {0}, not \"sentencepiece\"")]
    UnknownMark(String),
    #[error("sentencepiece user-defined pieces need a BPE or Unigram model, not {0}")]
    Model(String),
    #[error("sentencepiece user-defined pieces need no pre-tokenizer, but the tokenizer has {0}")]
    PreTokenizer(String),
    #[error("the user-defined added token {0} has no content string and u32 id")]
    Malformed(String),
    #[error("the user-defined piece {content:?} sets lstrip, rstrip or single_word")]
    Stripped { content: String },
    #[error("the user-defined piece {content:?} has id {id}, which the model gives to {found:?}")]
    NotInModel {
        content: String,
        id: u32,
        found: Option<String>,
    },
}

/// The pieces, found as sentencepiece's prefix matcher finds them: the longest one a text starts
/// with.
#[derive(Debug, Default)]
pub struct UserDefinedPieces {
    /// By first character, longest first.
    by_first: HashMap<char, Vec<(String, u32)>>,
}

impl UserDefinedPieces {
    pub(super) fn new(pieces: impl IntoIterator<Item = (String, u32)>) -> Self {
        let mut by_first: HashMap<char, Vec<(String, u32)>> = HashMap::new();
        for (content, id) in pieces {
            if let Some(c) = content.chars().next() {
                by_first.entry(c).or_default().push((content, id));
            }
        }
        for list in by_first.values_mut() {
            list.sort_by_key(|(content, _)| std::cmp::Reverse(content.len()));
        }
        UserDefinedPieces { by_first }
    }

    /// If the mark is there: the pieces, taken out of `added_tokens` (so that the `tokenizers`
    /// library does not split the text at them first). `Ok(None)` for any other document.
    pub fn take(doc: &mut Value) -> Result<Option<Self>, UserDefinedError> {
        let Some(mark) = doc
            .get("normalizer")
            .and_then(|n| n.get("user_defined_pieces"))
        else {
            return Ok(None);
        };
        if mark != SENTENCEPIECE {
            return Err(UserDefinedError::UnknownMark(mark.to_string()));
        }
        let model = doc.get("model").and_then(|m| m.get("type"));
        if !matches!(model.and_then(Value::as_str), Some("BPE" | "Unigram")) {
            return Err(UserDefinedError::Model(
                model.map_or("none".into(), Value::to_string),
            ));
        }
        if let Some(pre) = doc.get("pre_tokenizer").filter(|p| !p.is_null()) {
            return Err(UserDefinedError::PreTokenizer(pre.to_string()));
        }
        let mut taken = Vec::new();
        if let Some(tokens) = doc.get_mut("added_tokens").and_then(Value::as_array_mut) {
            let (pieces, rest) = std::mem::take(tokens).into_iter().partition(|t| {
                t.get("normalized") == Some(&Value::Bool(true))
                    && t.get("special") != Some(&Value::Bool(true))
            });
            *tokens = rest;
            taken = pieces;
        }
        let pieces = taken
            .into_iter()
            .map(|t| {
                let content = t.get("content").and_then(Value::as_str);
                let id = t
                    .get("id")
                    .and_then(Value::as_u64)
                    .and_then(|id| u32::try_from(id).ok());
                let (Some(content), Some(id)) = (content, id) else {
                    return Err(UserDefinedError::Malformed(t.to_string()));
                };
                if ["lstrip", "rstrip", "single_word"]
                    .iter()
                    .any(|k| t.get(*k) == Some(&Value::Bool(true)))
                {
                    return Err(UserDefinedError::Stripped {
                        content: content.to_string(),
                    });
                }
                Ok((content.to_string(), id))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(UserDefinedPieces::new(pieces)))
    }

    /// Every piece must be the model's own piece of that id: BPE emits the id, Unigram finds the
    /// piece in its vocabulary.
    pub fn check(&self, model: &impl Model) -> Result<(), UserDefinedError> {
        for (content, id) in self.by_first.values().flatten() {
            let found = model.id_to_token(*id);
            if found.as_deref() != Some(content.as_str()) {
                return Err(UserDefinedError::NotInModel {
                    content: content.clone(),
                    id: *id,
                    found,
                });
            }
        }
        Ok(())
    }

    /// The longest piece `text` starts with.
    pub fn longest_prefix(&self, text: &str) -> Option<(&str, u32)> {
        let first = text.chars().next()?;
        self.by_first
            .get(&first)?
            .iter()
            .find(|(content, _)| text.starts_with(content.as_str()))
            .map(|(content, id)| (content.as_str(), *id))
    }

    /// `normalized` cut into the pieces found from the left (each its own token) and the text
    /// between them, as sentencepiece's BPE cuts its symbols.
    fn isolate(
        &self,
        normalized: NormalizedString,
    ) -> tokenizers::Result<Vec<(NormalizedString, Option<Vec<Token>>)>> {
        let text = normalized.get();
        let mut cuts: Vec<(usize, usize, Option<u32>)> = Vec::new();
        let (mut start, mut at) = (0, 0);
        while let Some(c) = text[at..].chars().next() {
            match self.longest_prefix(&text[at..]) {
                Some((piece, id)) => {
                    if start < at {
                        cuts.push((start, at, None));
                    }
                    cuts.push((at, at + piece.len(), Some(id)));
                    at += piece.len();
                    start = at;
                }
                None => at += c.len_utf8(),
            }
        }
        if cuts.is_empty() {
            return Ok(vec![(normalized, None)]);
        }
        if start < text.len() {
            cuts.push((start, text.len(), None));
        }
        cuts.into_iter()
            .map(|(from, to, id)| {
                let slice = normalized
                    .slice(Range::Normalized(from..to))
                    .ok_or("a user-defined piece does not align with the normalized text")?;
                let token =
                    id.map(|id| vec![Token::new(id, slice.get().to_string(), (0, to - from))]);
                Ok((slice, token))
            })
            .collect()
    }
}

/// The pre-tokenizer of an embedded `tokenizer.json`: the `tokenizers` crate's own, or, for a BPE
/// model with sentencepiece user-defined pieces, the cut of [`UserDefinedPieces::isolate`].
pub enum PreTokenizer {
    Library(PreTokenizerWrapper),
    UserDefined(Arc<UserDefinedPieces>),
}

impl<'de> Deserialize<'de> for PreTokenizer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PreTokenizerWrapper::deserialize(d).map(PreTokenizer::Library)
    }
}

impl tokenizers::PreTokenizer for PreTokenizer {
    fn pre_tokenize(&self, pretokenized: &mut PreTokenizedString) -> tokenizers::Result<()> {
        match self {
            PreTokenizer::Library(p) => p.pre_tokenize(pretokenized),
            PreTokenizer::UserDefined(pieces) => {
                pretokenized.split(|_, normalized| pieces.isolate(normalized))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pieces() -> UserDefinedPieces {
        UserDefinedPieces::new([("<a>".into(), 5), ("<a><a>".into(), 6), ("é".into(), 7)])
    }

    #[test]
    fn the_longest_piece_wins() {
        let p = pieces();
        assert_eq!(p.longest_prefix("<a><a>x"), Some(("<a><a>", 6)));
        assert_eq!(p.longest_prefix("<a><b>"), Some(("<a>", 5)));
        assert_eq!(p.longest_prefix("x<a>"), None);
        assert_eq!(p.longest_prefix(""), None);
    }

    #[test]
    fn isolate_cuts_from_the_left() {
        let cut = |text: &str| -> Vec<(String, Option<u32>)> {
            pieces()
                .isolate(NormalizedString::from(text))
                .unwrap()
                .into_iter()
                .map(|(n, t)| (n.get().to_string(), t.map(|t| t[0].id)))
                .collect()
        };
        let s = |t: &str, id: Option<u32>| (t.to_string(), id);
        assert_eq!(
            cut("x<a><a><a>éy"),
            [
                s("x", None),
                s("<a><a>", Some(6)),
                s("<a>", Some(5)),
                s("é", Some(7)),
                s("y", None)
            ]
        );
        assert_eq!(cut("plain"), [s("plain", None)]);
        assert_eq!(cut("<a>"), [s("<a>", Some(5))]);
    }

    #[test]
    fn take_reads_the_mark_and_removes_the_pieces() {
        let token = |id: u32, content: &str, normalized: bool, special: bool| {
            json!({"id": id, "content": content, "normalized": normalized, "special": special,
                   "lstrip": false, "rstrip": false, "single_word": false})
        };
        let mut doc = json!({
            "normalizer": {"type": "Sequence", "normalizers": [], "user_defined_pieces": "sentencepiece"},
            "pre_tokenizer": null,
            "model": {"type": "Unigram"},
            "added_tokens": [token(0, "<unk>", false, true), token(3, "<a>", true, false),
                             token(4, "<b>", true, true), token(5, "<c>", false, false)],
        });
        let p = UserDefinedPieces::take(&mut doc).unwrap().unwrap();
        assert_eq!(p.longest_prefix("<a>"), Some(("<a>", 3)));
        assert_eq!(p.longest_prefix("<b>"), None);
        let left: Vec<u64> = doc["added_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_u64().unwrap())
            .collect();
        assert_eq!(left, [0, 4, 5]);

        let mut unmarked =
            json!({"normalizer": null, "added_tokens": [token(3, "<a>", true, false)]});
        assert!(UserDefinedPieces::take(&mut unmarked).unwrap().is_none());
        assert_eq!(unmarked["added_tokens"].as_array().unwrap().len(), 1);

        let mut bad = doc.clone();
        bad["normalizer"]["user_defined_pieces"] = json!("llama.cpp");
        assert!(matches!(
            UserDefinedPieces::take(&mut bad),
            Err(UserDefinedError::UnknownMark(_))
        ));
        let mut bad = doc.clone();
        bad["model"]["type"] = json!("WordPiece");
        assert!(matches!(
            UserDefinedPieces::take(&mut bad),
            Err(UserDefinedError::Model(_))
        ));
        let mut bad = doc.clone();
        bad["pre_tokenizer"] = json!({"type": "Whitespace"});
        assert!(matches!(
            UserDefinedPieces::take(&mut bad),
            Err(UserDefinedError::PreTokenizer(_))
        ));
        let mut bad = doc;
        bad["added_tokens"] = json!([{"id": -1, "content": "<a>", "normalized": true}]);
        assert!(matches!(
            UserDefinedPieces::take(&mut bad),
            Err(UserDefinedError::Malformed(_))
        ));
    }
}
