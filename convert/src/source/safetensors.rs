//! The checkpoint's tensors: every safetensors shard memory-mapped, and an index from tensor name to
//! its dtype, shape and bytes. Nothing is copied; tensors are read in place when they are converted.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::SourceError;

struct Shard {
    name: String,
    map: Mmap,
}

struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    range: Range<usize>,
}

/// All tensors of a checkpoint, across its shards.
pub struct Weights {
    shards: Vec<Shard>,
    tensors: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field(
                "shards",
                &self.shards.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// One tensor of the checkpoint, borrowed from its mapped shard.
#[derive(Debug, Clone, Copy)]
pub struct SourceTensor<'a> {
    /// The checkpoint's name for it, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: &'a str,
    /// The shard file it is in.
    pub file: &'a str,
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub data: &'a [u8],
}

impl SourceTensor<'_> {
    /// Number of elements.
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

impl Weights {
    /// Map every shard (`(name, path)` pairs, in a fixed order) and index its tensors. When `index`
    /// (from `model.safetensors.index.json`) is given, every tensor it lists must be in the shard it
    /// names.
    pub fn open(
        shards: &[(String, PathBuf)],
        index: Option<(&str, &BTreeMap<String, String>)>,
    ) -> Result<Self, SourceError> {
        let mut mapped = Vec::with_capacity(shards.len());
        let mut tensors: BTreeMap<String, Entry> = BTreeMap::new();
        for (i, (name, path)) in shards.iter().enumerate() {
            let map = map_file(path)?;
            let bad = |detail: String| SourceError::BadSafetensors {
                file: path.clone(),
                detail,
            };
            let (header_len, metadata) =
                SafeTensors::read_metadata(&map).map_err(|e| bad(format!("{e:?}")))?;
            let data_start = 8 + header_len;
            for (tensor, info) in metadata.tensors() {
                let (begin, end) = info.data_offsets;
                let entry = Entry {
                    shard: i,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    range: data_start + begin..data_start + end,
                };
                if let Some(previous) = tensors.insert(tensor.clone(), entry) {
                    return Err(SourceError::DuplicateTensor {
                        name: tensor,
                        first: shards[previous.shard].0.clone(),
                        second: name.clone(),
                    });
                }
            }
            mapped.push(Shard {
                name: name.clone(),
                map,
            });
        }
        if let Some((index_name, weight_map)) = index {
            for (tensor, shard) in weight_map {
                let found = tensors.get(tensor).map(|e| mapped[e.shard].name.as_str());
                if found != Some(shard.as_str()) {
                    return Err(SourceError::BadIndex {
                        file: PathBuf::from(index_name),
                        detail: match found {
                            Some(other) => {
                                format!("lists tensor {tensor} in {shard}, but it is in {other}")
                            }
                            None => format!("lists tensor {tensor} in {shard}, which lacks it"),
                        },
                    });
                }
            }
        }
        Ok(Weights {
            shards: mapped,
            tensors,
        })
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor called `name`, if the checkpoint has it.
    /// Drop the resident pages of tensor `name` (they are read again from the file if used again).
    pub fn release(&self, name: &str) {
        if let Some(e) = self.tensors.get(name) {
            let map = &self.shards[e.shard].map;
            // SAFETY: the map is a private read-only file mapping that is never written, so
            // MADV_DONTNEED only drops cached pages; any later read faults them in from the file
            // unchanged (also for a neighbouring tensor sharing a boundary page). Failure only
            // means the pages stay resident.
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    e.range.start,
                    e.range.len(),
                )
            };
        }
    }

    pub fn get(&self, name: &str) -> Option<SourceTensor<'_>> {
        let (key, e) = self.tensors.get_key_value(name)?;
        let shard = &self.shards[e.shard];
        Some(SourceTensor {
            name: key,
            file: &shard.name,
            dtype: e.dtype,
            shape: &e.shape,
            data: &shard.map[e.range.clone()],
        })
    }
}

fn map_file(path: &Path) -> Result<Mmap, SourceError> {
    let io = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    // SAFETY: the map is read-only; a checkpoint must not be modified while it is being converted
    // (as with every mmap-based loader). All offsets are validated by `read_metadata` against the
    // length seen here.
    unsafe { Mmap::map(&file) }.map_err(io)
}
