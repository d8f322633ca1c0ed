//! GGML's block-quantized types, for the full-precision tensors of a GGUF file (llama.cpp and
//! bitnet.cpp store `token_embd` and `output` as Q6_K, Q8_0, Q4_0, ... in their quantized files).
//!
//! Each type is a `#[repr(C)]` struct laid out exactly as ggml's `block_*` (the size is asserted at
//! compile time), read from the file's little-endian bytes, and dequantized with the arithmetic of
//! ggml's `dequantize_row_*` in the same f32 operation order, as the `gguf` Python package's
//! `gguf/quants.py` does too (`tests/tests/gguf_foreign.rs` compares the two bit for bit on its
//! output for random blocks, `testdata/gguf/blocks/dequant.gguf`), so an import is exact:
//!
//! | type | elements | bytes | value |
//! |---|---|---|---|
//! | Q4_0 | 32 | 18 | `(n - 8) · d`, `n` = low nibble of `qs[j]` for `j < 16`, high nibble of `qs[j - 16]` |
//! | Q4_1 | 32 | 20 | `n · d + m` (nibbles as Q4_0) |
//! | Q5_0 | 32 | 22 | `(n - 16) · d`, `n` = the Q4_0 nibble plus bit `j` of `qh` as bit 4 |
//! | Q5_1 | 32 | 24 | `n · d + m` (`n` as Q5_0) |
//! | Q8_0 | 32 | 34 | `q · d` |
//! | Q4_K | 256 | 144 | `(d · sc) · n - (dmin · m)` per 32-element sub-block, 6-bit `sc`, `m` |
//! | Q5_K | 256 | 176 | as Q4_K with a fifth bit from `qh` |
//! | Q6_K | 256 | 210 | `(d · sc) · (n - 32)` per 16-element sub-block, `sc` an i8, `n` 6 bits |
//!
//! Every scale is an f16 widened to f32; sums and products are single f32 operations, never fused.

use half::f16;

/// Elements per block of the 32-element types.
const QK: usize = 32;
/// Elements per super-block of the k-quants.
const QK_K: usize = 256;

/// ggml type ids of the block types handled here.
pub const GGML_TYPE_Q4_0: u32 = 2;
pub const GGML_TYPE_Q4_1: u32 = 3;
pub const GGML_TYPE_Q5_0: u32 = 6;
pub const GGML_TYPE_Q5_1: u32 = 7;
pub const GGML_TYPE_Q8_0: u32 = 8;
pub const GGML_TYPE_Q4_K: u32 = 12;
pub const GGML_TYPE_Q5_K: u32 = 13;
pub const GGML_TYPE_Q6_K: u32 = 14;

/// A ggml block: its layout (the struct), how it is read and what it dequantizes to.
trait Block: Sized {
    /// Elements per block.
    const ELEMENTS: usize;
    /// Bytes per block (ggml's `type_size`).
    const BYTES: usize = std::mem::size_of::<Self>();
    /// Read one block from exactly [`Block::BYTES`] bytes.
    fn read(b: &[u8]) -> Self;
    /// Write the block's [`Block::ELEMENTS`] values to `out`.
    fn dequantize(&self, out: &mut [f32]);
}

fn f16_at(b: &[u8], at: usize) -> f16 {
    f16::from_le_bytes([b[at], b[at + 1]])
}

fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    std::array::from_fn(|i| b[at + i])
}

/// `block_q4_0`.
#[repr(C)]
struct BlockQ4_0 {
    d: f16,
    qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

impl Block for BlockQ4_0 {
    const ELEMENTS: usize = QK;
    fn read(b: &[u8]) -> Self {
        BlockQ4_0 {
            d: f16_at(b, 0),
            qs: array(b, 2),
        }
    }
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
            out[j + QK / 2] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// `block_q4_1`.
#[repr(C)]
struct BlockQ4_1 {
    d: f16,
    m: f16,
    qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

impl Block for BlockQ4_1 {
    const ELEMENTS: usize = QK;
    fn read(b: &[u8]) -> Self {
        BlockQ4_1 {
            d: f16_at(b, 0),
            m: f16_at(b, 2),
            qs: array(b, 4),
        }
    }
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = (q & 0x0f) as f32 * d + m;
            out[j + QK / 2] = (q >> 4) as f32 * d + m;
        }
    }
}

/// The fifth bits of Q5_0 and Q5_1: bit `j` of `qh` belongs to element `j`.
fn q5_code(qs: &[u8; QK / 2], qh: u32, j: usize) -> u8 {
    let nibble = if j < QK / 2 {
        qs[j] & 0x0f
    } else {
        qs[j - QK / 2] >> 4
    };
    nibble | (((qh >> j) & 1) << 4) as u8
}

/// `block_q5_0`.
#[repr(C)]
struct BlockQ5_0 {
    d: f16,
    qh: [u8; 4],
    qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

impl Block for BlockQ5_0 {
    const ELEMENTS: usize = QK;
    fn read(b: &[u8]) -> Self {
        BlockQ5_0 {
            d: f16_at(b, 0),
            qh: array(b, 2),
            qs: array(b, 6),
        }
    }
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let qh = u32::from_le_bytes(self.qh);
        for (j, y) in out[..QK].iter_mut().enumerate() {
            *y = (q5_code(&self.qs, qh, j) as i32 - 16) as f32 * d;
        }
    }
}

/// `block_q5_1`.
#[repr(C)]
struct BlockQ5_1 {
    d: f16,
    m: f16,
    qh: [u8; 4],
    qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

impl Block for BlockQ5_1 {
    const ELEMENTS: usize = QK;
    fn read(b: &[u8]) -> Self {
        BlockQ5_1 {
            d: f16_at(b, 0),
            m: f16_at(b, 2),
            qh: array(b, 4),
            qs: array(b, 8),
        }
    }
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        let qh = u32::from_le_bytes(self.qh);
        for (j, y) in out[..QK].iter_mut().enumerate() {
            *y = q5_code(&self.qs, qh, j) as f32 * d + m;
        }
    }
}

/// `block_q8_0`.
#[repr(C)]
struct BlockQ8_0 {
    d: f16,
    qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

impl Block for BlockQ8_0 {
    const ELEMENTS: usize = QK;
    fn read(b: &[u8]) -> Self {
        BlockQ8_0 {
            d: f16_at(b, 0),
            qs: std::array::from_fn(|i| b[2 + i] as i8),
        }
    }
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (y, &q) in out.iter_mut().zip(&self.qs) {
            *y = q as f32 * d;
        }
    }
}

/// Scale and minimum of sub-block `j` (0..8) of a Q4_K/Q5_K super-block: 6 bits each, packed in
/// 12 bytes (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// `block_q4_K`.
#[repr(C)]
struct BlockQ4K {
    d: f16,
    dmin: f16,
    scales: [u8; 12],
    qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

impl Block for BlockQ4K {
    const ELEMENTS: usize = QK_K;
    fn read(b: &[u8]) -> Self {
        BlockQ4K {
            d: f16_at(b, 0),
            dmin: f16_at(b, 2),
            scales: array(b, 4),
            qs: array(b, 16),
        }
    }
    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        // Each 32 code bytes hold two sub-blocks: low nibbles, then high nibbles.
        for (s, y) in out[..QK_K].chunks_exact_mut(32).enumerate() {
            let (sc, m) = scale_min_k4(s, &self.scales);
            let (d1, m1) = (d * sc as f32, dmin * m as f32);
            let q = &self.qs[32 * (s / 2)..32 * (s / 2) + 32];
            for (y, &b) in y.iter_mut().zip(q) {
                let n = if s % 2 == 0 { b & 0x0f } else { b >> 4 };
                *y = d1 * n as f32 - m1;
            }
        }
    }
}

/// `block_q5_K`.
#[repr(C)]
struct BlockQ5K {
    d: f16,
    dmin: f16,
    scales: [u8; 12],
    qh: [u8; QK_K / 8],
    qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

impl Block for BlockQ5K {
    const ELEMENTS: usize = QK_K;
    fn read(b: &[u8]) -> Self {
        BlockQ5K {
            d: f16_at(b, 0),
            dmin: f16_at(b, 2),
            scales: array(b, 4),
            qh: array(b, 16),
            qs: array(b, 48),
        }
    }
    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        // As Q4_K; bit `s` of `qh[l]` is the fifth bit of element `l` of sub-block `s`.
        for (s, y) in out[..QK_K].chunks_exact_mut(32).enumerate() {
            let (sc, m) = scale_min_k4(s, &self.scales);
            let (d1, m1) = (d * sc as f32, dmin * m as f32);
            let q = &self.qs[32 * (s / 2)..32 * (s / 2) + 32];
            for (l, (y, &b)) in y.iter_mut().zip(q).enumerate() {
                let low = if s % 2 == 0 { b & 0x0f } else { b >> 4 };
                let n = low | (((self.qh[l] >> s) & 1) << 4);
                *y = d1 * n as f32 - m1;
            }
        }
    }
}

/// `block_q6_K`.
#[repr(C)]
struct BlockQ6K {
    ql: [u8; QK_K / 2],
    qh: [u8; QK_K / 4],
    scales: [i8; QK_K / 16],
    d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

impl Block for BlockQ6K {
    const ELEMENTS: usize = QK_K;
    fn read(b: &[u8]) -> Self {
        BlockQ6K {
            ql: array(b, 0),
            qh: array(b, 128),
            scales: std::array::from_fn(|i| b[192 + i] as i8),
            d: f16_at(b, 208),
        }
    }
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        // Two halves of 128 elements; in half `h`, element `32k + l` (k < 4, l < 32) has the low
        // nibble (k even) or high nibble (k odd) of `ql[64h + 32(k % 2) + l]` and bits
        // `2k+1 : 2k` of `qh[32h + l]` as its top two bits; sub-block of 16 elements `e / 16`.
        for (h, half) in out[..QK_K].chunks_exact_mut(128).enumerate() {
            for (k, y) in half.chunks_exact_mut(32).enumerate() {
                for (l, y) in y.iter_mut().enumerate() {
                    let lo = self.ql[64 * h + 32 * (k % 2) + l];
                    let lo = if k < 2 { lo & 0x0f } else { lo >> 4 };
                    let hi = (self.qh[32 * h + l] >> (2 * k)) & 3;
                    let q = (lo | (hi << 4)) as i32 - 32;
                    let e = 128 * h + 32 * k + l;
                    *y = d * self.scales[e / 16] as f32 * q as f32;
                }
            }
        }
    }
}

fn dequantize_as<B: Block>(data: &[u8]) -> Vec<f32> {
    let mut out = vec![0.0f32; data.len() / B::BYTES * B::ELEMENTS];
    for (bytes, y) in data
        .chunks_exact(B::BYTES)
        .zip(out.chunks_exact_mut(B::ELEMENTS))
    {
        B::read(bytes).dequantize(y);
    }
    out
}

/// The ggml types [`dequantize`] handles.
pub const TYPES: [u32; 8] = [
    GGML_TYPE_Q4_0,
    GGML_TYPE_Q4_1,
    GGML_TYPE_Q5_0,
    GGML_TYPE_Q5_1,
    GGML_TYPE_Q8_0,
    GGML_TYPE_Q4_K,
    GGML_TYPE_Q5_K,
    GGML_TYPE_Q6_K,
];

/// Dequantize a tensor of `ggml_type` (row-major, whole blocks) to f32 as ggml does, or `None`
/// when the type is not one of this module's. A trailing partial block is ignored: the container
/// sizes every tensor in whole blocks.
pub fn dequantize(ggml_type: u32, data: &[u8]) -> Option<Vec<f32>> {
    Some(match ggml_type {
        GGML_TYPE_Q4_0 => dequantize_as::<BlockQ4_0>(data),
        GGML_TYPE_Q4_1 => dequantize_as::<BlockQ4_1>(data),
        GGML_TYPE_Q5_0 => dequantize_as::<BlockQ5_0>(data),
        GGML_TYPE_Q5_1 => dequantize_as::<BlockQ5_1>(data),
        GGML_TYPE_Q8_0 => dequantize_as::<BlockQ8_0>(data),
        GGML_TYPE_Q4_K => dequantize_as::<BlockQ4K>(data),
        GGML_TYPE_Q5_K => dequantize_as::<BlockQ5K>(data),
        GGML_TYPE_Q6_K => dequantize_as::<BlockQ6K>(data),
        _ => return None,
    })
}

/// The `d` of every Q4_0 block of `data`, in order. A Q4_0 tensor is, without loss, `.bitnet`'s
/// `q4_b32` (the same arithmetic and in-block nibble order; SPEC.md §5.1): these scales, zero
/// padding to the codes' alignment, then [`q4_0_codes`].
pub fn q4_0_scales(data: &[u8]) -> Vec<u8> {
    data.chunks_exact(BlockQ4_0::BYTES)
        .flat_map(|b| [b[0], b[1]])
        .collect()
}

/// The 16 code bytes of every Q4_0 block of `data`, in order.
pub fn q4_0_codes(data: &[u8]) -> Vec<u8> {
    data.chunks_exact(BlockQ4_0::BYTES)
        .flat_map(|b| b[2..].iter().copied())
        .collect()
}

/// A `q4_b32` tensor of `rows × cols` as GGML Q4_0 blocks.
pub fn q4_b32_to_q4_0(data: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let blocks = rows * cols / QK;
    let codes_at = bitnet_format::q4_codes_offset((rows * cols) as u64) as usize;
    let mut out = Vec::with_capacity(blocks * BlockQ4_0::BYTES);
    for b in 0..blocks {
        out.extend_from_slice(&data[2 * b..2 * b + 2]);
        out.extend_from_slice(&data[codes_at + 16 * b..codes_at + 16 * b + 16]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gguf_rs_lib::format::types::GGUFTensorType;

    #[test]
    fn block_sizes_agree_with_the_container_crate() {
        // The container sizes tensors with gguf-rs-lib's table; the structs must agree with it.
        for ty in TYPES {
            let t = GGUFTensorType::from_u32(ty).unwrap();
            let n = 3 * t.block_size();
            let bytes = t.checked_calculate_size(n as u64).unwrap() as usize;
            assert_eq!(
                dequantize(ty, &vec![0; bytes]).unwrap().len(),
                n,
                "{}",
                t.name()
            );
        }
        assert!(dequantize(0, &[]).is_none(), "F32 is not a block type");
    }

    #[test]
    fn worked_blocks() {
        // Q8_0: d = 0.5, q = -3 at element 1.
        let mut b = [0u8; 34];
        b[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[3] = (-3i8) as u8;
        let v = dequantize(GGML_TYPE_Q8_0, &b).unwrap();
        assert_eq!((v[0], v[1], v.len()), (0.0, -1.5, 32));
        // Q4_0: byte 0 = 0x2f holds element 0 (15 - 8 = 7) and element 16 (2 - 8 = -6).
        let mut b = [0u8; 18];
        b[..2].copy_from_slice(&f16::from_f32(0.25).to_le_bytes());
        b[2] = 0x2f;
        let v = dequantize(GGML_TYPE_Q4_0, &b).unwrap();
        assert_eq!((v[0], v[16], v[1]), (1.75, -1.5, -2.0));
        // Q6_K: element 200 = half 1, k = 2, l = 8: high nibble of ql[72], bits 5:4 of qh[40].
        let mut b = [0u8; 210];
        b[72] = 0xa0;
        b[128 + 40] = 0b11 << 4;
        b[192 + 12] = (-2i8) as u8;
        b[208..].copy_from_slice(&f16::from_f32(0.125).to_le_bytes());
        let v = dequantize(GGML_TYPE_Q6_K, &b).unwrap();
        assert_eq!(v[200], 0.125 * -2.0 * (0x3a - 32) as f32);
        assert_eq!(v[0], 0.0, "scale 0 of sub-block 0");
    }

    #[test]
    fn q4_b32_rearrangement_round_trips() {
        let (rows, cols) = (3, 64);
        let data: Vec<u8> = (0..rows * cols / 32 * 18).map(|i| (i * 37) as u8).collect();
        let mut b32 = q4_0_scales(&data);
        b32.resize(
            bitnet_format::q4_codes_offset((rows * cols) as u64) as usize,
            0,
        );
        b32.extend(q4_0_codes(&data));
        assert_eq!(
            b32.len() as u64,
            bitnet_format::Encoding::Q4B32
                .byte_len(&[rows as u64, cols as u64])
                .unwrap()
        );
        assert_eq!(q4_b32_to_q4_0(&b32, rows, cols), data);
    }
}
