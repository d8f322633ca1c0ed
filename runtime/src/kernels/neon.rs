//! AArch64 kernels: plain NEON (every AArch64 CPU) and SDOT (`dotprod`: Armv8.2+, e.g. Cortex-A55/A76,
//! Neoverse N1, Apple M1).
//!
//! The ternary kernels read every `tiled` height (SPEC.md §6.3) natively: a block of an `R`-row tile
//! is `R / 4` groups of 16 bytes, one q-register each. Shifted right by `2p` and masked with 3, a
//! group gives, in 32-bit lane `r`, the codes of its row `r` at columns `4p .. 4p+3`; subtracting 1
//! makes them the signed weights `t ∈ {-1, 0, 1}`, so no `Σ q` correction is needed.
//!
//! - `neon-dot`: `sdot vacc.4s, vt.16b, vq.4b[p]` adds, in each lane `r`, the four products of row
//!   `r` with activation quad `p` (the quad is selected by the instruction's lane index, so nothing
//!   is broadcast). i32 accumulators, exact.
//! - `neon`: `smlal` multiplies the weights by the quad (duplicated into both 32-bit halves
//!   of a d-register) into i16 lanes, one per (row, column mod 4). Each lane gains at most
//!   4 · 128 = 512 in magnitude per block, so [`WIDEN_EVERY`] = 32 blocks stay within ±16384 before
//!   `sadalp` folds them into i32 pairs; a final `addp` gives one i32 per row. Exact.
//!
//! SDOT is emitted with inline assembly because its `core::arch` intrinsics are not stable yet.
//! Tokens are processed a few at a time so that the decoded weights are reused across them
//! (matrix-matrix, for prefill); one token at a time is the matrix-vector case.

use std::arch::aarch64::*;
use std::arch::asm;
use std::ops::Range;

use super::activation::QuantizedActs;
use super::ternary::TernaryMatrix;

/// Blocks the plain NEON kernel accumulates in i16 before widening (see the module docs).
const WIDEN_EVERY: usize = 32;

/// One instruction-set variant of the ternary inner step.
///
/// Every method is `unsafe` only because it is compiled with `#[target_feature(enable = "neon")]`
/// (so that it inlines into the kernels); [`Mac::step`] also needs the path's extra features.
trait Mac {
    /// Per 16-byte group (4 rows) and token.
    type Acc: Copy;
    /// Blocks between calls to [`Mac::widen`].
    const CHUNK: usize;
    unsafe fn zero() -> Self::Acc;
    /// Add the products of one group's weights (`t[p]`: columns `4p..4p+3` of each row, in lanes)
    /// with the block's 16 activations `q`.
    ///
    /// # Safety
    /// Must only run on a CPU with the path's features.
    unsafe fn step(acc: &mut Self::Acc, t: &[int8x16_t; 4], q: int8x16_t);
    unsafe fn widen(acc: &mut Self::Acc);
    /// The four rows' sums.
    unsafe fn finish(acc: Self::Acc) -> int32x4_t;
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

/// SDOT: two i32 accumulators per group (planes 0–1 and 2–3) for two independent dependency chains.
struct Dot;

impl Mac for Dot {
    type Acc = [int32x4_t; 2];
    const CHUNK: usize = usize::MAX;

    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn zero() -> Self::Acc {
        [vdupq_n_s32(0); 2]
    }

    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn step(acc: &mut Self::Acc, t: &[int8x16_t; 4], q: int8x16_t) {
        // SAFETY: the caller guarantees `dotprod`.
        unsafe {
            acc[0] = sdot_lane::<0>(acc[0], t[0], q);
            acc[1] = sdot_lane::<2>(acc[1], t[2], q);
            acc[0] = sdot_lane::<1>(acc[0], t[1], q);
            acc[1] = sdot_lane::<3>(acc[1], t[3], q);
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

/// Plain NEON: i16 products per (row, column mod 4), widened to i32 pairs every [`WIDEN_EVERY`]
/// blocks.
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
    const CHUNK: usize = WIDEN_EVERY;

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
    unsafe fn step(acc: &mut Self::Acc, t: &[int8x16_t; 4], q: int8x16_t) {
        let q = vreinterpretq_s32_s8(q);
        // Quad p duplicated into both halves of a d-register: one row pair's operand.
        let quads = [
            vreinterpret_s8_s32(vdup_laneq_s32::<0>(q)),
            vreinterpret_s8_s32(vdup_laneq_s32::<1>(q)),
            vreinterpret_s8_s32(vdup_laneq_s32::<2>(q)),
            vreinterpret_s8_s32(vdup_laneq_s32::<3>(q)),
        ];
        for (t, a) in t.iter().zip(quads) {
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

/// The signed weights of one 16-byte group: plane `p` holds, in 32-bit lane `r`, row `r`'s weights
/// at columns `4p .. 4p+3`.
///
/// # Safety
/// `codes` must point to 16 readable bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn weights(codes: *const u8) -> [int8x16_t; 4] {
    // SAFETY: the caller guarantees 16 readable bytes.
    let v = unsafe { vld1q_u8(codes) };
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

/// `NT` tokens against one tile of `4·G` rows: `out[t][4g + r]` = row `4g + r`'s accumulator for
/// token `t`.
///
/// # Safety
/// `tile` points to `k_blocks · 16·G` readable bytes, each `q[t]` to `16 · k_blocks` readable codes,
/// each `out[t]` to `4·G` writable i32; the CPU has the features `M` needs.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn tile_tokens<M: Mac, const G: usize, const NT: usize>(
    tile: *const u8,
    k_blocks: usize,
    q: [*const i8; NT],
    out: [*mut i32; NT],
) {
    // SAFETY: NEON is enabled for this function.
    let mut acc = [[unsafe { M::zero() }; G]; NT];
    let mut kb = 0;
    while kb < k_blocks {
        let end = k_blocks.min(kb.saturating_add(M::CHUNK));
        for b in kb..end {
            // SAFETY: b < k_blocks: codes 16b .. 16b + 16 of every token row exist.
            let acts: [int8x16_t; NT] =
                std::array::from_fn(|t| unsafe { vld1q_s8(q[t].add(16 * b)) });
            for g in 0..G {
                // SAFETY: group g of block b lies within the tile's k_blocks · 16G bytes.
                let t = unsafe { weights(tile.add((b * G + g) * 16)) };
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
/// As [`ternary_tiles_neon`], and the CPU has the features `M` needs; `w.tile_rows == 4·G`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn tiles_g<M: Mac, const G: usize, const NT: usize>(
    w: &TernaryMatrix,
    x: &QuantizedActs,
    tiles: Range<usize>,
    out: &mut [i32],
) {
    let (k_blocks, tile_bytes, tokens) = (w.k_blocks(), w.tile_bytes(), x.tokens);
    debug_assert_eq!(w.tile_rows, 4 * G);
    debug_assert!(w.codes.len() >= tiles.end * tile_bytes && x.kpad == 16 * k_blocks);
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
            // SAFETY: bounds as above; features guaranteed by the caller.
            unsafe { tile_tokens::<M, G, NT>(codes, k_blocks, q, d) };
            t += NT;
        }
        while t < tokens {
            // SAFETY: as above, one token.
            unsafe { tile_tokens::<M, G, 1>(codes, k_blocks, [row(t)], [dst(t)]) };
            t += 1;
        }
    }
}

/// Dispatch on the tile height.
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
    // SAFETY: forwarded; each instance matches the tile height it is called for.
    unsafe {
        match w.tile_rows {
            4 => tiles_g::<M, 1, 4>(w, x, tiles, out),
            8 => tiles_g::<M, 2, 2>(w, x, tiles, out),
            16 => tiles_g::<M, 4, 1>(w, x, tiles, out),
            32 => tiles_g::<M, 8, 1>(w, x, tiles, out),
            r => unreachable!("tile height {r} is not a tiled layout"),
        }
    }
}

/// See [`super::ternary_matmul`]: plain NEON, any tile height 4, 8, 16 or 32.
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

/// See [`super::ternary_matmul`]: SDOT, any tile height 4, 8, 16 or 32.
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

    /// Both kernels against the scalar reference, on hand-made activations (the quantizer never
    /// emits -128, the kernels must still be exact for it).
    fn check_ternary(code: impl Fn(usize) -> u8, act: impl Fn(usize) -> i8, k_blocks: usize) {
        for tile_rows in [4usize, 8, 16, 32] {
            let tiles = 3;
            let codes: Vec<u8> = (0..tiles * k_blocks * 4 * tile_rows).map(&code).collect();
            let w = TernaryMatrix {
                codes: &codes,
                rows: tiles * tile_rows,
                cols: 16 * k_blocks,
                tile_rows,
                scale: 1.0,
            };
            for tokens in [1usize, 2, 5] {
                let x = QuantizedActs {
                    q: (0..tokens * w.kpad()).map(&act).collect(),
                    scale: vec![1.0; tokens],
                    sum: vec![0; tokens],
                    tokens,
                    kpad: w.kpad(),
                };
                let mut want = vec![0i32; tiles * tokens * tile_rows];
                crate::kernels::scalar::ternary_tiles(&w, &x, 0..tiles, &mut want);
                let mut got = vec![i32::MIN; want.len()];
                // SAFETY: lengths as ternary_matmul asserts; NEON is baseline on aarch64.
                unsafe { ternary_tiles_neon(&w, &x, 0..tiles, &mut got) };
                assert_eq!(got, want, "neon, tile_rows {tile_rows}, {tokens} tokens");
                if Isa::NeonDot.is_available() {
                    let mut got = vec![i32::MIN; want.len()];
                    // SAFETY: as above, and the CPU has dotprod.
                    unsafe { ternary_tiles_dot(&w, &x, 0..tiles, &mut got) };
                    assert_eq!(
                        got, want,
                        "neon-dot, tile_rows {tile_rows}, {tokens} tokens"
                    );
                }
            }
        }
    }

    #[test]
    fn ternary_kernels_are_exact_at_the_extremes_over_long_rows() {
        // 130 blocks: several i16 widening rounds of the plain NEON kernel, at the largest product
        // magnitude (128 = -1 · -128) in every lane.
        check_ternary(|_| 0x00, |_| -128, 130);
        check_ternary(|_| 0xaa, |_| -128, 130);
        check_ternary(|_| 0xaa, |_| 127, 130);
        // Mixed: code 3 never occurs in a valid file, so only codes 0..=2 per bit pair.
        let mut seed = 1u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            seed >> 8
        };
        let codes: Vec<u8> = (0..1 << 16)
            .map(|_| (0..4).fold(0u8, |b, p| b | (((next() % 3) as u8) << (2 * p))))
            .collect();
        let acts: Vec<i8> = (0..1 << 16).map(|_| next() as u8 as i8).collect();
        check_ternary(|i| codes[i % codes.len()], |i| acts[i % acts.len()], 67);
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
/// Lanes are scaled by the block's two scales and summed in f32.
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
    let tokens = acts.tokens;
    debug_assert!(data.len() >= g.byte_len() && out.len() == rows.len() * tokens);
    let (nibble, eight) = (vdupq_n_u8(0x0f), vdupq_n_s8(8));
    for (i, r) in rows.enumerate() {
        for t in 0..tokens {
            let (q, a_scales) = (acts.row(t), acts.scales(t));
            let mut acc = vdupq_n_f32(0.0);
            for (b, &da) in a_scales.iter().enumerate() {
                let dw = bitnet_format::q4::scale_at(data, g.scale_offset(r, b));
                // SAFETY: block `b` of row `r` is 16 code bytes inside `data`, and the token's codes
                // hold 32 at `32b`.
                let (v, a_lo, a_hi) = unsafe {
                    (
                        vld1q_u8(data.as_ptr().add(g.block_codes_offset(r, b))),
                        vld1q_s8(q.as_ptr().add(32 * b)),
                        vld1q_s8(q.as_ptr().add(32 * b + 16)),
                    )
                };
                let w_lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, nibble)), eight);
                let w_hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(v)), eight);
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
                acc = vfmaq_n_f32(acc, vcvtq_f32_s32(lanes), dw * da);
            }
            out[i * tokens + t] = vaddvq_f32(acc);
        }
    }
}
