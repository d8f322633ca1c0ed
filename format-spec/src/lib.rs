//! The `.bitnet` file format: a fixed preamble, a JSON header, and 64-byte-aligned tensors whose
//! ternary layouts are described by parameters in the header. `SPEC.md` beside this crate is normative;
//! this crate is its reference reader and writer.

mod encoding;
mod error;
#[doc(hidden)]
pub mod fuzz;
mod header;
pub mod names;
pub mod parallel;
pub mod partial;
mod preamble;
pub mod q4;
mod reader;
pub mod ternary;
mod unique_members;
mod writer;

pub use encoding::{
    ALIGN, BASE3_BLOCK_K, Encoding, I2S_BLOCKS_ALLOWED, LayoutParams, MAX_ELEMENTS, Q4_BLOCK,
    TILE_ROWS_ALLOWED, TILED_BLOCK_K, TILED_LANE_K, TernaryLayout, TiledGeometry, align_up,
    element_count, q4_codes_offset,
};
pub use error::{FormatError, Result, error_chain, repeated_clause};
pub use header::{
    Activation, GenerationDefaults, Header, ModelConfig, Provenance, RopeScaling, Source,
    SourceFile, TensorEntry, TokenizerInfo,
};
pub use partial::remove_partial_files;
pub use preamble::{MAGIC, MAJOR, MAX_HEADER_LEN, MINOR, PREAMBLE_LEN, Preamble, header_checksum};
pub use reader::{BitnetFile, FileIndex, TensorInfo, TensorView};
pub use writer::{FileWriter, TensorSpec, TensorWriter};
