//! The ternary matrix kernels' common interface and dispatch.

use std::ops::Range;

use bitnet_format::TernaryLayout;

use super::activation::QuantizedActs;
use super::{Isa, KernelPath};

/// How the codes of a tile's blocks are packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// `tiled` (SPEC.md §6.3): four 2-bit codes per byte, blocks of 16 columns.
    Bits2,
    /// `base3` (SPEC.md §6.4): five base-3 digits per byte, blocks of 20 columns.
    Base3,
}

impl Packing {
    /// The packing and tile height of a layout the kernels read (`None` for `i2s`).
    pub fn of(layout: TernaryLayout) -> Option<(Packing, usize)> {
        match layout {
            TernaryLayout::Tiled { tile_rows } => Some((Packing::Bits2, tile_rows as usize)),
            TernaryLayout::Base3 { tile_rows } => Some((Packing::Base3, tile_rows as usize)),
            TernaryLayout::I2s { .. } => None,
        }
    }

    /// Columns per block.
    pub fn block_k(self) -> usize {
        match self {
            Packing::Bits2 => 16,
            Packing::Base3 => 20,
        }
    }
}

/// A ternary matrix in the `tiled` or `base3` layout (SPEC.md §6.3, §6.4), borrowed from a file or
/// a repacked buffer.
#[derive(Debug, Clone, Copy)]
pub struct TernaryMatrix<'a> {
    /// The codes: `tiles × k_blocks` blocks of `4 · tile_rows` bytes (the tensor's bytes after its
    /// 64-byte scale head).
    pub codes: &'a [u8],
    pub rows: usize,
    pub cols: usize,
    pub tile_rows: usize,
    pub packing: Packing,
    /// The per-tensor scale, a multiplier.
    pub scale: f32,
}

impl TernaryMatrix<'_> {
    pub fn tiles(&self) -> usize {
        self.rows.div_ceil(self.tile_rows)
    }

    pub fn k_blocks(&self) -> usize {
        self.cols.div_ceil(self.packing.block_k())
    }

    /// Columns including padding: the length activations must be zero-padded to.
    pub fn kpad(&self) -> usize {
        self.k_blocks() * self.packing.block_k()
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
/// read every tile height, of either packing ([`KernelPath::reads_layout`]).
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
    #[cfg(target_arch = "x86_64")]
    use super::{avx2, avx512, avxvnni};
    match path.isa() {
        Isa::Scalar => super::scalar::ternary_tiles(w, x, tiles, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            assert_eq!(w.tile_rows, 16);
            // SAFETY (both): the CPU has AVX2 (a `KernelPath` proves it); every length the kernel
            // relies on was asserted above.
            match w.packing {
                Packing::Bits2 => unsafe {
                    avx2::ternary_tiles::<4, avx2::Bits2>(w, x, tiles, out)
                },
                Packing::Base3 => unsafe {
                    avx2::ternary_tiles::<5, avx2::Base3>(w, x, tiles, out)
                },
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => {
            assert_eq!(w.tile_rows, 16);
            // SAFETY (all): the CPU has AVX2 and AVX-VNNI (a `KernelPath` proves it); lengths
            // asserted above. One token of `base3` has its own kernel, which multiplies the code
            // bytes without unpacking digits (cheaper once, dearer when shared by several tokens).
            match w.packing {
                Packing::Bits2 => unsafe {
                    avxvnni::ternary_tiles::<4, avx2::Bits2>(w, x, tiles, out)
                },
                Packing::Base3 if x.tokens == 1 => unsafe {
                    avxvnni::base3_one_token(w, x, tiles, out)
                },
                Packing::Base3 => unsafe {
                    avxvnni::ternary_tiles::<5, avx2::Base3>(w, x, tiles, out)
                },
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            assert_eq!(w.tile_rows, 16);
            // SAFETY (both): the CPU has AVX-512 F/BW/VNNI (a `KernelPath` proves it); lengths
            // asserted above.
            match w.packing {
                Packing::Bits2 => unsafe {
                    avx512::ternary_tiles::<4, avx512::Bits2>(w, x, tiles, out)
                },
                Packing::Base3 => unsafe {
                    avx512::ternary_tiles::<5, avx512::Base3>(w, x, tiles, out)
                },
            }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => {
            assert!(matches!(w.tile_rows, 4 | 8 | 16 | 32));
            // SAFETY: NEON is part of every AArch64 CPU; the tile height and every length the
            // kernel relies on were asserted above (it reads either packing).
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

/// The values of one tile's exact products ([`ternary_matmul`]'s accumulators of the tile, `sums`,
/// `tile_rows` per token) for every token `t < act_scales.len()`: row `r < rows` of token `t` is
/// `sums[t · tile_rows + r] as f32 / act_scales[t] · w_scale`, written to `out.0[t · out.1 + r]`
/// (`out`: where the first token's values go, and the stride between tokens).
/// The order of operations is the reference's, and the vector paths round every step as the
/// scalar expression does, so every path gives the same bits.
///
/// # Safety
/// For every token `t`, `out.0.add(t · out.1) .. + rows` must be valid for writes and written by
/// nothing else meanwhile.
pub unsafe fn scale_tile(
    path: KernelPath,
    sums: &[i32],
    tile_rows: usize,
    rows: usize,
    act_scales: &[f32],
    w_scale: f32,
    (out, stride): (*mut f32, usize),
) {
    assert!(rows <= tile_rows && sums.len() >= act_scales.len() * tile_rows);
    match path.isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `KernelPath` for these instruction sets exists only when the CPU has AVX2;
        // the caller's guarantee on `out`, and the lengths asserted above.
        Isa::Avx2 | Isa::AvxVnni | Isa::Avx512 if rows == 16 => unsafe {
            super::avx2::scale_tile16(sums, tile_rows, act_scales, w_scale, out, stride)
        },
        _ => {
            for (t, &s) in act_scales.iter().enumerate() {
                // SAFETY: the caller's guarantee.
                let y = unsafe { std::slice::from_raw_parts_mut(out.add(t * stride), rows) };
                for (y, &a) in y.iter_mut().zip(&sums[t * tile_rows..]) {
                    *y = a as f32 / s * w_scale;
                }
            }
        }
    }
}
