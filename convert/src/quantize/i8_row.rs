//! `--embeddings i8`: the format's `i8_row` encoding, with per-row absmax scales.
//!
//! For each row: `scale = max|x| / 127` in binary32 (1.0 if the row is all zero), and
//! `q = clamp(round_half_even(x / scale), -127, 127)`. So the largest magnitude of every row maps to
//! ±127 and the encoding never uses -128.

use crate::floats::Floats;

/// Per-row scales of a `rows × cols` matrix; `Err` holds the index of the first non-finite element.
pub fn row_scales(w: Floats<'_>, rows: usize, cols: usize) -> Result<Vec<f32>, usize> {
    (0..rows)
        .map(|r| {
            let mut max = 0f32;
            for c in 0..cols {
                let x = w.get(r * cols + c);
                if !x.is_finite() {
                    return Err(r * cols + c);
                }
                max = max.max(x.abs());
            }
            Ok(if max == 0.0 { 1.0 } else { max / 127.0 })
        })
        .collect()
}

/// The quantized values of one row.
pub fn quantize_row(row: Floats<'_>, scale: f32, out: &mut Vec<u8>) {
    out.extend(
        row.iter()
            .map(|x| (x / scale).round_ties_even().clamp(-127.0, 127.0) as i8 as u8),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::floats::FloatKind;

    #[test]
    fn rows_map_their_absmax_to_127_and_zero_rows_get_scale_one() {
        let values = [254.0f32, -127.0, 1.0, 0.0, 0.0, 0.0];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let w = Floats::new(FloatKind::F32, &bytes);
        let scales = row_scales(w, 2, 3).unwrap();
        assert_eq!(scales, vec![2.0, 1.0]);
        let mut out = Vec::new();
        quantize_row(w.slice(0, 3), scales[0], &mut out);
        // -63.5 and 0.5 are ties: to even.
        assert_eq!(out, vec![127u8, (-64i8) as u8, 0]);
        let nan = [1.0f32, f32::NAN];
        let bytes: Vec<u8> = nan.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            row_scales(Floats::new(FloatKind::F32, &bytes), 1, 2),
            Err(1)
        );
    }
}
