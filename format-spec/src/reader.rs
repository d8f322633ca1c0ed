//! Reading: parse and validate everything the header claims before any tensor byte is touched, then
//! hand out zero-copy views.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::encoding::{ALIGN, Encoding, TernaryLayout, align_up};
use crate::error::{FormatError, Result};
use crate::header::Header;
use crate::preamble::{PREAMBLE_LEN, Preamble, header_checksum};
use crate::{q4, ternary, unique_members};

/// A checked entry of the tensor directory.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub encoding: Encoding,
    pub shape: Vec<u64>,
    /// Absolute offset of the first byte in the file.
    pub offset: u64,
    pub length: u64,
    pub crc32: u32,
}

impl TensorInfo {
    /// `[rows, cols]` of a matrix; `[n, 1]` would be wrong for vectors, so those give `None`.
    pub fn matrix_dims(&self) -> Option<(usize, usize)> {
        match self.shape[..] {
            [rows, cols] => Some((rows as usize, cols as usize)),
            _ => None,
        }
    }
}

/// The parsed, validated header and tensor directory of a file.
#[derive(Debug, Clone)]
pub struct FileIndex {
    pub preamble: Preamble,
    pub header: Header,
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    pub data_start: u64,
    by_name: HashMap<String, usize>,
}

impl FileIndex {
    /// Validate `bytes` as a whole `.bitnet` file, reading only the preamble and header.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let file_len = bytes.len() as u64;
        let preamble = Preamble::parse(bytes)?;
        let header_end = (PREAMBLE_LEN + preamble.header_len) as usize;
        let header_bytes = &bytes[PREAMBLE_LEN as usize..header_end];
        let actual = header_checksum(&bytes[..PREAMBLE_LEN as usize], header_bytes);
        if actual != preamble.header_crc32 {
            return Err(FormatError::HeaderChecksum {
                expected: preamble.header_crc32,
                actual,
            });
        }
        unique_members::check(header_bytes)?;
        let header: Header = serde_json::from_slice(header_bytes)?;
        header.model.validate().map_err(FormatError::InvalidModel)?;
        let data_start = align_up(header_end as u64).expect("bounded by MAX_HEADER_LEN");
        let data_len = file_len.saturating_sub(data_start);

        let mut tensors = Vec::with_capacity(header.tensors.len());
        let mut by_name = HashMap::with_capacity(header.tensors.len());
        for (i, entry) in header.tensors.iter().enumerate() {
            let name = entry.name.clone();
            if by_name.insert(name.clone(), i).is_some() {
                return Err(FormatError::DuplicateTensor { name });
            }
            let encoding = Encoding::from_header(&entry.encoding, entry.layout.as_ref()).map_err(
                |detail| FormatError::UnsupportedLayout {
                    name: name.clone(),
                    detail,
                },
            )?;
            let expected =
                encoding
                    .byte_len(&entry.shape)
                    .map_err(|detail| FormatError::InvalidShape {
                        name: name.clone(),
                        detail,
                    })?;
            if entry.length != expected {
                return Err(FormatError::LengthMismatch {
                    name,
                    expected,
                    actual: entry.length,
                });
            }
            if entry.offset % ALIGN != 0 {
                return Err(FormatError::Misaligned {
                    name,
                    offset: entry.offset,
                });
            }
            let end = entry.offset.checked_add(entry.length);
            if end.is_none_or(|end| end > data_len) {
                return Err(FormatError::OutOfBounds {
                    name,
                    begin: entry.offset,
                    end: end.unwrap_or(u64::MAX),
                    data_len,
                });
            }
            let crc32 = parse_crc(&entry.crc32).ok_or_else(|| FormatError::BadChecksumField {
                name: name.clone(),
                field: entry.crc32.clone(),
            })?;
            tensors.push(TensorInfo {
                name,
                encoding,
                shape: entry.shape.clone(),
                offset: data_start + entry.offset,
                length: entry.length,
                crc32,
            });
        }

        let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
        by_offset.sort_by_key(|t| (t.offset, t.length));
        for pair in by_offset.windows(2) {
            if pair[0].offset + pair[0].length > pair[1].offset {
                return Err(FormatError::Overlap {
                    first: pair[0].name.clone(),
                    second: pair[1].name.clone(),
                });
            }
        }
        let data_end = by_offset
            .last()
            .map_or(0, |t| t.offset + t.length - data_start);
        let expected_len = data_start + align_up(data_end).expect("bounded by file length");
        if expected_len != file_len {
            return Err(FormatError::FileSizeMismatch {
                expected: expected_len,
                actual: file_len,
            });
        }
        Ok(FileIndex {
            preamble,
            header,
            tensors,
            data_start,
            by_name,
        })
    }

    /// The checked entry of tensor `name`.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }
}

fn parse_crc(field: &str) -> Option<u32> {
    let ok = field.len() == 8
        && field
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then(|| u32::from_str_radix(field, 16).ok()).flatten()
}

enum Bytes {
    /// The file, mapped.
    Mapped(Mmap),
    /// A copy of the file in anonymous memory ([`BitnetFile::into_resident`]).
    Resident(Mmap),
    Owned(Vec<u8>),
    Static(&'static [u8]),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) | Bytes::Resident(m) => m,
            Bytes::Owned(v) => v,
            Bytes::Static(s) => s,
        }
    }
}

/// An open `.bitnet` file: its validated index and its bytes (memory-mapped when opened from disk).
pub struct BitnetFile {
    bytes: Bytes,
    index: FileIndex,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for BitnetFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BitnetFile")
            .field("path", &self.path)
            .field("tensors", &self.index.tensors.len())
            .finish()
    }
}

impl BitnetFile {
    /// Map and validate a file. Only the preamble and header are read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| FormatError::io(path, e))?;
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(FormatError::IsDirectory {
                path: path.to_path_buf(),
            });
        }
        // SAFETY: the map is read-only and private to this process; the format's users must not
        // truncate or rewrite a model file while it is open (as with every mmap-based loader).
        // Every offset is checked against the length seen here before it is read.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| FormatError::io(path, e))?;
        let index = FileIndex::parse(&map)?;
        Ok(BitnetFile {
            bytes: Bytes::Mapped(map),
            index,
            path: Some(path.to_path_buf()),
        })
    }

    /// The same file with its bytes copied out of the file mapping into anonymous memory of
    /// its own, which on Linux is asked to be backed by transparent huge pages (2 MiB). Reading
    /// the weights through 4 KiB file pages costs a TLB miss every 4 KiB on every token; in huge
    /// pages, generation of a 2-bit 2B model ran 9–26% faster (BENCHMARKS.md). The copy stays
    /// in memory (it is not page cache the system may drop), so it is for models that fit with
    /// room to spare. Files not mapped from disk are returned as they are.
    pub fn into_resident(self) -> Result<Self> {
        let Bytes::Mapped(map) = &self.bytes else {
            return Ok(self);
        };
        let fail = |e| match &self.path {
            Some(path) => FormatError::io(path, e),
            None => FormatError::io(Path::new("<memory>"), e),
        };
        // A mapped file holds at least its preamble, so the length is never 0.
        let mut copy = memmap2::MmapMut::map_anon(map.len()).map_err(fail)?;
        #[cfg(target_os = "linux")]
        {
            // Only a request: without transparent huge pages the copy is in 4 KiB pages and
            // works the same.
            let _ = copy.advise(memmap2::Advice::HugePage);
        }
        // Read from the file rather than copied from the map, so its pages are not also mapped
        // into this process (which would count them twice in its resident memory meanwhile).
        match &self.path {
            Some(path) => {
                let mut file = File::open(path).map_err(fail)?;
                file.read_exact(&mut copy).map_err(fail)?;
            }
            None => copy.copy_from_slice(map),
        }
        let copy = copy.make_read_only().map_err(fail)?;
        // Validated again: these are the bytes the model will run from.
        let index = FileIndex::parse(&copy)?;
        Ok(BitnetFile {
            bytes: Bytes::Resident(copy),
            index,
            path: self.path,
        })
    }

    /// Whether the bytes are a resident copy ([`BitnetFile::into_resident`]) rather than mapped
    /// from the file or given in memory.
    pub fn is_resident(&self) -> bool {
        matches!(self.bytes, Bytes::Resident(_))
    }

    /// Validate a file held in memory.
    pub fn from_vec(bytes: Vec<u8>) -> Result<Self> {
        let index = FileIndex::parse(&bytes)?;
        Ok(BitnetFile {
            bytes: Bytes::Owned(bytes),
            index,
            path: None,
        })
    }

    /// Validate a file embedded in the program.
    pub fn from_static(bytes: &'static [u8]) -> Result<Self> {
        let index = FileIndex::parse(bytes)?;
        Ok(BitnetFile {
            bytes: Bytes::Static(bytes),
            index,
            path: None,
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn header(&self) -> &Header {
        &self.index.header
    }

    pub fn index(&self) -> &FileIndex {
        &self.index
    }

    /// `(major, minor)` version of the file.
    pub fn version(&self) -> (u16, u16) {
        (self.index.preamble.major, self.index.preamble.minor)
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.index.tensors
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// A view of tensor `name`.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let info = self
            .index
            .get(name)
            .ok_or_else(|| FormatError::TensorNotFound { name: name.into() })?;
        Ok(self.view(info))
    }

    /// A view of a tensor of this file's directory.
    pub fn view<'a>(&'a self, info: &'a TensorInfo) -> TensorView<'a> {
        let range = info.offset as usize..(info.offset + info.length) as usize;
        TensorView {
            info,
            data: &self.bytes()[range],
        }
    }

    /// Recompute every checksum and check that every byte outside the header and tensors is zero.
    /// Returns the first problem found, in file order.
    pub fn verify(&self) -> Result<()> {
        let bytes = self.bytes();
        let mut tensors: Vec<&TensorInfo> = self.index.tensors.iter().collect();
        tensors.sort_by_key(|t| t.offset);
        let mut cursor = PREAMBLE_LEN + self.index.preamble.header_len;
        for info in tensors {
            check_zero(bytes, cursor, info.offset)?;
            let actual = crc32fast::hash(self.view(info).data);
            self.release(info);
            if actual != info.crc32 {
                return Err(FormatError::TensorChecksum {
                    name: info.name.clone(),
                    expected: info.crc32,
                    actual,
                });
            }
            cursor = info.offset + info.length;
        }
        check_zero(bytes, cursor, bytes.len() as u64)
    }

    /// Drop the resident pages of a mapped tensor after a one-pass read (verification), so that
    /// checking a large file does not leave it all counted as this process's memory.
    fn release(&self, info: &TensorInfo) {
        #[cfg(unix)]
        if let Bytes::Mapped(map) = &self.bytes {
            // SAFETY: the map is a private read-only file mapping that is never written, so
            // MADV_DONTNEED only drops cached pages; later reads fault them in from the file
            // unchanged. Failure only means the pages stay resident.
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    info.offset as usize,
                    info.length as usize,
                )
            };
        }
    }

    /// [`BitnetFile::verify`], then decode every tensor with the reference decoders, so invalid
    /// codes, bad padding codes and non-finite scales inside tensors are found too.
    pub fn check_contents(&self) -> Result<()> {
        self.verify()?;
        for info in self.tensors() {
            let view = self.view(info);
            match info.encoding {
                Encoding::Ternary(_) => drop(view.unpack_ternary()?),
                _ => drop(view.to_f32()?),
            }
        }
        Ok(())
    }
}

fn check_zero(bytes: &[u8], from: u64, to: u64) -> Result<()> {
    match bytes[from as usize..to as usize]
        .iter()
        .position(|&b| b != 0)
    {
        Some(i) => Err(FormatError::NonZeroPadding {
            offset: from + i as u64,
            value: bytes[from as usize + i],
        }),
        None => Ok(()),
    }
}

/// Zero-copy access to one tensor's bytes, with reference decoders.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    fn wrong_encoding(&self) -> FormatError {
        FormatError::WrongEncoding {
            name: self.info.name.clone(),
            encoding: self.info.encoding.label(),
        }
    }

    /// Decode a float, `i8_row` or `q4_b32` tensor to f32, row-major, checking scales and padding.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let d = self.data;
        Ok(match self.info.encoding {
            Encoding::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            Encoding::F16 => d
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Encoding::Bf16 => d
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Encoding::I8Row => {
                let (rows, cols) = self.info.matrix_dims().expect("checked at open");
                let values_start = align_up(rows as u64 * 4).expect("checked at open") as usize;
                let scales = d[..rows * 4]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")));
                let values = &d[values_start..];
                let invalid = |detail: String| FormatError::InvalidTensorData {
                    name: self.info.name.clone(),
                    detail,
                };
                if let Some(i) = d[rows * 4..values_start].iter().position(|&b| b != 0) {
                    return Err(invalid(format!(
                        "padding byte {} after the row scales is not zero",
                        rows * 4 + i
                    )));
                }
                let scales: Vec<f32> = scales.collect();
                if let Some(r) = scales.iter().position(|s| !s.is_finite()) {
                    return Err(invalid(format!(
                        "scale of row {r} is not finite ({})",
                        scales[r]
                    )));
                }
                scales
                    .iter()
                    .enumerate()
                    .flat_map(|(r, &s)| {
                        values[r * cols..(r + 1) * cols]
                            .iter()
                            .map(move |&q| q as i8 as f32 * s)
                    })
                    .collect()
            }
            Encoding::Q4B32 => {
                let (rows, cols) = self.info.matrix_dims().expect("checked at open");
                q4::decode(q4::Q4Geometry { rows, cols }, d).map_err(|e| {
                    FormatError::InvalidTensorData {
                        name: self.info.name.clone(),
                        detail: e.to_string(),
                    }
                })?
            }
            Encoding::Ternary(_) => return Err(self.wrong_encoding()),
        })
    }

    /// The layout of a ternary tensor.
    pub fn ternary_layout(&self) -> Result<TernaryLayout> {
        match self.info.encoding {
            Encoding::Ternary(layout) => Ok(layout),
            _ => Err(self.wrong_encoding()),
        }
    }

    /// Unpack a ternary tensor with the reference unpacker: row-major values and the scale.
    pub fn unpack_ternary(&self) -> Result<(Vec<i8>, f32)> {
        let layout = self.ternary_layout()?;
        let (rows, cols) = self.info.matrix_dims().expect("checked at open");
        ternary::unpack(layout, rows as u64, cols as u64, self.data).map_err(|e| {
            FormatError::InvalidTensorData {
                name: self.info.name.clone(),
                detail: e.to_string(),
            }
        })
    }

    /// The per-tensor scale of a ternary tensor (a multiplier).
    pub fn ternary_scale(&self) -> Result<f32> {
        let layout = self.ternary_layout()?;
        let (rows, cols) = self.info.matrix_dims().expect("checked at open");
        ternary::read_scale(layout, rows as u64, cols as u64, self.data).map_err(|e| {
            FormatError::InvalidTensorData {
                name: self.info.name.clone(),
                detail: e.to_string(),
            }
        })
    }
}
