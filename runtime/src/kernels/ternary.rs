//! The ternary matrix kernels' common interface and dispatch.

use std::ops::Range;

use super::activation::QuantizedActs;
use super::{Isa, KernelPath};

/// A ternary matrix in the `tiled` layout (SPEC.md §6.3), borrowed from a file or a repacked buffer.
#[derive(Debug, Clone, Copy)]
pub struct TernaryMatrix<'a> {
    /// The codes: `tiles × k_blocks` blocks of `4 · tile_rows` bytes (the tensor's bytes after its
    /// 64-byte scale head).
    pub codes: &'a [u8],
    pub rows: usize,
    pub cols: usize,
    pub tile_rows: usize,
    /// The per-tensor scale, a multiplier.
    pub scale: f32,
}

impl TernaryMatrix<'_> {
    pub fn tiles(&self) -> usize {
        self.rows.div_ceil(self.tile_rows)
    }

    pub fn k_blocks(&self) -> usize {
        self.cols.div_ceil(16)
    }

    /// Columns including padding: the length activations must be zero-padded to.
    pub fn kpad(&self) -> usize {
        self.k_blocks() * 16
    }

    /// Bytes of one tile.
    pub fn tile_bytes(&self) -> usize {
        self.k_blocks() * 4 * self.tile_rows
    }
}

/// Exact integer products `acc[n] = Σ_k t[n,k] · q[k]` for every token of `x` and every row of the
/// tiles in `tiles`, written tile-major: `out[((tile - tiles.start) · tokens + t) · tile_rows + r]`.
///
/// `x.kpad` must equal `w.kpad()`. The x86 paths need `tile_rows == 16`; scalar and the NEON paths
/// read every tile height ([`KernelPath::reads_layout`]).
pub fn ternary_matmul(
    path: KernelPath,
    w: &TernaryMatrix,
    x: &QuantizedActs,
    tiles: Range<usize>,
    out: &mut [i32],
) {
    assert_eq!(
        x.kpad,
        w.kpad(),
        "activations padded to the matrix's columns"
    );
    assert!(tiles.end <= w.tiles());
    assert_eq!(out.len(), tiles.len() * x.tokens * w.tile_rows);
    assert_eq!(w.codes.len(), w.tiles() * w.tile_bytes());
    match path.isa() {
        Isa::Scalar => super::scalar::ternary_tiles(w, x, tiles, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            assert_eq!(w.tile_rows, 16);
            // SAFETY: the CPU has AVX2 (a `KernelPath` proves it); every length the kernel relies
            // on was asserted above.
            unsafe { super::avx2::ternary_tiles(w, x, tiles, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => {
            assert_eq!(w.tile_rows, 16);
            // SAFETY: the CPU has AVX2 and AVX-VNNI (a `KernelPath` proves it); lengths asserted
            // above.
            unsafe { super::avxvnni::ternary_tiles(w, x, tiles, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            assert_eq!(w.tile_rows, 16);
            // SAFETY: the CPU has AVX-512 F/BW/VNNI (a `KernelPath` proves it); lengths asserted
            // above.
            unsafe { super::avx512::ternary_tiles(w, x, tiles, out) }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => {
            assert!(matches!(w.tile_rows, 4 | 8 | 16 | 32));
            // SAFETY: NEON is part of every AArch64 CPU; the tile height and every length the
            // kernel relies on were asserted above.
            unsafe { super::neon::ternary_tiles_neon(w, x, tiles, out) }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::NeonDot => {
            assert!(matches!(w.tile_rows, 4 | 8 | 16 | 32));
            // SAFETY: the CPU has `dotprod` (a `KernelPath` proves it); tile height and lengths
            // asserted above.
            unsafe { super::neon::ternary_tiles_dot(w, x, tiles, out) }
        }
        // A `KernelPath` of another architecture cannot be made.
        _ => unreachable!("{} kernel path on another architecture", path.name()),
    }
}
