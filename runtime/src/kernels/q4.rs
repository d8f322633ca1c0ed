//! The `q4_b32` output/embedding matrix (SPEC.md §5.1): 4-bit codes with an f16 scale per block of
//! 32 columns. Products take the activations quantized to int8 per block of 32 (like GGML's Q8_0),
//! so every block's dot product is an exact integer and only the per-block float scaling differs in
//! rounding order between paths (tests hold the SIMD paths to the scalar reference by tolerance).
//!
//! The x86 kernels work on groups of four blocks (128 columns = 64 code bytes) in 32-bit lanes of
//! four code bytes, each a lane's low nibbles (four columns from 0–15 of a block) and high nibbles
//! (the same four from 16–31). [`Q4Acts`] holds the activations in the order of its path's kernel
//! ([`Q4Layout`]).

use std::ops::Range;

use bitnet_format::q4::{self, Q4Geometry};

use super::activation::token_groups;
use super::{Isa, KernelPath};

/// Columns per block.
pub const BLOCK: usize = 32;
/// Columns per SIMD group (four blocks).
pub const GROUP: usize = 4 * BLOCK;
/// 32-bit lanes per group.
pub const GROUP_LANES: usize = 16;

/// How [`Q4Acts::grouped`] orders a token's codes for a path's kernel, per group of 128 columns:
/// the 16 lanes of the low nibbles' columns, then the 16 of the high nibbles'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Q4Layout {
    /// Nothing grouped: the scalar reference and NEON read [`Q4Acts::q`] in column order.
    #[default]
    Columns,
    /// AVX-512: lane `4i + b` takes bytes `4i ..` of block `b` (the kernel permutes the weights'
    /// lanes into this order once per group for every token, so lane `L` is scaled by block `L mod
    /// 4` and the scales are a repeated 4-vector); the codes as unsigned bytes `q + 128`, which
    /// multiply the signed weights `n - 8`: the `128 · Σ (n - 8)` this adds to a lane depends on
    /// the weights alone and is subtracted once per group for every token.
    Transposed,
    /// AVX2 and AVX-VNNI: lane `4b + i` takes bytes `4i ..` of block `b`, as the weights lie in
    /// memory; signed codes, which multiply the unsigned nibbles `n`, with per lane the correction
    /// `-8 · Σ q` ([`Q4Acts::lane_corr`]) that turns them into `n - 8` and the block's scale
    /// ([`Q4Acts::lane_scale`]). One token then costs no more than the weights' unpacking.
    Blocks,
}

impl Q4Layout {
    /// The layout `path`'s kernel reads.
    pub fn of(path: KernelPath) -> Self {
        match path.isa() {
            Isa::Avx512 => Q4Layout::Transposed,
            Isa::Avx2 | Isa::AvxVnni => Q4Layout::Blocks,
            _ => Q4Layout::Columns,
        }
    }
}

/// Activations of `tokens` rows of `cols` values, quantized to int8 per block of 32.
#[derive(Debug, Default)]
pub struct Q4Acts {
    pub tokens: usize,
    pub cols: usize,
    pub layout: Q4Layout,
    /// Per token, `cols` codes in column order (the reference's view).
    pub q: Vec<i8>,
    /// Per token, one scale per block.
    pub scale: Vec<f32>,
    /// Per token, the whole groups' codes as `layout` orders them (empty for `Columns`).
    pub grouped: Vec<u8>,
    /// `Blocks`: per token, per lane of the whole groups, `-8 ·` the sum of the lane's eight codes.
    pub lane_corr: Vec<i32>,
    /// `Blocks`: per token, per lane of the whole groups, the scale of the lane's block.
    pub lane_scale: Vec<f32>,
}

impl Q4Acts {
    /// Quantize `x` (`tokens × cols`, `cols` a multiple of 32) for `path`'s kernel: per block
    /// `scale = max|x| / 127`, `q = round(x / scale)`.
    pub fn quantize(path: KernelPath, x: &[f32], cols: usize) -> Self {
        assert!(cols.is_multiple_of(BLOCK) && x.len().is_multiple_of(cols));
        let tokens = x.len() / cols;
        let layout = Q4Layout::of(path);
        let mut a = Q4Acts {
            tokens,
            cols,
            layout,
            q: vec![0; tokens * cols],
            scale: vec![0.0; tokens * cols / BLOCK],
            ..Q4Acts::default()
        };
        for (b, (block, q)) in x
            .chunks_exact(BLOCK)
            .zip(a.q.chunks_exact_mut(BLOCK))
            .enumerate()
        {
            let max = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if max > 0.0 {
                let inv = 127.0 / max;
                for (q, v) in q.iter_mut().zip(block) {
                    *q = (v * inv).round() as i8;
                }
                a.scale[b] = max / 127.0;
            }
        }
        let groups = cols / GROUP;
        if layout == Q4Layout::Columns {
            return a;
        }
        // Transposed codes are stored as unsigned `q + 128`.
        let offset = if layout == Q4Layout::Transposed {
            0x80
        } else {
            0
        };
        a.grouped = vec![0; tokens * groups * GROUP];
        if layout == Q4Layout::Blocks {
            a.lane_corr = vec![0; tokens * groups * GROUP_LANES];
            a.lane_scale = vec![0.0; tokens * groups * GROUP_LANES];
        }
        for t in 0..tokens {
            for g in 0..groups {
                let src = &a.q[t * cols + g * GROUP..][..GROUP];
                let at = (t * groups + g) * GROUP;
                for lane in 0..GROUP_LANES {
                    let (b, i) = match layout {
                        Q4Layout::Transposed => (lane % 4, lane / 4),
                        _ => (lane / 4, lane % 4),
                    };
                    // The low nibbles' columns (from 0 in the block), then the high nibbles' (16).
                    let (lo, hi) = (BLOCK * b + 4 * i, BLOCK * b + 16 + 4 * i);
                    for (part, from) in [(0, lo), (GROUP / 2, hi)] {
                        for (d, q) in a.grouped[at + part + 4 * lane..][..4]
                            .iter_mut()
                            .zip(&src[from..from + 4])
                        {
                            *d = (*q as u8) ^ offset;
                        }
                    }
                    if layout == Q4Layout::Blocks {
                        let sum: i32 = src[lo..lo + 4]
                            .iter()
                            .chain(&src[hi..hi + 4])
                            .map(|&v| v as i32)
                            .sum();
                        let l = (t * groups + g) * GROUP_LANES + lane;
                        a.lane_corr[l] = -8 * sum;
                        a.lane_scale[l] = a.scale[t * cols / BLOCK + 4 * g + b];
                    }
                }
            }
        }
        a
    }

    /// Codes of token `t` in column order.
    pub fn row(&self, t: usize) -> &[i8] {
        &self.q[t * self.cols..(t + 1) * self.cols]
    }

    /// Block scales of token `t`.
    pub fn scales(&self, t: usize) -> &[f32] {
        let blocks = self.cols / BLOCK;
        &self.scale[t * blocks..(t + 1) * blocks]
    }

    /// The grouped codes of token `t`.
    pub fn grouped(&self, t: usize) -> &[u8] {
        let c = self.cols / GROUP * GROUP;
        &self.grouped[t * c..(t + 1) * c]
    }

    /// The lane corrections and lane scales of token `t` (`Blocks`).
    pub fn lanes(&self, t: usize) -> (&[i32], &[f32]) {
        let l = self.cols / GROUP * GROUP_LANES;
        (
            &self.lane_corr[t * l..(t + 1) * l],
            &self.lane_scale[t * l..(t + 1) * l],
        )
    }
}

/// `Σ_blocks d_w · d_a · Σ_j (n_j - 8) · q_j` over `blocks` of row `r`: the scalar reference, and
/// the SIMD kernels' tail for blocks past the last whole group.
#[inline]
pub fn row_dot_blocks(
    g: Q4Geometry,
    data: &[u8],
    r: usize,
    acts: &Q4Acts,
    t: usize,
    blocks: Range<usize>,
) -> f32 {
    if blocks.is_empty() {
        // Every row of every token ends here when the columns fill whole groups.
        return 0.0;
    }
    let (q, scales) = (acts.row(t), acts.scales(t));
    let mut sum = 0.0f32;
    for b in blocks {
        let codes = &data[g.block_codes_offset(r, b)..][..q4::BLOCK_CODE_BYTES];
        let qb = &q[b * BLOCK..(b + 1) * BLOCK];
        let dot: i32 = codes
            .iter()
            .enumerate()
            .map(|(j, &c)| {
                ((c & 0x0f) as i32 - 8) * qb[j] as i32 + ((c >> 4) as i32 - 8) * qb[j + 16] as i32
            })
            .sum();
        let d = q4::scale_at(data, g.scale_offset(r, b)) * scales[b];
        sum += dot as f32 * d;
    }
    sum
}

/// One row's kernel call for a block of tokens: the tensor's geometry and bytes, the activations,
/// the row, the block's first token and its outputs.
pub(super) type RowBlock<'a> = (
    Q4Geometry,
    &'a [u8],
    &'a Q4Acts,
    usize,
    usize,
    &'a mut [f32],
);

/// Rows per pass of [`for_row_blocks`]: their codes (about 1.4 KiB a row for 2560 columns) stay in
/// L1 while every token block reads them, so each token block's activations are read once per
/// pass instead of once per row (the AVX2 layout's eight tokens hold 5 KiB each, more than L1
/// beside the weights).
const ROWS_PER_PASS: usize = 4;

/// How the SIMD kernels walk a product: `f(m, args)` for every row in `rows` and every register
/// block of `m` tokens ([`token_groups`]`(tokens, block)`), with `out` the `rows.len() × tokens`
/// outputs: rows [`ROWS_PER_PASS`] at a time, each token block against all of them in turn.
pub(super) fn for_row_blocks(
    g: Q4Geometry,
    data: &[u8],
    acts: &Q4Acts,
    rows: Range<usize>,
    out: &mut [f32],
    block: usize,
    mut f: impl FnMut(usize, RowBlock),
) {
    let tokens = acts.tokens;
    if tokens == 0 {
        return;
    }
    for (out, first) in out
        .chunks_mut(ROWS_PER_PASS * tokens)
        .zip(rows.step_by(ROWS_PER_PASS))
    {
        for (t, m) in token_groups(tokens, block) {
            for (out, r) in out.chunks_exact_mut(tokens).zip(first..) {
                f(m, (g, data, acts, r, t, &mut out[t..t + m]));
            }
        }
    }
}

/// For every row in `rows` and token of `acts`: `out[(r - rows.start) · tokens + t] = w[r] · a[t]`,
/// with `data` the bytes of a `q4_b32` tensor of geometry `g`.
pub fn matmul(
    path: KernelPath,
    g: Q4Geometry,
    data: &[u8],
    acts: &Q4Acts,
    rows: Range<usize>,
    out: &mut [f32],
) {
    assert_eq!(acts.cols, g.cols);
    assert_eq!(out.len(), rows.len() * acts.tokens);
    assert!(rows.end <= g.rows && data.len() >= g.byte_len());
    match path.isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `KernelPath` for this instruction set exists only when the CPU has AVX-512 F/BW/VL/VNNI; the lengths were
        // asserted above.
        Isa::Avx512 => unsafe { super::avx512::q4_rows(g, data, acts, rows, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `KernelPath` for these instruction sets exists only when the CPU has AVX2, FMA and F16C; lengths as above.
        Isa::Avx2 | Isa::AvxVnni => unsafe { super::avx2::q4_rows(g, data, acts, rows, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of every AArch64 CPU; lengths as above.
        Isa::Neon => unsafe { super::neon::q4_rows::<false>(g, data, acts, rows, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: a `KernelPath` for this instruction set exists only when the CPU has `dotprod`; lengths as above.
        Isa::NeonDot => unsafe { super::neon::q4_rows::<true>(g, data, acts, rows, out) },
        _ => {
            let tokens = acts.tokens;
            for (i, r) in rows.enumerate() {
                for t in 0..tokens {
                    out[i * tokens + t] = row_dot_blocks(g, data, r, acts, t, 0..g.blocks());
                }
            }
        }
    }
}

/// Row `r` decoded to f32 (an embedding lookup).
pub fn row_into(g: Q4Geometry, data: &[u8], r: usize, out: &mut [f32]) {
    for (b, chunk) in out[..g.cols].chunks_exact_mut(BLOCK).enumerate() {
        let d = q4::scale_at(data, g.scale_offset(r, b));
        q4::decode_block(d, &data[g.block_codes_offset(r, b)..], chunk);
    }
}
