//! `--embeddings q4`: the format's `q4_b32` encoding (SPEC.md §5.1), 4-bit codes `n` in blocks of
//! 32 columns with one f16 scale `d` per block, `value = (n - 8) · d`.
//!
//! GGML's reference quantizer (`quantize_row_q4_0_ref`) sets `d = m / -8`, `m` the block's element
//! of largest magnitude with its sign, so `m` is code 0 exactly and the other side of zero only
//! reaches `7/8 · |m|`. That is one point of a trade-off between a fine step and the reach of the
//! codes, so each block here tries the scales `d = -m / t` for `t` = 8 (GGML's), 7.8, 7.6, 7.4,
//! 7.2, 7 and `d = m / 7` (`m` on code 15), and keeps the one with the smallest squared error
//! `Σ (x - (n - 8) · d)²`. Every candidate is rounded to f16 first and its codes
//! `n = clamp(round(x / d) + 8, 0, 15)` computed with that rounded `d`, so the error compared is the
//! file's own; ties go to the earlier candidate, which keeps GGML's choice whenever it is as good.
//! An all-zero block gets `d = 0` and codes 8.
//!
//! The scales precede all the codes in the file, so a tensor takes two passes: [`scales`] (the
//! search, kept: 2 bytes per 32 elements) and then [`pack_rows`] in chunks (one multiplication per
//! element), which keeps memory bounded for the 128256-row output matrices.

use std::ops::Range;

use bitnet_format::q4::{self, BLOCK_CODE_BYTES};
use bitnet_format::{Q4_BLOCK, q4_codes_offset};
use half::f16;
use rayon::prelude::*;

use crate::floats::Floats;

/// Elements per block.
pub const BLOCK: usize = Q4_BLOCK as usize;

/// Rows per parallel work item of the scale search.
const ROWS_PER_TASK: usize = 64;

/// Why a tensor cannot be encoded; each holds the row-major index of the element at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A NaN or an infinity.
    NonFinite(usize),
    /// So large that even the smallest candidate scale, `|x| / 8`, overflows f16.
    TooLarge(usize),
}

/// `1 / d` as [`level`] takes it; 0 for `d = 0`, whose codes are all 8.
fn reciprocal(d: f32) -> f64 {
    if d == 0.0 { 0.0 } else { 1.0 / d as f64 }
}

/// `n - 8` for the code `n` of `x` with the scale whose [`reciprocal`] is `inv`: `x / d` rounded
/// to the nearest integer and clamped to [-8, 7], which is the nearest of the values `(n - 8) · d`.
///
/// In f64, `x · (1 / d)` is within 2^-48 of the exact quotient, while a quotient of an f32 and an
/// f16 that is not exactly halfway between two integers is at least 2^-26 from halfway (where
/// `|x / d|` ≤ 16), so the rounding picks the nearest code (either one at an exact tie, whose
/// errors are equal). Adding and subtracting 1.5 · 2^52 rounds an f64 of magnitude below 2^51 to
/// an integer with two additions, which vectorize where `round` is a library call (baseline
/// x86-64): the search runs three times faster.
#[inline]
fn level(x: f64, inv: f64) -> f64 {
    const ROUND: f64 = 6755399441055744.0;
    ((x * inv + ROUND) - ROUND).clamp(-8.0, 7.0)
}

/// `Σ e(j)²` for `j` in `0..n`, in f64, as eight interleaved partial sums added in order at the
/// end: a fixed order (so smaller terms never give a larger sum), and independent additions,
/// where one running sum is a chain of dependent ones.
fn sum_of_squares(n: usize, e: impl Fn(usize) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    for start in (0..n).step_by(8) {
        for (k, a) in acc.iter_mut().enumerate().take(n - start) {
            let t = e(start + k);
            *a += t * t;
        }
    }
    acc.iter().sum()
}

/// The squared error of encoding the block `x` (widened to f64) with the scale `d` and its codes,
/// `Σ (x - (n - 8) · d)²`.
fn block_error(x: &[f64], d: f32) -> f64 {
    let inv = reciprocal(d);
    sum_of_squares(x.len(), |j| x[j] - level(x[j], inv) * d as f64)
}

/// The scale of one block of at most [`BLOCK`] finite values (see the module documentation);
/// `Err(j)` when element `j`'s magnitude is too large for any f16 scale.
fn block_scale(x: &[f32]) -> Result<f16, usize> {
    // The first element of largest magnitude, as GGML picks it.
    let (mut at, mut m) = (0, 0f32);
    for (j, &v) in x.iter().enumerate() {
        if v.abs() > m.abs() {
            (at, m) = (j, v);
        }
    }
    if m == 0.0 {
        return Ok(f16::ZERO);
    }
    let mut wide = [0f64; BLOCK];
    for (w, &v) in wide.iter_mut().zip(x) {
        *w = v as f64;
    }
    let wide = &wide[..x.len()];
    let candidates = [
        -m / 8.0,
        -m / 7.8,
        -m / 7.6,
        -m / 7.4,
        -m / 7.2,
        -m / 7.0,
        m / 7.0,
    ];
    let mut best: Option<(f16, f64)> = None;
    for c in candidates {
        let d = f16::from_f32(c);
        // |m| / 8 is the smallest candidate: if it overflows, every one does.
        if !d.is_finite() {
            continue;
        }
        let error = block_error(wide, d.to_f32());
        if best.is_none_or(|(_, e)| error < e) {
            best = Some((d, error));
        }
    }
    best.map(|(d, _)| d).ok_or(at)
}

/// The code of `x` for the scale `d`, as the search measured it.
fn code(x: f32, d: f32) -> u8 {
    (level(x as f64, reciprocal(d)) + 8.0) as u8
}

/// Read row `r` of a matrix with `cols` columns into `buf`.
fn read_row(w: Floats<'_>, r: usize, cols: usize, buf: &mut [f32]) {
    w.slice(r * cols, (r + 1) * cols)
        .for_each(|i, x| buf[i] = x);
}

/// The scale of every block of a `rows × cols` matrix (`cols` a multiple of [`BLOCK`]), row-major,
/// searched in parallel over chunks of rows. The error names the first bad element in row-major
/// order, whatever the thread count.
pub fn scales(w: Floats<'_>, rows: usize, cols: usize) -> Result<Vec<f16>, Refused> {
    debug_assert_eq!(cols % BLOCK, 0);
    let blocks = cols / BLOCK;
    let mut out = vec![f16::ZERO; rows * blocks];
    let problems: Vec<Option<Refused>> = out
        .par_chunks_mut((ROWS_PER_TASK * blocks).max(1))
        .enumerate()
        .map_init(
            || vec![0f32; cols],
            |buf, (task, chunk)| {
                for (k, row_scales) in chunk.chunks_mut(blocks).enumerate() {
                    let r = task * ROWS_PER_TASK + k;
                    read_row(w, r, cols, buf);
                    if let Some(c) = buf.iter().position(|x| !x.is_finite()) {
                        return Some(Refused::NonFinite(r * cols + c));
                    }
                    for (b, (s, x)) in row_scales
                        .iter_mut()
                        .zip(buf.chunks_exact(BLOCK))
                        .enumerate()
                    {
                        match block_scale(x) {
                            Ok(d) => *s = d,
                            Err(j) => return Some(Refused::TooLarge(r * cols + b * BLOCK + j)),
                        }
                    }
                }
                None
            },
        )
        .collect();
    match problems.into_iter().flatten().next() {
        Some(p) => Err(p),
        None => Ok(out),
    }
}

/// The packed codes of `rows` (all scales from [`scales`]) into `out`, `cols / 2` bytes per row,
/// one row per parallel work item.
pub fn pack_rows(w: Floats<'_>, scales: &[f16], cols: usize, rows: Range<usize>, out: &mut [u8]) {
    let blocks = cols / BLOCK;
    debug_assert_eq!(out.len(), rows.len() * cols / 2);
    out.par_chunks_mut((cols / 2).max(1))
        .enumerate()
        .for_each_init(
            || vec![0f32; cols],
            |buf, (i, dst)| {
                let r = rows.start + i;
                read_row(w, r, cols, buf);
                let row_scales = &scales[r * blocks..(r + 1) * blocks];
                for ((x, d), dst) in buf
                    .chunks_exact(BLOCK)
                    .zip(row_scales)
                    .zip(dst.chunks_exact_mut(BLOCK_CODE_BYTES))
                {
                    let d = d.to_f32();
                    let codes: [u8; BLOCK] = std::array::from_fn(|j| code(x[j], d));
                    dst.copy_from_slice(&q4::pack_block(&codes));
                }
            },
        );
}

/// The scales as the tensor's first bytes: little-endian f16, zero padding up to the codes.
pub fn scale_bytes(scales: &[f16]) -> Vec<u8> {
    let mut head: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
    head.resize(q4_codes_offset((scales.len() * BLOCK) as u64) as usize, 0);
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::floats::FloatKind;
    use bitnet_format::q4::{Q4Geometry, decode};
    use proptest::prelude::*;

    /// A whole `rows × cols` tensor's bytes (`cols` a multiple of [`BLOCK`]).
    fn encode(w: Floats<'_>, rows: usize, cols: usize) -> Result<Vec<u8>, Refused> {
        let s = scales(w, rows, cols)?;
        let mut out = scale_bytes(&s);
        let head = out.len();
        out.resize(head + rows * cols / 2, 0);
        pack_rows(w, &s, cols, 0..rows, &mut out[head..]);
        Ok(out)
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// GGML's `quantize_row_q4_0_ref` for one block, exactly: `d = m / -8` stored as f16, codes
    /// from the unrounded `1 / d`, `min(15, (int8_t)(x / d + 8.5))`.
    fn ggml_block(x: &[f32]) -> (f16, [u8; 32]) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let codes = std::array::from_fn(|j| ((x[j] * id + 8.5) as i8).min(15) as u8);
        (f16::from_f32(d), codes)
    }

    /// As [`block_error`] (the same order of additions), with the given codes.
    fn error_with_codes(x: &[f32], d: f32, codes: &[u8]) -> f64 {
        sum_of_squares(x.len(), |j| {
            x[j] as f64 - (codes[j] as f64 - 8.0) * d as f64
        })
    }

    proptest! {
        #[test]
        fn the_chosen_scale_is_never_worse_than_ggmls(
            x in prop::collection::vec(-4.0f32..4.0, 32),
            spike in -40.0f32..40.0,
            at in 0usize..32,
        ) {
            // With and without an outlier, whose size decides the step.
            for block in [x.clone(), { let mut y = x.clone(); y[at] = spike; y }] {
                let d = block_scale(&block).unwrap();
                let (gd, gcodes) = ggml_block(&block);
                let wide: Vec<f64> = block.iter().map(|&v| v as f64).collect();
                let ours = block_error(&wide, d.to_f32());
                prop_assert!(ours <= error_with_codes(&block, gd.to_f32(), &gcodes));
                // GGML's scale is the first candidate.
                prop_assert!(ours <= block_error(&wide, gd.to_f32()));
                // Half a step from the nearest code, except where the range ends. There the far
                // side reaches `|m| - 7|d|`, a step for `d = |m| / 8` exactly, but `d` is rounded
                // to f16 (relative error up to 2^-11), which can add 8 · 2^-11 of a step.
                let d = d.to_f32();
                let end = d.abs() * (8.0 / (1.0 - 2f32.powi(-11)) - 7.0);
                for &v in &block {
                    let n = code(v, d);
                    let e = (v - (n as f32 - 8.0) * d).abs();
                    prop_assert!(e <= d.abs() / 2.0 * 1.0001 || (matches!(n, 0 | 15) && e <= end * 1.0001));
                }
            }
        }
    }

    #[test]
    fn the_far_end_can_miss_by_more_than_a_step_when_the_scale_rounds_down_to_f16() {
        // Found by the property above: GGML's scale is chosen, -m / 8 = 0.47520 is stored as
        // 0.47510, and 3.80147 on the far side ends 1.0014 steps from code 15.
        let block: [f32; 32] = [
            0.0, 0.0, -3.2951488, 0.0, 0.0, -3.6615326, 0.0, 3.2571292, 0.0, 0.0, -3.80161,
            0.7819555, 3.8014698, 0.0, -1.7358954, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.3323722, 0.0,
            0.0, 0.0, 0.0, 0.0, 1.3631825, 0.0, -0.882714, 0.0, -1.3579175,
        ];
        let d = block_scale(&block).unwrap().to_f32();
        assert_eq!(d, f16::from_f32(3.80161 / 8.0).to_f32());
        assert!(d < 3.80161 / 8.0);
        assert_eq!(code(block[12], d), 15);
        let e = block[12] - 7.0 * d;
        assert!(
            e > d && e <= d * (8.0 / (1.0 - 2f32.powi(-11)) - 7.0),
            "{e} vs {d}"
        );
    }

    #[test]
    fn round_trip_error_is_bounded_and_no_larger_than_ggmls_in_total() {
        // Every candidate step is at most |m| / 7 and reaches past every value but, by at most one
        // step, the far side's: no element is off by more than |m| / 7 (plus the f16 rounding).
        let mut s = 0x2545f4914f6cdd1du64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let (rows, cols) = (16, 128);
        let values: Vec<f32> = (0..rows * cols).map(|_| next() * 0.1).collect();
        let bytes = f32_bytes(&values);
        let encoded = encode(Floats::new(FloatKind::F32, &bytes), rows, cols).unwrap();
        let decoded = decode(Q4Geometry { rows, cols }, &encoded).unwrap();
        let (mut sq, mut ggml_sq) = (0f64, 0f64);
        for (x, y) in values.chunks(BLOCK).zip(decoded.chunks(BLOCK)) {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (v, q) in x.iter().zip(y) {
                assert!((v - q).abs() <= amax / 7.0 * 1.001, "{v} -> {q}");
                sq += ((v - q) as f64).powi(2);
            }
            let (gd, gcodes) = ggml_block(x);
            ggml_sq += error_with_codes(x, gd.to_f32(), &gcodes);
        }
        assert!(sq <= ggml_sq, "{sq} > {ggml_sq}");
    }

    #[test]
    fn an_all_zero_block_has_scale_zero_and_codes_8() {
        let mut values = vec![0f32; 64];
        values[40] = 0.5;
        let bytes = f32_bytes(&values);
        let encoded = encode(Floats::new(FloatKind::F32, &bytes), 1, 64).unwrap();
        assert_eq!(&encoded[..2], &[0, 0]);
        let g = Q4Geometry { rows: 1, cols: 64 };
        assert!(
            encoded[g.block_codes_offset(0, 0)..][..16]
                .iter()
                .all(|&b| b == 0x88)
        );
        let decoded = decode(g, &encoded).unwrap();
        assert!(decoded[..32].iter().all(|&v| v == 0.0));
        assert_eq!(decoded[40], 0.5, "a lone value is exact: it is m");
    }

    #[test]
    fn the_bytes_decode_to_the_values_the_quantizer_chose() {
        let (rows, cols) = (5, 96);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 211) as f32 / 211.0 - 0.45 + if i % 37 == 0 { 3.0 } else { 0.0 })
            .collect();
        let bytes = f32_bytes(&values);
        let w = Floats::new(FloatKind::F32, &bytes);
        let s = scales(w, rows, cols).unwrap();
        let encoded = encode(w, rows, cols).unwrap();
        assert_eq!(
            encoded.len() as u64,
            bitnet_format::Encoding::Q4B32
                .byte_len(&[rows as u64, cols as u64])
                .unwrap()
        );
        let decoded = decode(Q4Geometry { rows, cols }, &encoded).unwrap();
        for (i, (&x, &y)) in values.iter().zip(&decoded).enumerate() {
            let d = s[i / BLOCK].to_f32();
            assert_eq!(y, (code(x, d) as f32 - 8.0) * d, "element {i}");
        }
    }

    #[test]
    fn non_finite_and_overflowing_values_are_refused_at_their_position() {
        let mut values = vec![0.25f32; 2 * 64];
        values[70] = f32::NAN;
        values[100] = f32::INFINITY;
        let bytes = f32_bytes(&values);
        let w = Floats::new(FloatKind::F32, &bytes);
        assert_eq!(scales(w, 2, 64), Err(Refused::NonFinite(70)));
        values[70] = 0.0;
        values[100] = 1e6; // 1e6 / 8 > 65504, the largest f16
        let bytes = f32_bytes(&values);
        let w = Floats::new(FloatKind::F32, &bytes);
        assert_eq!(scales(w, 2, 64), Err(Refused::TooLarge(100)));
        // 65504 · 8 is still representable (d = -65504).
        values[100] = -65504.0 * 8.0;
        let bytes = f32_bytes(&values);
        let d = scales(Floats::new(FloatKind::F32, &bytes), 2, 64).unwrap();
        assert_eq!(d[3].to_f32(), 65504.0);
    }
}
