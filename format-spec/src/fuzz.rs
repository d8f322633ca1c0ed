//! The body of the reader's fuzz target, shared with the test that replays its corpus.

use crate::preamble::{PREAMBLE_LEN, header_checksum};
use crate::reader::BitnetFile;

/// Open, verify and decode `data`, then the same bytes with the header checksum repaired.
/// Never panics on any input; that is the property the fuzz target and the corpus test check.
pub fn exercise_reader(data: &[u8]) {
    read_all(data.to_vec());
    if data.len() >= PREAMBLE_LEN as usize {
        let mut fixed = data.to_vec();
        let header_len = u64::from_le_bytes(fixed[16..24].try_into().expect("8 bytes"));
        let end =
            (PREAMBLE_LEN as usize).saturating_add(header_len.min(data.len() as u64) as usize);
        if end <= fixed.len() {
            let crc = header_checksum(
                &fixed[..PREAMBLE_LEN as usize],
                &fixed[PREAMBLE_LEN as usize..end],
            );
            fixed[12..16].copy_from_slice(&crc.to_le_bytes());
            read_all(fixed);
        }
    }
}

fn read_all(bytes: Vec<u8>) {
    if let Ok(file) = BitnetFile::from_vec(bytes) {
        let _ = file.check_contents();
    }
}
