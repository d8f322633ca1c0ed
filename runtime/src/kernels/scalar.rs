//! Scalar reference kernels: straight from the definitions, for any tile height.

use std::ops::Range;

use super::activation::QuantizedActs;
use bitnet_format::ternary;

use super::ternary::{Packing, TernaryMatrix};

/// The reference for [`super::ternary_matmul`]: decode each code as SPEC.md §6.3 and §6.4 state and
/// multiply-accumulate in i32.
pub fn ternary_tiles(w: &TernaryMatrix, x: &QuantizedActs, tiles: Range<usize>, out: &mut [i32]) {
    let r_count = w.tile_rows;
    let block = 4 * r_count;
    let bk = w.packing.block_k();
    for (i, tile) in tiles.enumerate() {
        let codes = &w.codes[tile * w.tile_bytes()..(tile + 1) * w.tile_bytes()];
        for t in 0..x.tokens {
            let q = x.row(t);
            for r in 0..r_count {
                let mut acc = 0i32;
                for kb in 0..w.k_blocks() {
                    let lane = &codes[kb * block + 4 * r..kb * block + 4 * r + 4];
                    for k in 0..bk {
                        let (byte, slot) = (lane[k % 4], k / 4);
                        let code = match w.packing {
                            Packing::Bits2 => (byte >> (2 * slot)) & 3,
                            Packing::Base3 => ternary::base3_digit(byte, slot as u32),
                        };
                        acc += (code as i32 - 1) * q[kb * bk + k] as i32;
                    }
                }
                out[(i * x.tokens + t) * r_count + r] = acc;
            }
        }
    }
}
