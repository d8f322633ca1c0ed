//! Ternary tensor encodings of the peers: llama.cpp's TQ1_0 and TQ2_0 (256-element blocks with an
//! f16 scale each), bitnet.cpp's I2_S (2-bit codes of the whole tensor and one f32 scale), and
//! floating-point tensors that hold ternary values times one scale.
//!
//! Layouts (checkpoints.md, "Formats of the peers"; checked against the `gguf` package's numpy
//! dequantizers in CI):
//! - TQ2_0, 66 bytes per 256 elements: `qs[64]`, then `d` (f16). Element `j = 128h + 32s + m` has
//!   code `w + 1` in byte `32h + m`, bits `2s+1 : 2s`.
//! - TQ1_0, 54 bytes per 256 elements: `qs[48]`, `qh[4]`, `d` (f16). Byte `m < 32` holds elements
//!   `m + 32n` (n = 0..5), byte `32 + m` (m < 16) elements `160 + m + 16n`, byte `qh[m]` elements
//!   `240 + m + 4n` (n = 0..4), each as the base-3 number `Σ t_n 3^(4-n)` (t = w + 1, a missing
//!   fifth trit is 0) stored as `ceil(q · 256 / 243)`; trit `n` is `((byte · 3^n mod 256) · 3) >> 8`.
//! - I2_S: SPEC.md §6.2 with `block = 128` (x86 builds, the files on the Hub) or 64 (ARM builds).
//!
//! Scales. A TQ tensor has one f16 `d` per block. It describes one ternary tensor if every block
//! that holds a non-zero weight has the same `|d|` (a block with negative `d` has its signs
//! flipped); blocks whose weights are all zero may carry any `d` (llama.cpp's quantizer writes
//! `d = 0` for them) and are ignored. A tensor of only zero blocks gets the scale 1.0.

use half::f16;

/// Elements per TQ block.
pub const QK_K: usize = 256;
pub const TQ2_0_BYTES: usize = 66;
pub const TQ1_0_BYTES: usize = 54;

const POW3: [u16; 5] = [1, 3, 9, 27, 81];

/// The two TQ types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tq {
    Tq1_0,
    Tq2_0,
}

impl Tq {
    pub fn block_bytes(self) -> usize {
        match self {
            Tq::Tq1_0 => TQ1_0_BYTES,
            Tq::Tq2_0 => TQ2_0_BYTES,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tq::Tq1_0 => "TQ1_0",
            Tq::Tq2_0 => "TQ2_0",
        }
    }
}

/// Encode row-major ternary `values` (a multiple of 256 of them) with the block scale `d`.
pub fn encode_tq(kind: Tq, values: &[i8], d: f16) -> Vec<u8> {
    debug_assert_eq!(values.len() % QK_K, 0);
    let mut out = Vec::with_capacity(values.len() / QK_K * kind.block_bytes());
    for block in values.chunks_exact(QK_K) {
        let t = |i: usize| (block[i] + 1) as u16;
        match kind {
            Tq::Tq2_0 => {
                for h in 0..2 {
                    for m in 0..32 {
                        let mut byte = 0u16;
                        for s in 0..4 {
                            byte |= t(128 * h + 32 * s + m) << (2 * s);
                        }
                        out.push(byte as u8);
                    }
                }
            }
            Tq::Tq1_0 => {
                let pack = |q: u16| (q * 256).div_ceil(243) as u8;
                for m in 0..32 {
                    let q = (0..5).fold(0u16, |q, n| q * 3 + t(m + 32 * n));
                    out.push(pack(q));
                }
                for m in 0..16 {
                    let q = (0..5).fold(0u16, |q, n| q * 3 + t(160 + m + 16 * n));
                    out.push(pack(q));
                }
                for m in 0..4 {
                    let q = (0..4).fold(0u16, |q, n| q * 3 + t(240 + m + 4 * n)) * 3;
                    out.push(pack(q));
                }
            }
        }
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

/// Decode TQ blocks to values `t + ...` in {-1, 0, 1} and each block's `d`. A TQ2_0 code 3 (the
/// value 2, not ternary) is an error giving the element's index.
pub fn decode_tq(kind: Tq, data: &[u8]) -> Result<(Vec<i8>, Vec<f16>), String> {
    let bb = kind.block_bytes();
    if !data.len().is_multiple_of(bb) {
        return Err(format!(
            "{} bytes is not a whole number of {} blocks",
            data.len(),
            kind.name()
        ));
    }
    let blocks = data.len() / bb;
    let mut values = vec![0i8; blocks * QK_K];
    let mut scales = Vec::with_capacity(blocks);
    for (b, block) in data.chunks_exact(bb).enumerate() {
        let v = &mut values[b * QK_K..(b + 1) * QK_K];
        match kind {
            Tq::Tq2_0 => {
                for h in 0..2 {
                    for m in 0..32 {
                        let byte = block[32 * h + m];
                        for s in 0..4 {
                            let code = (byte >> (2 * s)) & 3;
                            if code == 3 {
                                return Err(format!(
                                    "element {} holds the code 3 (value 2), not a ternary value",
                                    b * QK_K + 128 * h + 32 * s + m
                                ));
                            }
                            v[128 * h + 32 * s + m] = code as i8 - 1;
                        }
                    }
                }
            }
            Tq::Tq1_0 => {
                let trit = |byte: u8, n: usize| {
                    let q = (byte as u16 * POW3[n]) & 0xff;
                    ((q * 3) >> 8) as i8 - 1
                };
                for m in 0..32 {
                    for n in 0..5 {
                        v[m + 32 * n] = trit(block[m], n);
                    }
                }
                for m in 0..16 {
                    for n in 0..5 {
                        v[160 + m + 16 * n] = trit(block[32 + m], n);
                    }
                }
                for m in 0..4 {
                    for n in 0..4 {
                        v[240 + m + 4 * n] = trit(block[48 + m], n);
                    }
                }
            }
        }
        scales.push(f16::from_le_bytes([block[bb - 2], block[bb - 1]]));
    }
    Ok((values, scales))
}

/// One per-tensor scale from per-block scales (module docs), flipping the signs of blocks with a
/// negative `d` in `values`.
pub fn tensor_scale(values: &mut [i8], scales: &[f16]) -> Result<f32, String> {
    let mut common: Option<(usize, f16)> = None;
    let mut any_d = None;
    for (b, &d) in scales.iter().enumerate() {
        let block = &mut values[b * QK_K..(b + 1) * QK_K];
        let df = d.to_f32();
        if df.is_finite() && df > 0.0 && any_d.is_none() {
            any_d = Some(df);
        }
        if block.iter().all(|&x| x == 0) {
            continue;
        }
        if !df.is_finite() || df == 0.0 {
            return Err(format!(
                "block {b} holds non-zero weights but its scale d is {df}"
            ));
        }
        if df < 0.0 {
            block.iter_mut().for_each(|x| *x = -*x);
        }
        let d = f16::from_f32(df.abs());
        match common {
            None => common = Some((b, d)),
            Some((first, c)) if c != d => {
                return Err(format!(
                    "blocks {first} and {b} have different scales ({} and {}): the blocks do not describe one ternary tensor with a per-tensor scale",
                    c.to_f32(),
                    d.to_f32()
                ));
            }
            Some(_) => {}
        }
    }
    Ok(common.map(|(_, d)| d.to_f32()).or(any_d).unwrap_or(1.0))
}

/// Ternary values and the scale of floats that each are `0` or `±s` for one `s > 0`.
pub fn float_ternary(values: impl Iterator<Item = f32>) -> Result<(Vec<i8>, f32), String> {
    let mut s: Option<f32> = None;
    let mut out = Vec::new();
    for (i, x) in values.enumerate() {
        if !x.is_finite() {
            return Err(format!("element {i} is {x}"));
        }
        if x == 0.0 {
            out.push(0);
            continue;
        }
        let s = *s.get_or_insert(x.abs());
        if x == s {
            out.push(1);
        } else if x == -s {
            out.push(-1);
        } else {
            return Err(format!(
                "element {i} is {x}, but earlier non-zero elements are ±{s}: not a ternary tensor with one scale"
            ));
        }
    }
    Ok((out, s.unwrap_or(1.0)))
}

/// Decode an I2_S tensor of `n` elements in blocks of `block` (128 or 64): the values and the
/// scale. The 28 bytes after the scale are ignored: bitnet.cpp's `quantize_i2_s` never writes them
/// (its `llama-quantize` leaves whatever the buffer held; its Python converter repeats the scale).
/// Padding positions (elements `n..` of the last block) must hold the code of 0: bitnet.cpp writes
/// only whole blocks, so only SPEC.md §6.2 writers (ours) make them, always with that code, and
/// [`super::detect_i2s_block`] takes them as its certain evidence of the block size.
pub fn decode_i2s(data: &[u8], n: usize, block: usize) -> Result<(Vec<i8>, f32), String> {
    let group = block / 4;
    let padded = n.div_ceil(block) * block;
    let code_bytes = padded / 4;
    if data.len() != code_bytes + 32 {
        return Err(format!(
            "{} bytes, but {n} elements in I2_S take {}",
            data.len(),
            code_bytes + 32
        ));
    }
    let scale_bytes = &data[code_bytes..code_bytes + 4];
    let scale = f32::from_le_bytes(scale_bytes.try_into().expect("4 bytes"));
    if !scale.is_finite() {
        return Err(format!("its scale is {scale}"));
    }
    let mut values = vec![0i8; n];
    for (b, bytes) in data[..code_bytes].chunks_exact(group).enumerate() {
        for (g, &byte) in bytes.iter().enumerate() {
            for q in 0..4 {
                let i = b * block + q * group + g;
                let code = (byte >> (6 - 2 * q)) & 3;
                if i < n {
                    if code == 3 {
                        return Err(format!("element {i} holds the invalid code 3"));
                    }
                    values[i] = code as i8 - 1;
                } else if code != 1 {
                    return Err(format!("padding position {i} holds code {code}, not 1"));
                }
            }
        }
    }
    Ok((values, scale))
}

/// Why an I2_S tensor whose element count `n` is not a multiple of `block` fails to decode, if
/// bitnet.cpp wrote it: its `quantize_i2_s` encodes only the whole blocks and stores the scale
/// right after the first `n / 4` bytes (its tensor size is `n / 4 + 32`), so the last block's
/// values are never written and the scale lies where the padded layout has codes.
pub fn i2s_partial_block_hint(detail: String, n: usize, block: usize) -> String {
    format!(
        "{detail}; its {n} elements are not a multiple of the I2_S block of {block}, which \
         bitnet.cpp's llama-quantize cannot write: it encodes only whole blocks and puts the \
         scale right after the first {} bytes, so the last {} values are lost (convert the \
         checkpoint itself instead)",
        n / 4,
        n % block
    )
}

/// Correlation across the feed-forward units of one layer between the non-zero weights each unit
/// reads (its rows of `ffn_up` and `ffn_gate`, `[units, hidden]`) and writes (its column of
/// `ffn_down`, `[hidden, units]`): strong in trained models, whose units' input and output weights
/// grow and shrink together. `None` when either count is constant.
pub fn unit_weight_correlation(up: &[i8], gate: &[i8], down: &[i8], units: usize) -> Option<f64> {
    let hidden = up.len() / units.max(1);
    let nonzero = |row: &[i8]| row.iter().filter(|&&x| x != 0).count() as f64;
    let reads: Vec<f64> = (0..units)
        .map(|u| {
            let row = u * hidden..(u + 1) * hidden;
            nonzero(&up[row.clone()]) + nonzero(&gate[row])
        })
        .collect();
    let mut writes = vec![0f64; units];
    for row in down.chunks_exact(units) {
        for (w, &x) in writes.iter_mut().zip(row) {
            *w += (x != 0) as u8 as f64;
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (mr, mw) = (mean(&reads), mean(&writes));
    let (mut rw, mut rr, mut ww) = (0.0, 0.0, 0.0);
    for (r, w) in reads.iter().zip(&writes) {
        rw += (r - mr) * (w - mw);
        rr += (r - mr) * (r - mr);
        ww += (w - mw) * (w - mw);
    }
    (rr > 0.0 && ww > 0.0).then(|| rw / (rr * ww).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_format::{TernaryLayout, ternary};

    fn values(n: usize, seed: u64) -> Vec<i8> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 3) as i8 - 1
            })
            .collect()
    }

    #[test]
    fn tq_round_trips_every_value_pattern() {
        for kind in [Tq::Tq1_0, Tq::Tq2_0] {
            let v = values(256 * 7, 42);
            let d = f16::from_f32(0.0123);
            let bytes = encode_tq(kind, &v, d);
            assert_eq!(bytes.len(), 7 * kind.block_bytes());
            let (back, scales) = decode_tq(kind, &bytes).unwrap();
            assert_eq!(back, v, "{kind:?}");
            assert!(scales.iter().all(|&s| s == d));
        }
    }

    #[test]
    fn tq1_0_every_five_trit_number_survives() {
        // All 243 combinations in the first byte's five trits.
        for q in 0..243u16 {
            let mut v = vec![0i8; 256];
            let mut x = q;
            for n in (0..5).rev() {
                v[32 * n] = (x % 3) as i8 - 1;
                x /= 3;
            }
            let (back, _) = decode_tq(Tq::Tq1_0, &encode_tq(Tq::Tq1_0, &v, f16::ONE)).unwrap();
            assert_eq!(back, v, "q = {q}");
        }
    }

    #[test]
    fn tq2_0_layout_matches_the_worked_positions() {
        let mut v = vec![0i8; 256];
        v[0] = 1; // byte 0, bits 1:0
        v[32] = -1; // byte 0, bits 3:2
        v[128 + 96 + 5] = 1; // byte 32 + 5, bits 7:6
        let b = encode_tq(Tq::Tq2_0, &v, f16::ONE);
        assert_eq!(b[0], 0b0101_0010);
        assert_eq!(b[37], 0b1001_0101);
        assert_eq!(&b[64..66], &f16::ONE.to_le_bytes());
    }

    #[test]
    fn scale_recovery_ignores_zero_blocks_and_refuses_mixed_scales() {
        let mut v = vec![0i8; 512];
        v[300] = 1;
        let s = [f16::ZERO, f16::from_f32(0.5)];
        assert_eq!(tensor_scale(&mut v, &s).unwrap(), 0.5);
        v[3] = -1;
        let s = [f16::from_f32(-0.5), f16::from_f32(0.5)];
        assert_eq!(tensor_scale(&mut v, &s).unwrap(), 0.5);
        assert_eq!(v[3], 1, "negative d flips the block's signs");
        let s = [f16::from_f32(0.25), f16::from_f32(0.5)];
        assert!(
            tensor_scale(&mut v, &s)
                .unwrap_err()
                .contains("different scales")
        );
        let s = [f16::ZERO, f16::from_f32(0.5)];
        assert!(tensor_scale(&mut v, &s).unwrap_err().contains("block 0"));
    }

    #[test]
    fn i2s_decoder_agrees_with_the_format_crate() {
        for (rows, cols, block) in [(4, 128, 128), (3, 100, 128), (5, 64, 64), (2, 96, 64)] {
            let v = values(rows * cols, (rows * cols) as u64);
            let layout = TernaryLayout::I2s {
                block: block as u32,
            };
            let mut bytes = ternary::pack(layout, rows as u64, cols as u64, &v, 0.75).unwrap();
            let (back, scale) = decode_i2s(&bytes, rows * cols, block).unwrap();
            assert_eq!((back, scale), (v.clone(), 0.75));
            // The 28 bytes after the scale: copies of it (bitnet.cpp's Python converter), or
            // whatever memory held (its llama-quantize): the same values and scale.
            let at = bytes.len() - 32;
            let copies: Vec<u8> = bytes[at..at + 4].repeat(7);
            let arbitrary: Vec<u8> = (0..28u8).map(|i| i.wrapping_mul(97) ^ 0xa5).collect();
            for tail in [copies, arbitrary] {
                bytes[at + 4..].copy_from_slice(&tail);
                let decoded = decode_i2s(&bytes, rows * cols, block).unwrap();
                assert_eq!(decoded, (v.clone(), 0.75), "tail {tail:02x?}");
            }
            // A padding position holding another code than 1 is refused by its index.
            if rows * cols % block != 0 {
                let last = bytes.len() - 33;
                bytes[last] &= 0b1111_1100;
                let err = decode_i2s(&bytes, rows * cols, block).unwrap_err();
                assert!(err.contains("padding position"), "{err}");
            }
        }
    }

    #[test]
    fn float_ternary_needs_one_magnitude() {
        let (t, s) = float_ternary([0.0, 0.5, -0.5, 0.5].into_iter()).unwrap();
        assert_eq!((t, s), (vec![0, 1, -1, 1], 0.5));
        assert!(float_ternary([0.5, 0.25].into_iter()).is_err());
        assert!(float_ternary([f32::NAN].into_iter()).is_err());
    }
}
