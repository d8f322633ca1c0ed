//! Attention over a KV cache of f16 or f32 rows: one KV head's keys and values against the group
//! of query heads that share it (grouped-query attention), so each cached row is read once per
//! group.
//!
//! Every path gives bit-identical results: the reference fixes the order of every float operation
//! (a dot product is 16 lane sums, lane `l` taking the products at `c ≡ l mod 16` in order, then
//! folded as an 8-lane register is; no fused multiply-adds; the softmax's exponential is this
//! module's [`exp`]), and the SIMD kernels perform the same operations. A model's hidden state
//! therefore does not depend on the CPU: attention feeds the int8 activation quantization, which
//! turns a last-bit difference into a whole quantization step.

#[cfg(target_arch = "x86_64")]
use super::Isa;
use super::KernelPath;
use super::float::FloatKind;

/// One KV head's rows in a cache: row `j` starts at byte `j · stride` of `data` and holds `dim`
/// values of `kind`.
#[derive(Debug, Clone, Copy)]
pub struct CacheRows<'a> {
    pub data: &'a [u8],
    pub kind: FloatKind,
    pub stride: usize,
    pub dim: usize,
    pub rows: usize,
}

impl CacheRows<'_> {
    fn check(&self) {
        assert!(matches!(self.kind, FloatKind::F16 | FloatKind::F32));
        let width = self.dim * self.kind.bytes();
        assert!(self.stride >= width);
        if self.rows > 0 {
            assert!(self.data.len() >= (self.rows - 1) * self.stride + width);
        }
    }

    /// Whether the x86 kernels take these rows (they work in 16-value steps).
    #[cfg(target_arch = "x86_64")]
    fn simd_shape(&self) -> bool {
        self.dim.is_multiple_of(16)
    }
}

/// Rows decoded per block by the reference path: small enough to stay in L1.
const BLOCK: usize = 32;

/// `out[g · n + j] = scale · q_g · k_j` for the `g = q.len() / dim` query heads in `q` (one after
/// another) and every cached row `j < n = keys.rows`.
pub fn scores(path: KernelPath, q: &[f32], keys: CacheRows, scale: f32, out: &mut [f32]) {
    keys.check();
    let (d, n) = (keys.dim, keys.rows);
    assert!(d > 0 && q.len().is_multiple_of(d));
    assert_eq!(out.len(), q.len() / d * n);
    match path.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni | Isa::Avx512 if keys.simd_shape() => {
            // SAFETY: these paths all need AVX2 and F16C, which a `KernelPath` for them proves;
            // the lengths the kernel reads were checked above.
            unsafe { super::avx2::attention_scores(q, keys, scale, out) }
        }
        _ => {
            let groups = q.len() / d;
            let mut block = vec![0.0f32; BLOCK * d];
            for start in (0..n).step_by(BLOCK) {
                let len = BLOCK.min(n - start);
                decode_rows(path, keys, start, len, &mut block);
                for g in 0..groups {
                    let qg = &q[g * d..(g + 1) * d];
                    for (j, k) in block.chunks_exact(d).take(len).enumerate() {
                        out[g * n + start + j] = lane_dot(qg, k) * scale;
                    }
                }
            }
        }
    }
}

/// `out[g · dim ..][..dim] += Σ_j p[g · n + j] · v_j` for each query head `g` of the group and
/// every cached row `j < n = values.rows`.
pub fn accumulate(path: KernelPath, p: &[f32], values: CacheRows, out: &mut [f32]) {
    values.check();
    let (d, n) = (values.dim, values.rows);
    assert!(d > 0 && out.len().is_multiple_of(d));
    assert_eq!(p.len(), out.len() / d * n);
    match path.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni | Isa::Avx512 if values.simd_shape() => {
            // SAFETY: as in `scores`.
            unsafe { super::avx2::attention_accumulate(p, values, out) }
        }
        _ => {
            let groups = out.len() / d;
            let mut block = vec![0.0f32; BLOCK * d];
            for start in (0..n).step_by(BLOCK) {
                let len = BLOCK.min(n - start);
                decode_rows(path, values, start, len, &mut block);
                for g in 0..groups {
                    let og = &mut out[g * d..(g + 1) * d];
                    for (j, v) in block.chunks_exact(d).take(len).enumerate() {
                        let pj = p[g * n + start + j];
                        og.iter_mut().zip(v).for_each(|(o, &x)| *o += pj * x);
                    }
                }
            }
        }
    }
}

/// Softmax of each `n`-value row of `x` in place (attention's scores into weights), identical on
/// every path: `e_c = exp(x_c − max)` by [`exp`], their sum in the module's order (16 lane sums,
/// then folded), then each `e_c / sum`.
pub fn softmax_rows(path: KernelPath, x: &mut [f32], n: usize) {
    assert!(n > 0 && x.len().is_multiple_of(n));
    match path.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni | Isa::Avx512 => {
            // SAFETY: these paths all need AVX2, which a `KernelPath` for them proves.
            x.chunks_exact_mut(n)
                .for_each(|row| unsafe { super::avx2::softmax(row) })
        }
        _ => x.chunks_exact_mut(n).for_each(softmax),
    }
}

/// The reference of [`softmax_rows`] for one row.
fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut lanes = [0.0f32; 16];
    for (c, v) in x.iter_mut().enumerate() {
        *v = exp(*v - max);
        lanes[c % 16] += *v;
    }
    let sum = fold_lanes(&lanes);
    x.iter_mut().for_each(|v| *v /= sum);
}

/// Below this, [`exp`] is 0 (`e^-87` ≈ 1.6e-38, nothing beside a softmax's largest term, 1).
pub(super) const EXP_MIN: f32 = -87.0;
/// `exp` splits `x = n · ln 2 + r`: `n` rounded to nearest by adding and subtracting this
/// (1.5 · 2^23), `ln 2` in two parts so that `n · LN2_HI` is exact.
pub(super) const EXP_ROUND: f32 = 12_582_912.0;
pub(super) const LOG2_E: f32 = std::f32::consts::LOG2_E;
pub(super) const LN2_HI: f32 = 0.693_359_4;
pub(super) const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes `expf`'s polynomial for `e^r`, `|r| ≤ ln 2 / 2`: `1 + r + r² · P(r)`, P from the
/// highest power down (its last coefficient, 5.0000001201e-1, is 0.5 in f32).
pub(super) const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `e^x` for `x ≤ 0` within 2 ulp (Cephes `expf`'s range reduction and polynomial), 0 below −87
/// (`EXP_MIN`), in an order of float operations (multiply, then add; no fused multiply-adds) that
/// the SIMD kernels repeat exactly, so that attention weights do not depend on the path. Unlike
/// the C library's `expf`, whose result may differ between systems.
pub fn exp(x: f32) -> f32 {
    if x.is_nan() || x < EXP_MIN {
        return 0.0;
    }
    let n = (x * LOG2_E + EXP_ROUND) - EXP_ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let poly = EXP_P[1..].iter().fold(EXP_P[0], |acc, &c| acc * r + c);
    let e = (poly * (r * r) + r) + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// The 16 lane sums folded as the SIMD kernels fold them: lanes `l` and `l + 8`, then halves.
pub(super) fn fold_lanes(lanes: &[f32; 16]) -> f32 {
    let v: [f32; 8] = std::array::from_fn(|l| lanes[l] + lanes[l + 8]);
    let quad: [f32; 4] = std::array::from_fn(|l| v[l] + v[l + 4]);
    (quad[0] + quad[2]) + (quad[1] + quad[3])
}

/// `Σ a[c] · b[c]` in the order the SIMD kernels sum: 16 lane sums, then lanes `l` and `l + 8`
/// added, then the 8 results folded in halves.
fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    for (c, (x, y)) in a.iter().zip(b).enumerate() {
        lanes[c % 16] += x * y;
    }
    fold_lanes(&lanes)
}

/// Rows `start..start + len` widened into `out` (`len × dim`).
fn decode_rows(path: KernelPath, rows: CacheRows, start: usize, len: usize, out: &mut [f32]) {
    let width = rows.dim * rows.kind.bytes();
    for (j, dst) in out.chunks_exact_mut(rows.dim).take(len).enumerate() {
        let at = (start + j) * rows.stride;
        super::float::decode(path, rows.kind, &rows.data[at..at + width], dst);
    }
}
