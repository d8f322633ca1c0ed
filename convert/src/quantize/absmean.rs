//! Per-tensor absmean quantization of latent (unquantized) weights, as the reference defines it:
//! `m = mean(|W|)` in binary32, `w = max(m, 1e-5)`, `t = clamp(round_half_even(W / w), -1, 1)`.
//!
//! The mean is computed exactly and rounded once to binary32 (every f16, bf16 and f32 value is an
//! integer multiple of 2^-149, so the sum is an integer that fits in a few machine words). The result
//! is therefore independent of summation order and thread count, and equals the fixture generator's
//! oracle (an f64 sum rounded once to f32) except in the vanishingly rare cases where that f64 sum
//! itself is off by enough to cross an f32 rounding boundary.

use rayon::prelude::*;

use crate::floats::Floats;

/// Smallest scale the reference allows.
pub const MIN_SCALE: f32 = 1e-5;

/// Elements per parallel work item.
const CHUNK: usize = 1 << 16;

/// A NaN or infinity at this element index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonFinite(pub usize);

/// `max(mean|W|, 1e-5)` as binary32, or the index of the first non-finite element.
pub fn absmean_scale(w: Floats<'_>) -> Result<f32, NonFinite> {
    let n = w.len();
    if n == 0 {
        return Ok(MIN_SCALE);
    }
    let buckets = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let part = w.slice(c * CHUNK, ((c + 1) * CHUNK).min(n));
            let mut b = [0u64; 256];
            let mut non_finite = false;
            part.for_each(|_, x| {
                let bits = x.to_bits() & 0x7fff_ffff;
                non_finite |= bits >= 0x7f80_0000;
                let e = (bits >> 23) as usize;
                let m = (bits & 0x007f_ffff) | if e > 0 { 0x0080_0000 } else { 0 };
                b[e] += m as u64;
            });
            match non_finite {
                true => Err(NonFinite(c * CHUNK + part.first_non_finite().unwrap_or(0))),
                false => Ok(b),
            }
        })
        .collect::<Vec<_>>();
    let mut total = [0u64; 256];
    for b in buckets {
        let b = b?;
        for (t, v) in total.iter_mut().zip(b) {
            *t += v;
        }
    }
    // Element with exponent field e and significand m is m · 2^(max(e,1) - 150), i.e. m << (max(e,1) - 1)
    // units of 2^-149.
    let mut sum = BigUint::default();
    for (e, &v) in total.iter().enumerate() {
        if v != 0 {
            sum.add_shifted(v, e.max(1) as u32 - 1);
        }
    }
    Ok(sum.div_to_f32(n as u64, -149).max(MIN_SCALE))
}

/// Ternary values `clamp(round_half_even(x / scale), -1, 1)` of every element, row-major. The
/// caller has already rejected non-finite inputs (see [`absmean_scale`]).
pub fn ternarize(w: Floats<'_>, scale: f32) -> Vec<i8> {
    let n = w.len();
    let mut out = vec![0i8; n];
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let part = w.slice(c * CHUNK, c * CHUNK + chunk.len());
            part.for_each(|i, x| chunk[i] = ternary(x / scale));
        });
    out
}

/// `clamp(round_half_even(t), -1, 1)` for a finite `t`, without a rounding call: 0.5 and -0.5 are
/// ties that round to the even 0, and everything beyond ±1.5 clamps to ±1.
#[inline]
pub fn ternary(t: f32) -> i8 {
    if t > 0.5 {
        1
    } else if t < -0.5 {
        -1
    } else {
        0
    }
}

/// A little-endian unsigned integer of 384 bits: enough for the sum of 2^40 values below 2^278.
#[derive(Debug, Default, Clone)]
struct BigUint {
    limbs: [u64; 6],
}

impl BigUint {
    fn add_shifted(&mut self, value: u64, shift: u32) {
        let (limb, bit) = ((shift / 64) as usize, shift % 64);
        let wide = (value as u128) << bit;
        let mut carry = 0u128;
        for (i, part) in [wide as u64, (wide >> 64) as u64].into_iter().enumerate() {
            let s = self.limbs[limb + i] as u128 + part as u128 + carry;
            self.limbs[limb + i] = s as u64;
            carry = s >> 64;
        }
        let mut i = limb + 2;
        while carry != 0 {
            let s = self.limbs[i] as u128 + carry;
            self.limbs[i] = s as u64;
            carry = s >> 64;
            i += 1;
        }
    }

    fn bit_len(&self) -> u32 {
        for i in (0..self.limbs.len()).rev() {
            if self.limbs[i] != 0 {
                return i as u32 * 64 + 64 - self.limbs[i].leading_zeros();
            }
        }
        0
    }

    fn bit(&self, i: u32) -> u128 {
        ((self.limbs[(i / 64) as usize] >> (i % 64)) & 1) as u128
    }

    /// The top 127 bits as an integer `t` and a flag for non-zero bits below them, with `self ≈ t ·
    /// 2^shift`.
    fn top_bits(&self) -> (u128, bool, i32) {
        let len = self.bit_len();
        let shift = len as i32 - 127;
        let mut top = 0u128;
        for i in (shift.max(0) as u32..len).rev() {
            top = (top << 1) | self.bit(i);
        }
        if shift < 0 {
            top <<= -shift;
        }
        let sticky = (0..shift.max(0) as u32).any(|i| self.bit(i) != 0);
        (top, sticky, shift)
    }

    /// `self · 2^exp / n` rounded to the nearest binary32, ties to even (for results in the normal
    /// range; smaller ones are rounded twice, which no caller can observe after the 1e-5 clamp).
    fn div_to_f32(&self, n: u64, exp: i32) -> f32 {
        if self.bit_len() == 0 {
            return 0.0;
        }
        let (top, mut sticky, shift) = self.top_bits();
        let q = top / n as u128;
        sticky |= top % n as u128 != 0;
        // q has at least 127 - 64 = 63 significant bits; keep 24 plus a rounding bit.
        let q_len = 128 - q.leading_zeros();
        let drop = q_len - 25;
        let keep = q >> drop;
        sticky |= q & ((1u128 << drop) - 1) != 0;
        let mut mantissa = (keep >> 1) as u64;
        if keep & 1 == 1 && (sticky || mantissa & 1 == 1) {
            mantissa += 1;
        }
        let e = drop as i32 + 1 + shift + exp;
        (mantissa as f64 * 2f64.powi(e)) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::floats::FloatKind;

    fn f32s(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn exact_mean_matches_a_careful_f64_mean_and_rounds_once() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let values: Vec<f32> = (0..100_003)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
            .collect();
        let bytes = f32s(&values);
        let m = absmean_scale(Floats::new(FloatKind::F32, &bytes)).unwrap();
        let f64_mean = values.iter().map(|v| v.abs() as f64).sum::<f64>() / values.len() as f64;
        assert_eq!(m, f64_mean as f32);
    }

    #[test]
    fn mean_of_a_tie_rounds_to_even_and_small_means_clamp() {
        // 1 + 2^-24 lies exactly between two f32 values: the mean of 1 and 1 + 2^-23.
        let bytes = f32s(&[1.0, -(1.0 + f32::EPSILON)]);
        assert_eq!(
            absmean_scale(Floats::new(FloatKind::F32, &bytes)).unwrap(),
            1.0
        );
        let bytes = f32s(&[1e-7, -1e-7, 0.0]);
        assert_eq!(
            absmean_scale(Floats::new(FloatKind::F32, &bytes)).unwrap(),
            MIN_SCALE
        );
        let bytes = f32s(&[0.0; 4]);
        assert_eq!(
            absmean_scale(Floats::new(FloatKind::F32, &bytes)).unwrap(),
            MIN_SCALE
        );
        let bytes = f32s(&[f32::MAX, f32::MAX]);
        assert_eq!(
            absmean_scale(Floats::new(FloatKind::F32, &bytes)).unwrap(),
            f32::MAX
        );
    }

    #[test]
    fn non_finite_values_are_found_by_index() {
        let bytes = f32s(&[0.5, 1.0, f32::NAN, f32::INFINITY]);
        assert_eq!(
            absmean_scale(Floats::new(FloatKind::F32, &bytes)),
            Err(NonFinite(2))
        );
    }

    #[test]
    fn ternary_equals_clamped_round_half_even() {
        let mut x = -3.0f32;
        while x <= 3.0 {
            for t in [x, x.next_up(), x.next_down()] {
                let want = t.round_ties_even().clamp(-1.0, 1.0) as i8;
                assert_eq!(ternary(t), want, "{t}");
            }
            x += 0.125;
        }
    }

    #[test]
    fn ternarize_rounds_half_to_even_and_clamps() {
        let bytes = f32s(&[0.5, 1.5, -0.5, -1.5, 0.49, 3.0, -7.0, 0.0]);
        let t = ternarize(Floats::new(FloatKind::F32, &bytes), 1.0);
        assert_eq!(t, vec![0, 1, 0, -1, 0, 1, -1, 0]);
    }
}
