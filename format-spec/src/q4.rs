//! The `q4_b32` encoding (SPEC.md §5.1): 4-bit codes in blocks of 32 columns with one f16 scale per
//! block, `value = (n - 8) · d`. The arithmetic and the in-block nibble order are GGML's Q4_0, so
//! GGUF Q4_0 tensors move in and out without loss; the scales are stored apart from the codes so
//! that kernels stream codes in whole 64-byte lines.

use crate::encoding::{Q4_BLOCK, q4_codes_offset};

/// Bytes of codes per block: two 4-bit codes per byte.
pub const BLOCK_CODE_BYTES: usize = Q4_BLOCK as usize / 2;

/// A value that is not a valid `q4_b32` tensor body.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Q4Error {
    #[error("block scale of row {row}, block {block} is not finite ({value})")]
    NonFiniteScale {
        row: usize,
        block: usize,
        value: f32,
    },
    #[error("padding byte {offset} after the block scales is {value:#04x}, not zero")]
    NonZeroPadding { offset: usize, value: u8 },
}

/// Byte offsets inside a `q4_b32` tensor of `rows × cols` elements.
#[derive(Debug, Clone, Copy)]
pub struct Q4Geometry {
    pub rows: usize,
    pub cols: usize,
}

impl Q4Geometry {
    /// Blocks per row.
    pub fn blocks(&self) -> usize {
        self.cols / Q4_BLOCK as usize
    }

    /// Offset of the f16 scale of `block` in `row`.
    pub fn scale_offset(&self, row: usize, block: usize) -> usize {
        2 * (row * self.blocks() + block)
    }

    /// Offset of the first code byte (row 0, block 0).
    pub fn codes_offset(&self) -> usize {
        q4_codes_offset((self.rows * self.cols) as u64) as usize
    }

    /// Offset of the 16 code bytes of `block` in `row`.
    pub fn block_codes_offset(&self, row: usize, block: usize) -> usize {
        self.codes_offset() + row * self.cols / 2 + block * BLOCK_CODE_BYTES
    }

    /// Total byte length.
    pub fn byte_len(&self) -> usize {
        self.codes_offset() + self.rows * self.cols / 2
    }
}

/// Pack the 4-bit codes (0..=15) of one block: element `j` goes to the low nibble of byte `j`,
/// element `j + 16` to its high nibble.
pub fn pack_block(codes: &[u8; 32]) -> [u8; BLOCK_CODE_BYTES] {
    std::array::from_fn(|j| (codes[j] & 0x0f) | (codes[j + 16] << 4))
}

/// A whole tensor from its block scales (row-major, `rows · cols / 32`) and its codes (0..=15, one
/// per element, row-major): the reference encoder, element by element as SPEC.md §5.1 reads.
pub fn encode(g: Q4Geometry, scales: &[f32], codes: &[u8]) -> Vec<u8> {
    assert_eq!(scales.len(), g.rows * g.blocks(), "one scale per block");
    assert_eq!(codes.len(), g.rows * g.cols, "one code per element");
    let mut data = vec![0u8; g.byte_len()];
    for (b, s) in scales.iter().enumerate() {
        data[2 * b..2 * b + 2].copy_from_slice(&half::f16::from_f32(*s).to_le_bytes());
    }
    for (b, block) in codes.chunks_exact(Q4_BLOCK as usize).enumerate() {
        let at = g.codes_offset() + BLOCK_CODE_BYTES * b;
        data[at..at + BLOCK_CODE_BYTES]
            .copy_from_slice(&pack_block(block.try_into().expect("32 codes")));
    }
    data
}

/// The 32 values of one block from its scale and code bytes.
pub fn decode_block(d: f32, bytes: &[u8], out: &mut [f32]) {
    for (j, &b) in bytes[..BLOCK_CODE_BYTES].iter().enumerate() {
        out[j] = ((b & 0x0f) as i32 - 8) as f32 * d;
        out[j + BLOCK_CODE_BYTES] = ((b >> 4) as i32 - 8) as f32 * d;
    }
}

/// Read the f16 scale at `offset`.
pub fn scale_at(data: &[u8], offset: usize) -> f32 {
    half::f16::from_le_bytes([data[offset], data[offset + 1]]).to_f32()
}

/// Decode a whole tensor to row-major f32, checking that every scale is finite and the padding
/// after the scales is zero. `data` must be exactly [`Q4Geometry::byte_len`] bytes.
pub fn decode(g: Q4Geometry, data: &[u8]) -> Result<Vec<f32>, Q4Error> {
    let scales_end = g.rows * g.blocks() * 2;
    if let Some(i) = data[scales_end..g.codes_offset()]
        .iter()
        .position(|&b| b != 0)
    {
        return Err(Q4Error::NonZeroPadding {
            offset: scales_end + i,
            value: data[scales_end + i],
        });
    }
    let mut out = vec![0.0f32; g.rows * g.cols];
    for (row, values) in out.chunks_exact_mut(g.cols).enumerate() {
        for (block, chunk) in values.chunks_exact_mut(Q4_BLOCK as usize).enumerate() {
            let d = scale_at(data, g.scale_offset(row, block));
            if !d.is_finite() {
                return Err(Q4Error::NonFiniteScale {
                    row,
                    block,
                    value: d,
                });
            }
            decode_block(d, &data[g.block_codes_offset(row, block)..], chunk);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_nibble_order_matches_the_spec_example() {
        let codes: [u8; 32] = std::array::from_fn(|i| i as u8 % 16);
        let packed = pack_block(&codes);
        assert_eq!(packed[0], 0x00);
        assert_eq!(packed[1], 0x11);
        assert_eq!(packed[15], 0xff);
        let mut out = [0.0f32; 32];
        decode_block(0.5, &packed, &mut out);
        for (i, v) in out.iter().enumerate() {
            assert_eq!(*v, ((i % 16) as f32 - 8.0) * 0.5);
        }
    }

    #[test]
    fn encode_then_decode_gives_every_value_back() {
        let g = Q4Geometry { rows: 2, cols: 64 };
        let scales = [0.5f32, -0.25, 2.0, 0.0];
        let codes: Vec<u8> = (0..128).map(|i| (i * 7 % 16) as u8).collect();
        let values = decode(g, &encode(g, &scales, &codes)).unwrap();
        for (i, v) in values.iter().enumerate() {
            assert_eq!(*v, (codes[i] as f32 - 8.0) * scales[i / 32], "element {i}");
        }
    }

    #[test]
    fn geometry_pads_the_scales_to_64_bytes() {
        let g = Q4Geometry { rows: 3, cols: 64 };
        assert_eq!(g.codes_offset(), 64);
        assert_eq!(g.block_codes_offset(2, 1), 64 + 2 * 32 + 16);
        assert_eq!(g.byte_len(), 64 + 96);
        assert_eq!(g.scale_offset(2, 1), 10);
    }
}
