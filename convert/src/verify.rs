//! Proof that a file holds exactly the ternary model: every packed tensor is unpacked with the format
//! crate's reference unpacker and compared with the values computed from the source, scale bit for
//! bit; the finished file is re-read and its checksums, padding and directory checked. Also the
//! `verify` command's full check of any `.bitnet` file.

use std::path::{Path, PathBuf};

use bitnet_format::{BitnetFile, Encoding, FormatError, TernaryLayout, ternary};
use rayon::prelude::*;

use crate::plan::PlannedTensor;

/// A verification failure; every one is an error, never a warning.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "verification of {tensor} failed: the reference unpacker rejects the packed bytes: {detail}"
    )]
    Unpack { tensor: String, detail: String },
    #[error(
        "verification of {tensor} failed: row {row}, column {col} unpacks to {actual}, but the source gives {expected}"
    )]
    Value {
        tensor: String,
        row: usize,
        col: usize,
        expected: i8,
        actual: i8,
    },
    #[error(
        "verification of {tensor} failed: the scale unpacks to {actual:e} (bits {actual_bits:#010x}), but the source gives {expected:e} (bits {expected_bits:#010x})"
    )]
    Scale {
        tensor: String,
        expected: f32,
        expected_bits: u32,
        actual: f32,
        actual_bits: u32,
    },
    #[error("{}", crate::at_path(.path, .source))]
    File {
        path: PathBuf,
        #[source]
        source: FormatError,
    },
    #[error("{path}: {detail}")]
    Directory { path: PathBuf, detail: String },
}

/// Unpack `packed` with the reference unpacker and compare with `values` and `scale`.
pub fn check_ternary(
    tensor: &str,
    layout: TernaryLayout,
    rows: usize,
    cols: usize,
    packed: &[u8],
    values: &[i8],
    scale: f32,
) -> Result<(), VerifyError> {
    let (unpacked, unpacked_scale) = ternary::unpack(layout, rows as u64, cols as u64, packed)
        .map_err(|e| VerifyError::Unpack {
            tensor: tensor.to_string(),
            detail: e.to_string(),
        })?;
    if let Some(i) = unpacked.iter().zip(values).position(|(a, b)| a != b) {
        return Err(VerifyError::Value {
            tensor: tensor.to_string(),
            row: i / cols.max(1),
            col: i % cols.max(1),
            expected: values[i],
            actual: unpacked[i],
        });
    }
    if unpacked.len() != values.len() {
        return Err(VerifyError::Unpack {
            tensor: tensor.to_string(),
            detail: format!("{} values, expected {}", unpacked.len(), values.len()),
        });
    }
    if unpacked_scale.to_bits() != scale.to_bits() {
        return Err(VerifyError::Scale {
            tensor: tensor.to_string(),
            expected: scale,
            expected_bits: scale.to_bits(),
            actual: unpacked_scale,
            actual_bits: unpacked_scale.to_bits(),
        });
    }
    Ok(())
}

/// Re-read a written file: checksums, zero padding, and a directory equal to the plan.
pub fn check_written(path: &Path, plan: &[PlannedTensor]) -> Result<(), VerifyError> {
    let file_error = |source| VerifyError::File {
        path: path.to_path_buf(),
        source,
    };
    let file = BitnetFile::open(path).map_err(file_error)?;
    file.verify().map_err(file_error)?;
    let directory = |detail: String| VerifyError::Directory {
        path: path.to_path_buf(),
        detail,
    };
    if file.tensors().len() != plan.len() {
        return Err(directory(format!(
            "{} tensors, {} planned",
            file.tensors().len(),
            plan.len()
        )));
    }
    for (info, planned) in file.tensors().iter().zip(plan) {
        if info.name != planned.name
            || info.shape != planned.shape
            || info.encoding != planned.encoding
        {
            return Err(directory(format!(
                "tensor {} ({}, {:?}) where {} ({}, {:?}) was planned",
                info.name,
                info.encoding.label(),
                info.shape,
                planned.name,
                planned.encoding.label(),
                planned.shape
            )));
        }
    }
    Ok(())
}

/// What [`verify_file`] checked.
#[derive(Debug, Clone)]
pub struct VerifySummary {
    pub tensors: usize,
    pub bytes: u64,
}

/// The `verify` command: open (preamble, header, directory), recompute every checksum, check every
/// padding byte, then decode every tensor with the reference decoders (invalid or non-zero padding
/// codes, non-finite scales). Returns the first problem in file order.
pub fn verify_file(path: &Path) -> Result<VerifySummary, VerifyError> {
    let file_error = |source| VerifyError::File {
        path: path.to_path_buf(),
        source,
    };
    let file = BitnetFile::open(path).map_err(file_error)?;
    file.verify().map_err(file_error)?;
    let mut tensors: Vec<_> = file.tensors().iter().collect();
    tensors.sort_by_key(|t| t.offset);
    let first_problem = tensors
        .par_iter()
        .enumerate()
        .filter_map(|(i, info)| {
            let view = file.view(info);
            let result = match info.encoding {
                Encoding::Ternary(_) => view.unpack_ternary().map(drop),
                _ => view.to_f32().map(drop),
            };
            result.err().map(|e| (i, e))
        })
        .min_by_key(|(i, _)| *i);
    if let Some((_, e)) = first_problem {
        return Err(file_error(e));
    }
    Ok(VerifySummary {
        tensors: file.tensors().len(),
        bytes: file.bytes().len() as u64,
    })
}
