//! AArch64 kernels: plain NEON (every AArch64 CPU) and SDOT (`dotprod`: Armv8.2+, e.g. Cortex-A55/A76,
//! Neoverse N1, Apple M1).
//!
//! The ternary kernels read every `tiled` and `base3` height (SPEC.md §6.3, §6.4) in place: a block
//! of an `R`-row tile is `R / 4` groups of 16 bytes (four rows), one q-register each. A group
//! unpacks into `P` planes ([`Planes`]), plane `p` holding, in 32-bit lane `r`, the codes of its row
//! `r` at columns `4p .. 4p+3` of the block:
//!
//! - `tiled` (`P` = 4, blocks of 16 columns): shifted right by `2p` and masked with 3;
//! - `base3` (`P` = 5, blocks of 20 columns): `x = b · 3^p mod 256` by one wrapping byte multiply
//!   per plane (no plane waits on another), and the digit `[x ≥ 86] + [x ≥ 171]` by two compares.
//!
//! Made signed weights `t = code - 1 ∈ {-1, 0, 1}`, so no `Σ q` correction is needed. A block's `4P`
//! activations are two q-registers, its first and its last 16 codes (the same one for `tiled`):
//! quad `p < 4` is 32-bit lane `p` of the first, quad 4 lane 3 of the second.
//!
//! - `neon-dot`: `sdot vacc.4s, vt.16b, vq.4b[p]` adds, in each lane `r`, the four products of row
//!   `r` with activation quad `p` (the quad is selected by the instruction's lane index, so nothing
//!   is broadcast). i32 accumulators, exact.
//! - `neon`: `smlal` multiplies the weights by the quad (duplicated into both 32-bit halves
//!   of a d-register) into i16 lanes, one per (row, column mod 4). Each lane gains at most 128 in
//!   magnitude per plane, so [`WIDEN_PLANES`] = 128 planes (32 blocks of `tiled`, 25 of `base3`)
//!   stay within ±16384 before `sadalp` folds them into i32 pairs; a final `addp` gives one i32 per
//!   row. Exact.
//!
//! SDOT is emitted with inline assembly because its `core::arch` intrinsics are not stable yet.
//! Tokens are processed a few at a time so that the decoded weights are reused across them
//! (matrix-matrix, for prefill); one token at a time is the matrix-vector case.

use std::arch::aarch64::*;
use std::arch::asm;
use std::ops::Range;

use super::activation::QuantizedActs;
use super::ternary::{Packing, TernaryMatrix};

/// Planes the plain NEON kernel accumulates in i16 before widening: 32 blocks of `tiled`, 25 of
/// `base3` (rounding down).
///
/// The bound: an i16 lane (a row and a column mod 4) gains one product `t · q` per plane, with
/// `t ∈ {-1, 0, 1}` and `q ∈ [-128, 127]`, so within [-128, 128]; after 128 planes it is within
/// [-16384, 16384], half the i16 range (the limit would be 255 planes: 256 could reach
/// 256 · 128 = 32768). `smlal` wraps, so only a run's total needs to fit.
/// `runtime/tests/kernel_conformance.rs` (`i16_runs_hold_the_extreme_products_on_every_path`) runs
/// these extremes over whole and partial runs of both packings.
const WIDEN_PLANES: usize = 128;

/// One instruction-set variant of the ternary inner step.
///
/// Every method is `unsafe` only because it is compiled with `#[target_feature(enable = "neon")]`
/// (so that it inlines into the kernels); [`Mac::step`] also needs the path's extra features.
trait Mac {
    /// Per 16-byte group (4 rows) and token.
    type Acc: Copy;
    /// Planes [`Mac::step`] may add before [`Mac::widen`].
    const RUN_PLANES: usize;
    unsafe fn zero() -> Self::Acc;
    /// Add the products of one group's `P` weight planes (`t[p]`: columns `4p..4p+3` of each row,
    /// in lanes) with the block's `4P` activations `q`.
    ///
    /// # Safety
    /// Must only run on a CPU with the path's features.
    unsafe fn step<const P: usize>(acc: &mut Self::Acc, t: &[int8x16_t; P], q: BlockActs);
    unsafe fn widen(acc: &mut Self::Acc);
    /// The four rows' sums.
    unsafe fn finish(acc: Self::Acc) -> int32x4_t;
}

/// A block's `4P` activation codes (`P` = 4 or 5) in two q-registers: `lo` its first 16, `hi` its
/// last 16 (codes `4P - 16 .. 4P`: the same register when `P` = 4). Quad `p < 4` is 32-bit lane `p`
/// of `lo`, quad 4 lane 3 of `hi`.
#[derive(Clone, Copy)]
struct BlockActs {
    lo: int8x16_t,
    hi: int8x16_t,
}

impl BlockActs {
    /// # Safety
    /// `q` must point to `4P` readable codes.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn load<const P: usize>(q: *const i8) -> Self {
        const { assert!(P == 4 || P == 5, "the packings have 4 or 5 planes") };
        // SAFETY: codes 0 .. 16 and 4P - 16 .. 4P lie within the caller's 4P >= 16.
        unsafe {
            let lo = vld1q_s8(q);
            let hi = if P == 4 {
                lo
            } else {
                vld1q_s8(q.add(4 * P - 16))
            };
            BlockActs { lo, hi }
        }
    }
}

/// `acc.s[r] += Σ_j a.b[4r + j] · b.b[4·L + j]` (SDOT by element).
///
/// # Safety
/// The CPU must have the `dotprod` feature.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn sdot_lane<const L: i32>(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: register-only arithmetic; the caller guarantees the CPU implements SDOT. The
    // directive only lets the assembler accept the instruction in functions compiled without
    // `dotprod` (e.g. an un-inlined copy in a debug build); it changes no code generation.
    unsafe {
        asm!(
            ".arch_extension dotprod",
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.4b[{l}]",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            l = const L,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// SDOT: two i32 accumulators per group (even and odd planes) for two independent dependency
/// chains.
struct Dot;

impl Mac for Dot {
    type Acc = [int32x4_t; 2];
    const RUN_PLANES: usize = usize::MAX;

    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn zero() -> Self::Acc {
        [vdupq_n_s32(0); 2]
    }

    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn step<const P: usize>(acc: &mut Self::Acc, t: &[int8x16_t; P], q: BlockActs) {
        for (p, &t) in t.iter().enumerate() {
            let a = &mut acc[p % 2];
            // SAFETY: the caller guarantees `dotprod`. `P <= 5` (`BlockActs::load`): plane 4 is
            // the last.
            *a = unsafe {
                match p {
                    0 => sdot_lane::<0>(*a, t, q.lo),
                    1 => sdot_lane::<1>(*a, t, q.lo),
                    2 => sdot_lane::<2>(*a, t, q.lo),
                    3 => sdot_lane::<3>(*a, t, q.lo),
                    _ => sdot_lane::<3>(*a, t, q.hi),
                }
            };
        }
    }

    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn widen(_: &mut Self::Acc) {}

    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn finish(acc: Self::Acc) -> int32x4_t {
        vaddq_s32(acc[0], acc[1])
    }
}

/// Plain NEON: i16 products per (row, column mod 4), widened to i32 pairs every [`WIDEN_PLANES`]
/// planes.
struct Widen;

#[derive(Clone, Copy)]
struct WidenAcc {
    /// Rows 0–1 and 2–3 of the group, lanes `4·row + j`.
    lo16: int16x8_t,
    hi16: int16x8_t,
    /// The same, folded pairwise: lanes `2·row + j/2`.
    lo32: int32x4_t,
    hi32: int32x4_t,
}

impl Mac for Widen {
    type Acc = WidenAcc;
    const RUN_PLANES: usize = WIDEN_PLANES;

    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn zero() -> Self::Acc {
        WidenAcc {
            lo16: vdupq_n_s16(0),
            hi16: vdupq_n_s16(0),
            lo32: vdupq_n_s32(0),
            hi32: vdupq_n_s32(0),
        }
    }

    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn step<const P: usize>(acc: &mut Self::Acc, t: &[int8x16_t; P], q: BlockActs) {
        let (lo, hi) = (vreinterpretq_s32_s8(q.lo), vreinterpretq_s32_s8(q.hi));
        for (p, t) in t.iter().enumerate() {
            // Quad p duplicated into both halves of a d-register: one row pair's operand. `P <= 5`
            // (`BlockActs::load`): plane 4 is the last.
            let a = vreinterpret_s8_s32(match p {
                0 => vdup_laneq_s32::<0>(lo),
                1 => vdup_laneq_s32::<1>(lo),
                2 => vdup_laneq_s32::<2>(lo),
                3 => vdup_laneq_s32::<3>(lo),
                _ => vdup_laneq_s32::<3>(hi),
            });
            acc.lo16 = vmlal_s8(acc.lo16, vget_low_s8(*t), a);
            acc.hi16 = vmlal_s8(acc.hi16, vget_high_s8(*t), a);
        }
    }

    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn widen(acc: &mut Self::Acc) {
        acc.lo32 = vpadalq_s16(acc.lo32, acc.lo16);
        acc.hi32 = vpadalq_s16(acc.hi32, acc.hi16);
        acc.lo16 = vdupq_n_s16(0);
        acc.hi16 = vdupq_n_s16(0);
    }

    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn finish(mut acc: Self::Acc) -> int32x4_t {
        // SAFETY: same features as this function.
        unsafe { Self::widen(&mut acc) };
        vpaddq_s32(acc.lo32, acc.hi32)
    }
}

/// How a packing's 16-byte group (four rows of one block) splits into `P` planes of signed weights
/// `t ∈ {-1, 0, 1}`: plane `p` holds, in 32-bit lane `r`, row `r`'s weights at columns `4p .. 4p+3`
/// of the block. `unsafe` only because compiled with NEON (part of every AArch64 CPU).
trait Planes<const P: usize> {
    unsafe fn planes(v: uint8x16_t) -> [int8x16_t; P];
}

/// `tiled`: four 2-bit fields per byte, by shift and mask.
struct Bits2;

impl Planes<4> for Bits2 {
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn planes(v: uint8x16_t) -> [int8x16_t; 4] {
        let mask = vdupq_n_u8(3);
        let one = vdupq_n_s8(1);
        let signed = |c: uint8x16_t| vsubq_s8(vreinterpretq_s8_u8(c), one);
        [
            signed(vandq_u8(v, mask)),
            signed(vandq_u8(vshrq_n_u8::<2>(v), mask)),
            signed(vandq_u8(vshrq_n_u8::<4>(v), mask)),
            signed(vshrq_n_u8::<6>(v)),
        ]
    }
}

/// `base3`: five base-3 digits per byte (SPEC.md §6.4), for every byte exactly what the spec's
/// decoding (and the scalar reference) gives:
///
/// - `x = (b · 3^p) mod 256` is `mul` (which keeps the low 8 bits of the product) by the constant
///   `3^p` ≤ 81; the five multiplies are independent (no `x = 3x` chain);
/// - the digit `⌊3x / 256⌋` is `[x ≥ 86] + [x ≥ 171]`, as `3x < 256 ⇔ x ≤ 85` and
///   `3x < 512 ⇔ x ≤ 170`;
/// - so `t = digit - 1 = [x ≥ 171] - [x < 86]` (the two cannot both hold), and as the compares give
///   all ones (-1) for true and 0 for false, `t = cmhi(86, x) - cmhi(x, 170)`: two compares and a
///   subtract per plane.
///
/// (`tests::base3_planes_decode_every_byte_like_the_format_crate` checks all 256 bytes.)
struct Base3;

impl Planes<5> for Base3 {
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn planes(v: uint8x16_t) -> [int8x16_t; 5] {
        const POW3: [u8; 5] = [1, 3, 9, 27, 81];
        let (lt, gt) = (vdupq_n_u8(86), vdupq_n_u8(170));
        std::array::from_fn(|p| {
            let x = if p == 0 {
                v
            } else {
                vmulq_u8(v, vdupq_n_u8(POW3[p]))
            };
            vreinterpretq_s8_u8(vsubq_u8(vcltq_u8(x, lt), vcgtq_u8(x, gt)))
        })
    }
}

/// `NT` tokens against one tile of `4·G` rows packed in `P` planes by `U`: `out[t][4g + r]` = row
/// `4g + r`'s accumulator for token `t`.
///
/// # Safety
/// `tile` points to `k_blocks · 16·G` readable bytes, each `q[t]` to `4P · k_blocks` readable codes,
/// each `out[t]` to `4·G` writable i32; the CPU has the features `M` needs.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn tile_tokens<M: Mac, const P: usize, U: Planes<P>, const G: usize, const NT: usize>(
    tile: *const u8,
    k_blocks: usize,
    q: [*const i8; NT],
    out: [*mut i32; NT],
) {
    let run_blocks = (M::RUN_PLANES / P).max(1);
    // SAFETY: NEON is enabled for this function.
    let mut acc = [[unsafe { M::zero() }; G]; NT];
    let mut kb = 0;
    while kb < k_blocks {
        let end = k_blocks.min(kb.saturating_add(run_blocks));
        for b in kb..end {
            // SAFETY: b < k_blocks: codes 4P·b .. 4P·b + 4P of every token row exist.
            let acts: [BlockActs; NT] =
                std::array::from_fn(|t| unsafe { BlockActs::load::<P>(q[t].add(4 * P * b)) });
            for g in 0..G {
                // SAFETY: group g of block b lies within the tile's k_blocks · 16G bytes; NEON is
                // enabled for this function.
                let t = unsafe { U::planes(vld1q_u8(tile.add((b * G + g) * 16))) };
                for (acc, &a) in acc.iter_mut().zip(&acts) {
                    // SAFETY: the caller guarantees M's CPU features.
                    unsafe { M::step(&mut acc[g], &t, a) };
                }
            }
        }
        for acc in acc.iter_mut().flatten() {
            // SAFETY: NEON is enabled for this function.
            unsafe { M::widen(acc) };
        }
        kb = end;
    }
    for (acc, &o) in acc.iter().zip(&out) {
        for (g, &a) in acc.iter().enumerate() {
            // SAFETY: out[t] has 4G writable i32; NEON is enabled for this function.
            unsafe { vst1q_s32(o.add(4 * g), M::finish(a)) };
        }
    }
}

/// Every token against every tile of `tiles`, `NT` tokens at a time.
///
/// # Safety
/// As [`ternary_tiles_neon`], and the CPU has the features `M` needs; `w.tile_rows == 4·G` and `U`
/// unpacks `w.packing` into `P` planes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn tiles_g<M: Mac, const P: usize, U: Planes<P>, const G: usize, const NT: usize>(
    w: &TernaryMatrix,
    x: &QuantizedActs,
    tiles: Range<usize>,
    out: &mut [i32],
) {
    let (k_blocks, tile_bytes, tokens) = (w.k_blocks(), w.tile_bytes(), x.tokens);
    debug_assert_eq!(w.tile_rows, 4 * G);
    debug_assert_eq!(w.packing.block_k(), 4 * P);
    debug_assert!(w.codes.len() >= tiles.end * tile_bytes && x.kpad == 4 * P * k_blocks);
    debug_assert!(out.len() >= tiles.len() * tokens * 4 * G);
    let o = out.as_mut_ptr();
    for (i, tile) in tiles.enumerate() {
        // SAFETY: tile < w.tiles(): its tile_bytes = k_blocks · 16G bytes are within `codes`.
        let codes = unsafe { w.codes.as_ptr().add(tile * tile_bytes) };
        let row = |t: usize| x.q[t * x.kpad..].as_ptr();
        let dst = |t: usize| {
            // SAFETY: (i · tokens + t) · 4G + 4G <= out.len().
            unsafe { o.add((i * tokens + t) * 4 * G) }
        };
        let mut t = 0;
        while t + NT <= tokens {
            let q = std::array::from_fn(|j| row(t + j));
            let d = std::array::from_fn(|j| dst(t + j));
            // SAFETY: bounds as above (each token row holds kpad = 4P · k_blocks codes); features
            // guaranteed by the caller.
            unsafe { tile_tokens::<M, P, U, G, NT>(codes, k_blocks, q, d) };
            t += NT;
        }
        while t < tokens {
            // SAFETY: as above, one token.
            unsafe { tile_tokens::<M, P, U, G, 1>(codes, k_blocks, [row(t)], [dst(t)]) };
            t += 1;
        }
    }
}

/// Dispatch on the tile height.
///
/// # Safety
/// As [`ternary_tiles_neon`], and the CPU has the features `M` needs; `U` unpacks `w.packing` into
/// `P` planes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn tiles_p<M: Mac, const P: usize, U: Planes<P>>(
    w: &TernaryMatrix,
    x: &QuantizedActs,
    tiles: Range<usize>,
    out: &mut [i32],
) {
    // SAFETY: forwarded; each instance matches the tile height it is called for.
    unsafe {
        match w.tile_rows {
            4 => tiles_g::<M, P, U, 1, 4>(w, x, tiles, out),
            8 => tiles_g::<M, P, U, 2, 2>(w, x, tiles, out),
            16 => tiles_g::<M, P, U, 4, 1>(w, x, tiles, out),
            32 => tiles_g::<M, P, U, 8, 1>(w, x, tiles, out),
            r => unreachable!("tile height {r} is not one of the spec's"),
        }
    }
}

/// Dispatch on the packing.
///
/// # Safety
/// As [`ternary_tiles_neon`], and the CPU has the features `M` needs.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn tiles_any<M: Mac>(
    w: &TernaryMatrix,
    x: &QuantizedActs,
    tiles: Range<usize>,
    out: &mut [i32],
) {
    // SAFETY: forwarded; each instance unpacks the packing it is called for.
    unsafe {
        match w.packing {
            Packing::Bits2 => tiles_p::<M, 4, Bits2>(w, x, tiles, out),
            Packing::Base3 => tiles_p::<M, 5, Base3>(w, x, tiles, out),
        }
    }
}

/// See [`super::ternary_matmul`]: plain NEON, `tiled` or `base3`, any tile height 4, 8, 16 or 32.
///
/// # Safety
/// The slice lengths must be as `ternary_matmul` asserts (NEON itself is part of every AArch64 CPU).
#[target_feature(enable = "neon")]
pub unsafe fn ternary_tiles_neon(
    w: &TernaryMatrix,
    x: &QuantizedActs,
    tiles: Range<usize>,
    out: &mut [i32],
) {
    // SAFETY: forwarded; NEON is baseline on aarch64.
    unsafe { tiles_any::<Widen>(w, x, tiles, out) }
}

/// See [`super::ternary_matmul`]: SDOT, `tiled` or `base3`, any tile height 4, 8, 16 or 32.
///
/// # Safety
/// The CPU must have `dotprod`, and the slice lengths must be as `ternary_matmul` asserts.
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn ternary_tiles_dot(
    w: &TernaryMatrix,
    x: &QuantizedActs,
    tiles: Range<usize>,
    out: &mut [i32],
) {
    // SAFETY: forwarded; the caller guarantees `dotprod`.
    unsafe { tiles_any::<Dot>(w, x, tiles, out) }
}

/// `Σ a[i] · b[i]` in f32 with 4-lane FMAs (four accumulators).
#[target_feature(enable = "neon")]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 4j + 4 <= n elements of both slices.
            let (x, y) = unsafe { (vld1q_f32(pa.add(i + 4 * j)), vld1q_f32(pb.add(i + 4 * j))) };
            *acc = vfmaq_f32(*acc, x, y);
        }
        i += 16;
    }
    while i + 4 <= n {
        // SAFETY: i + 4 <= n.
        let (x, y) = unsafe { (vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i))) };
        acc[0] = vfmaq_f32(acc[0], x, y);
        i += 4;
    }
    let t = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    let mut sum = vaddvq_f32(t);
    for k in i..n {
        sum += a[k] * b[k];
    }
    sum
}

/// Widen 4 f16 values (in the low half of a register) to f32 with `fcvtl` (exact).
#[inline]
#[target_feature(enable = "neon")]
fn fcvtl(h: uint16x4_t) -> float32x4_t {
    let out: float32x4_t;
    // SAFETY: register-only conversion; FCVTL from half precision is part of base Armv8 AdvSIMD.
    unsafe {
        asm!(
            "fcvtl {o:v}.4s, {h:v}.4h",
            o = lateout(vreg) out,
            h = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    out
}

/// Widen f16 values to f32 (exact; the `f16` intrinsics are not stable, hence `fcvtl` by assembly).
#[target_feature(enable = "neon")]
pub fn f16_to_f32(src: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(src.len() / 2);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: 8 halves at byte 2i and 8 floats at i are in bounds.
        unsafe {
            let h = vld1q_u16(src.as_ptr().add(2 * i).cast());
            vst1q_f32(dst.as_mut_ptr().add(i), fcvtl(vget_low_u16(h)));
            vst1q_f32(dst.as_mut_ptr().add(i + 4), fcvtl(vget_high_u16(h)));
        }
        i += 8;
    }
    for k in i..n {
        dst[k] = half::f16::from_le_bytes([src[2 * k], src[2 * k + 1]]).to_f32();
    }
}

/// Widen bf16 values to f32 (exact: a 16-bit shift).
#[target_feature(enable = "neon")]
pub fn bf16_to_f32(src: &[u8], dst: &mut [f32]) {
    let n = dst.len().min(src.len() / 2);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: 8 bf16 values at byte 2i and 8 floats at i are in bounds.
        unsafe {
            let h = vld1q_u16(src.as_ptr().add(2 * i).cast());
            let lo = vshll_n_u16::<16>(vget_low_u16(h));
            let hi = vshll_high_n_u16::<16>(h);
            vst1q_f32(dst.as_mut_ptr().add(i), vreinterpretq_f32_u32(lo));
            vst1q_f32(dst.as_mut_ptr().add(i + 4), vreinterpretq_f32_u32(hi));
        }
        i += 8;
    }
    for k in i..n {
        dst[k] = half::bf16::from_le_bytes([src[2 * k], src[2 * k + 1]]).to_f32();
    }
}

/// `dst[i] = src[i] as i8 · scale` (exact: the same single rounding as the scalar code).
#[target_feature(enable = "neon")]
pub fn i8_to_f32(src: &[u8], scale: f32, dst: &mut [f32]) {
    let n = dst.len().min(src.len());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: 8 bytes at i and 8 floats at i are in bounds.
        unsafe {
            let q = vmovl_s8(vld1_s8(src.as_ptr().add(i).cast()));
            let lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(q)));
            let hi = vcvtq_f32_s32(vmovl_high_s16(q));
            vst1q_f32(dst.as_mut_ptr().add(i), vmulq_n_f32(lo, scale));
            vst1q_f32(dst.as_mut_ptr().add(i + 4), vmulq_n_f32(hi, scale));
        }
        i += 8;
    }
    for k in i..n {
        dst[k] = src[k] as i8 as f32 * scale;
    }
}

/// See [`super::activation::quantize_row`]; exactly the scalar result: `fmaxnm` ignores NaN as
/// `f32::max` does, `fcvtns` rounds half to even (and sends NaN to 0, as `as i8` does after the
/// scalar clamp), and the saturating narrows `sqxtn` clamp to [-128, 127].
#[target_feature(enable = "neon")]
pub fn quantize_row(x: &[f32], out: &mut [i8]) -> (f32, i32) {
    let n = x.len().min(out.len());
    let px = x.as_ptr();
    let mut vmax = vdupq_n_f32(0.0);
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: i + 4 <= n.
        let v = unsafe { vld1q_f32(px.add(i)) };
        vmax = vmaxnmq_f32(vmax, vabsq_f32(v));
        i += 4;
    }
    let mut absmax = vmaxnmvq_f32(vmax);
    for v in &x[i..n] {
        absmax = absmax.max(v.abs());
    }
    let s = 127.0 / absmax.max(1e-5);
    let vs = vdupq_n_f32(s);
    let mut vsum = vdupq_n_s32(0);
    let mut i = 0;
    while i + 16 <= n {
        let q32: [int32x4_t; 4] = std::array::from_fn(|j| {
            // SAFETY: i + 4j + 4 <= n.
            let v = unsafe { vld1q_f32(px.add(i + 4 * j)) };
            vcvtnq_s32_f32(vmulq_f32(v, vs))
        });
        let lo = vcombine_s16(vqmovn_s32(q32[0]), vqmovn_s32(q32[1]));
        let hi = vcombine_s16(vqmovn_s32(q32[2]), vqmovn_s32(q32[3]));
        let q8 = vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi));
        // SAFETY: i + 16 <= n = out.len().
        unsafe { vst1q_s8(out.as_mut_ptr().add(i), q8) };
        vsum = vpadalq_s16(vsum, vpaddlq_s8(q8));
        i += 16;
    }
    let mut sum = vaddvq_s32(vsum);
    for k in i..n {
        let q = (x[k] * s).round_ties_even().clamp(-128.0, 127.0) as i8;
        out[k] = q;
        sum += q as i32;
    }
    (s, sum)
}

/// The bandwidth probe's sum: 8 × 128-bit accumulators of u64 lanes over 128-byte chunks.
#[target_feature(enable = "neon")]
pub fn sum_words(data: &[u64]) -> u64 {
    let mut acc = [vdupq_n_u64(0); 8];
    let chunks = data.len() / 16;
    let p = data.as_ptr();
    for c in 0..chunks {
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: c · 16 + 2j + 2 <= data.len().
            let v = unsafe { vld1q_u64(p.add(c * 16 + 2 * j)) };
            *a = vaddq_u64(*a, v);
        }
    }
    let total = acc.iter().fold(vdupq_n_u64(0), |s, a| vaddq_u64(s, *a));
    let mut sum = vaddvq_u64(total);
    for v in &data[chunks * 16..] {
        sum = sum.wrapping_add(*v);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Isa;
    use bitnet_format::ternary;

    /// Both kernels against the scalar reference, on hand-made code bytes and activations (the
    /// quantizer never emits -128, the kernels must still be exact for it).
    fn check_ternary(
        packing: Packing,
        code: impl Fn(usize) -> u8,
        act: impl Fn(usize) -> i8,
        k_blocks: usize,
    ) {
        for tile_rows in [4usize, 8, 16, 32] {
            let tiles = 3;
            let codes: Vec<u8> = (0..tiles * k_blocks * 4 * tile_rows).map(&code).collect();
            let w = TernaryMatrix {
                codes: &codes,
                rows: tiles * tile_rows,
                cols: packing.block_k() * k_blocks,
                tile_rows,
                packing,
                scale: 1.0,
            };
            for tokens in [1usize, 2, 5] {
                let x = QuantizedActs {
                    q: (0..tokens * w.kpad()).map(&act).collect(),
                    scale: vec![1.0; tokens],
                    sum: vec![0; tokens],
                    tokens,
                    kpad: w.kpad(),
                    grouped: Default::default(),
                };
                let mut want = vec![0i32; tiles * tokens * tile_rows];
                crate::kernels::scalar::ternary_tiles(&w, &x, 0..tiles, &mut want);
                let mut got = vec![i32::MIN; want.len()];
                // SAFETY: lengths as ternary_matmul asserts; NEON is baseline on aarch64.
                unsafe { ternary_tiles_neon(&w, &x, 0..tiles, &mut got) };
                assert_eq!(
                    got, want,
                    "neon, {packing:?}, tile_rows {tile_rows}, {tokens} tokens"
                );
                if Isa::NeonDot.is_available() {
                    let mut got = vec![i32::MIN; want.len()];
                    // SAFETY: as above, and the CPU has dotprod.
                    unsafe { ternary_tiles_dot(&w, &x, 0..tiles, &mut got) };
                    assert_eq!(
                        got, want,
                        "neon-dot, {packing:?}, tile_rows {tile_rows}, {tokens} tokens"
                    );
                }
            }
        }
    }

    #[test]
    fn ternary_kernels_are_exact_at_the_extremes_over_long_rows() {
        // 130 blocks: several i16 widening rounds of the plain NEON kernel (32 blocks of `tiled`,
        // 25 of `base3`) and a partial one, at the largest product magnitude (128 = -1 · -128) in
        // every lane. All codes 0 (-1) is byte 0 in both packings; all codes 2 (+1) is 0xaa in
        // `tiled`, 0xff in `base3`.
        for (packing, plus_one) in [(Packing::Bits2, 0xaa), (Packing::Base3, 0xff)] {
            check_ternary(packing, |_| 0x00, |_| -128, 130);
            check_ternary(packing, |_| plus_one, |_| -128, 130);
            check_ternary(packing, |_| plus_one, |_| 127, 130);
        }
        // Mixed: code 3 never occurs in a valid `tiled` file, so only codes 0..=2 per bit pair;
        // `base3` bytes from five random codes each.
        let mut seed = 1u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            seed >> 8
        };
        let mut digits = || std::array::from_fn::<u8, 5, _>(|_| (next() % 3) as u8);
        let tiled: Vec<u8> = (0..1 << 16)
            .map(|_| (0..4).fold(0u8, |b, p| b | (digits()[p] << (2 * p))))
            .collect();
        let base3: Vec<u8> = (0..1 << 16)
            .map(|_| ternary::base3_encode(digits()))
            .collect();
        let acts: Vec<i8> = (0..1 << 16).map(|_| next() as u8 as i8).collect();
        check_ternary(
            Packing::Bits2,
            |i| tiled[i % tiled.len()],
            |i| acts[i % acts.len()],
            67,
        );
        check_ternary(
            Packing::Base3,
            |i| base3[i % base3.len()],
            |i| acts[i % acts.len()],
            67,
        );
        // Every byte, the 13 that are not code bytes too: the kernels decode them as the
        // reference does.
        check_ternary(
            Packing::Base3,
            |i| (i * 7) as u8,
            |i| acts[i % acts.len()],
            29,
        );
    }

    #[test]
    fn base3_planes_decode_every_byte_like_the_format_crate() {
        let bytes: Vec<u8> = (0..=255).collect();
        for chunk in bytes.chunks_exact(16) {
            // SAFETY: the chunk has 16 bytes; NEON is baseline on aarch64.
            let planes = unsafe { Base3::planes(vld1q_u8(chunk.as_ptr())) };
            for (p, plane) in planes.iter().enumerate() {
                let mut got = [0i8; 16];
                // SAFETY: `got` has 16 bytes.
                unsafe { vst1q_s8(got.as_mut_ptr(), *plane) };
                for (&b, &t) in chunk.iter().zip(&got) {
                    assert_eq!(
                        t,
                        ternary::base3_digit(b, p as u32) as i8 - 1,
                        "byte {b:#04x}, digit {p}"
                    );
                }
            }
        }
    }

    #[test]
    fn f16_and_bf16_widen_every_bit_pattern_like_the_half_crate() {
        let src: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
        let mut got = vec![0.0f32; 1 << 16];
        // SAFETY: NEON is baseline on aarch64.
        unsafe { f16_to_f32(&src, &mut got) };
        for (h, g) in (0..=u16::MAX).zip(&got) {
            let want = half::f16::from_bits(h).to_f32();
            if want.is_nan() {
                assert!(g.is_nan(), "f16 {h:#06x}");
            } else {
                assert_eq!(g.to_bits(), want.to_bits(), "f16 {h:#06x}");
            }
        }
        // SAFETY: as above.
        unsafe { bf16_to_f32(&src, &mut got) };
        for (h, g) in (0..=u16::MAX).zip(&got) {
            assert_eq!(g.to_bits(), (h as u32) << 16, "bf16 {h:#06x}");
        }
    }

    #[test]
    fn quantize_row_matches_the_scalar_reference_on_special_values() {
        let specials = [
            0.0f32,
            -0.0,
            f32::MIN_POSITIVE / 4.0,
            1e-6,
            0.5,
            -0.5,
            1.5,
            -2.5,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        for len in [3usize, 16, 35] {
            for start in 0..specials.len() {
                let x: Vec<f32> = (0..len)
                    .map(|i| specials[(start + i * 7) % specials.len()])
                    .collect();
                let (mut want, mut got) = (vec![0i8; len], vec![1i8; len]);
                let expected = crate::kernels::activation::quantize_row_scalar(&x, &mut want);
                // SAFETY: NEON is baseline on aarch64.
                let result = unsafe { quantize_row(&x, &mut got) };
                assert_eq!(result.0.to_bits(), expected.0.to_bits(), "{x:?}");
                assert_eq!((result.1, &got), (expected.1, &want), "{x:?}");
            }
        }
    }
}

/// `acc.s[i] += Σ_j a.b[4i + j] · b.b[4i + j]` (SDOT by vector).
///
/// # Safety
/// The CPU must have the `dotprod` feature.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: as for `sdot_lane`.
    unsafe {
        asm!(
            ".arch_extension dotprod",
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// See [`super::q4::matmul`]. Codes become signed weights `n - 8` (so no correction is needed) and
/// meet the activations in column order: per block, the low nibbles take columns 0–15 and the high
/// nibbles 16–31. With `DOT`, two SDOTs give the block's four i32 lane sums; without, `smull`/`smlal`
/// add four products of at most 8 · 128 into each i16 lane (within ±4096) before `saddlp` widens.
/// Lanes are scaled by the block's two scales and summed in f32; each block is unpacked once for
/// up to [`Q4_TOKENS`] tokens.
///
/// # Safety
/// The CPU must have NEON, and `dotprod` when `DOT`; sizes as `q4::matmul` asserts.
#[target_feature(enable = "neon")]
pub unsafe fn q4_rows<const DOT: bool>(
    g: bitnet_format::q4::Q4Geometry,
    data: &[u8],
    acts: &super::q4::Q4Acts,
    rows: Range<usize>,
    out: &mut [f32],
) {
    debug_assert!(data.len() >= g.byte_len() && out.len() == rows.len() * acts.tokens);
    super::q4::for_row_blocks(g, data, acts, rows, out, Q4_TOKENS, |m, args| {
        // SAFETY: the caller's guarantees; the block's tokens exist.
        unsafe {
            match m {
                Q4_TOKENS => q4_pass::<DOT, Q4_TOKENS>(args),
                4 => q4_pass::<DOT, 4>(args),
                2 => q4_pass::<DOT, 2>(args),
                _ => q4_pass::<DOT, 1>(args),
            }
        }
    });
}

/// Tokens per register block of [`q4_rows`]: each block's weights are unpacked once for all.
const Q4_TOKENS: usize = 8;

/// Each row of a pass against tokens `t0 .. t0 + M`. Each token's lanes see the same operations in
/// the same order whatever `M` is, so a token's product does not depend on the tokens beside it.
#[target_feature(enable = "neon")]
unsafe fn q4_pass<const DOT: bool, const M: usize>(
    (g, data, acts, rows, t0, out): super::q4::RowBlock,
) {
    let (nibble, eight) = (vdupq_n_u8(0x0f), vdupq_n_s8(8));
    let q: [*const i8; M] = std::array::from_fn(|m| acts.row(t0 + m).as_ptr());
    let a_scales: [&[f32]; M] = std::array::from_fn(|m| acts.scales(t0 + m));
    let tokens = acts.tokens;
    for (i, r) in rows.enumerate() {
        let mut acc = [vdupq_n_f32(0.0); M];
        for b in 0..g.blocks() {
            let dw = bitnet_format::q4::scale_at(data, g.scale_offset(r, b));
            // SAFETY: block `b` of row `r` is 16 code bytes inside `data`.
            let v = unsafe { vld1q_u8(data.as_ptr().add(g.block_codes_offset(r, b))) };
            let w_lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, nibble)), eight);
            let w_hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(v)), eight);
            for m in 0..M {
                // SAFETY: each token's codes hold 32 at `32b`.
                let (a_lo, a_hi) =
                    unsafe { (vld1q_s8(q[m].add(32 * b)), vld1q_s8(q[m].add(32 * b + 16))) };
                let lanes = if DOT {
                    // SAFETY: the caller guarantees `dotprod` when DOT.
                    unsafe { sdot(sdot(vdupq_n_s32(0), w_lo, a_lo), w_hi, a_hi) }
                } else {
                    let mut p = vmull_s8(vget_low_s8(w_lo), vget_low_s8(a_lo));
                    p = vmlal_high_s8(p, w_lo, a_lo);
                    p = vmlal_s8(p, vget_low_s8(w_hi), vget_low_s8(a_hi));
                    p = vmlal_high_s8(p, w_hi, a_hi);
                    vpaddlq_s16(p)
                };
                acc[m] = vfmaq_n_f32(acc[m], vcvtq_f32_s32(lanes), dw * a_scales[m][b]);
            }
        }
        for (m, acc) in acc.into_iter().enumerate() {
            out[i * tokens + t0 + m] = vaddvq_f32(acc);
        }
    }
}
