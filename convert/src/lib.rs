//! `bitnet-convert`: Hugging Face checkpoints of every BitNet b1.58 family to `.bitnet` files,
//! verified against the format crate's reference unpacker.
//!
//! The pipeline ([`convert::convert`]): [`source`] finds the checkpoint (local directory or Hub
//! repo, downloaded into the standard cache), [`family`] reads `config.json`, [`tokenizer`] the
//! tokenizer files, [`plan`] maps the checkpoint's tensors to canonical ones, [`write`] converts each
//! tensor ([`quantize`], [`pack`]) and writes it, and [`verify`] proves the result.

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
    CONVERTER, ConvertError, ConvertOptions, auto_layout, convert, remove_partial_files,
};
pub use plan::EmbeddingsChoice;
pub use source::{HubOptions, SourceSpec};
pub use summary::ConvertReport;
