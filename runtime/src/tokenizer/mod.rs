//! Text ↔ token ids with the Hugging Face tokenizer embedded in the file, and UTF-8-correct
//! incremental decoding for streaming output.

mod charsmap;
mod normalizer;
mod user_defined;

use std::sync::Arc;

use bitnet_format::TokenizerInfo;
use serde_json::Value;
use tokenizers::{DecoderWrapper, ModelWrapper, PostProcessorWrapper};

use normalizer::Normalizer;
use user_defined::{PreTokenizer, UserDefinedPieces};

pub use user_defined::UserDefinedError;

/// The `tokenizers` pipeline with this crate's normalizer and pre-tokenizer (see [`normalizer`]
/// and [`user_defined`]).
type Inner = tokenizers::TokenizerImpl<
    ModelWrapper,
    Normalizer,
    PreTokenizer,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// Why text could not be turned into tokens or back.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("this model file has no tokenizer")]
    Missing,
    #[error("the embedded tokenizer.json cannot be loaded: {0}")]
    Load(String),
    #[error("the embedded tokenizer.json cannot be loaded")]
    UserDefined(#[from] UserDefinedError),
    #[error("cannot encode the input: {0}")]
    Encode(String),
    #[error("cannot decode token ids: {0}")]
    Decode(String),
}

/// The model's tokenizer plus its special-token conventions.
pub struct Tokenizer {
    inner: Inner,
    bos: Option<u32>,
    add_bos: bool,
    eos: Vec<u32>,
}

impl Tokenizer {
    /// Load the header's tokenizer; `None` in the header is [`TokenizerError::Missing`].
    pub fn from_info(info: Option<&TokenizerInfo>) -> Result<Self, TokenizerError> {
        let info = info.ok_or(TokenizerError::Missing)?;
        let load = |e: &dyn std::fmt::Display| TokenizerError::Load(e.to_string());
        let mut doc: Value =
            serde_json::from_str(info.tokenizer_json.get()).map_err(|e| load(&e))?;
        let pieces = UserDefinedPieces::take(&mut doc)?.map(Arc::new);
        // The normalizer is built here because it needs the pieces.
        let normalizer = match doc.get_mut("normalizer").map(Value::take) {
            None | Some(Value::Null) => None,
            Some(v) => Some(Normalizer::from_value(v, pieces.as_ref()).map_err(|e| load(&e))?),
        };
        let mut inner: Inner = serde_json::from_value(doc).map_err(|e| load(&e))?;
        inner.with_normalizer(normalizer).map_err(|e| load(&e))?;
        if let Some(pieces) = pieces {
            pieces.check(inner.get_model())?;
            // sentencepiece's BPE takes each piece as a symbol of its own; its Unigram lattice
            // holds them like any other piece, which the model already does.
            if matches!(inner.get_model(), ModelWrapper::BPE(_)) {
                inner.with_pre_tokenizer(Some(PreTokenizer::UserDefined(pieces)));
            }
        }
        Ok(Tokenizer {
            inner,
            bos: info.bos_token_id,
            add_bos: info.add_bos_token,
            eos: info.eos_token_ids.clone(),
        })
    }

    /// Encode a plain prompt: the tokenizer's own special tokens, then BOS first if the model
    /// wants one and the tokenizer did not add it.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = self.encode(text, true)?;
        if let (true, Some(bos)) = (self.add_bos, self.bos)
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// Encode text as is; `special` lets the tokenizer's post-processor add its special tokens.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, special)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// Whether generation stops at `id`.
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos.contains(&id)
    }

    /// The text of a token id (e.g. `<|begin_of_text|>`), for chat templates.
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> &[u32] {
        &self.eos
    }
}

/// Turns a growing list of token ids into text pieces, never splitting a UTF-8 character or a
/// multi-token grapheme the tokenizer only renders whole: a piece is released once decoding no
/// longer ends in U+FFFD.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl StreamDecoder {
    /// Add `id` and return the text that became final, if any.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<Option<String>, TokenizerError> {
        self.ids.push(id);
        let before = tok.decode(&self.ids[self.prefix..self.read])?;
        let now = tok.decode(&self.ids[self.prefix..])?;
        if now.len() > before.len()
            && !now.ends_with('\u{FFFD}')
            && now.is_char_boundary(before.len())
        {
            self.prefix = self.read;
            self.read = self.ids.len();
            return Ok(Some(now[before.len()..].to_string()));
        }
        Ok(None)
    }

    /// Whatever is still held back (at the end of generation).
    pub fn flush(&mut self, tok: &Tokenizer) -> Result<Option<String>, TokenizerError> {
        let before = tok.decode(&self.ids[self.prefix..self.read])?;
        let now = tok.decode(&self.ids[self.prefix..])?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(
            (now.len() > before.len() && now.is_char_boundary(before.len()))
                .then(|| now[before.len()..].to_string()),
        )
    }
}
