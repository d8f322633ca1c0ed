//! The GGUF container (version 3, little-endian): header, metadata, tensor directory, aligned data.
//!
//! Reading and writing use `gguf-rs-lib` for everything it handles: the header it writes
//! ([`GGUFHeader`]), the typed metadata values ([`MetadataValue`], including nested arrays with its
//! allocation budget), the value-type table ([`GGUFValueType`]) and the byte size of every standard
//! ggml tensor type ([`GGUFTensorType`]).
//!
//! # The extension (why this module reads keys and the tensor directory itself)
//!
//! `gguf-rs-lib` 0.3 refuses two things that real BitNet files contain, so this module does those
//! two steps itself, in a few lines each, and hands everything else to the crate:
//!
//! 1. **Tensor type 36, bitnet.cpp's `I2_S`.** The crate's tensor directory reader validates every
//!    type id against upstream ggml, where 36 is unassigned. Here the directory entries (name,
//!    dimensions, type id, offset) are read directly and sized by [`tensor_size`]: `I2_S` is
//!    `ceil(n / 128) · 32 + 32` bytes (the 2-bit codes of all `n` elements in 128-element blocks,
//!    then the f32 scale and padding to 32 bytes: `n / 4 + 32` for the `n` that bitnet.cpp writes,
//!    always a multiple of 128); every other id is sized by the crate, and an id neither knows is an
//!    error naming the tensor and the id.
//! 2. **Architecture names that are not `lower_snake_case`.** bitnet.cpp's 2B-4T files use the
//!    architecture `bitnet-b1.58`, so their keys look like `bitnet-b1.58.block_count`; the crate's
//!    metadata map rejects such keys. Here keys are read as UTF-8 strings (at most 65535 bytes, no
//!    duplicates) and each value with [`MetadataValue::read_from`].
//!
//! The header is read here too, since the crate takes only version 3: version 2 is the same layout
//! (3 only allowed big-endian files), and llama.cpp and the `gguf` package read both.
//!
//! Parsing never panics and allocates only what the input's own length can back: every count and
//! length is checked against the bytes that remain before anything is reserved.

use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Write};
use std::path::Path;

use gguf_rs_lib::format::header::GGUFHeader;
use gguf_rs_lib::format::metadata::{MetadataArray, MetadataValue};
use gguf_rs_lib::format::types::{GGUFTensorType, GGUFValueType};

/// bitnet.cpp's `I2_S` tensor type id.
pub const GGML_TYPE_I2_S: u32 = 36;
/// Tensor type ids used here.
pub const GGML_TYPE_F32: u32 = 0;
pub const GGML_TYPE_F16: u32 = 1;
pub const GGML_TYPE_BF16: u32 = 30;
pub const GGML_TYPE_TQ1_0: u32 = 34;
pub const GGML_TYPE_TQ2_0: u32 = 35;
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Key of the alignment of tensor data.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// GGUF versions read: 2 and 3 have the same little-endian layout (1 had 32-bit counts).
const VERSIONS: [u32; 2] = [2, 3];
/// Longest metadata key accepted.
const MAX_KEY_LEN: u64 = 65_535;
/// Longest tensor name accepted (ggml's own limit is 64).
const MAX_NAME_LEN: u64 = 1024;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;

/// The name of a ggml tensor type id, for messages.
pub fn type_name(ggml_type: u32) -> String {
    match ggml_type {
        GGML_TYPE_I2_S => "I2_S".into(),
        37 => "I8_S (bitnet.cpp)".into(),
        38 => "TL1 (bitnet.cpp)".into(),
        t => match GGUFTensorType::from_u32(t) {
            Ok(k) => k.name().to_string(),
            Err(_) => format!("unknown type {t}"),
        },
    }
}

/// Byte size of a tensor of `ggml_type` with `dims` (ggml order, `dims[0]` contiguous).
pub fn tensor_size(ggml_type: u32, dims: &[u64]) -> Result<u64, String> {
    let n = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or("element count overflows")?;
    if ggml_type == GGML_TYPE_I2_S {
        return n
            .div_ceil(128)
            .checked_mul(32)
            .and_then(|b| b.checked_add(32))
            .ok_or_else(|| "size overflows".to_string());
    }
    let t = GGUFTensorType::from_u32(ggml_type)
        .map_err(|_| format!("tensor type {} is not supported", type_name(ggml_type)))?;
    let block = t.block_size() as u64;
    // A tensor of no dimensions is one element: its first dimension is 1, as in ggml.
    let first = dims.first().copied().unwrap_or(1);
    if block > 1 && first % block != 0 {
        return Err(format!(
            "first dimension {first} is not a multiple of {}'s block of {block}",
            t.name()
        ));
    }
    t.checked_calculate_size(n)
        .ok_or_else(|| format!("tensor type {} has no GGUF size", t.name()))
}

/// Why a file is not a GGUF file this reader accepts. Every variant says where.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("not a GGUF file (magic {found:02x?}, expected \"GGUF\")")]
    Magic { found: Vec<u8> },
    #[error("GGUF version {0} is not supported (versions 2 and 3 are){hint}", hint = endian_hint(*.0))]
    Version(u32),
    #[error("the file ends inside the {what}")]
    Truncated { what: String },
    #[error("metadata key {key:?}: {detail}")]
    Metadata { key: String, detail: String },
    #[error("tensor {name:?}: {detail}")]
    Tensor { name: String, detail: String },
    #[error("{0}")]
    Other(String),
}

/// A big-endian file's version reads as a multiple of 2^16 (llama.cpp says the same).
fn endian_hint(version: u32) -> &'static str {
    if version != 0 && version.trailing_zeros() >= 16 {
        "; the file may be big-endian"
    } else {
        ""
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous (column) dimension.
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Relative to the start of the data section.
    pub offset: u64,
    /// Byte length implied by the type and dimensions.
    pub size: u64,
}

impl TensorInfo {
    /// The logical shape, outermost first (`[rows, columns]` for matrices).
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A parsed GGUF file borrowing its bytes.
#[derive(Debug)]
pub struct GgufFile<'a> {
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetadataValue)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    pub data_start: u64,
    /// Index of each tensor by name, so lookups stay constant-time for any directory size.
    by_name: HashMap<String, usize>,
    bytes: &'a [u8],
}

fn truncated(what: impl Into<String>) -> ContainerError {
    ContainerError::Truncated { what: what.into() }
}

struct Input<'a> {
    cursor: Cursor<&'a [u8]>,
}

impl<'a> Input<'a> {
    fn remaining(&self) -> u64 {
        (self.cursor.get_ref().len() as u64).saturating_sub(self.cursor.position())
    }

    fn bytes(&mut self, n: u64, what: &str) -> Result<&'a [u8], ContainerError> {
        if n > self.remaining() {
            return Err(truncated(what));
        }
        let start = self.cursor.position() as usize;
        let end = start + n as usize;
        self.cursor.set_position(end as u64);
        Ok(&self.cursor.get_ref()[start..end])
    }

    fn u32(&mut self, what: &str) -> Result<u32, ContainerError> {
        Ok(u32::from_le_bytes(
            self.bytes(4, what)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self, what: &str) -> Result<u64, ContainerError> {
        Ok(u64::from_le_bytes(
            self.bytes(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    fn string(&mut self, max: u64, what: &str) -> Result<String, ContainerError> {
        let len = self.u64(what)?;
        if len > max {
            return Err(ContainerError::Other(format!(
                "{what} is {len} bytes long (at most {max})"
            )));
        }
        let b = self.bytes(len, what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| ContainerError::Other(format!("{what} is not UTF-8")))
    }
}

/// A metadata value as an integer, whatever its integer type (`None`: not an integer, or negative).
pub fn integer(value: &MetadataValue) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_i64().and_then(|v| u64::try_from(v).ok()))
}

/// The alignment of tensor data `metadata` declares: `general.alignment` (a positive integer of
/// any integer type: llama.cpp takes a u32 power of two, the `gguf` package any u32; the value
/// alone places the data) or, without it, 32.
pub fn alignment(metadata: &[(String, MetadataValue)]) -> Result<u64, ContainerError> {
    match metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some((k, v)) => integer(v)
            .filter(|&a| a > 0 && a <= u32::MAX as u64)
            .ok_or_else(|| ContainerError::Metadata {
                key: k.clone(),
                detail: format!("must be a positive integer of at most 32 bits, not {v:?}"),
            }),
    }
}

/// The smallest number of bytes a metadata value of this type can occupy (for count checks).
fn min_value_len(t: GGUFValueType) -> u64 {
    match t {
        GGUFValueType::U8 | GGUFValueType::I8 | GGUFValueType::Bool => 1,
        GGUFValueType::U16 | GGUFValueType::I16 => 2,
        GGUFValueType::U32 | GGUFValueType::I32 | GGUFValueType::F32 => 4,
        GGUFValueType::U64 | GGUFValueType::I64 | GGUFValueType::F64 => 8,
        GGUFValueType::String => 8,
        GGUFValueType::Array => 12,
    }
}

/// Check, before the crate decodes a value, that every array count it will meet is backed by
/// enough bytes (so no count can make it reserve memory the file does not hold).
fn check_value_counts(data: &[u8], t: GGUFValueType, depth: usize) -> Result<u64, String> {
    let mut pos = 0u64;
    let take = |pos: &mut u64, n: u64| -> Result<u64, String> {
        let start = *pos;
        let end = start.checked_add(n).ok_or("length overflows")?;
        if end > data.len() as u64 {
            return Err("the value runs past the end of the file".into());
        }
        *pos = end;
        Ok(start)
    };
    let read_u64 = |pos: &mut u64| -> Result<u64, String> {
        let s = take(pos, 8)? as usize;
        Ok(u64::from_le_bytes(data[s..s + 8].try_into().expect("8")))
    };
    match t {
        GGUFValueType::String => {
            let len = read_u64(&mut pos)?;
            take(&mut pos, len)?;
        }
        GGUFValueType::Array => {
            if depth > 8 {
                return Err("arrays nested more than 8 deep".into());
            }
            let s = take(&mut pos, 4)? as usize;
            let et = u32::from_le_bytes(data[s..s + 4].try_into().expect("4"));
            let et = GGUFValueType::from_u32(et)
                .map_err(|_| format!("unknown array element type {et}"))?;
            let count = read_u64(&mut pos)?;
            let min = count
                .checked_mul(min_value_len(et))
                .ok_or("array length overflows")?;
            if min > data.len() as u64 - pos {
                return Err(format!(
                    "array of {count} elements runs past the end of the file"
                ));
            }
            match et {
                GGUFValueType::String | GGUFValueType::Array => {
                    for _ in 0..count {
                        let used = check_value_counts(&data[pos as usize..], et, depth + 1)?;
                        pos += used;
                    }
                }
                _ => {
                    take(&mut pos, min)?;
                }
            }
        }
        other => {
            take(&mut pos, min_value_len(other))?;
        }
    }
    Ok(pos)
}

impl<'a> GgufFile<'a> {
    /// Parse and check the whole container: header, metadata, tensor directory, and that every
    /// tensor's bytes lie inside the file, aligned, without overlapping another's.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ContainerError> {
        if bytes.len() < 4 || &bytes[..4] != b"GGUF" {
            return Err(ContainerError::Magic {
                found: bytes[..bytes.len().min(4)].to_vec(),
            });
        }
        let mut input = Input {
            cursor: Cursor::new(bytes),
        };
        input.cursor.set_position(4);
        let version = input.u32("header")?;
        if !VERSIONS.contains(&version) {
            return Err(ContainerError::Version(version));
        }
        let tensor_count = input.u64("header")?;
        let metadata_kv_count = input.u64("header")?;

        // Each metadata entry takes at least 12 bytes, each tensor entry at least 24.
        if metadata_kv_count > input.remaining() / 12 {
            return Err(ContainerError::Other(format!(
                "the header announces {} metadata entries, more than the file can hold",
                metadata_kv_count
            )));
        }
        let mut metadata: Vec<(String, MetadataValue)> = Vec::new();
        let mut keys = HashSet::new();
        for i in 0..metadata_kv_count {
            let key = input.string(MAX_KEY_LEN, &format!("key of metadata entry {i}"))?;
            let meta_err = |detail: String| ContainerError::Metadata {
                key: key.clone(),
                detail,
            };
            if key.is_empty() {
                return Err(meta_err("empty key".into()));
            }
            if !keys.insert(key.clone()) {
                return Err(meta_err("appears twice".into()));
            }
            let raw = input
                .u32("metadata value type")
                .map_err(|_| meta_err("the file ends inside its value".into()))?;
            let t = GGUFValueType::from_u32(raw)
                .map_err(|_| meta_err(format!("unknown value type {raw}")))?;
            let start = input.cursor.position() as usize;
            let used = check_value_counts(&bytes[start..], t, 0).map_err(meta_err)?;
            let mut slice = &bytes[start..start + used as usize];
            let value =
                MetadataValue::read_from(&mut slice, t).map_err(|e| meta_err(e.to_string()))?;
            input.cursor.set_position((start as u64) + used);
            metadata.push((key, value));
        }

        let alignment = alignment(&metadata)?;

        if tensor_count > input.remaining() / 24 {
            return Err(ContainerError::Other(format!(
                "the header announces {} tensors, more than the file can hold",
                tensor_count
            )));
        }
        let mut tensors = Vec::new();
        let mut by_name = HashMap::new();
        for i in 0..tensor_count {
            let name = input.string(MAX_NAME_LEN, &format!("name of tensor {i}"))?;
            let tensor_err = |detail: String| ContainerError::Tensor {
                name: name.clone(),
                detail,
            };
            if by_name.insert(name.clone(), tensors.len()).is_some() {
                return Err(tensor_err("appears twice in the tensor directory".into()));
            }
            let what = format!("directory entry of tensor {name:?}");
            // 0 dimensions is a scalar (one element), as llama.cpp reads it.
            let n_dims = input.u32(&what)?;
            if n_dims > MAX_DIMS {
                return Err(tensor_err(format!(
                    "{n_dims} dimensions (at most {MAX_DIMS} allowed)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(input.u64(&what)?);
            }
            let ggml_type = input.u32(&what)?;
            let offset = input.u64(&what)?;
            let size = tensor_size(ggml_type, &dims).map_err(tensor_err)?;
            if offset % alignment != 0 {
                return Err(tensor_err(format!(
                    "offset {offset} is not a multiple of the alignment {alignment}"
                )));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
                size,
            });
        }
        let end_of_directory = input.cursor.position();
        let data_start = end_of_directory.div_ceil(alignment) * alignment;
        let data_len = (bytes.len() as u64).saturating_sub(data_start);
        let mut ranges: Vec<(u64, u64, &str)> = Vec::with_capacity(tensors.len());
        for t in &tensors {
            let end = t.offset.checked_add(t.size).filter(|&e| e <= data_len);
            let Some(end) = end else {
                return Err(ContainerError::Tensor {
                    name: t.name.clone(),
                    detail: format!(
                        "its {} bytes at offset {} run past the end of the file",
                        t.size, t.offset
                    ),
                });
            };
            ranges.push((t.offset, end, &t.name));
        }
        ranges.sort();
        for w in ranges.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(ContainerError::Tensor {
                    name: w[1].2.to_string(),
                    detail: format!("its bytes overlap those of tensor {:?}", w[0].2),
                });
            }
        }
        Ok(GgufFile {
            version,
            metadata,
            tensors,
            alignment,
            data_start,
            by_name,
            bytes,
        })
    }

    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor of this file (checked in [`GgufFile::parse`]).
    pub fn data(&self, t: &TensorInfo) -> &'a [u8] {
        &self.bytes[self.range(t)]
    }

    /// Where the bytes of a tensor of this file lie in it.
    pub fn range(&self, t: &TensorInfo) -> std::ops::Range<usize> {
        let start = (self.data_start + t.offset) as usize;
        start..start + t.size as usize
    }
}

/// A tensor to be written: name, ggml dimensions (`dims[0]` contiguous) and type.
#[derive(Debug, Clone)]
pub struct OutTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
}

/// Helpers to build metadata values.
pub fn string(s: impl Into<String>) -> MetadataValue {
    MetadataValue::String(s.into())
}

pub fn array(element_type: GGUFValueType, values: Vec<MetadataValue>) -> MetadataValue {
    MetadataValue::Array(Box::new(MetadataArray {
        element_type,
        length: values.len() as u64,
        values,
    }))
}

/// Write a GGUF file atomically (a temporary file beside `dest`, renamed when complete):
/// `metadata` in the order given, then the tensor directory, then each tensor's bytes as returned
/// by `produce(i)` for tensor `i`, each aligned as `metadata` says ([`alignment`]).
pub fn write<E: From<std::io::Error> + From<String>>(
    dest: &Path,
    metadata: &[(String, MetadataValue)],
    tensors: &[OutTensor],
    mut produce: impl FnMut(usize) -> Result<Vec<u8>, E>,
) -> Result<(), E> {
    // Beside `dest`, registered so that a signal handler removes it, deleted on any early return.
    let (file, partial) = bitnet_format::partial::PartialFile::create(dest)?;
    let mut out = std::io::BufWriter::new(&file);
    let lib = |e: gguf_rs_lib::GGUFError| E::from(format!("writing GGUF: {e}"));
    let align = alignment(metadata).map_err(|e| E::from(e.to_string()))?;

    let mut head = Vec::new();
    GGUFHeader::new(tensors.len() as u64, metadata.len() as u64)
        .write_to(&mut head)
        .map_err(lib)?;
    for (key, value) in metadata {
        head.extend_from_slice(&(key.len() as u64).to_le_bytes());
        head.extend_from_slice(key.as_bytes());
        head.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
        value.write_to(&mut head).map_err(lib)?;
    }
    let mut sizes = Vec::with_capacity(tensors.len());
    let mut offset = 0u64;
    for t in tensors {
        let size = tensor_size(t.ggml_type, &t.dims)
            .map_err(|e| E::from(format!("tensor {}: {e}", t.name)))?;
        head.extend_from_slice(&(t.name.len() as u64).to_le_bytes());
        head.extend_from_slice(t.name.as_bytes());
        head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            head.extend_from_slice(&d.to_le_bytes());
        }
        head.extend_from_slice(&t.ggml_type.to_le_bytes());
        head.extend_from_slice(&offset.to_le_bytes());
        sizes.push(size);
        offset = (offset + size).div_ceil(align) * align;
    }
    head.resize(
        (head.len() as u64).div_ceil(align) as usize * align as usize,
        0,
    );
    out.write_all(&head)?;
    for (i, size) in sizes.iter().enumerate() {
        let data = produce(i)?;
        if data.len() as u64 != *size {
            return Err(E::from(format!(
                "tensor {}: {} bytes produced, {} expected",
                tensors[i].name,
                data.len(),
                size
            )));
        }
        out.write_all(&data)?;
        let padded = size.div_ceil(align) * align;
        out.write_all(&vec![0u8; (padded - size) as usize])?;
    }
    out.flush()?;
    drop(out);
    file.sync_all()?;
    partial.persist(dest)?;
    Ok(())
}
