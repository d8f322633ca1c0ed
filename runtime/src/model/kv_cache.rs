//! Each sequence's cached keys and values, in f16 (the default, as llama.cpp's) or f32.

use std::str::FromStr;

use bitnet_format::ModelConfig;

use super::Model;
use crate::kernels::KernelPath;
use crate::kernels::attention::CacheRows;
use crate::kernels::float::{self, FloatKind};

/// The element type of a KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    /// Half the memory of f32; keys and values are rounded to f16 once, when stored.
    #[default]
    F16,
    /// The reference numerics (transformers keeps its cache in the model's f32).
    F32,
}

/// The element types of a cache's keys and values (llama.cpp's `-ctk` and `-ctv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvTypes {
    pub keys: KvType,
    pub values: KvType,
}

impl KvTypes {
    /// Keys and values of one type.
    pub fn uniform(t: KvType) -> Self {
        KvTypes { keys: t, values: t }
    }

    /// Bytes one position takes: keys and values of every layer (saturating, see
    /// [`ModelConfig::kv_elements_per_position`]).
    pub fn bytes_per_position(self, config: &ModelConfig) -> u64 {
        let element = (self.keys.kind().bytes() + self.values.kind().bytes()) as u64;
        config.kv_elements_per_position().saturating_mul(element)
    }
}

/// The command-line flags of the KV cache types that `bitnet-run` (each command that runs a model)
/// and `bitnet-serve` share (flattened into each).
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct KvTypeArgs {
    /// KV cache type of keys: f16 or f32 (llama.cpp's -ctk).
    #[arg(long = "cache-type-k", default_value = "f16")]
    pub cache_type_k: KvType,
    /// KV cache type of values: f16 or f32 (llama.cpp's -ctv).
    #[arg(long = "cache-type-v", default_value = "f16")]
    pub cache_type_v: KvType,
}

impl KvTypeArgs {
    /// The types the flags name.
    pub fn types(self) -> KvTypes {
        KvTypes {
            keys: self.cache_type_k,
            values: self.cache_type_v,
        }
    }
}

/// A KV cache type name that is neither `f16` nor `f32`.
#[derive(Debug, thiserror::Error)]
#[error("unknown KV cache type {0:?} (expected f16 or f32)")]
pub struct UnknownKvType(pub String);

impl FromStr for KvType {
    type Err = UnknownKvType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f16" => Ok(KvType::F16),
            "f32" => Ok(KvType::F32),
            _ => Err(UnknownKvType(s.to_string())),
        }
    }
}

impl KvType {
    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::F32 => "f32",
        }
    }

    fn kind(self) -> FloatKind {
        match self {
            KvType::F16 => FloatKind::F16,
            KvType::F32 => FloatKind::F32,
        }
    }
}

/// One sequence's keys and values for up to `ctx` positions.
///
/// Each KV head of each layer has its own buffer, `pos × head_dim` values: attention streams one
/// head's rows at a time, and contiguous rows are what the hardware prefetchers follow (rows
/// interleaved with the other heads' made attention at depth several times slower).
#[derive(Debug, Clone)]
pub struct KvCache {
    ctx: usize,
    pub(super) pos: usize,
    types: KvTypes,
    kv_heads: usize,
    head_dim: usize,
    /// Per layer and KV head (`layer · kv_heads + head`), little-endian values of their type.
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
}

impl KvCache {
    /// An empty cache of `types` for `model`, holding up to `ctx` positions.
    pub fn new(model: &Model, ctx: usize, types: KvTypes) -> Self {
        let config = &model.config;
        let heads = config.num_layers as usize * config.num_kv_heads as usize;
        KvCache {
            ctx,
            pos: 0,
            types,
            kv_heads: config.num_kv_heads as usize,
            head_dim: config.head_dim as usize,
            keys: vec![Vec::new(); heads],
            values: vec![Vec::new(); heads],
        }
    }

    /// Positions already in the cache.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn context(&self) -> usize {
        self.ctx
    }

    pub fn types(&self) -> KvTypes {
        self.types
    }

    /// Forget positions from `pos` on (`0` starts over).
    pub fn truncate(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
        let bytes = |t: KvType| self.pos * self.head_dim * t.kind().bytes();
        let (k, v) = (bytes(self.types.keys), bytes(self.types.values));
        self.keys.iter_mut().for_each(|c| c.truncate(k));
        self.values.iter_mut().for_each(|c| c.truncate(v));
    }

    /// Append rows of keys and values (`rows × kv_heads · head_dim` each) to layer `layer`.
    pub(super) fn append(&mut self, path: KernelPath, layer: usize, keys: &[f32], values: &[f32]) {
        let (d, heads) = (self.head_dim, self.kv_heads);
        let t = self.types;
        for (caches, src, kind) in [
            (&mut self.keys, keys, t.keys),
            (&mut self.values, values, t.values),
        ] {
            for (i, row) in src.chunks_exact(d).enumerate() {
                let cache = &mut caches[layer * heads + i % heads];
                match kind {
                    KvType::F32 => cache.extend(row.iter().flat_map(|v| v.to_le_bytes())),
                    KvType::F16 => {
                        let at = cache.len();
                        cache.resize(at + 2 * d, 0);
                        float::encode_f16(path, row, &mut cache[at..]);
                    }
                }
            }
        }
    }

    /// KV head `head`'s first `rows` keys and values in layer `layer`.
    pub(super) fn head(
        &self,
        layer: usize,
        head: usize,
        rows: usize,
    ) -> (CacheRows<'_>, CacheRows<'_>) {
        let i = layer * self.kv_heads + head;
        let view = |data, t: KvType| CacheRows {
            data,
            kind: t.kind(),
            stride: self.head_dim * t.kind().bytes(),
            dim: self.head_dim,
            rows,
        };
        (
            view(&self.keys[i], self.types.keys),
            view(&self.values[i], self.types.values),
        )
    }
}
