//! `bitnet-convert`: Hugging Face checkpoints of every BitNet b1.58 family to `.bitnet` files,
//! verified against the format crate's reference unpacker.
//!
//! The pipeline ([`convert::convert`]): [`source`] finds the checkpoint (local directory or Hub
//! repo, downloaded into the standard cache), [`family`] reads `config.json`, [`tokenizer`] the
//! tokenizer files, [`plan`] maps the checkpoint's tensors to canonical ones, [`write`](mod@write)
//! converts each tensor ([`quantize`], then packed by [`bitnet_format::parallel::pack`]) and writes
//! it, and [`verify`] proves the result.

pub mod convert;
pub mod family;
pub mod floats;
pub mod gguf;
pub mod inspect;
pub mod plan;
pub mod quantize;
pub mod source;
pub mod summary;
pub mod synthetic;
pub mod tokenizer;
pub mod verify;
pub mod write;

pub use convert::{
    CONVERTER, ConvertError, ConvertOptions, auto_layout, compact_layout, convert,
    remove_partial_files,
};
pub use plan::EmbeddingsChoice;
pub use source::{HubOptions, SourceSpec};
pub use summary::ConvertReport;

/// `path: source`, or `source` alone when it already starts by naming `path` (as the `.bitnet`
/// reader's errors do), so that a message names its file once.
pub(crate) fn at_path(path: &std::path::Path, source: &dyn std::fmt::Display) -> String {
    let (path, text) = (path.display().to_string(), source.to_string());
    match text.strip_prefix(&path) {
        Some(rest) if rest.starts_with(": ") || rest.starts_with(' ') => text,
        _ => format!("{path}: {text}"),
    }
}
