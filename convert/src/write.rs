//! Producing one planned tensor's bytes from the checkpoint and writing them: full-precision tensors
//! streamed in bounded chunks, ternary tensors quantized or unpacked, packed, verified, written.

use bitnet_format::{Encoding, FileWriter, align_up};
use half::{bf16, f16};

use crate::convert::ConvertError;
use crate::floats::{FloatKind, Floats};
use crate::plan::{PlannedTensor, TensorKind};
use crate::quantize::{QuantError, absmean, hf_packed, i8_row, position, q4_b32};
use crate::source::{SourceTensor, Weights};
use crate::verify;
use bitnet_format::parallel;

/// Elements converted per write when streaming full-precision tensors.
const CHUNK: usize = 1 << 20;

/// Make and write tensor `t`. With `verify`, ternary tensors are checked against the reference
/// unpacker before they are written.
pub fn write_tensor(
    writer: &FileWriter,
    t: &PlannedTensor,
    weights: &Weights,
    verify: bool,
) -> Result<(), ConvertError> {
    let src = weights
        .get(&t.source)
        .expect("planned from the checkpoint's own names");
    let result = match &t.kind {
        TensorKind::Float { source } => write_float(writer, t, &src, *source),
        TensorKind::Latent { .. } | TensorKind::Packed { .. } => {
            write_ternary(writer, t, &src, weights, verify)
        }
    };
    // Done with the source bytes: keep the process's resident memory near the tensors in flight,
    // not the whole mapped checkpoint.
    weights.release(&t.source);
    result
}

fn non_finite(src: &SourceTensor<'_>, index: usize, value: f32) -> ConvertError {
    QuantError::NonFinite {
        tensor: src.name.to_string(),
        file: src.file.to_string(),
        position: position(src.shape, index),
        value,
    }
    .into()
}

fn write_float(
    writer: &FileWriter,
    t: &PlannedTensor,
    src: &SourceTensor<'_>,
    kind: FloatKind,
) -> Result<(), ConvertError> {
    let floats = Floats::new(kind, src.data);
    match t.encoding {
        Encoding::I8Row => return write_i8_row(writer, t, src, floats),
        Encoding::Q4B32 => return write_q4_b32(writer, t, src, floats),
        _ => {}
    }
    let mut out = writer.begin_tensor(&t.name)?;
    let mut buffer = Vec::new();
    let n = floats.len();
    let mut start = 0;
    while start < n {
        let end = (start + CHUNK).min(n);
        let chunk = floats.slice(start, end);
        if let Some(i) = chunk.first_non_finite() {
            return Err(non_finite(src, start + i, chunk.get(i)));
        }
        let same = matches!(
            (t.encoding, kind),
            (Encoding::F32, FloatKind::F32)
                | (Encoding::F16, FloatKind::F16)
                | (Encoding::Bf16, FloatKind::Bf16)
        );
        if same {
            out.write(chunk.bytes)?;
        } else {
            buffer.clear();
            for (i, x) in chunk.iter().enumerate() {
                let out_of_range = |encoding| -> ConvertError {
                    QuantError::OutOfRange {
                        tensor: src.name.to_string(),
                        file: src.file.to_string(),
                        position: position(src.shape, start + i),
                        value: x,
                        encoding,
                    }
                    .into()
                };
                match t.encoding {
                    Encoding::F32 => buffer.extend_from_slice(&x.to_le_bytes()),
                    Encoding::F16 => {
                        let h = f16::from_f32(x);
                        if !h.is_finite() {
                            return Err(out_of_range("f16"));
                        }
                        buffer.extend_from_slice(&h.to_le_bytes());
                    }
                    Encoding::Bf16 => {
                        let b = bf16::from_f32(x);
                        if !b.is_finite() {
                            return Err(out_of_range("bf16"));
                        }
                        buffer.extend_from_slice(&b.to_le_bytes());
                    }
                    Encoding::I8Row | Encoding::Q4B32 | Encoding::Ternary(_) => {
                        unreachable!("planned only for projections and embeddings")
                    }
                }
            }
            out.write(&buffer)?;
        }
        start = end;
    }
    out.finish()?;
    Ok(())
}

fn write_i8_row(
    writer: &FileWriter,
    t: &PlannedTensor,
    src: &SourceTensor<'_>,
    floats: Floats<'_>,
) -> Result<(), ConvertError> {
    let (rows, cols) = (t.shape[0] as usize, t.shape[1] as usize);
    let scales =
        i8_row::row_scales(floats, rows, cols).map_err(|i| non_finite(src, i, floats.get(i)))?;
    let mut out = writer.begin_tensor(&t.name)?;
    let mut head: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
    head.resize(align_up(4 * rows as u64).expect("planned size") as usize, 0);
    out.write(&head)?;
    let rows_per_chunk = (CHUNK / cols.max(1)).max(1);
    let mut buffer = Vec::with_capacity(rows_per_chunk * cols);
    for first in (0..rows).step_by(rows_per_chunk) {
        buffer.clear();
        let last = (first + rows_per_chunk).min(rows);
        for (r, &scale) in scales.iter().enumerate().take(last).skip(first) {
            i8_row::quantize_row(floats.slice(r * cols, (r + 1) * cols), scale, &mut buffer);
        }
        out.write(&buffer)?;
    }
    out.finish()?;
    Ok(())
}

/// `q4_b32`: every block's scale first (the search, one pass over the tensor), then the codes in
/// chunks of rows (a second pass), so only the scales are held whole.
fn write_q4_b32(
    writer: &FileWriter,
    t: &PlannedTensor,
    src: &SourceTensor<'_>,
    floats: Floats<'_>,
) -> Result<(), ConvertError> {
    let (rows, cols) = (t.shape[0] as usize, t.shape[1] as usize);
    let scales = q4_b32::scales(floats, rows, cols).map_err(|e| match e {
        q4_b32::Refused::NonFinite(i) => non_finite(src, i, floats.get(i)),
        q4_b32::Refused::TooLarge(i) => QuantError::OutOfRange {
            tensor: src.name.to_string(),
            file: src.file.to_string(),
            position: position(src.shape, i),
            value: floats.get(i),
            encoding: "q4_b32 (its block scale, |x| / 8, overflows f16)",
        }
        .into(),
    })?;
    let mut out = writer.begin_tensor(&t.name)?;
    out.write(&q4_b32::scale_bytes(&scales))?;
    let rows_per_chunk = (CHUNK / cols.max(1)).max(1);
    let mut buffer = Vec::with_capacity(rows_per_chunk * cols / 2);
    for first in (0..rows).step_by(rows_per_chunk) {
        let last = (first + rows_per_chunk).min(rows);
        buffer.resize((last - first) * cols / 2, 0);
        q4_b32::pack_rows(floats, &scales, cols, first..last, &mut buffer);
        out.write(&buffer)?;
    }
    out.finish()?;
    Ok(())
}

fn write_ternary(
    writer: &FileWriter,
    t: &PlannedTensor,
    src: &SourceTensor<'_>,
    weights: &Weights,
    verify: bool,
) -> Result<(), ConvertError> {
    let Encoding::Ternary(layout) = t.encoding else {
        unreachable!("ternary kinds are planned with a ternary encoding")
    };
    let (rows, cols) = (t.shape[0] as usize, t.shape[1] as usize);
    let (values, scale) = match &t.kind {
        TensorKind::Latent { source } => {
            let floats = Floats::new(*source, src.data);
            let scale = absmean::absmean_scale(floats)
                .map_err(|absmean::NonFinite(i)| non_finite(src, i, floats.get(i)))?;
            (absmean::ternarize(floats, scale), scale)
        }
        TensorKind::Packed { scale, rule } => {
            let packed_rows = rows / 4;
            let values = hf_packed::unpack(src.data, packed_rows, cols).map_err(|e| {
                QuantError::InvalidCode {
                    tensor: src.name.to_string(),
                    file: src.file.to_string(),
                    row: e.row,
                    col: e.col,
                    packed_row: e.row % packed_rows.max(1),
                }
            })?;
            let scale_tensor = weights.get(scale).expect("planned from the checkpoint");
            let multiplier =
                hf_packed::scale_multiplier(&scale_tensor, *rule).map_err(|detail| {
                    QuantError::MalformedScale {
                        tensor: scale_tensor.name.to_string(),
                        file: scale_tensor.file.to_string(),
                        detail,
                    }
                })?;
            (values, multiplier)
        }
        TensorKind::Float { .. } => unreachable!("handled by write_float"),
    };
    let packed = parallel::pack(layout, rows, cols, &values, scale);
    if verify {
        verify::check_ternary(&t.name, layout, rows, cols, &packed, &values, scale)?;
    }
    drop(values);
    writer.write_tensor(&t.name, &packed)?;
    Ok(())
}
