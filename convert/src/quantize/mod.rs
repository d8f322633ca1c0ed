//! Turning checkpoint tensors into the format's encodings: absmean quantization of latent weights,
//! unpacking of Hugging Face's packed ternary weights and their scales, and per-row int8 and 4-bit
//! block embeddings.

pub mod absmean;
pub mod hf_packed;
pub mod i8_row;
pub mod q4_b32;

/// A problem with the values of one tensor. Each names the tensor, its file and the position.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("tensor {tensor} ({file}): {value} at {position} is not finite")]
    NonFinite {
        tensor: String,
        file: String,
        position: String,
        value: f32,
    },
    #[error(
        "tensor {tensor} ({file}): invalid ternary code 3 at row {row}, column {col} (packed byte [{packed_row}, {col}])"
    )]
    InvalidCode {
        tensor: String,
        file: String,
        row: usize,
        col: usize,
        packed_row: usize,
    },
    #[error("tensor {tensor} ({file}): malformed weight_scale: {detail}")]
    MalformedScale {
        tensor: String,
        file: String,
        detail: String,
    },
    #[error("tensor {tensor} ({file}): {value} at {position} does not fit in {encoding}")]
    OutOfRange {
        tensor: String,
        file: String,
        position: String,
        value: f32,
        encoding: &'static str,
    },
}

/// `row r, column c` for matrices, `element i` otherwise.
pub fn position(shape: &[usize], index: usize) -> String {
    match shape {
        [_, cols] if *cols > 0 => format!("row {}, column {}", index / cols, index % cols),
        _ => format!("element {index}"),
    }
}
