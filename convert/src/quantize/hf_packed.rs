//! Hugging Face's packed ternary weights (`transformers.integrations.bitnet.pack_weights`): a
//! `[N, K]` matrix stored as `u8 [N/4, K]`; byte `[r, c]` holds rows `r, R+r, 2R+r, 3R+r` (`R = N/4`)
//! of column `c` in bit pairs `1:0, 3:2, 5:4, 7:6`, each as the code `w + 1`.

use rayon::prelude::*;

use crate::family::ScaleRule;
use crate::floats::{FloatKind, Floats};
use crate::source::SourceTensor;

/// An invalid code 3, at logical `(row, col)` of the unpacked matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidCode {
    pub row: usize,
    pub col: usize,
}

/// Unpack `packed` (`packed_rows × cols` bytes) to `4·packed_rows × cols` ternary values,
/// row-major. Returns the first (lowest row, then column) invalid code 3 if there is one.
pub fn unpack(packed: &[u8], packed_rows: usize, cols: usize) -> Result<Vec<i8>, InvalidCode> {
    assert_eq!(packed.len(), packed_rows * cols, "caller checks the shape");
    let mut out = vec![0i8; 4 * packed_rows * cols];
    if cols == 0 {
        return Ok(out);
    }
    let first_bad = out
        .par_chunks_mut(cols)
        .enumerate()
        .filter_map(|(row, values)| {
            let (quarter, r) = (row / packed_rows, row % packed_rows);
            let shift = 2 * quarter;
            let bytes = &packed[r * cols..(r + 1) * cols];
            let mut bad = None;
            for (col, (v, &b)) in values.iter_mut().zip(bytes).enumerate() {
                let code = (b >> shift) & 3;
                if code == 3 && bad.is_none() {
                    bad = Some(col);
                }
                *v = code as i8 - 1;
            }
            bad.map(|col| InvalidCode { row, col })
        })
        .min_by_key(|e| (e.row, e.col));
    match first_bad {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The per-tensor multiplier a `weight_scale` tensor stands for, or why it cannot be used.
pub fn scale_multiplier(scale: &SourceTensor<'_>, rule: ScaleRule) -> Result<f32, String> {
    let kind = FloatKind::from_dtype(scale.dtype).ok_or_else(|| {
        format!(
            "dtype {:?}; a weight_scale must be a floating-point scalar",
            scale.dtype
        )
    })?;
    if scale.elements() != 1 || scale.shape.len() > 1 {
        return Err(format!(
            "shape {:?}; a weight_scale must hold exactly one element (one scale per tensor)",
            scale.shape
        ));
    }
    let value = Floats::new(kind, scale.data).get(0);
    if !(value.is_finite() && value > 0.0) {
        return Err(format!(
            "value {value} (a weight_scale must be finite and positive)"
        ));
    }
    let multiplier = match rule {
        ScaleRule::Multiply => value,
        ScaleRule::Divide => 1.0 / value,
    };
    if !(multiplier.is_finite() && multiplier > 0.0) {
        return Err(format!(
            "value {value} gives the multiplier {multiplier}, which is not a finite positive binary32"
        ));
    }
    Ok(multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers' `pack_weights` for one column.
    fn pack_column(values: &[i8]) -> Vec<u8> {
        let r = values.len() / 4;
        (0..r)
            .map(|i| (0..4).fold(0u8, |b, q| b | (((values[q * r + i] + 1) as u8) << (2 * q))))
            .collect()
    }

    #[test]
    fn worked_example_of_the_reference() {
        // checkpoints.md: one column, 8 rows [-1, 0, 1, 1, 0, -1, 1, -1] -> bytes 0x98, 0x09.
        let column = [-1, 0, 1, 1, 0, -1, 1, -1];
        assert_eq!(pack_column(&column), vec![0x98, 0x09]);
        assert_eq!(unpack(&[0x98, 0x09], 2, 1).unwrap(), column.to_vec());
    }

    #[test]
    fn code_three_is_reported_at_its_logical_position() {
        // Packed row 1 (of R = 2), bits 5:4 -> quarter 2 -> logical row 2·2 + 1 = 5, column 2.
        let mut packed = vec![0x55u8; 2 * 3];
        packed[3 + 2] = 0x55 | (3 << 4);
        assert_eq!(unpack(&packed, 2, 3), Err(InvalidCode { row: 5, col: 2 }));
    }
}
