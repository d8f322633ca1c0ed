//! Reference (scalar, deliberately plain) packing and unpacking of every ternary layout.
//!
//! Everything here follows SPEC.md §6 element by element through [`code_position`]; it is the oracle
//! that faster packers and the runtime's kernels are tested against.

use crate::encoding::{
    BASE3_BLOCK_K, I2S_TAIL_BYTES, TILED_BLOCK_K, TILED_LANE_K, TILED_SCALE_BYTES, TernaryLayout,
};

/// The 2-bit code of a ternary value: `w + 1`.
pub fn encode(w: i8) -> u8 {
    (w + 1) as u8
}

/// The ternary value of a 2-bit code, or `None` for the invalid code 3.
pub fn decode(code: u8) -> Option<i8> {
    match code {
        0..=2 => Some(code as i8 - 1),
        _ => None,
    }
}

/// The code of the value 0, which every padding position holds.
pub const PAD_CODE: u8 = 1;

/// Why a ternary tensor could not be packed or unpacked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TernaryError {
    #[error("{actual} values given for a {rows}x{cols} matrix")]
    ValueCount { rows: u64, cols: u64, actual: u64 },
    #[error("value {value} at row {row}, column {col} is not -1, 0 or 1")]
    NotTernary { row: u64, col: u64, value: i8 },
    #[error("data is {actual} bytes, the layout needs {expected}")]
    DataLength { expected: u64, actual: u64 },
    #[error("invalid code 3 at row {row}, column {col}")]
    InvalidCode { row: u64, col: u64 },
    #[error("padding position holds code {code} instead of {PAD_CODE} (the code of 0)")]
    BadPadding { code: u8 },
    #[error("byte {offset} of the tensor is {value:#04x}, not one of the 243 base-3 code bytes")]
    NotBase3 { offset: u64, value: u8 },
    #[error("reserved byte {offset} of the tensor is {value:#04x}, not zero")]
    ReservedNotZero { offset: u64, value: u8 },
    #[error("scale {scale} is not finite")]
    BadScale { scale: f32 },
}

/// Where the code of element `(row, col)` lives: byte offset within the tensor's data and its slot
/// in that byte ([`read_code`]). `row < rows` and `col < cols` are the caller's to ensure.
pub fn code_position(layout: TernaryLayout, cols: u64, row: u64, col: u64) -> (u64, u32) {
    match layout {
        TernaryLayout::I2s { block } => {
            let block = block as u64;
            let group = block / 4;
            let index = row * cols + col;
            let (b, e) = (index / block, index % block);
            (b * group + e % group, (e / group) as u32)
        }
        TernaryLayout::Tiled { tile_rows } | TernaryLayout::Base3 { tile_rows } => {
            let tile_rows = tile_rows as u64;
            let bk = match layout {
                TernaryLayout::Base3 { .. } => BASE3_BLOCK_K,
                _ => TILED_BLOCK_K,
            } as u64;
            let lk = TILED_LANE_K as u64;
            let k_blocks = cols.div_ceil(bk);
            let (tile, r) = (row / tile_rows, row % tile_rows);
            let (kb, kk) = (col / bk, col % bk);
            let block_start = TILED_SCALE_BYTES + (tile * k_blocks + kb) * tile_rows * 4;
            (block_start + r * 4 + kk % lk, (kk / lk) as u32)
        }
    }
}

/// Codes per byte: four 2-bit fields, or five base-3 digits.
pub fn codes_per_byte(layout: TernaryLayout) -> u32 {
    match layout {
        TernaryLayout::Base3 { .. } => 5,
        _ => 4,
    }
}

/// The code in `slot` of `byte` (for base3, of a byte [`base3_valid`] accepts).
pub fn read_code(layout: TernaryLayout, byte: u8, slot: u32) -> u8 {
    match layout {
        TernaryLayout::I2s { .. } => (byte >> (6 - 2 * slot)) & 3,
        TernaryLayout::Tiled { .. } => (byte >> (2 * slot)) & 3,
        TernaryLayout::Base3 { .. } => base3_digit(byte, slot),
    }
}

/// `byte` with the code in `slot` replaced by `code` (0, 1 or 2).
pub fn write_code(layout: TernaryLayout, byte: u8, slot: u32, code: u8) -> u8 {
    let shift = match layout {
        TernaryLayout::I2s { .. } => 6 - 2 * slot,
        TernaryLayout::Tiled { .. } => 2 * slot,
        TernaryLayout::Base3 { .. } => {
            let mut digits: [u8; 5] = std::array::from_fn(|p| base3_digit(byte, p as u32));
            digits[slot as usize] = code;
            return base3_encode(digits);
        }
    };
    (byte & !(3 << shift)) | (code << shift)
}

/// The base3 byte of five codes, `digits[0]` the most significant: `ceil(v · 256 / 243)` with
/// `v = Σ digits[p] · 3^(4-p)` (SPEC.md §6.4).
pub fn base3_encode(digits: [u8; 5]) -> u8 {
    let v = digits.iter().fold(0u32, |v, &d| 3 * v + d as u32);
    (v * 256).div_ceil(243) as u8
}

/// Digit `p` (0 the most significant) of a base3 byte: `⌊3 · ((b · 3^p) mod 256) / 256⌋`.
pub fn base3_digit(b: u8, p: u32) -> u8 {
    let x = (b as u32 * 3u32.pow(p)) % 256;
    (3 * x / 256) as u8
}

/// Whether `b` is one of the 243 bytes [`base3_encode`] produces.
pub fn base3_valid(b: u8) -> bool {
    base3_encode(std::array::from_fn(|p| base3_digit(b, p as u32))) == b
}

/// Byte offset of the f32 scale within the tensor's data.
pub fn scale_offset(layout: TernaryLayout, rows: u64, cols: u64) -> u64 {
    match layout {
        TernaryLayout::I2s { .. } => layout.byte_len(rows, cols).unwrap_or(0) - I2S_TAIL_BYTES,
        TernaryLayout::Tiled { .. } | TernaryLayout::Base3 { .. } => 0,
    }
}

/// The byte range holding codes (everything else in the tensor is scale or reserved zero bytes).
fn code_range(layout: TernaryLayout, rows: u64, cols: u64) -> std::ops::Range<u64> {
    let len = layout.byte_len(rows, cols).unwrap_or(0);
    match layout {
        TernaryLayout::I2s { .. } => 0..len - I2S_TAIL_BYTES,
        TernaryLayout::Tiled { .. } | TernaryLayout::Base3 { .. } => TILED_SCALE_BYTES..len,
    }
}

/// The byte whose every code is [`PAD_CODE`].
pub fn pad_byte(layout: TernaryLayout) -> u8 {
    (0..codes_per_byte(layout)).fold(0, |b, slot| write_code(layout, b, slot, PAD_CODE))
}

/// Pack row-major ternary `values` (`rows × cols`, each -1, 0 or 1) and the per-tensor `scale`.
pub fn pack(
    layout: TernaryLayout,
    rows: u64,
    cols: u64,
    values: &[i8],
    scale: f32,
) -> Result<Vec<u8>, TernaryError> {
    if values.len() as u64 != rows * cols {
        return Err(TernaryError::ValueCount {
            rows,
            cols,
            actual: values.len() as u64,
        });
    }
    if !scale.is_finite() {
        return Err(TernaryError::BadScale { scale });
    }
    let len = layout
        .byte_len(rows, cols)
        .expect("shape checked by caller") as usize;
    let mut out = vec![0u8; len];
    let codes = code_range(layout, rows, cols);
    // Every code position starts as the code of 0, so padding needs no separate pass.
    out[codes.start as usize..codes.end as usize].fill(pad_byte(layout));
    for row in 0..rows {
        for col in 0..cols {
            let w = values[(row * cols + col) as usize];
            if !(-1..=1).contains(&w) {
                return Err(TernaryError::NotTernary { row, col, value: w });
            }
            let (byte, slot) = code_position(layout, cols, row, col);
            let b = &mut out[byte as usize];
            *b = write_code(layout, *b, slot, encode(w));
        }
    }
    let s = scale_offset(layout, rows, cols) as usize;
    out[s..s + 4].copy_from_slice(&scale.to_le_bytes());
    Ok(out)
}

/// Read the per-tensor scale.
pub fn read_scale(
    layout: TernaryLayout,
    rows: u64,
    cols: u64,
    data: &[u8],
) -> Result<f32, TernaryError> {
    check_len(layout, rows, cols, data)?;
    let s = scale_offset(layout, rows, cols) as usize;
    let scale = f32::from_le_bytes(data[s..s + 4].try_into().expect("4 bytes"));
    if scale.is_finite() {
        Ok(scale)
    } else {
        Err(TernaryError::BadScale { scale })
    }
}

fn check_len(layout: TernaryLayout, rows: u64, cols: u64, data: &[u8]) -> Result<(), TernaryError> {
    let expected = layout.byte_len(rows, cols).unwrap_or(u64::MAX);
    if data.len() as u64 != expected {
        return Err(TernaryError::DataLength {
            expected,
            actual: data.len() as u64,
        });
    }
    Ok(())
}

/// Unpack to row-major values and the scale, checking everything the spec requires of the bytes:
/// no code 3 (every base3 byte one of the 243 code bytes), padding positions hold the code of 0,
/// reserved bytes are zero, the scale is finite.
pub fn unpack(
    layout: TernaryLayout,
    rows: u64,
    cols: u64,
    data: &[u8],
) -> Result<(Vec<i8>, f32), TernaryError> {
    let scale = read_scale(layout, rows, cols, data)?;
    let codes = code_range(layout, rows, cols);
    let s = scale_offset(layout, rows, cols);
    for offset in (0..data.len() as u64).filter(|o| !codes.contains(o) && !(s..s + 4).contains(o)) {
        let value = data[offset as usize];
        if value != 0 {
            return Err(TernaryError::ReservedNotZero { offset, value });
        }
    }
    if let TernaryLayout::Base3 { .. } = layout {
        for offset in codes.clone() {
            let value = data[offset as usize];
            if !base3_valid(value) {
                return Err(TernaryError::NotBase3 { offset, value });
            }
        }
    }
    // Mark which code slots hold real elements; every other slot in the code range is padding.
    let mut is_element = vec![0u8; data.len()];
    let mut values = Vec::with_capacity((rows * cols) as usize);
    for row in 0..rows {
        for col in 0..cols {
            let (byte, slot) = code_position(layout, cols, row, col);
            let code = read_code(layout, data[byte as usize], slot);
            values.push(decode(code).ok_or(TernaryError::InvalidCode { row, col })?);
            is_element[byte as usize] |= 1 << slot;
        }
    }
    for offset in codes {
        let (byte, mask) = (data[offset as usize], is_element[offset as usize]);
        for slot in 0..codes_per_byte(layout) {
            let code = read_code(layout, byte, slot);
            if mask & (1 << slot) == 0 && code != PAD_CODE {
                return Err(TernaryError::BadPadding { code });
            }
        }
    }
    Ok((values, scale))
}
