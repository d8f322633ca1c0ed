//! Fast packing and unpacking of the ternary layouts (SPEC.md §6): tile by tile or block by block, in
//! parallel on rayon's pool. [`crate::ternary`] is the element-by-element reference; the tests hold
//! these to it. The converter packs with [`pack`]; the runtime repacks layouts its kernels do not read
//! with [`unpack`] then [`pack`].

use rayon::prelude::*;

use crate::encoding::TernaryLayout;
use crate::ternary::{TernaryError, base3_digit, base3_encode};

/// The code of the value 0, held by every padding position.
const PAD: u8 = 1;
/// Bytes before the codes of a tiled tensor (the f32 scale and zeros).
const TILED_HEAD: usize = 64;
/// Bytes after the codes of an i2s tensor (the f32 scale and zeros).
const I2S_TAIL: usize = 32;

/// Pack row-major ternary `values` (`rows × cols`, each -1, 0 or 1, which the caller guarantees)
/// with the per-tensor `scale`.
pub fn pack(layout: TernaryLayout, rows: usize, cols: usize, values: &[i8], scale: f32) -> Vec<u8> {
    assert_eq!(values.len(), rows * cols, "caller passes a full matrix");
    let len = layout
        .byte_len(rows as u64, cols as u64)
        .expect("shape checked by the caller") as usize;
    let mut out = vec![0u8; len];
    let code = |i: usize| (values[i] + 1) as u8;
    match layout {
        TernaryLayout::Tiled { tile_rows } | TernaryLayout::Base3 { tile_rows } => {
            let tile_rows = tile_rows as usize;
            let g = layout.tiled_geometry(rows as u64, cols as u64);
            let bk = g.block_k as usize;
            let tile_bytes = g.tile_bytes() as usize;
            let base3 = matches!(layout, TernaryLayout::Base3 { .. });
            out[..4].copy_from_slice(&scale.to_le_bytes());
            out[TILED_HEAD..]
                .par_chunks_mut(tile_bytes)
                .enumerate()
                .for_each(|(tile, bytes)| {
                    for (kb, block) in bytes.chunks_exact_mut(4 * tile_rows).enumerate() {
                        for r in 0..tile_rows {
                            let row = tile * tile_rows + r;
                            for j in 0..4 {
                                let c: [u8; 5] = std::array::from_fn(|p| {
                                    let col = kb * bk + 4 * p + j;
                                    if row < rows && col < cols && 4 * p < bk {
                                        code(row * cols + col)
                                    } else {
                                        PAD
                                    }
                                });
                                block[4 * r + j] = if base3 {
                                    base3_encode(c)
                                } else {
                                    c[0] | c[1] << 2 | c[2] << 4 | c[3] << 6
                                };
                            }
                        }
                    }
                });
        }
        TernaryLayout::I2s { block } => {
            let block = block as usize;
            let group = block / 4;
            let n = rows * cols;
            let code_bytes = len - I2S_TAIL;
            // Work items of many blocks each, so per-item overhead stays small.
            let blocks_per_item = 1024;
            out[..code_bytes]
                .par_chunks_mut(group * blocks_per_item)
                .enumerate()
                .for_each(|(item, bytes)| {
                    for (b, block_bytes) in bytes.chunks_exact_mut(group).enumerate() {
                        let base = (item * blocks_per_item + b) * block;
                        for (g, byte) in block_bytes.iter_mut().enumerate() {
                            let mut v = 0u8;
                            for q in 0..4 {
                                let i = base + q * group + g;
                                let c = if i < n { code(i) } else { PAD };
                                v |= c << (6 - 2 * q);
                            }
                            *byte = v;
                        }
                    }
                });
            out[code_bytes..code_bytes + 4].copy_from_slice(&scale.to_le_bytes());
        }
    }
    out
}

/// Row-major values of a tensor's codes (the scale is read separately, e.g. with
/// [`crate::ternary::read_scale`]). Only code 3 is refused; padding and reserved bytes are not
/// examined ([`crate::ternary::unpack`] and `BitnetFile::check_contents` check those).
pub fn unpack(
    layout: TernaryLayout,
    rows: usize,
    cols: usize,
    data: &[u8],
) -> Result<Vec<i8>, TernaryError> {
    let len = layout
        .byte_len(rows as u64, cols as u64)
        .expect("shape checked by the caller") as usize;
    if data.len() != len {
        return Err(TernaryError::DataLength {
            expected: len as u64,
            actual: data.len() as u64,
        });
    }
    let n = rows * cols;
    let mut values = vec![0i8; n];
    // Codes are decoded as `code - 1`; an invalid code 3 decodes to 2, found in a final scan. Every
    // byte decodes to base-3 digits, even one no writer produces (which `ternary::unpack` refuses).
    match layout {
        TernaryLayout::Tiled { tile_rows } | TernaryLayout::Base3 { tile_rows } => {
            let tile_rows = tile_rows as usize;
            let g = layout.tiled_geometry(rows as u64, cols as u64);
            let bk = g.block_k as usize;
            let tile_bytes = g.tile_bytes() as usize;
            let base3 = matches!(layout, TernaryLayout::Base3 { .. });
            values
                .par_chunks_mut(tile_rows * cols)
                .enumerate()
                .for_each(|(tile, out)| {
                    let bytes = &data[TILED_HEAD + tile * tile_bytes..][..tile_bytes];
                    for (kb, block) in bytes.chunks_exact(4 * tile_rows).enumerate() {
                        for (r, row) in out.chunks_exact_mut(cols).enumerate() {
                            for j in 0..4 {
                                let byte = block[4 * r + j];
                                for p in 0..bk / 4 {
                                    let col = kb * bk + 4 * p + j;
                                    if col < cols {
                                        let code = if base3 {
                                            base3_digit(byte, p as u32)
                                        } else {
                                            (byte >> (2 * p)) & 3
                                        };
                                        row[col] = code as i8 - 1;
                                    }
                                }
                            }
                        }
                    }
                });
        }
        TernaryLayout::I2s { block } => {
            let block = block as usize;
            let group = block / 4;
            values
                .par_chunks_mut(block * 1024)
                .enumerate()
                .for_each(|(item, out)| {
                    let bytes = &data[item * 1024 * group..];
                    for (b, vals) in out.chunks_mut(block).enumerate() {
                        for (e, v) in vals.iter_mut().enumerate() {
                            let byte = bytes[b * group + e % group];
                            *v = ((byte >> (6 - 2 * (e / group))) & 3) as i8 - 1;
                        }
                    }
                });
        }
    }
    match values.iter().position(|&v| v == 2) {
        Some(i) => Err(TernaryError::InvalidCode {
            row: (i / cols) as u64,
            col: (i % cols) as u64,
        }),
        None => Ok(values),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ternary;

    fn values(rows: usize, cols: usize, seed: u64) -> Vec<i8> {
        let mut s = seed | 1;
        (0..rows * cols)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 3) as i8 - 1
            })
            .collect()
    }

    #[test]
    fn every_layout_matches_the_reference_packer_on_awkward_shapes() {
        let layouts = [
            "tiled4", "tiled8", "tiled16", "tiled32", "i2s64", "i2s128", "base3x4", "base3x8",
            "base3x16", "base3x32",
        ];
        for (rows, cols) in [(1, 1), (3, 17), (32, 96), (33, 200), (20, 130), (64, 64)] {
            let v = values(rows, cols, (rows * 1000 + cols) as u64);
            for label in layouts {
                let layout = TernaryLayout::from_label(label).unwrap();
                let fast = pack(layout, rows, cols, &v, 0.125);
                let reference = ternary::pack(layout, rows as u64, cols as u64, &v, 0.125).unwrap();
                assert_eq!(fast, reference, "{label} {rows}x{cols}");
                assert_eq!(
                    unpack(layout, rows, cols, &reference).unwrap(),
                    v,
                    "{label} {rows}x{cols}"
                );
            }
        }
    }
}

#[cfg(test)]
mod invalid {
    use super::*;

    #[test]
    fn code_3_is_refused_at_its_row_and_column() {
        for label in ["tiled4", "tiled16", "i2s64", "i2s128"] {
            let layout = TernaryLayout::from_label(label).unwrap();
            let (rows, cols) = (9usize, 70usize);
            let mut data = pack(layout, rows, cols, &vec![0i8; rows * cols], 1.0);
            let (byte, slot) = crate::ternary::code_position(layout, cols as u64, 7, 33);
            let shift = if label.starts_with("i2s") {
                6 - 2 * slot
            } else {
                2 * slot
            };
            data[byte as usize] |= 3 << shift;
            assert_eq!(
                unpack(layout, rows, cols, &data),
                Err(TernaryError::InvalidCode { row: 7, col: 33 }),
                "{label}"
            );
        }
    }

    #[test]
    fn a_wrong_length_is_refused() {
        let layout = TernaryLayout::from_label("tiled16").unwrap();
        let data = pack(layout, 4, 16, &[0i8; 64], 1.0);
        assert!(matches!(
            unpack(layout, 4, 16, &data[1..]),
            Err(TernaryError::DataLength { .. })
        ));
    }
}
