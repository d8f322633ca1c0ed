//! Kernels for the dense (non-ternary) matrices, embedding and output: widening rows to f32 and dot
//! products. These are not bit-exact across paths (summation order differs); tests hold them to
//! a relative tolerance.

use std::ops::Range;

use bitnet_format::q4::Q4Geometry;

use super::{Isa, KernelPath, q4};

/// Element type of a float vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatKind {
    F32,
    F16,
    Bf16,
}

impl FloatKind {
    pub fn bytes(self) -> usize {
        match self {
            FloatKind::F32 => 4,
            FloatKind::F16 | FloatKind::Bf16 => 2,
        }
    }
}

/// How a dense matrix stores its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseKind {
    Float(FloatKind),
    /// `i8_row` (SPEC.md §5): per-row f32 scales, then i8 values.
    I8Row,
    /// `q4_b32` (SPEC.md §5.1): 4-bit codes with an f16 scale per block of 32; see [`super::q4`].
    Q4B32,
}

/// A row-major dense matrix (the bytes of an f32, f16, bf16, i8_row or q4_b32 tensor).
#[derive(Debug, Clone, Copy)]
pub struct DenseMatrix<'a> {
    pub data: &'a [u8],
    pub rows: usize,
    pub cols: usize,
    pub kind: DenseKind,
}

impl DenseMatrix<'_> {
    /// Row `r` widened to f32 into `out[..cols]`.
    pub fn row_into(&self, path: KernelPath, r: usize, out: &mut [f32]) {
        let out = &mut out[..self.cols];
        match self.kind {
            DenseKind::Float(kind) => {
                let width = self.cols * kind.bytes();
                decode(path, kind, &self.data[r * width..(r + 1) * width], out);
            }
            DenseKind::I8Row => {
                let scale =
                    f32::from_le_bytes(self.data[4 * r..4 * r + 4].try_into().expect("4 bytes"));
                let start = (self.rows * 4).next_multiple_of(64) + r * self.cols;
                decode_i8(path, &self.data[start..start + self.cols], scale, out);
            }
            DenseKind::Q4B32 => q4::row_into(self.q4_geometry(), self.data, r, out),
        }
    }

    fn q4_geometry(&self) -> Q4Geometry {
        Q4Geometry {
            rows: self.rows,
            cols: self.cols,
        }
    }
}

/// Widen `src` (little-endian values of `kind`) into `dst`.
pub fn decode(path: KernelPath, kind: FloatKind, src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len() * kind.bytes());
    match (kind, path.isa()) {
        (FloatKind::F32, _) => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        #[cfg(target_arch = "x86_64")]
        (FloatKind::F16, Isa::Avx512) => {
            // SAFETY: a `KernelPath` for this instruction set exists only when the CPU has AVX-512 F.
            unsafe { super::avx512::f16_to_f32(src, dst) }
        }
        #[cfg(target_arch = "x86_64")]
        (FloatKind::Bf16, Isa::Avx512) => {
            // SAFETY: as above.
            unsafe { super::avx512::bf16_to_f32(src, dst) }
        }
        #[cfg(target_arch = "x86_64")]
        (FloatKind::F16, Isa::Avx2 | Isa::AvxVnni) => {
            // SAFETY: the AVX2 and AVX-VNNI paths require AVX2 and F16C.
            unsafe { super::avx2::f16_to_f32(src, dst) }
        }
        #[cfg(target_arch = "x86_64")]
        (FloatKind::Bf16, Isa::Avx2 | Isa::AvxVnni) => {
            // SAFETY: as above.
            unsafe { super::avx2::bf16_to_f32(src, dst) }
        }
        #[cfg(target_arch = "aarch64")]
        (FloatKind::F16, Isa::Neon | Isa::NeonDot) => {
            // SAFETY: NEON is part of every AArch64 CPU.
            unsafe { super::neon::f16_to_f32(src, dst) }
        }
        #[cfg(target_arch = "aarch64")]
        (FloatKind::Bf16, Isa::Neon | Isa::NeonDot) => {
            // SAFETY: as above.
            unsafe { super::neon::bf16_to_f32(src, dst) }
        }
        (FloatKind::F16, _) => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::f16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
        (FloatKind::Bf16, _) => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = half::bf16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
    }
}

/// Narrow `src` to little-endian f16 in `dst` (2 bytes per value), rounding to nearest even on
/// every path.
pub fn encode_f16(path: KernelPath, src: &[f32], dst: &mut [u8]) {
    assert_eq!(dst.len(), src.len() * 2);
    match path.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni | Isa::Avx512 => {
            // SAFETY: these paths all require AVX2 and F16C.
            unsafe { super::avx2::f32_to_f16(src, dst) }
        }
        _ => {
            for (d, &s) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&half::f16::from_f32(s).to_le_bytes());
            }
        }
    }
}

/// On an x86 SIMD path: rows widened in registers, each chunk once for up to four tokens (the
/// output matrix is streamed from memory once per step, for every token). Returns false where
/// there is no such kernel.
fn fused_rows(
    path: KernelPath,
    w: &DenseMatrix,
    x: &[f32],
    rows: Range<usize>,
    out: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let (data, bytes, kind) = match w.kind {
            DenseKind::Float(FloatKind::F16) => (w.data, 2, 0u8),
            DenseKind::Float(FloatKind::Bf16) => (w.data, 2, 1),
            DenseKind::I8Row => (&w.data[(w.rows * 4).next_multiple_of(64)..], 1, 2),
            DenseKind::Float(FloatKind::F32) | DenseKind::Q4B32 => return false,
        };
        match path.isa() {
            // SAFETY: a `KernelPath` for this instruction set exists only when the CPU has AVX-512
            // F; `data` holds all `w.rows` rows of `w.cols` elements, `x` whole token rows and
            // `out` one slot per row and token (asserted by `matmul`).
            Isa::Avx512 => unsafe {
                super::avx512::dense_rows_dot(data, bytes, kind, rows.clone(), w.cols, x, out)
            },
            // SAFETY: as above, for AVX2/FMA/F16C.
            Isa::Avx2 | Isa::AvxVnni => unsafe {
                super::avx2::dense_rows_dot(data, bytes, kind, rows.clone(), w.cols, x, out)
            },
            _ => return false,
        }
        if w.kind == DenseKind::I8Row {
            let tokens = x.len() / w.cols;
            for (o, r) in out.chunks_exact_mut(tokens).zip(rows) {
                let scale =
                    f32::from_le_bytes(w.data[4 * r..4 * r + 4].try_into().expect("4 bytes"));
                o.iter_mut().for_each(|v| *v *= scale);
            }
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (path, w, x, rows, out);
        false
    }
}

/// Element `k` of a dense row whose kind is coded as the fused kernels take it (0 f16, 1 bf16,
/// 2 i8 code): the scalar tail of those kernels.
#[cfg(target_arch = "x86_64")]
pub(super) fn dense_element(kind: u8, row: &[u8], k: usize) -> f32 {
    match kind {
        0 => half::f16::from_le_bytes([row[2 * k], row[2 * k + 1]]).to_f32(),
        1 => half::bf16::from_le_bytes([row[2 * k], row[2 * k + 1]]).to_f32(),
        _ => row[k] as i8 as f32,
    }
}

/// Widen signed bytes times `scale` into `dst` (the value of an `i8_row` row).
pub fn decode_i8(path: KernelPath, src: &[u8], scale: f32, dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    match path.isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `KernelPath` for this instruction set exists only when the CPU has AVX-512 F.
        Isa::Avx512 => unsafe { super::avx512::i8_to_f32(src, scale, dst) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `KernelPath` for these instruction sets exists only when the CPU has AVX2.
        Isa::Avx2 | Isa::AvxVnni => unsafe { super::avx2::i8_to_f32(src, scale, dst) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of every AArch64 CPU.
        Isa::Neon | Isa::NeonDot => unsafe { super::neon::i8_to_f32(src, scale, dst) },
        _ => {
            for (d, &q) in dst.iter_mut().zip(src) {
                *d = q as i8 as f32 * scale;
            }
        }
    }
}

/// `Σ a[i] · b[i]`.
pub fn dot(path: KernelPath, a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    match path.isa() {
        Isa::Scalar => a.iter().zip(b).map(|(x, y)| x * y).sum(),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `KernelPath` for this instruction set exists only when the CPU has AVX-512 F.
        Isa::Avx512 => unsafe { super::avx512::dot(a, b) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `KernelPath` for these instruction sets exists only when the CPU has AVX2 and FMA.
        Isa::Avx2 | Isa::AvxVnni => unsafe { super::avx2::dot(a, b) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of every AArch64 CPU.
        Isa::Neon | Isa::NeonDot => unsafe { super::neon::dot(a, b) },
        _ => unreachable!("{} kernel path on another architecture", path.name()),
    }
}

/// The token rows (`tokens × cols`) a [`matmul`] multiplies, prepared once for all its row ranges:
/// as they are, or quantized per block of 32 for a `q4_b32` matrix.
pub enum DenseInput<'x> {
    Float(&'x [f32]),
    Q4(q4::Q4Acts),
}

impl<'x> DenseInput<'x> {
    /// `x` as `path`'s kernels for `w` take it.
    pub fn new(path: KernelPath, w: &DenseMatrix, x: &'x [f32]) -> Self {
        match w.kind {
            DenseKind::Q4B32 => DenseInput::Q4(q4::Q4Acts::quantize(path, x, w.cols)),
            _ => DenseInput::Float(x),
        }
    }
}

/// For every row in `rows` and every token row of `x` ([`DenseInput::new`] of `path` and `w`):
/// `out[(r - rows.start) · tokens + t] = w[r] · x[t]`. Each matrix row is widened (or unpacked)
/// once and reused for several tokens.
pub fn matmul(
    path: KernelPath,
    w: &DenseMatrix,
    x: &DenseInput,
    rows: Range<usize>,
    out: &mut [f32],
) {
    assert!(rows.end <= w.rows);
    let x = match (x, w.kind) {
        (DenseInput::Q4(acts), DenseKind::Q4B32) if acts.layout == q4::Q4Layout::of(path) => {
            return q4::matmul(path, w.q4_geometry(), w.data, acts, rows, out);
        }
        (DenseInput::Float(x), kind) if kind != DenseKind::Q4B32 => *x,
        _ => panic!(
            "a DenseInput made for another kind of matrix than {:?}",
            w.kind
        ),
    };
    let tokens = x.len() / w.cols;
    assert_eq!(out.len(), rows.len() * tokens);
    if fused_rows(path, w, x, rows.clone(), out) {
        return;
    }
    let mut row = vec![0.0f32; w.cols];
    for (i, r) in rows.enumerate() {
        w.row_into(path, r, &mut row);
        for (t, xt) in x.chunks_exact(w.cols).enumerate() {
            out[i * tokens + t] = dot(path, &row, xt);
        }
    }
}
