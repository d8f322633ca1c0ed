//! The fixed 32-byte preamble (SPEC.md §2).

use crate::error::{FormatError, Result};

/// `\x89BITNET\n`: a non-ASCII first byte catches text-mode transfers, the newline catches line-ending conversion.
pub const MAGIC: [u8; 8] = *b"\x89BITNET\n";
/// The major version this crate reads and writes.
pub const MAJOR: u16 = 1;
/// The minor version this crate writes.
pub const MINOR: u16 = 0;
/// Length of the preamble in bytes.
pub const PREAMBLE_LEN: u64 = 32;
/// Largest header a reader accepts (256 MiB): bounds every allocation made while parsing.
pub const MAX_HEADER_LEN: u64 = 256 << 20;

/// The decoded preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    pub major: u16,
    pub minor: u16,
    pub header_crc32: u32,
    pub header_len: u64,
}

/// What a file that is not a `.bitnet` file is, when its first bytes tell: the model files users
/// most often pass by mistake.
fn foreign_format(bytes: &[u8]) -> Option<FormatError> {
    if bytes.starts_with(b"GGUF") {
        return Some(FormatError::ForeignFormat {
            format: "GGUF",
            hint: "convert it with `bitnet-convert FILE.gguf -o MODEL.bitnet`",
        });
    }
    // safetensors: a little-endian u64 header length, then the JSON header.
    let header_len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    if header_len >= 2 && header_len < bytes.len() as u64 && bytes.get(8) == Some(&b'{') {
        return Some(FormatError::ForeignFormat {
            format: "safetensors",
            hint: "convert the checkpoint's directory (config.json, tokenizer, *.safetensors) with `bitnet-convert DIR -o MODEL.bitnet`",
        });
    }
    None
}

impl Preamble {
    /// Decode and check the preamble at the start of `bytes` (magic, version, reserved bytes, header size).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let file_len = bytes.len() as u64;
        if file_len < PREAMBLE_LEN {
            return Err(FormatError::TooShort {
                len: file_len,
                min: PREAMBLE_LEN,
            });
        }
        let magic: [u8; 8] = bytes[0..8].try_into().expect("8 bytes");
        if magic != MAGIC {
            return Err(foreign_format(bytes).unwrap_or(FormatError::BadMagic { found: magic }));
        }
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
        let (major, minor) = (u16_at(8), u16_at(10));
        if major != MAJOR {
            return Err(FormatError::UnsupportedVersion {
                major,
                minor,
                known: MAJOR,
            });
        }
        let header_crc32 = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
        let header_len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
        if bytes[24..32].iter().any(|&b| b != 0) {
            return Err(FormatError::ReservedNotZero);
        }
        if header_len > MAX_HEADER_LEN {
            return Err(FormatError::HeaderTooLarge {
                len: header_len,
                max: MAX_HEADER_LEN,
            });
        }
        if PREAMBLE_LEN + header_len > file_len {
            return Err(FormatError::HeaderTruncated {
                len: header_len,
                file_len,
            });
        }
        Ok(Preamble {
            major,
            minor,
            header_crc32,
            header_len,
        })
    }

    /// The preamble's bytes.
    pub fn to_bytes(&self) -> [u8; PREAMBLE_LEN as usize] {
        let mut out = [0u8; PREAMBLE_LEN as usize];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&self.major.to_le_bytes());
        out[10..12].copy_from_slice(&self.minor.to_le_bytes());
        out[12..16].copy_from_slice(&self.header_crc32.to_le_bytes());
        out[16..24].copy_from_slice(&self.header_len.to_le_bytes());
        out
    }
}

/// The header checksum: CRC-32 of preamble bytes 0..12, then bytes 16..32, then the header.
pub fn header_checksum(preamble: &[u8], header: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&preamble[0..12]);
    h.update(&preamble[16..32]);
    h.update(header);
    h.finalize()
}
