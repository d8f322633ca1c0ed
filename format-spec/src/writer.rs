//! Writing: the directory is planned up front (names, encodings, shapes fix every offset), tensors are
//! then streamed in any order, and the file appears under its final name only when complete.
//!
//! Checksums are fixed-width hex strings in the header, so the header's length is known before any
//! tensor is written and can be rewritten in place at the end.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::encoding::{Encoding, align_up};
use crate::error::{FormatError, Result};
use crate::header::{Header, TensorEntry};
use crate::partial::PartialFile;
use crate::preamble::{MAJOR, MINOR, PREAMBLE_LEN, Preamble, header_checksum};
use crate::unique_members;

/// A tensor to be written: its canonical name, encoding and logical shape.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub encoding: Encoding,
    pub shape: Vec<u64>,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, encoding: Encoding, shape: &[u64]) -> Self {
        TensorSpec {
            name: name.into(),
            encoding,
            shape: shape.to_vec(),
        }
    }
}

struct State {
    file: File,
    crcs: Vec<Option<u32>>,
}

/// Writes one `.bitnet` file atomically: a temporary file in the destination directory, renamed over
/// the destination by [`FileWriter::finish`]. Dropping the writer unfinished deletes the temporary file.
pub struct FileWriter {
    temp: PartialFile,
    dest: PathBuf,
    header: Header,
    data_start: u64,
    file_len: u64,
    by_name: HashMap<String, usize>,
    state: Mutex<State>,
}

impl std::fmt::Debug for FileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWriter")
            .field("dest", &self.dest)
            .finish()
    }
}

const CRC_PLACEHOLDER: &str = "00000000";

impl FileWriter {
    /// Plan a file at `dest` with the metadata of `header` (its `tensors` are replaced) and the given
    /// tensors, in this order. Nothing appears at `dest` until [`FileWriter::finish`].
    pub fn create(
        dest: impl AsRef<Path>,
        mut header: Header,
        tensors: &[TensorSpec],
    ) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        header.model.validate().map_err(FormatError::InvalidModel)?;
        let mut by_name = HashMap::with_capacity(tensors.len());
        let mut entries = Vec::with_capacity(tensors.len());
        let mut offset = 0u64;
        for (i, spec) in tensors.iter().enumerate() {
            if by_name.insert(spec.name.clone(), i).is_some() {
                return Err(FormatError::DuplicateTensor {
                    name: spec.name.clone(),
                });
            }
            let length = spec.encoding.byte_len(&spec.shape).map_err(|detail| {
                FormatError::InvalidShape {
                    name: spec.name.clone(),
                    detail,
                }
            })?;
            entries.push(TensorEntry {
                name: spec.name.clone(),
                encoding: spec.encoding.name().to_string(),
                shape: spec.shape.clone(),
                offset,
                length,
                crc32: CRC_PLACEHOLDER.to_string(),
                layout: spec.encoding.layout_params(),
            });
            offset = align_up(offset + length).ok_or_else(|| too_large(&spec.name))?;
        }
        header.tensors = entries;
        // The embedded tokenizer JSON is copied verbatim: refuse what a reader would.
        let header_json = serde_json::to_vec(&header)?;
        unique_members::check(&header_json)?;
        let header_len = header_json.len() as u64;
        let data_start = align_up(PREAMBLE_LEN + header_len).expect("header fits in memory");
        let file_len = data_start + offset;

        let (file, temp) = PartialFile::create(&dest).map_err(|e| {
            let dir = match dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            FormatError::io(dir, e)
        })?;
        // Pre-size the file: every gap between tensors then reads as zero without being written.
        file.set_len(file_len)
            .map_err(|e| FormatError::io(temp.path(), e))?;
        Ok(FileWriter {
            temp,
            dest,
            header,
            data_start,
            file_len,
            by_name,
            state: Mutex::new(State {
                file,
                crcs: vec![None; tensors.len()],
            }),
        })
    }

    /// The final path this writer will produce.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Total size of the finished file in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Write tensor `name` in one piece. Safe to call from several threads at once.
    pub fn write_tensor(&self, name: &str, data: &[u8]) -> Result<()> {
        let mut w = self.begin_tensor(name)?;
        w.write(data)?;
        w.finish()
    }

    /// Start streaming tensor `name` in pieces (for tensors too large to hold in memory at once).
    pub fn begin_tensor(&self, name: &str) -> Result<TensorWriter<'_>> {
        let index = *self
            .by_name
            .get(name)
            .ok_or_else(|| FormatError::Writer(format!("tensor {name} was not planned")))?;
        let entry = &self.header.tensors[index];
        if self.state.lock().expect("writer lock").crcs[index].is_some() {
            return Err(FormatError::Writer(format!("tensor {name} written twice")));
        }
        Ok(TensorWriter {
            writer: self,
            index,
            next: self.data_start + entry.offset,
            end: self.data_start + entry.offset + entry.length,
            hasher: crc32fast::Hasher::new(),
        })
    }

    /// Write the header, flush, and atomically rename the file into place. Fails if any planned
    /// tensor was not written.
    pub fn finish(mut self) -> Result<()> {
        let state = self.state.get_mut().expect("writer lock");
        for (entry, crc) in self.header.tensors.iter_mut().zip(&state.crcs) {
            let crc = crc.ok_or_else(|| {
                FormatError::Writer(format!(
                    "tensor {} was planned but never written",
                    entry.name
                ))
            })?;
            entry.crc32 = format!("{crc:08x}");
        }
        let header = serde_json::to_vec(&self.header)?;
        debug_assert_eq!(
            align_up(PREAMBLE_LEN + header.len() as u64),
            Some(self.data_start)
        );
        let mut preamble = Preamble {
            major: MAJOR,
            minor: MINOR,
            header_crc32: 0,
            header_len: header.len() as u64,
        };
        preamble.header_crc32 = header_checksum(&preamble.to_bytes(), &header);
        let path = self.temp.path().to_path_buf();
        let io = |e| FormatError::io(&path, e);
        let file = &mut state.file;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&preamble.to_bytes()).map_err(io)?;
        file.write_all(&header).map_err(io)?;
        file.sync_all().map_err(io)?;
        let FileWriter { temp, dest, .. } = self;
        temp.persist(&dest).map_err(|e| FormatError::io(&dest, e))
    }
}

fn too_large(name: &str) -> FormatError {
    FormatError::InvalidShape {
        name: name.to_string(),
        detail: "tensor is too large".into(),
    }
}

/// Streams one tensor's bytes; [`TensorWriter::finish`] checks that exactly its length was written.
pub struct TensorWriter<'a> {
    writer: &'a FileWriter,
    index: usize,
    next: u64,
    end: u64,
    hasher: crc32fast::Hasher,
}

impl TensorWriter<'_> {
    fn name(&self) -> &str {
        &self.writer.header.tensors[self.index].name
    }

    /// The error for a tensor that would end up `extra` bytes past what was written so far.
    fn length_mismatch(&self, extra: u64) -> FormatError {
        let length = self.writer.header.tensors[self.index].length;
        FormatError::LengthMismatch {
            name: self.name().to_string(),
            expected: length,
            actual: length - (self.end - self.next) + extra,
        }
    }

    /// Append the next piece of the tensor.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.next + data.len() as u64 > self.end {
            return Err(self.length_mismatch(data.len() as u64));
        }
        self.hasher.update(data);
        let mut state = self.writer.state.lock().expect("writer lock");
        let path = self.writer.temp.path();
        state
            .file
            .seek(SeekFrom::Start(self.next))
            .and_then(|_| state.file.write_all(data))
            .map_err(|e| FormatError::io(path, e))?;
        self.next += data.len() as u64;
        Ok(())
    }

    /// Finish the tensor: it must have received exactly its planned length.
    pub fn finish(self) -> Result<()> {
        if self.next != self.end {
            return Err(self.length_mismatch(0));
        }
        let mut state = self.writer.state.lock().expect("writer lock");
        if state.crcs[self.index].is_some() {
            return Err(FormatError::Writer(format!(
                "tensor {} written twice",
                self.name()
            )));
        }
        state.crcs[self.index] = Some(self.hasher.finalize());
        Ok(())
    }
}
