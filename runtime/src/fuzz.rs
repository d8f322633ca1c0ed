//! The body of the model fuzz target (`runtime/fuzz`), shared with the test that replays its corpus.

use bitnet_format::{BitnetFile, PREAMBLE_LEN, Preamble, align_up, header_checksum};

use crate::kernels::KernelPath;
use crate::model::{KvTypes, Logits, Model, Session};

/// Open `data` as a model (its header checksum repaired first, so that mutations reach the model
/// configuration and tensor directory), bind it for every kernel path this CPU has and run one
/// forward pass of two tokens. Never panics on any input; that is the property the fuzz target and
/// the corpus test check.
pub fn exercise_model(data: &[u8]) {
    let mut bytes = data.to_vec();
    repair_header_checksum(&mut bytes);
    for path in KernelPath::available() {
        let Ok(file) = BitnetFile::from_vec(bytes.clone()) else {
            return;
        };
        let Ok(model) = Model::load(file, path, 1) else {
            continue;
        };
        let vocab = model.config.vocab_size;
        let ctx = (model.config.context_length as usize).min(4);
        let _ = Session::new(&model, ctx, KvTypes::default()).forward(&[0, vocab - 1], Logits::All);
    }
}

/// Set the preamble's header checksum to that of the header it describes, if the file is long
/// enough to hold both.
pub fn repair_header_checksum(bytes: &mut [u8]) {
    let start = PREAMBLE_LEN as usize;
    if bytes.len() < start {
        return;
    }
    let header_len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let end = usize::try_from(header_len)
        .ok()
        .and_then(|len| start.checked_add(len));
    if let Some(end) = end.filter(|&end| end <= bytes.len()) {
        let crc = header_checksum(&bytes[..start], &bytes[start..end]);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A valid model file with its header JSON replaced by `header` (the data section kept, the preamble
/// rebuilt around it); `None` if `bytes` has no readable preamble.
pub fn with_header(bytes: &[u8], header: &str) -> Option<Vec<u8>> {
    let preamble = Preamble::parse(bytes).ok()?;
    let old_end = align_up(PREAMBLE_LEN + preamble.header_len)? as usize;
    let data = bytes.get(old_end..)?;
    let mut out = Preamble {
        header_len: header.len() as u64,
        ..preamble
    }
    .to_bytes()
    .to_vec();
    out.extend_from_slice(header.as_bytes());
    out.resize(align_up(out.len() as u64)? as usize, 0);
    out.extend_from_slice(data);
    repair_header_checksum(&mut out);
    Some(out)
}

/// The header JSON of `bytes`, if it has a readable preamble and UTF-8 header.
pub fn header_text(bytes: &[u8]) -> Option<&str> {
    let preamble = Preamble::parse(bytes).ok()?;
    let start = PREAMBLE_LEN as usize;
    std::str::from_utf8(&bytes[start..start + preamble.header_len as usize]).ok()
}
