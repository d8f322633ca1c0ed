//! Per-token int8 activation quantization, as BitNet b1.58's reference implementation does it
//! (the formula is at [`quantize_row`]).
//! The SIMD paths give exactly the scalar result: `cvtps2dq` rounds half to even (the default
//! MXCSR mode) and saturating packs clamp to [-128, 127]; on AArch64 `fcvtns` rounds half to even
//! and `sqxtn` saturates.

use super::{Isa, KernelPath};

/// A batch of token rows quantized to i8, zero-padded to `kpad` columns.
#[derive(Debug, Clone, Default)]
pub struct QuantizedActs {
    /// `tokens × kpad` codes, row-major.
    pub q: Vec<i8>,
    /// Per token: `s = 127 / max(absmax, 1e-5)`; the real activation is `q / s`.
    pub scale: Vec<f32>,
    /// Per token: `Σ q`, which the unsigned-code SIMD kernels subtract.
    pub sum: Vec<i32>,
    pub tokens: usize,
    pub kpad: usize,
}

impl QuantizedActs {
    /// Quantize `tokens` rows of `k` values each (`x.len() == tokens · k`), padding rows to `kpad`.
    pub fn quantize(&mut self, path: KernelPath, x: &[f32], k: usize, kpad: usize) {
        debug_assert!(kpad >= k && x.len().is_multiple_of(k));
        let tokens = x.len() / k;
        self.tokens = tokens;
        self.kpad = kpad;
        self.q.clear();
        self.q.resize(tokens * kpad, 0);
        self.scale.clear();
        self.sum.clear();
        for (row, out) in x.chunks_exact(k).zip(self.q.chunks_exact_mut(kpad)) {
            let (s, sum) = quantize_row(path, row, &mut out[..k]);
            self.scale.push(s);
            self.sum.push(sum);
        }
    }

    /// The codes of token `t`.
    pub fn row(&self, t: usize) -> &[i8] {
        &self.q[t * self.kpad..(t + 1) * self.kpad]
    }
}

/// Quantize one row: `s = 127 / max(max|x|, 1e-5)`, `q = clamp(round_half_even(x · s), -128, 127)`.
/// Returns `(s, Σ q)`.
pub fn quantize_row(path: KernelPath, x: &[f32], out: &mut [i8]) -> (f32, i32) {
    assert_eq!(x.len(), out.len());
    match path.isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `KernelPath` for this instruction set exists only when the CPU has AVX-512 F/BW.
        Isa::Avx512 => unsafe { super::avx512::quantize_row(x, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `KernelPath` for these instruction sets exists only when the CPU has AVX2.
        Isa::Avx2 | Isa::AvxVnni => unsafe { super::avx2::quantize_row(x, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of every AArch64 CPU.
        Isa::Neon | Isa::NeonDot => unsafe { super::neon::quantize_row(x, out) },
        _ => quantize_row_scalar(x, out),
    }
}

/// The reference for [`quantize_row`].
pub fn quantize_row_scalar(x: &[f32], out: &mut [i8]) -> (f32, i32) {
    let absmax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let s = 127.0 / absmax.max(1e-5);
    let mut sum = 0i32;
    for (o, &v) in out.iter_mut().zip(x) {
        let q = (v * s).round_ties_even().clamp(-128.0, 127.0) as i8;
        *o = q;
        sum += q as i32;
    }
    (s, sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_to_even_and_scales_by_absmax() {
        // absmax 127 -> s = 1: values land exactly on halves.
        let x = [127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -127.0];
        let mut q = [0i8; 7];
        let (s, sum) = quantize_row_scalar(&x, &mut q);
        assert_eq!(s, 1.0);
        assert_eq!(q, [127, 0, 2, 2, 0, -2, -127]);
        assert_eq!(sum, q.iter().map(|&v| v as i32).sum::<i32>());
    }

    #[test]
    fn every_path_quantizes_exactly_like_the_reference() {
        let mut seed = 3u32;
        for len in [1usize, 7, 16, 33, 64, 100, 2560] {
            for scale in [1e-7f32, 0.01, 1.0, 300.0] {
                let x: Vec<f32> = (0..len)
                    .map(|i| {
                        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                        // Include exact halves after scaling: multiples of 0.5 / s land on them.
                        let v = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                        if i % 5 == 0 {
                            (v * 254.0).round() / 2.0 * scale / 63.5
                        } else {
                            v * scale
                        }
                    })
                    .collect();
                let mut want = vec![0i8; len];
                let expected = quantize_row_scalar(&x, &mut want);
                for path in KernelPath::available() {
                    let mut got = vec![0i8; len];
                    assert_eq!(
                        quantize_row(path, &x, &mut got),
                        expected,
                        "{path:?} len {len}"
                    );
                    assert_eq!(got, want, "{path:?} len {len} scale {scale}");
                }
            }
        }
    }

    #[test]
    fn all_zero_row_uses_the_floor() {
        let mut q = [1i8; 3];
        let (s, sum) = quantize_row_scalar(&[0.0; 3], &mut q);
        assert_eq!(s, 127.0 / 1e-5);
        assert_eq!((q, sum), ([0; 3], 0));
    }

    #[test]
    fn batch_pads_with_zeros() {
        let mut a = QuantizedActs::default();
        a.quantize(KernelPath::SCALAR, &[1.0, -1.0, 0.5, 2.0, 0.0, -2.0], 3, 16);
        assert_eq!(a.tokens, 2);
        assert_eq!(&a.row(0)[..4], &[127, -127, 64, 0]);
        assert_eq!(&a.row(1)[..3], &[127, 0, -127]);
        assert!(a.row(1)[3..].iter().all(|&v| v == 0));
    }
}
