//! The normalizer of an embedded `tokenizer.json`: the `tokenizers` crate's own normalizers, except
//! that a `Precompiled` one (sentencepiece's character map) is applied with sentencepiece's rule
//! ([`CharsMap`]) so that text normalizes exactly as the model's sentencepiece tokenizer did,
//! keeping sentencepiece's user-defined pieces whole when the tokenizer has them
//! ([`UserDefinedPieces`]).

use std::sync::Arc;

use base64::prelude::{BASE64_STANDARD, Engine as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use tokenizers::{NormalizedString, NormalizerWrapper};

use super::charsmap::CharsMap;
use super::user_defined::UserDefinedPieces;

pub enum Normalizer {
    Library(NormalizerWrapper),
    /// The map, and the pieces it leaves as they are.
    CharsMap(CharsMap, Option<Arc<UserDefinedPieces>>),
    Sequence(Vec<Normalizer>),
}

impl Normalizer {
    /// The normalizer of `v`, whose character maps keep `whole` as they are.
    pub fn from_value(v: Value, whole: Option<&Arc<UserDefinedPieces>>) -> Result<Self, String> {
        match v.get("type").and_then(Value::as_str) {
            Some("Sequence") => {
                let Some(Value::Array(items)) = v.get("normalizers") else {
                    return Err("a Sequence normalizer without a normalizers list".into());
                };
                let items = items
                    .iter()
                    .cloned()
                    .map(|n| Normalizer::from_value(n, whole));
                Ok(Normalizer::Sequence(items.collect::<Result<_, _>>()?))
            }
            Some("Precompiled") => {
                let text = v
                    .get("precompiled_charsmap")
                    .and_then(Value::as_str)
                    .ok_or("a Precompiled normalizer without precompiled_charsmap")?;
                let bytes = BASE64_STANDARD
                    .decode(text)
                    .map_err(|e| format!("precompiled_charsmap is not base64: {e}"))?;
                Ok(Normalizer::CharsMap(
                    CharsMap::parse(&bytes).map_err(|e| e.to_string())?,
                    whole.cloned(),
                ))
            }
            _ => serde_json::from_value(v)
                .map(Normalizer::Library)
                .map_err(|e| e.to_string()),
        }
    }
}

/// Without user-defined pieces (the tokenizer pipeline's type needs it; the runtime builds its
/// normalizer with [`Normalizer::from_value`]).
impl<'de> Deserialize<'de> for Normalizer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Normalizer::from_value(Value::deserialize(d)?, None).map_err(serde::de::Error::custom)
    }
}

impl tokenizers::Normalizer for Normalizer {
    fn normalize(&self, normalized: &mut NormalizedString) -> tokenizers::Result<()> {
        match self {
            Normalizer::Library(n) => n.normalize(normalized),
            Normalizer::CharsMap(m, whole) => {
                m.normalize(normalized, whole.as_deref());
                Ok(())
            }
            Normalizer::Sequence(items) => items.iter().try_for_each(|n| n.normalize(normalized)),
        }
    }
}
