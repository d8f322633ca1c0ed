//! The normalizer of an embedded `tokenizer.json`: the `tokenizers` crate's own normalizers, except
//! that a `Precompiled` one (sentencepiece's character map) is applied with sentencepiece's rule
//! ([`CharsMap`]) so that text normalizes exactly as the model's sentencepiece tokenizer did.

use base64::prelude::{BASE64_STANDARD, Engine as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use tokenizers::{NormalizedString, NormalizerWrapper};

use super::charsmap::CharsMap;

pub enum Normalizer {
    Library(NormalizerWrapper),
    CharsMap(CharsMap),
    Sequence(Vec<Normalizer>),
}

impl Normalizer {
    fn from_value(v: Value) -> Result<Self, String> {
        match v.get("type").and_then(Value::as_str) {
            Some("Sequence") => {
                let Some(Value::Array(items)) = v.get("normalizers") else {
                    return Err("a Sequence normalizer without a normalizers list".into());
                };
                let items = items.iter().cloned().map(Normalizer::from_value);
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
                ))
            }
            _ => serde_json::from_value(v)
                .map(Normalizer::Library)
                .map_err(|e| e.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Normalizer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Normalizer::from_value(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl tokenizers::Normalizer for Normalizer {
    fn normalize(&self, normalized: &mut NormalizedString) -> tokenizers::Result<()> {
        match self {
            Normalizer::Library(n) => n.normalize(normalized),
            Normalizer::CharsMap(m) => {
                m.normalize(normalized);
                Ok(())
            }
            Normalizer::Sequence(items) => items.iter().try_for_each(|n| n.normalize(normalized)),
        }
    }
}
