//! Writing NumPy `.npy` files (format version 1.0), atomically.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use bitnet_format::partial::PartialFile;

/// Write a little-endian float32 array of `shape` to `path` as every output is written: a
/// temporary file beside it (removed on failure or by the Ctrl-C handler), with the permissions of
/// a normally created file, renamed over `path` when complete.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut bytes = Vec::with_capacity(header.len() + 10 + data.len() * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let write = || {
        let (mut file, partial) = PartialFile::create(path)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        partial.persist(path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}
