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

    /// Bytes one position takes: keys and values of every layer.
    pub fn bytes_per_position(self, config: &ModelConfig) -> usize {
        let kv_dim = config.num_kv_heads as usize * config.head_dim as usize;
        config.num_layers as usize
            * kv_dim
            * (self.keys.kind().bytes() + self.values.kind().bytes())
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
#[derive(Debug, Clone)]
pub struct KvCache {
    ctx: usize,
    pub(super) pos: usize,
    types: KvTypes,
    kv_dim: usize,
    head_dim: usize,
    /// Per layer, `pos × kv_dim` keys and values, little-endian values of their type.
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
}

impl KvCache {
    /// An empty cache of `types` for `model`, holding up to `ctx` positions.
    pub fn new(model: &Model, ctx: usize, types: KvTypes) -> Self {
        let config = &model.config;
        let layers = config.num_layers as usize;
        KvCache {
            ctx,
            pos: 0,
            types,
            kv_dim: config.num_kv_heads as usize * config.head_dim as usize,
            head_dim: config.head_dim as usize,
            keys: vec![Vec::new(); layers],
            values: vec![Vec::new(); layers],
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
        let per_row = |t: KvType| self.pos * self.kv_dim * t.kind().bytes();
        let (k, v) = (per_row(self.types.keys), per_row(self.types.values));
        self.keys.iter_mut().for_each(|c| c.truncate(k));
        self.values.iter_mut().for_each(|c| c.truncate(v));
    }

    /// Append rows of keys and values (`rows × kv_dim` each) to layer `layer`.
    pub(super) fn append(&mut self, path: KernelPath, layer: usize, keys: &[f32], values: &[f32]) {
        let t = self.types;
        for (cache, src, kind) in [
            (&mut self.keys[layer], keys, t.keys),
            (&mut self.values[layer], values, t.values),
        ] {
            match kind {
                KvType::F32 => cache.extend(src.iter().flat_map(|v| v.to_le_bytes())),
                KvType::F16 => {
                    let at = cache.len();
                    cache.resize(at + 2 * src.len(), 0);
                    float::encode_f16(path, src, &mut cache[at..]);
                }
            }
        }
    }

    /// KV head `head`'s first `rows` keys and values in layer `layer`.
    pub(super) fn head<'a>(
        &'a self,
        layer: usize,
        head: usize,
        rows: usize,
    ) -> (CacheRows<'a>, CacheRows<'a>) {
        let view = |data: &'a [u8], t: KvType| {
            let width = t.kind().bytes();
            CacheRows {
                data: &data[head * self.head_dim * width..],
                kind: t.kind(),
                stride: self.kv_dim * width,
                dim: self.head_dim,
                rows,
            }
        };
        (
            view(&self.keys[layer], self.types.keys),
            view(&self.values[layer], self.types.values),
        )
    }
}
