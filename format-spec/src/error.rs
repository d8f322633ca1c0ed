//! One error variant per failure class, so callers (and tests) can tell them apart.

use std::path::PathBuf;

/// Everything that can go wrong reading, validating or writing a `.bitnet` file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("file is {len} bytes, shorter than the {min}-byte preamble")]
    TooShort { len: u64, min: u64 },
    #[error("not a .bitnet file (bad magic bytes {found:02x?})")]
    BadMagic { found: [u8; 8] },
    #[error("this is a {format} file, not a .bitnet file: {hint}")]
    ForeignFormat {
        format: &'static str,
        hint: &'static str,
    },
    #[error("{path} is a directory, not a .bitnet file")]
    IsDirectory { path: PathBuf },
    #[error(
        "format version {major}.{minor} is not supported (this reader knows major version {known})"
    )]
    UnsupportedVersion { major: u16, minor: u16, known: u16 },
    #[error("reserved preamble bytes are not zero")]
    ReservedNotZero,
    #[error("header length {len} exceeds the limit of {max} bytes")]
    HeaderTooLarge { len: u64, max: u64 },
    #[error("header of {len} bytes runs past the end of the {file_len}-byte file")]
    HeaderTruncated { len: u64, file_len: u64 },
    #[error(
        "header checksum mismatch: preamble says {expected:08x}, header hashes to {actual:08x}"
    )]
    HeaderChecksum { expected: u32, actual: u32 },
    #[error("header is not valid JSON for this format: {0}")]
    HeaderJson(#[from] serde_json::Error),
    /// `path` is a JSON Pointer (RFC 6901) to the object, empty for the header itself.
    #[error("header: member name {key:?} appears twice in {}", object_at(.path))]
    DuplicateMember { key: String, path: String },
    #[error("invalid model configuration: {0}")]
    InvalidModel(String),
    #[error("tensor name {name:?} appears more than once")]
    DuplicateTensor { name: String },
    #[error("tensor {name}: {detail}")]
    InvalidShape { name: String, detail: String },
    #[error("tensor {name}: unsupported layout: {detail}")]
    UnsupportedLayout { name: String, detail: String },
    #[error("tensor {name}: length is {actual} bytes but its encoding and shape need {expected}")]
    LengthMismatch {
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error("tensor {name}: offset {offset} is not a multiple of 64")]
    Misaligned { name: String, offset: u64 },
    #[error("tensor {name}: bytes {begin}..{end} lie outside the {data_len}-byte data section")]
    OutOfBounds {
        name: String,
        begin: u64,
        end: u64,
        data_len: u64,
    },
    #[error("tensors {first} and {second} overlap")]
    Overlap { first: String, second: String },
    #[error("tensor {name}: checksum field {field:?} is not 8 lower-case hex digits")]
    BadChecksumField { name: String, field: String },
    #[error("file is {actual} bytes but its header describes {expected}")]
    FileSizeMismatch { expected: u64, actual: u64 },
    #[error(
        "tensor {name}: checksum mismatch (header says {expected:08x}, data hashes to {actual:08x})"
    )]
    TensorChecksum {
        name: String,
        expected: u32,
        actual: u32,
    },
    #[error("padding byte at file offset {offset} is {value:#04x}, not zero")]
    NonZeroPadding { offset: u64, value: u8 },
    #[error("tensor {name}: {detail}")]
    InvalidTensorData { name: String, detail: String },
    #[error("no tensor named {name:?}")]
    TensorNotFound { name: String },
    #[error("tensor {name}: is encoded as {encoding}, which this operation does not take")]
    WrongEncoding { name: String, encoding: String },
    #[error("writer: {0}")]
    Writer(String),
}

pub type Result<T, E = FormatError> = std::result::Result<T, E>;

fn object_at(path: &str) -> String {
    if path.is_empty() {
        "the top-level object".into()
    } else {
        format!("the object at {path}")
    }
}

impl FormatError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FormatError::Io {
            path: path.into(),
            source,
        }
    }
}

/// `error` and its causes as one line, `outer: cause: ...`, leaving out a cause whose text the
/// line already holds (many errors name their cause in their own message), and a cause's leading
/// `subject: ` when the line already ends with that subject (`cannot open X` then `X: not found`).
/// The binaries print errors with it, so each clause appears once.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            let rest = match text.split_once(": ") {
                Some((subject, rest))
                    if line.ends_with(subject) || line.contains(&format!("{subject}: ")) =>
                {
                    rest
                }
                _ => &text,
            };
            line.push_str(": ");
            line.push_str(rest);
        }
        cause = c.source();
    }
    line
}

/// The first clause of `line` (its parts between `: `) that repeats an earlier clause or the end
/// of one (`open X: X: ...`): what the tests of every error message check [`error_chain`]'s lines
/// for.
pub fn repeated_clause(line: &str) -> Option<&str> {
    let clauses: Vec<&str> = line.split(": ").collect();
    clauses.iter().enumerate().find_map(|(i, c)| {
        clauses[i + 1..]
            .iter()
            .find(|later| c.ends_with(**later))
            .copied()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = FormatError::io("m.bitnet", io());
        assert_eq!(error_chain(&e), "m.bitnet: No such file");
        #[derive(Debug, thiserror::Error)]
        #[error("cannot open model")]
        struct Outer(#[source] FormatError);
        let e = Outer(FormatError::io("m.bitnet", io()));
        assert_eq!(error_chain(&e), "cannot open model: m.bitnet: No such file");
        #[derive(Debug, thiserror::Error)]
        #[error("cannot open model m.bitnet")]
        struct Named(#[source] FormatError);
        let e = Named(FormatError::io("m.bitnet", io()));
        assert_eq!(error_chain(&e), "cannot open model m.bitnet: No such file");
    }

    #[test]
    fn repeated_clauses_are_found() {
        assert_eq!(repeated_clause("a: b: c"), None);
        assert_eq!(
            repeated_clause("x.bitnet: x.bitnet: gone"),
            Some("x.bitnet")
        );
        assert_eq!(
            repeated_clause("cannot open x.bitnet: x.bitnet: gone"),
            Some("x.bitnet")
        );
        assert_eq!(repeated_clause("a: b: c: b"), Some("b"));
    }
}
