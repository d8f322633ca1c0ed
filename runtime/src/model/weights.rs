//! Binding a `.bitnet` file's tensors to the model's weights: every required tensor is checked for
//! presence, shape and encoding (SPEC.md §4), and ternary tensors in a layout the chosen kernels do
//! not read are repacked.

use std::ops::Range;
use std::sync::OnceLock;

use bitnet_format::names::{self, LayerTensor};
use bitnet_format::{
    BitnetFile, Encoding, MAX_ELEMENTS, ModelConfig, TensorInfo, TernaryLayout, element_count,
    parallel,
};

use crate::kernels::KernelPath;
use bitnet_format::q4::Q4Geometry;

use crate::kernels::float::{DenseKind, DenseMatrix, FloatKind};
use crate::kernels::q4::Q4Tiles;
use crate::kernels::{Packing, TernaryMatrix};

use super::ModelError;

/// Where a weight's bytes live.
#[derive(Debug)]
enum Storage {
    /// A byte range of the mapped file.
    File(Range<usize>),
    /// Repacked at load, where an anonymous map fails.
    Owned(Vec<u8>),
    /// Repacked at load, in anonymous memory asked for huge pages (as a resident file is:
    /// [`bitnet_format::BitnetFile::into_resident`]).
    HugePages(memmap2::Mmap),
}

impl Storage {
    /// `bytes` moved into memory of their own, asked for huge pages.
    fn owned(bytes: Vec<u8>) -> Self {
        let Some(mut map) = crate::huge_pages::anonymous(bytes.len()) else {
            return Storage::Owned(bytes);
        };
        map.copy_from_slice(&bytes);
        match map.make_read_only() {
            Ok(map) => Storage::HugePages(map),
            Err(_) => Storage::Owned(bytes),
        }
    }
}

impl Storage {
    fn len(&self) -> usize {
        match self {
            Storage::File(r) => r.len(),
            Storage::Owned(v) => v.len(),
            Storage::HugePages(m) => m.len(),
        }
    }

    fn bytes<'a>(&'a self, file: &'a [u8]) -> &'a [u8] {
        match self {
            Storage::File(r) => &file[r.clone()],
            Storage::Owned(v) => v,
            Storage::HugePages(m) => m,
        }
    }
}

/// A ternary projection in a tiled or base3 layout the selected kernels read.
#[derive(Debug)]
pub struct TernaryWeight {
    codes: Storage,
    pub rows: usize,
    pub cols: usize,
    pub tile_rows: usize,
    pub packing: Packing,
    pub scale: f32,
}

impl TernaryWeight {
    pub fn matrix<'a>(&'a self, file: &'a [u8]) -> TernaryMatrix<'a> {
        TernaryMatrix {
            codes: self.codes.bytes(file),
            rows: self.rows,
            cols: self.cols,
            tile_rows: self.tile_rows,
            packing: self.packing,
            scale: self.scale,
        }
    }

    /// Columns including padding, the length activations are padded to.
    pub fn kpad(&self) -> usize {
        let bk = self.packing.block_k();
        self.cols.div_ceil(bk) * bk
    }

    /// Bytes read per use (for bandwidth figures): all its codes.
    pub fn byte_len(&self) -> usize {
        self.codes.len()
    }
}

/// A dense matrix (embedding or output), read from the file; a `q4_b32` one may also get a copy
/// rearranged for batched products ([`DenseWeight::q4_tiles`]).
#[derive(Debug)]
pub struct DenseWeight {
    range: Range<usize>,
    pub rows: usize,
    pub cols: usize,
    pub kind: DenseKind,
    tiles: OnceLock<Option<Q4Tiles>>,
}

impl DenseWeight {
    /// The matrix's [`Q4Tiles`] for `path`, made the first time they are asked for; `None` if it is
    /// not `q4_b32` or the path has no tile kernel. They cost as much memory as the tensor itself,
    /// so only products of several tokens ask for them (one token reads the file's rows as fast).
    pub fn q4_tiles(&self, path: KernelPath, file: &[u8]) -> Option<&Q4Tiles> {
        if self.kind != DenseKind::Q4B32 {
            return None;
        }
        self.tiles
            .get_or_init(|| {
                let g = Q4Geometry {
                    rows: self.rows,
                    cols: self.cols,
                };
                Q4Tiles::for_path(path, g, &file[self.range.clone()])
            })
            .as_ref()
    }

    pub fn matrix<'a>(&self, file: &'a [u8]) -> DenseMatrix<'a> {
        DenseMatrix {
            data: &file[self.range.clone()],
            rows: self.rows,
            cols: self.cols,
            kind: self.kind,
        }
    }

    pub fn byte_len(&self) -> usize {
        self.range.len()
    }
}

/// The weights of one transformer block.
#[derive(Debug)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub q: TernaryWeight,
    pub k: TernaryWeight,
    pub v: TernaryWeight,
    /// Biases added to q, k and v (`attention_bias`).
    pub qkv_bias: Option<[Vec<f32>; 3]>,
    /// RMSNorm weights of each query and key head (`qk_norm`).
    pub qk_norm: Option<[Vec<f32>; 2]>,
    pub attn_sub_norm: Option<Vec<f32>>,
    pub o: TernaryWeight,
    pub ffn_norm: Vec<f32>,
    pub gate: TernaryWeight,
    pub up: TernaryWeight,
    pub ffn_sub_norm: Option<Vec<f32>>,
    pub down: TernaryWeight,
}

/// All weights of a model.
#[derive(Debug)]
pub struct Weights {
    pub token_embd: DenseWeight,
    /// `None` when the output matrix is the embedding.
    pub output: Option<DenseWeight>,
    pub output_norm: Vec<f32>,
    pub layers: Vec<LayerWeights>,
    /// Ternary tensors repacked at load: `(name, from layout)`.
    pub repacked: Vec<(String, TernaryLayout)>,
}

struct Binder<'a> {
    file: &'a BitnetFile,
    path: KernelPath,
    repacked: Vec<(String, TernaryLayout)>,
}

impl Binder<'_> {
    fn info(&self, name: &str) -> Result<&TensorInfo, ModelError> {
        self.file
            .index()
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
    }

    fn check_shape(info: &TensorInfo, shape: &[usize]) -> Result<(), ModelError> {
        let want: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        if info.shape != want {
            return Err(ModelError::TensorShape {
                name: info.name.clone(),
                expected: want,
                actual: info.shape.clone(),
            });
        }
        Ok(())
    }

    fn bad_encoding(info: &TensorInfo, allowed: &str) -> ModelError {
        ModelError::TensorEncoding {
            name: info.name.clone(),
            encoding: info.encoding.label(),
            allowed: allowed.to_string(),
        }
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let info = self.info(name)?;
        Self::check_shape(info, &[len])?;
        if !matches!(
            info.encoding,
            Encoding::F32 | Encoding::F16 | Encoding::Bf16
        ) {
            return Err(Self::bad_encoding(info, "f32, f16 or bf16"));
        }
        Ok(self.file.view(info).to_f32()?)
    }

    fn dense(&self, name: &str, rows: usize, cols: usize) -> Result<DenseWeight, ModelError> {
        let info = self.info(name)?;
        Self::check_shape(info, &[rows, cols])?;
        let kind = match info.encoding {
            Encoding::F32 => DenseKind::Float(FloatKind::F32),
            Encoding::F16 => DenseKind::Float(FloatKind::F16),
            Encoding::Bf16 => DenseKind::Float(FloatKind::Bf16),
            Encoding::I8Row => DenseKind::I8Row,
            Encoding::Q4B32 => DenseKind::Q4B32,
            Encoding::Ternary(_) => {
                return Err(Self::bad_encoding(info, "f32, f16, bf16, i8_row or q4_b32"));
            }
        };
        Ok(DenseWeight {
            range: info.offset as usize..(info.offset + info.length) as usize,
            rows,
            cols,
            kind,
            tiles: OnceLock::new(),
        })
    }

    fn ternary(
        &mut self,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<TernaryWeight, ModelError> {
        let info = self.info(name)?;
        Self::check_shape(info, &[rows, cols])?;
        let Encoding::Ternary(layout) = info.encoding else {
            return Err(Self::bad_encoding(info, "ternary"));
        };
        let view = self.file.view(info);
        let scale = view.ternary_scale()?;
        if self.path.reads_layout(layout) {
            let Some((packing, tile_rows)) = Packing::of(layout) else {
                unreachable!("kernels read only tiled and base3 layouts")
            };
            let start = info.offset as usize + 64;
            return Ok(TernaryWeight {
                codes: Storage::File(start..(info.offset + info.length) as usize),
                rows,
                cols,
                tile_rows,
                packing,
                scale,
            });
        }
        let target = self.path.preferred_layout();
        let Some((packing, tile_rows)) = Packing::of(target) else {
            unreachable!("preferred layouts are tiled")
        };
        let values = parallel::unpack(layout, rows, cols, view.data)
            .map_err(|e| ModelError::Repack(name.to_string(), e.to_string()))?;
        let mut packed = parallel::pack(target, rows, cols, &values, scale);
        packed.drain(..64);
        self.repacked.push((name.to_string(), layout));
        Ok(TernaryWeight {
            codes: Storage::owned(packed),
            rows,
            cols,
            tile_rows,
            packing,
            scale,
        })
    }
}

/// The sizes a configuration implies, computed without overflow.
struct Dims {
    h: usize,
    i_size: usize,
    q_dim: usize,
    kv_dim: usize,
    vocab: usize,
}

impl Dims {
    /// Refuse, naming the field, any size whose matrices no file can hold (more than
    /// [`MAX_ELEMENTS`] elements) and more layers than a file of `tensors` tensors has, before
    /// anything is allocated for them.
    fn of(c: &ModelConfig, tensors: usize) -> Result<Self, ModelError> {
        let product = |field: &'static str, factors: &[u32]| {
            let n = element_count(&factors.iter().map(|&f| f as u64).collect::<Vec<_>>())
                .ok_or_else(|| ModelError::Config {
                    field,
                    detail: format!("{factors:?} multiply to more than {MAX_ELEMENTS} elements"),
                })?;
            usize::try_from(n).map_err(|_| ModelError::Config {
                field,
                detail: format!("{n} does not fit this machine's address space"),
            })
        };
        // Each layer has at least its two norms and seven projections.
        if c.num_layers as usize > tensors / 9 {
            return Err(ModelError::Config {
                field: "num_layers",
                detail: format!(
                    "{} layers, but the file has only {tensors} tensors",
                    c.num_layers
                ),
            });
        }
        let q_dim = product("num_heads × head_dim", &[c.num_heads, c.head_dim])?;
        let kv_dim = product("num_kv_heads × head_dim", &[c.num_kv_heads, c.head_dim])?;
        product("vocab_size × hidden_size", &[c.vocab_size, c.hidden_size])?;
        product(
            "intermediate_size × hidden_size",
            &[c.intermediate_size, c.hidden_size],
        )?;
        Ok(Dims {
            h: c.hidden_size as usize,
            i_size: c.intermediate_size as usize,
            q_dim,
            kv_dim,
            vocab: c.vocab_size as usize,
        })
    }
}

impl Weights {
    /// Bind every tensor the configuration requires, checking shapes and encodings.
    pub fn load(
        file: &BitnetFile,
        config: &ModelConfig,
        path: KernelPath,
    ) -> Result<Self, ModelError> {
        let Dims {
            h,
            i_size,
            q_dim,
            kv_dim,
            vocab,
        } = Dims::of(config, file.tensors().len())?;
        let mut b = Binder {
            file,
            path,
            repacked: Vec::new(),
        };
        // A layer tensor the configuration does not have (a bias in a model without
        // attention_bias, a layer past num_layers, an unknown name) would otherwise be ignored.
        for t in file.tensors() {
            let Some(rest) = t.name.strip_prefix("blk.") else {
                continue;
            };
            let expected = rest.split_once('.').is_some_and(|(layer, suffix)| {
                let tensor = LayerTensor::ALL.into_iter().find(|t| t.suffix() == suffix);
                layer
                    .parse::<u32>()
                    .is_ok_and(|l| l < config.num_layers && layer == l.to_string())
                    && tensor.is_some_and(|t| t.shape(config).is_some())
            });
            if !expected {
                return Err(ModelError::UnexpectedTensor(t.name.clone()));
            }
        }
        let token_embd = b.dense(names::TOKEN_EMBD, vocab, h)?;
        let output = if config.tied_embeddings {
            if file.index().get(names::OUTPUT).is_some() {
                return Err(ModelError::UnexpectedTensor(names::OUTPUT.into()));
            }
            None
        } else {
            Some(b.dense(names::OUTPUT, vocab, h)?)
        };
        let output_norm = b.vector(names::OUTPUT_NORM, h)?;
        let mut layers = Vec::with_capacity(config.num_layers as usize);
        for l in 0..config.num_layers {
            let n = |t| names::layer(l, t);
            // A vector the configuration may or may not have (SPEC.md §4).
            let optional = |b: &Binder, t: LayerTensor| -> Result<Option<Vec<f32>>, ModelError> {
                t.shape(config)
                    .map(|shape| b.vector(&n(t), shape[0] as usize))
                    .transpose()
            };
            layers.push(LayerWeights {
                attn_norm: b.vector(&n(LayerTensor::AttnNorm), h)?,
                q: b.ternary(&n(LayerTensor::AttnQ), q_dim, h)?,
                k: b.ternary(&n(LayerTensor::AttnK), kv_dim, h)?,
                v: b.ternary(&n(LayerTensor::AttnV), kv_dim, h)?,
                qkv_bias: optional(&b, LayerTensor::AttnQBias)?
                    .zip(optional(&b, LayerTensor::AttnKBias)?)
                    .zip(optional(&b, LayerTensor::AttnVBias)?)
                    .map(|((q, k), v)| [q, k, v]),
                qk_norm: optional(&b, LayerTensor::AttnQNorm)?
                    .zip(optional(&b, LayerTensor::AttnKNorm)?)
                    .map(|(q, k)| [q, k]),
                attn_sub_norm: optional(&b, LayerTensor::AttnSubNorm)?,
                o: b.ternary(&n(LayerTensor::AttnOutput), h, q_dim)?,
                ffn_norm: b.vector(&n(LayerTensor::FfnNorm), h)?,
                gate: b.ternary(&n(LayerTensor::FfnGate), i_size, h)?,
                up: b.ternary(&n(LayerTensor::FfnUp), i_size, h)?,
                ffn_sub_norm: optional(&b, LayerTensor::FfnSubNorm)?,
                down: b.ternary(&n(LayerTensor::FfnDown), h, i_size)?,
            });
        }
        Ok(Weights {
            token_embd,
            output,
            output_norm,
            layers,
            repacked: b.repacked,
        })
    }

    /// Bytes of weights read to generate one token: every ternary matrix and the output matrix.
    pub fn bytes_per_token(&self) -> usize {
        let ternary: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]
                    .iter()
                    .map(|w| w.byte_len())
                    .sum::<usize>()
            })
            .sum();
        ternary + self.output.as_ref().unwrap_or(&self.token_embd).byte_len()
    }
}

/// Bytes of memory a `rows × cols` ternary tensor takes when [`Binder::ternary`] repacks it for
/// `path`: the preferred layout's length without its 64-byte head (the scale, kept apart).
pub(super) fn repacked_len(path: KernelPath, rows: usize, cols: usize) -> u64 {
    path.preferred_layout()
        .byte_len(rows as u64, cols as u64)
        .map_or(u64::MAX, |len| len.saturating_sub(64))
}
