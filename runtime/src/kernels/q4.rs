//! The `q4_b32` output/embedding matrix (SPEC.md §5.1): 4-bit codes with an f16 scale per block of
//! 32 columns. Products take the activations quantized to int8 per block of 32 (like GGML's Q8_0),
//! so every block's dot product is an exact integer and only the per-block float scaling differs in
//! rounding order between paths (tests hold the SIMD paths to the scalar reference by tolerance).
//!
//! The x86 kernels work on superblocks of 8 (AVX2) or 16 (AVX-512) blocks, one block per 32-bit
//! lane: each lane's integer sum is a whole block's dot product, so the float scaling runs once per
//! block and token instead of once per four columns. [`Q4Acts`] holds the activations in the order
//! of its path's kernel ([`Q4Layout`]). Products of several tokens on AVX-512 read a copy of the
//! matrix with its rows in the vectors' lanes instead ([`Q4Tiles`], [`matmul_tiles`]), with the
//! same f32 operations as the row kernel.

use std::ops::Range;

use bitnet_format::q4::{self, BLOCK_CODE_BYTES, Q4Geometry};

use super::activation::token_groups;
use super::aligned::LineAligned;
use super::{Isa, KernelPath};

/// Columns per block.
pub const BLOCK: usize = 32;

/// How [`Q4Acts::grouped`] orders a token's codes for a path's kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Q4Layout {
    /// Nothing grouped: the scalar reference and NEON read [`Q4Acts::q`] in column order.
    #[default]
    Columns,
    /// x86: superblocks of `s = 4 · chunks` blocks, `chunks` being the kernel's 128-bit lanes per
    /// vector (2 for AVX2, 4 for AVX-512). A superblock's codes are eight vectors of `s` 32-bit
    /// lanes; lane `p` of vector `2k + h` holds the codes of columns `16h + 4k .. 16h + 4k + 4` of
    /// block `chunks · (p mod 4) + p / 4`, the order in which the kernel's in-lane unpacks leave
    /// the weights' 32-bit words (code byte `j` of a block holds columns `j` and `16 + j`). The
    /// codes are signed and multiply the unsigned nibbles `n`; per lane, the correction of
    /// [`Q4Acts::lanes`] (`-8 ·` the block's code sum) turns that into `n - 8`, and its scale is
    /// the block's. The last superblock is padded with zero codes, corrections and scales.
    Superblocks { chunks: usize },
}

impl Q4Layout {
    /// The layout `path`'s kernel reads.
    pub fn of(path: KernelPath) -> Self {
        match path.isa() {
            Isa::Avx512 => Q4Layout::Superblocks { chunks: 4 },
            Isa::Avx2 | Isa::AvxVnni => Q4Layout::Superblocks { chunks: 2 },
            _ => Q4Layout::Columns,
        }
    }

    /// Blocks per superblock (`Superblocks`), or 1.
    pub fn superblock_blocks(self) -> usize {
        match self {
            Q4Layout::Columns => 1,
            Q4Layout::Superblocks { chunks } => 4 * chunks,
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
    /// Per token, the codes as `layout` orders them (empty for `Columns`). This and the lanes'
    /// corrections and scales start on a cache line, and a token's share of each is whole
    /// superblocks (at least 256, 32 and 32 bytes), so no vector the kernels load spans two lines
    /// (a 512-bit load across two costs two, and eight tokens' AVX-512 kernel is bound by these
    /// loads, BENCHMARKS.md).
    grouped: LineAligned<i8>,
    /// `Superblocks`: per token, per lane, `-8 ·` the sum of the lane's block's codes.
    lane_corr: LineAligned<i32>,
    /// `Superblocks`: per token, per lane, the scale of the lane's block.
    lane_scale: LineAligned<f32>,
}

impl Q4Acts {
    /// Quantize `x` (`tokens × cols`, `cols` a multiple of 32) for `path`'s kernel: per block
    /// `scale = max|x| / 127`, `q = round(x / scale)` (so `|q| <= 127`).
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
        let Q4Layout::Superblocks { chunks } = layout else {
            return a;
        };
        let s = layout.superblock_blocks();
        let blocks = cols / BLOCK;
        let lanes = a.lanes_per_token();
        a.grouped = LineAligned::zeros(tokens * lanes * BLOCK);
        a.lane_corr = LineAligned::zeros(tokens * lanes);
        a.lane_scale = LineAligned::zeros(tokens * lanes);
        let (grouped, lane_corr, lane_scale) = (
            a.grouped.as_mut_slice(),
            a.lane_corr.as_mut_slice(),
            a.lane_scale.as_mut_slice(),
        );
        for t in 0..tokens {
            for lane in 0..lanes {
                let (sb, p) = (lane / s, lane % s);
                let b = sb * s + chunks * (p % 4) + p / 4;
                if b >= blocks {
                    continue;
                }
                let src = &a.q[t * cols + b * BLOCK..][..BLOCK];
                let vectors = &mut grouped[(t * lanes + sb * s) * BLOCK..][..s * BLOCK];
                for k in 0..4 {
                    for h in 0..2 {
                        let at = (2 * k + h) * 4 * s + 4 * p;
                        vectors[at..at + 4].copy_from_slice(&src[16 * h + 4 * k..][..4]);
                    }
                }
                let sum: i32 = src.iter().map(|&v| v as i32).sum();
                lane_corr[t * lanes + lane] = -8 * sum;
                lane_scale[t * lanes + lane] = a.scale[t * blocks + b];
            }
        }
        a
    }

    /// Lanes of `Superblocks` per token: the blocks rounded up to whole superblocks.
    #[inline]
    fn lanes_per_token(&self) -> usize {
        let s = self.layout.superblock_blocks();
        (self.cols / BLOCK).div_ceil(s) * s
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

    /// The grouped codes of token `t` (`Superblocks`).
    #[inline]
    pub fn grouped(&self, t: usize) -> &[i8] {
        let n = self.lanes_per_token() * BLOCK;
        &self.grouped.as_slice()[t * n..(t + 1) * n]
    }

    /// The lane corrections and lane scales of token `t` (`Superblocks`).
    #[inline]
    pub fn lanes(&self, t: usize) -> (&[i32], &[f32]) {
        let l = self.lanes_per_token();
        (
            &self.lane_corr.as_slice()[t * l..(t + 1) * l],
            &self.lane_scale.as_slice()[t * l..(t + 1) * l],
        )
    }
}

/// A `q4_b32` matrix rearranged for the x86 kernels that take several tokens at once with a
/// matrix's rows in a vector's lanes (so each token's activation quads are broadcast, and the
/// weights, unpacked once, serve every token of a register block: 1.4–1.8 times the row kernel's
/// rate with eight tokens on AVX-512, BENCHMARKS.md). A copy in memory, made from the file's rows
/// the first time a model needs it ([`Q4Tiles::for_path`]).
///
/// Tiles of [`Q4Tiles::ROWS`] rows; within a tile, one entry per block, in the order of
/// [`Q4Tiles::order`]: 256 code bytes (four vectors; vector `i` holds in 32-bit lane `r` row `r`'s
/// code bytes `4i .. 4i + 4` of the block, so its low nibbles are columns `4i ..` and its high
/// nibbles columns `16 + 4i ..`) and 16 f16 scales, one per row. Rows past the matrix's end have
/// zero codes and scales.
#[derive(Debug)]
// Only the x86 kernels read the bytes; elsewhere `min_tokens` is `None` and no tiles are made.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub struct Q4Tiles {
    pub geometry: Q4Geometry,
    /// The row kernels' superblock order, which the tile kernels keep (see [`Q4Tiles::order`]).
    pub layout: Q4Layout,
    codes: LineAligned<u8>,
    scales: LineAligned<u8>,
    /// Per entry of a tile, `[p, lane, block]` ([`Q4Tiles::order`]).
    order: Vec<[usize; 3]>,
}

impl Q4Tiles {
    /// Rows per tile: one per 32-bit lane of a 512-bit vector.
    pub const ROWS: usize = 16;

    /// The tiles of a `q4_b32` tensor (`data`, geometry `g`) for `path`, if its instruction set has
    /// a tile kernel.
    pub fn for_path(path: KernelPath, g: Q4Geometry, data: &[u8]) -> Option<Self> {
        Self::min_tokens(path)?;
        let layout = Q4Layout::of(path);
        let tiles = g.rows.div_ceil(Self::ROWS);
        let blocks = g.blocks();
        let mut codes = LineAligned::zeros(tiles * blocks * 16 * BLOCK_CODE_BYTES);
        let mut scales = LineAligned::zeros(tiles * blocks * 2 * Self::ROWS);
        let (c, sc) = (codes.as_mut_slice(), scales.as_mut_slice());
        let order = Self::order_of(layout, blocks);
        for tile in 0..tiles {
            let rows = tile * Self::ROWS..((tile + 1) * Self::ROWS).min(g.rows);
            for (e, &[_, _, b]) in order.iter().enumerate() {
                let entry = tile * blocks + e;
                let c = &mut c[entry * 16 * BLOCK_CODE_BYTES..][..16 * BLOCK_CODE_BYTES];
                let sc = &mut sc[entry * 2 * Self::ROWS..][..2 * Self::ROWS];
                for (r, row) in rows.clone().enumerate() {
                    let src = &data[g.block_codes_offset(row, b)..][..BLOCK_CODE_BYTES];
                    for i in 0..4 {
                        c[(i * Self::ROWS + r) * 4..][..4].copy_from_slice(&src[4 * i..][..4]);
                    }
                    sc[2 * r..2 * r + 2].copy_from_slice(&data[g.scale_offset(row, b)..][..2]);
                }
            }
        }
        Some(Q4Tiles {
            geometry: g,
            layout,
            codes,
            scales,
            order,
        })
    }

    /// From how many tokens at once `path`'s tile kernel is used instead of its row kernel (`None`:
    /// it has none). Both give the same bits, so this is only a matter of speed: on AVX-512 the
    /// tiles are faster from two tokens, on AVX2 (no embedded broadcast, 16 registers, register
    /// blocks of four tokens) only from eight (BENCHMARKS.md).
    pub fn min_tokens(path: KernelPath) -> Option<usize> {
        match path.isa() {
            Isa::Avx512 => Some(2),
            Isa::Avx2 | Isa::AvxVnni => Some(8),
            _ => None,
        }
    }

    /// The order of a tile's blocks, one `[p, lane, block]` per entry: lane by lane of the row
    /// kernels' superblocks (`p`, the lane's place in its superblock), and within a lane its
    /// blocks superblock by superblock (`lane`, its index among the token's lanes, and `block`).
    /// The row kernel adds each lane's blocks into its own f32 sum in that order and then sums
    /// its lanes; a tile kernel that keeps one sum per lane in this order computes every row's
    /// product with the same operations, so it is bit-identical to the row kernel.
    pub fn order(&self) -> &[[usize; 3]] {
        &self.order
    }

    fn order_of(layout: Q4Layout, blocks: usize) -> Vec<[usize; 3]> {
        let s = layout.superblock_blocks();
        let chunks = s / 4;
        (0..s)
            .flat_map(move |p| {
                (0..blocks.div_ceil(s))
                    .map(move |sb| [p, sb * s + p, sb * s + chunks * (p % 4) + p / 4])
                    .filter(move |&[_, _, b]| b < blocks)
            })
            .collect()
    }

    /// The 256 code bytes and 32 scale bytes of entry `e` of tile `tile`.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    pub(super) fn entry(&self, tile: usize, e: usize) -> (&[u8], &[u8]) {
        let entry = tile * self.geometry.blocks() + e;
        (
            &self.codes.as_slice()[entry * 16 * BLOCK_CODE_BYTES..][..16 * BLOCK_CODE_BYTES],
            &self.scales.as_slice()[entry * 2 * Self::ROWS..][..2 * Self::ROWS],
        )
    }

    /// Ask for the lines a little after entry `e` of tile `tile` (both streams).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(super) fn prefetch(&self, tile: usize, e: usize) {
        let entry = tile * self.geometry.blocks() + e;
        for line in 0..4 {
            super::prefetch(
                self.codes.as_slice(),
                entry * 16 * BLOCK_CODE_BYTES + 64 * line,
            );
        }
        super::prefetch(self.scales.as_slice(), entry * 2 * Self::ROWS);
    }
}

/// Tokens per register block of a tile kernel, at most.
#[cfg(target_arch = "x86_64")]
const MAX_TILE_TOKENS: usize = 8;

/// How the tile kernels walk a product: `f(m, tile, t0, sums)` for every tile that `rows` touches
/// and every register block of `m` tokens from `t0` ([`token_groups`]`(tokens, block)`, `block`
/// at most 8), which writes `sums[16 i + r]`, row `r` of the tile against token `t0 + i`; the
/// rows in `rows` go to `out` (`rows.len() × tokens`, row-major).
#[cfg(target_arch = "x86_64")]
pub(super) fn for_tiles(
    acts: &Q4Acts,
    rows: Range<usize>,
    out: &mut [f32],
    block: usize,
    mut f: impl FnMut(usize, usize, usize, &mut [f32]),
) {
    assert!(block <= MAX_TILE_TOKENS);
    let mut sums = [0.0f32; Q4Tiles::ROWS * MAX_TILE_TOKENS];
    for tile in rows.start / Q4Tiles::ROWS..rows.end.div_ceil(Q4Tiles::ROWS) {
        for (t0, m) in token_groups(acts.tokens, block) {
            let sums = &mut sums[..Q4Tiles::ROWS * m];
            f(m, tile, t0, sums);
            let first = tile * Q4Tiles::ROWS;
            for row in first.max(rows.start)..(first + Q4Tiles::ROWS).min(rows.end) {
                for i in 0..m {
                    out[(row - rows.start) * acts.tokens + t0 + i] =
                        sums[i * Q4Tiles::ROWS + row - first];
                }
            }
        }
    }
}

/// Room for a superblock of up to 16 blocks that runs past the end of a row.
#[cfg(target_arch = "x86_64")]
pub(super) struct SuperblockPad {
    codes: [u8; 16 * BLOCK_CODE_BYTES],
    scales: [u8; 16 * 2],
}

#[cfg(target_arch = "x86_64")]
impl Default for SuperblockPad {
    fn default() -> Self {
        SuperblockPad {
            codes: [0; 16 * BLOCK_CODE_BYTES],
            scales: [0; 16 * 2],
        }
    }
}

/// Ask for the lines ahead of the codes of blocks `sb · s ..` of row `r` ([`super::prefetch`]),
/// and an eighth as far past their scales (2 scale bytes go with 16 code bytes), so that both
/// streams are asked for as far ahead in time. Rows are consecutive in both, so this runs into the
/// next rows as the kernel will.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn prefetch_superblock(g: Q4Geometry, data: &[u8], r: usize, sb: usize, s: usize) {
    let codes = g.block_codes_offset(r, sb * s);
    for line in (0..s * BLOCK_CODE_BYTES).step_by(64) {
        super::prefetch(data, codes + line);
    }
    super::prefetch_stream(data, g.scale_offset(r, sb * s), 8);
}

/// The code bytes (`16 · s`) and f16 scales (`2 · s` bytes) of blocks `sb · s ..` of row `r`:
/// in place, or, for a last superblock that the row's blocks do not fill, a copy in `pad` with zero
/// codes and scales after the row's end (so those lanes add nothing). Inlined: a call from a
/// kernel's loop costs a `vzeroupper` and the accumulators' trip through the stack.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn superblock<'p>(
    g: Q4Geometry,
    data: &'p [u8],
    r: usize,
    sb: usize,
    s: usize,
    pad: &'p mut SuperblockPad,
) -> (&'p [u8], &'p [u8]) {
    let first = sb * s;
    let n = (g.blocks() - first).min(s);
    let codes = &data[g.block_codes_offset(r, first)..][..n * BLOCK_CODE_BYTES];
    let scales = &data[g.scale_offset(r, first)..][..2 * n];
    if n == s {
        return (codes, scales);
    }
    let (pc, ps) = (
        &mut pad.codes[..s * BLOCK_CODE_BYTES],
        &mut pad.scales[..2 * s],
    );
    pc.fill(0);
    ps.fill(0);
    pc[..codes.len()].copy_from_slice(codes);
    ps[..scales.len()].copy_from_slice(scales);
    (pc, ps)
}

/// `Σ_blocks d_w · d_a · Σ_j (n_j - 8) · q_j` over row `r`'s blocks: the scalar reference.
pub fn row_dot(g: Q4Geometry, data: &[u8], r: usize, acts: &Q4Acts, t: usize) -> f32 {
    let (q, scales) = (acts.row(t), acts.scales(t));
    let mut sum = 0.0f32;
    for b in 0..g.blocks() {
        let codes = &data[g.block_codes_offset(r, b)..][..BLOCK_CODE_BYTES];
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

/// One kernel call: the tensor's geometry and bytes, the activations, a pass of rows, the first
/// token of a register block, and the pass's outputs (`rows.len() × tokens`, row-major), of which
/// the call writes its tokens' columns.
pub(super) type RowBlock<'a> = (
    Q4Geometry,
    &'a [u8],
    &'a Q4Acts,
    Range<usize>,
    usize,
    &'a mut [f32],
);

/// Rows per pass of [`for_row_blocks`]: their codes (about 1.4 KiB a row for 2560 columns) stay in
/// L1 while every token block reads them, and a kernel call sets up its tokens' pointers once for
/// all of them.
const ROWS_PER_PASS: usize = 4;

/// How the SIMD kernels walk a product: `f(m, args)` for every pass of up to [`ROWS_PER_PASS`] rows
/// in `rows` and every register block of `m` tokens ([`token_groups`]`(tokens, block)`), with
/// `out` the `rows.len() × tokens` outputs.
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
        let pass = first..first + out.len() / tokens;
        for (t, m) in token_groups(tokens, block) {
            f(m, (g, data, acts, pass.clone(), t, &mut *out));
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
                    out[i * tokens + t] = row_dot(g, data, r, acts, t);
                }
            }
        }
    }
}

/// [`matmul`] from the tiles of the same matrix, for two tokens or more: the same values, bit for
/// bit, as `matmul` on `tiles.layout`'s path.
pub fn matmul_tiles(
    path: KernelPath,
    tiles: &Q4Tiles,
    acts: &Q4Acts,
    rows: Range<usize>,
    out: &mut [f32],
) {
    let g = tiles.geometry;
    assert_eq!(acts.cols, g.cols);
    assert_eq!(out.len(), rows.len() * acts.tokens);
    assert!(rows.end <= g.rows);
    assert_eq!(acts.layout, tiles.layout, "activations for the tiles' path");
    match path.isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `KernelPath` for this instruction set exists only when the CPU has AVX-512
        // F/BW/VL/VNNI; the lengths were asserted above.
        Isa::Avx512 => unsafe { super::avx512::q4_tiles(tiles, acts, rows, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `KernelPath` for these instruction sets exists only when the CPU has AVX2,
        // FMA and F16C; the lengths were asserted above.
        Isa::Avx2 | Isa::AvxVnni => unsafe { super::avx2::q4_tiles(tiles, acts, rows, out) },
        _ => panic!("no q4 tile kernel on the {} path", path.name()),
    }
}

/// Row `r` decoded to f32 (an embedding lookup).
pub fn row_into(g: Q4Geometry, data: &[u8], r: usize, out: &mut [f32]) {
    for (b, chunk) in out[..g.cols].chunks_exact_mut(BLOCK).enumerate() {
        let d = q4::scale_at(data, g.scale_offset(r, b));
        q4::decode_block(d, &data[g.block_codes_offset(r, b)..], chunk);
    }
}
