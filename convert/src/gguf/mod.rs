//! GGUF interoperability: import bitnet.cpp and llama.cpp files into `.bitnet`, export `.bitnet`
//! files as GGUF that those programs load.
//!
//! - [`container`]: the GGUF container, parsed with `gguf-rs-lib` plus a small documented
//!   extension for bitnet.cpp's `I2_S` (type 36) and its non-snake-case architecture names.
//! - [`codec`]: TQ1_0, TQ2_0, I2_S and float-ternary tensors, and per-tensor scale recovery.
//! - [`blocks`]: GGML's block-quantized types (Q8_0, Q6_K, Q4_0, ...) of embeddings and output.
//! - [`vocab`]: `tokenizer.ggml.*` metadata to and from `tokenizer.json`.
//! - [`fuzz`]: the body of the import fuzz target (`convert/fuzz`).
//! - [`import_gguf`], [`export_gguf`]: the two directions.
//!
//! Architectures (`general.architecture`):
//!
//! | GGUF | program | `.bitnet` model | RoPE order of `attn_q`/`attn_k` rows |
//! |---|---|---|---|
//! | `bitnet-b1.58`, `bitnet-25` | bitnet.cpp (2B-4T) | sub-norms, ReLU² | as Hugging Face (rotate-half) |
//! | `bitnet` | llama.cpp and bitnet.cpp (1bitLLM; 2B-4T with `bitnet.hidden_act = relu2`) | sub-norms, SiLU unless `hidden_act` says otherwise | as Hugging Face |
//! | `llama` | both (Llama3-8B-1.58, Falcon3-1.58bit, Falcon-E) | no sub-norms, SiLU | llama.cpp's interleaved pairs: permuted on export, un-permuted on import |
//! | `qwen2` | llama.cpp | no sub-norms, SiLU, q/k/v biases (`blk.N.attn_q.bias`) | as Hugging Face (llama.cpp's NEOX RoPE) |
//! | `qwen3` | llama.cpp | no sub-norms, SiLU, per-head q/k norms (`blk.N.attn_q_norm.weight`) | as Hugging Face |

pub mod blocks;
pub mod codec;
pub mod container;
pub mod fuzz;
pub mod vocab;

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bitnet_format::names::{self, LayerTensor};
use bitnet_format::{
    Activation, BitnetFile, Encoding, FileWriter, FormatError, GenerationDefaults, Header,
    ModelConfig, Provenance, RopeScaling, Source, SourceFile, TensorSpec, TernaryLayout,
    TokenizerInfo,
};
use gguf_rs_lib::format::metadata::MetadataValue;
use half::{bf16, f16};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::convert::Staged;
use crate::floats::{FloatKind, Floats};
use crate::plan::{EmbeddingsChoice, expected_tensors};
use crate::quantize::{i8_row, q4_b32};
use crate::summary::ConvertReport;
use container::{
    ContainerError, GGML_TYPE_BF16, GGML_TYPE_F16, GGML_TYPE_F32, GGML_TYPE_I2_S, GGML_TYPE_TQ1_0,
    GGML_TYPE_TQ2_0, GgufFile, OutTensor, TensorInfo, string, type_name,
};

/// Why an import or export failed. Every variant names the file, tensor, key or type at fault.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Container {
        path: PathBuf,
        #[source]
        source: ContainerError,
    },
    #[error(
        "{path}: architecture {arch:?} is not supported (supported: {})",
        ARCHITECTURES.join(", ")
    )]
    Architecture { path: PathBuf, arch: String },
    #[error("{path}: metadata {key}: {detail}")]
    Metadata {
        path: PathBuf,
        key: String,
        detail: String,
    },
    #[error("{path}: tensor {tensor} ({ty}): {detail}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        ty: String,
        detail: String,
    },
    #[error("{path}: tokenizer: {detail}")]
    Tokenizer { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    Model { path: PathBuf, detail: String },
    #[error("{path} already exists; pass --force to replace it")]
    OutputExists { path: PathBuf },
    #[error("{}", crate::at_path(.path, .source))]
    Format {
        path: PathBuf,
        #[source]
        source: FormatError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A command-line option that does not fit the input.
    #[error("{0}")]
    Option(String),
    #[error("{0}")]
    Write(String),
}

impl From<std::io::Error> for GgufError {
    fn from(e: std::io::Error) -> Self {
        GgufError::Write(e.to_string())
    }
}

impl From<String> for GgufError {
    fn from(e: String) -> Self {
        GgufError::Write(e)
    }
}

/// Key of bitnet-convert's exports holding the `.bitnet` generation defaults as JSON (llama.cpp
/// has no such keys and ignores it).
pub const GENERATION_KEY: &str = "bitnet_rs.generation";

/// The GGUF architectures this module reads.
pub const ARCHITECTURES: [&str; 6] = [
    "bitnet-b1.58",
    "bitnet-25",
    "bitnet",
    "llama",
    "qwen2",
    "qwen3",
];

/// Whether `arch` stores `attn_q`/`attn_k` rows in llama.cpp's interleaved RoPE order.
fn interleaved_rope(arch: &str) -> bool {
    arch == "llama"
}

/// Reorder the rows of a `[heads · d, K]` matrix between Hugging Face's rotate-half order and
/// llama.cpp's interleaved pairs. `to_gguf`: row `2i + j` of a head takes row `j · d/2 + i`.
fn permute_rope_rows(values: &[i8], heads: usize, d: usize, cols: usize, to_gguf: bool) -> Vec<i8> {
    let mut out = vec![0i8; values.len()];
    for h in 0..heads {
        for i in 0..d / 2 {
            for j in 0..2 {
                let hf = h * d + j * (d / 2) + i;
                let gg = h * d + 2 * i + j;
                let (dst, src) = if to_gguf { (gg, hf) } else { (hf, gg) };
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

impl vocab::Meta for GgufFile<'_> {
    fn meta(&self, key: &str) -> Option<&MetadataValue> {
        self.get(key)
    }
}

/// The shortest decimal that reads back as this f32, as an f64 (so 1e-5 stored as f32 returns as
/// 1e-5, not 9.99999974737875e-06).
fn f32_as_decimal(x: f32) -> f64 {
    format!("{x}").parse().unwrap_or(x as f64)
}

fn model_from_metadata(
    path: &Path,
    f: &GgufFile<'_>,
) -> Result<(ModelConfig, String, Vec<String>), GgufError> {
    use vocab::Meta;
    let mut notes = Vec::new();
    let arch = f
        .meta_str("general.architecture")
        .ok_or_else(|| GgufError::Metadata {
            path: path.into(),
            key: "general.architecture".into(),
            detail: "missing".into(),
        })?
        .to_string();
    if !ARCHITECTURES.contains(&arch.as_str()) {
        return Err(GgufError::Architecture {
            path: path.into(),
            arch,
        });
    }
    let key = |k: &str| format!("{arch}.{k}");
    let missing = |k: String| GgufError::Metadata {
        path: path.into(),
        key: k,
        detail: "missing or not an integer".into(),
    };
    let int = |k: &str| f.meta_u32(&key(k)).ok_or_else(|| missing(key(k)));
    let real = |k: &str| -> Option<f64> {
        match f.meta(&key(k))? {
            MetadataValue::F32(x) => Some(f32_as_decimal(*x)),
            MetadataValue::F64(x) => Some(*x),
            other => other.as_f64(),
        }
    };
    let hidden = int("embedding_length")?;
    let heads = int("attention.head_count")?;
    let kv_heads = match f.meta_u32(&key("attention.head_count_kv")) {
        Some(v) => v,
        None => {
            notes.push(format!(
                "{} absent: KV heads = heads",
                key("attention.head_count_kv")
            ));
            heads
        }
    };
    let head_dim = f
        .meta_u32(&key("attention.key_length"))
        .or_else(|| (heads > 0).then(|| hidden / heads))
        .unwrap_or(0);
    let vocab_size = match f.tensor("token_embd.weight") {
        Some(t) if t.dims.len() >= 2 => u32::try_from(t.dims[1]).unwrap_or(0),
        _ => f.meta_u32(&key("vocab_size")).unwrap_or(0),
    };
    let rope_theta = match real("rope.freq_base") {
        Some(t) => t,
        None => {
            notes.push(format!("{} absent: RoPE base 10000", key("rope.freq_base")));
            10000.0
        }
    };
    let rope_scaling = match f.meta_str(&key("rope.scaling.type")) {
        None | Some("none") => None,
        Some("linear") => Some(RopeScaling::Linear {
            factor: real("rope.scaling.factor").unwrap_or(1.0),
        }),
        Some(other) => {
            return Err(GgufError::Metadata {
                path: path.into(),
                key: key("rope.scaling.type"),
                detail: format!("{other:?} is not supported (linear or none)"),
            });
        }
    };
    let (activation, sub_norms, family) = match arch.as_str() {
        "bitnet-b1.58" | "bitnet-25" => (Activation::Relu2, true, "bitnet-2b4t"),
        "bitnet" => match f.meta_str(&key("hidden_act")) {
            Some("relu2" | "relu_sqr" | "relu_squared") => (Activation::Relu2, true, "bitnet-2b4t"),
            None | Some("silu" | "swiglu") => (Activation::Silu, true, "bitnet-1bitllm"),
            Some(other) => {
                return Err(GgufError::Metadata {
                    path: path.into(),
                    key: key("hidden_act"),
                    detail: format!("activation {other:?} is not supported (relu2 or silu)"),
                });
            }
        },
        "qwen2" => (Activation::Silu, false, "qwen2-bitnet"),
        "qwen3" => (Activation::Silu, false, "qwen3-bitnet"),
        _ => {
            // Informative only. bitnet.cpp's Falcon-E files say so by their pre-tokenizer.
            let name = f.meta_str("general.name").unwrap_or("").to_lowercase();
            let family = if f.meta_str("tokenizer.ggml.pre") == Some("falcon_e")
                || crate::family::is_falcon_e_name(&name)
            {
                "falcon-e"
            } else if name.contains("falcon") {
                "falcon3-bitnet"
            } else if name.contains("mistral") {
                "mistral-bitnet"
            } else {
                "llama-bitnet"
            };
            (Activation::Silu, false, family)
        }
    };
    let config = ModelConfig {
        family: family.into(),
        hidden_size: hidden,
        intermediate_size: int("feed_forward_length")?,
        num_layers: int("block_count")?,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        vocab_size,
        context_length: int("context_length")?,
        rope_theta,
        rope_scaling,
        rms_norm_eps: real("attention.layer_norm_rms_epsilon")
            .ok_or_else(|| missing(key("attention.layer_norm_rms_epsilon")))?,
        activation,
        sub_norms,
        tied_embeddings: f.tensor("output.weight").is_none(),
        attention_bias: arch == "qwen2",
        qk_norm: arch == "qwen3",
    };
    config.validate().map_err(|detail| GgufError::Model {
        path: path.into(),
        detail,
    })?;
    Ok((config, arch, notes))
}

/// Options of `bitnet-convert FILE.gguf -o OUT.bitnet`.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub input: PathBuf,
    pub output: PathBuf,
    pub layout: TernaryLayout,
    pub embeddings: EmbeddingsChoice,
    /// Elements per I2_S block in the input: 128 (x86 builds, the Hub's files) or 64 (ARM builds);
    /// `None`: as the data shows ([`detect_i2s_block`]), else 128 with a warning.
    pub i2s_block: Option<u32>,
    /// Size of the thread pool (`None`: one thread per core).
    pub threads: Option<usize>,
    pub verify: bool,
    pub force: bool,
}

impl ImportOptions {
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Self {
        ImportOptions {
            input: input.into(),
            output: output.into(),
            layout: crate::auto_layout(),
            embeddings: EmbeddingsChoice::Source,
            i2s_block: None,
            threads: None,
            verify: true,
            force: false,
        }
    }
}

/// What an import did: the same summary as a checkpoint conversion, whose source line names the
/// GGUF architecture and ternary types.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub summary: ConvertReport,
    pub architecture: String,
    /// Ternary tensors per GGUF type.
    pub ternary_types: BTreeMap<String, usize>,
    /// Elements per I2_S block the file was read with (`None`: it has no I2_S tensor).
    pub i2s_block: Option<u32>,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.summary.fmt(f)
    }
}

/// Elements per I2_S block: x86 builds of bitnet.cpp (and the Hub's files), ARM builds.
pub const I2S_BLOCKS: [u32; 2] = [128, 64];

/// Layers whose feed-forward tensors [`detect_i2s_block`] correlates, at most.
const DETECT_LAYERS: u32 = 4;

/// What the data of a GGUF file shows about its I2_S block size.
#[derive(Debug, Clone, PartialEq)]
pub enum I2sBlockEvidence {
    /// The file has no I2_S tensor.
    NoI2s,
    /// `tensor` shows blocks of `block`, for the reason given.
    Shown {
        block: u32,
        tensor: String,
        reason: String,
    },
    /// Both block sizes fit the data equally well.
    Unknown { reason: String },
}

/// Tell bitnet.cpp's two I2_S layouts apart from the data. The block size only changes which of
/// the 128 elements of each span a 2-bit code belongs to, so both readings give valid ternary values
/// with the same counts of -1, 0 and +1 (and, when the columns are a multiple of 128, the same rows:
/// the wrong reading permutes each row's columns). What the data can show:
///
/// 1. Padding (certain): a tensor whose element count is not a multiple of 128 ends in padding
///    codes of 0 at positions that depend on the block size; a reading that finds other codes
///    there, or a size that does not fit, is excluded. (The 28 bytes after the scale are the same
///    under both readings and ignored by both, so whatever bitnet.cpp left there decides nothing.)
/// 2. Otherwise, the feed-forward units (statistical): in a trained model the number of non-zero
///    weights each unit reads (its rows of `ffn_up` and `ffn_gate`) and writes (its column of
///    `ffn_down`) are strongly correlated (0.67 to 0.88 per layer in the demo model). The wrong
///    reading moves 3/4 of `ffn_down`'s columns to other units, which leaves about a quarter of
///    that correlation. Over the first (up to) four layers whose three tensors are I2_S, a block
///    size is shown if its mean correlation is at least 0.3 and exceeds the other's by 0.2 or
///    more. Random weights (synthetic models) correlate in neither reading: unknown.
pub fn detect_i2s_block(file: &GgufFile<'_>) -> I2sBlockEvidence {
    let i2s: Vec<&TensorInfo> = file
        .tensors
        .iter()
        .filter(|t| t.ggml_type == GGML_TYPE_I2_S)
        .collect();
    if i2s.is_empty() {
        return I2sBlockEvidence::NoI2s;
    }
    let n = |t: &TensorInfo| t.dims.iter().product::<u64>() as usize;
    for t in i2s.iter().filter(|t| !n(t).is_multiple_of(128)) {
        let fits = I2S_BLOCKS.map(|b| codec::decode_i2s(file.data(t), n(t), b as usize).is_ok());
        if let [true, false] | [false, true] = fits {
            let (block, other) = if fits[0] { (128, 64) } else { (64, 128) };
            return I2sBlockEvidence::Shown {
                block,
                tensor: t.name.clone(),
                reason: format!(
                    "its {} elements end in padding that only blocks of {block} read as valid (blocks of {other} do not)",
                    n(t)
                ),
            };
        }
    }
    let i2s_tensor = |name: String| {
        file.tensor(&name)
            .filter(|t| t.ggml_type == GGML_TYPE_I2_S && t.dims.len() == 2)
    };
    let mut sums = [0f64; 2];
    let mut layers = Vec::new();
    for layer in 0.. {
        if layers.len() as u32 == DETECT_LAYERS {
            break;
        }
        let ffn = |t: &str| file.tensor(&format!("blk.{layer}.{t}.weight"));
        if ffn("ffn_up").is_none() && ffn("ffn_down").is_none() {
            break;
        }
        let (Some(up), Some(gate), Some(down)) = (
            i2s_tensor(format!("blk.{layer}.ffn_up.weight")),
            i2s_tensor(format!("blk.{layer}.ffn_gate.weight")),
            i2s_tensor(format!("blk.{layer}.ffn_down.weight")),
        ) else {
            continue;
        };
        let units = up.dims[1] as usize;
        if gate.dims != up.dims || down.dims[0] as usize != units {
            continue;
        }
        let mut r = [0f64; 2];
        let mut read = true;
        for (k, b) in I2S_BLOCKS.iter().enumerate() {
            let decode = |t: &TensorInfo| codec::decode_i2s(file.data(t), n(t), *b as usize);
            match (decode(up), decode(gate), decode(down)) {
                (Ok((u, _)), Ok((g, _)), Ok((d, _))) => {
                    r[k] = codec::unit_weight_correlation(&u, &g, &d, units).unwrap_or(0.0)
                }
                _ => read = false,
            }
        }
        if read {
            sums[0] += r[0];
            sums[1] += r[1];
            layers.push(down.name.clone());
        }
    }
    let Some(first) = layers.first() else {
        return I2sBlockEvidence::Unknown {
            reason: "no tensor has padding and no layer has I2_S ffn_up, ffn_gate and ffn_down to compare".into(),
        };
    };
    let mean = sums.map(|x| x / layers.len() as f64);
    let how = format!(
        "over {} layer(s), the non-zero weights each feed-forward unit reads and writes correlate at {:.2} read in blocks of 128 and {:.2} in blocks of 64",
        layers.len(),
        mean[0],
        mean[1]
    );
    for (k, &block) in I2S_BLOCKS.iter().enumerate() {
        if mean[k] >= 0.3 && mean[k] - mean[1 - k] >= 0.2 {
            return I2sBlockEvidence::Shown {
                block,
                tensor: first.clone(),
                reason: how,
            };
        }
    }
    I2sBlockEvidence::Unknown { reason: how }
}

/// Size and SHA-256 of the source file, read in pieces.
fn sha256_file(path: &Path, mut reader: impl Read) -> std::io::Result<SourceFile> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        bytes += n as u64;
    }
    Ok(SourceFile {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bytes,
        sha256: hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    })
}

/// Whether GGUF dimensions (ggml order) give `shape` (outermost first). ggml pads every tensor to
/// four dimensions with 1s, so llama.cpp takes `[K, N, 1]` for `[N, K]`, and no dimensions for one
/// element: so does this.
fn same_shape(dims: &[u64], shape: &[u64]) -> bool {
    let trim = |mut d: Vec<u64>| {
        while d.last() == Some(&1) {
            d.pop();
        }
        d
    };
    trim(dims.to_vec()) == trim(shape.iter().rev().copied().collect())
}

fn is_projection(canonical: &str) -> Option<LayerTensor> {
    layer_tensor(canonical).filter(|t| t.is_projection())
}

/// The layer tensor that a canonical name `blk.N.SUFFIX` names.
fn layer_tensor(canonical: &str) -> Option<LayerTensor> {
    let suffix = canonical.strip_prefix("blk.")?.split_once('.')?.1;
    LayerTensor::ALL.into_iter().find(|t| t.suffix() == suffix)
}

/// A tensor's GGUF name: `CANONICAL.weight`, except the q/k/v biases, which llama.cpp names
/// `blk.N.attn_q.bias` where `.bitnet` says `blk.N.attn_q_bias`.
fn gguf_name(canonical: &str) -> String {
    match layer_tensor(canonical) {
        Some(LayerTensor::AttnQBias | LayerTensor::AttnKBias | LayerTensor::AttnVBias) => {
            format!(
                "{}.bias",
                canonical.strip_suffix("_bias").unwrap_or(canonical)
            )
        }
        _ => format!("{canonical}.weight"),
    }
}

/// Read the floats of a tensor of type F32, F16 or BF16.
fn floats(ty: u32, data: &[u8]) -> Option<Vec<f32>> {
    Some(match ty {
        GGML_TYPE_F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
            .collect(),
        GGML_TYPE_F16 => data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        GGML_TYPE_BF16 => data
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// The floats of a full-precision tensor of any type the import reads: F32, F16, BF16 or a block
/// type of [`blocks`].
fn float_values(ty: u32, data: &[u8]) -> Option<Vec<f32>> {
    floats(ty, data).or_else(|| blocks::dequantize(ty, data))
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Elements converted per piece when streaming a full-precision tensor.
const CHUNK: usize = 1 << 20;

/// How a tensor of the output is made from its GGUF tensor.
#[derive(Debug, Clone, Copy)]
enum Make {
    /// Ternary values and scale decoded, the scale multiplied by the `.scale` tensor if any.
    Ternary {
        projection: LayerTensor,
        multiplier: Option<f32>,
    },
    Float(FloatMake),
}

/// How a full-precision tensor is re-encoded.
#[derive(Debug, Clone, Copy)]
enum FloatMake {
    /// F16 or BF16 kept as they are.
    Copy(Encoding),
    F32,
    /// Narrowed to F16 (`bf16: false`) or BF16.
    Narrow {
        bf16: bool,
    },
    I8Row,
    /// Q4_0 blocks re-arranged as `q4_b32`, without loss.
    Q4FromQ4_0,
    /// Quantized to `q4_b32`.
    Q4,
}

impl FloatMake {
    fn encoding(self) -> Encoding {
        match self {
            FloatMake::Copy(encoding) => encoding,
            FloatMake::F32 => Encoding::F32,
            FloatMake::Narrow { bf16: false } => Encoding::F16,
            FloatMake::Narrow { bf16: true } => Encoding::Bf16,
            FloatMake::I8Row => Encoding::I8Row,
            FloatMake::Q4FromQ4_0 | FloatMake::Q4 => Encoding::Q4B32,
        }
    }
}

/// One tensor of the output and the GGUF tensor it is made from.
struct Planned {
    spec: TensorSpec,
    source: TensorInfo,
    make: Make,
}

/// A GGUF file checked and planned for import: the `.bitnet` header, and the tensors, to be
/// converted one at a time.
struct Import<'a> {
    header: Header,
    report: ImportReport,
    tensors: Tensors<'a>,
}

/// The planned tensors of an import and what converting them needs.
struct Tensors<'a> {
    path: &'a Path,
    file: GgufFile<'a>,
    options: &'a ImportOptions,
    /// `attn_q`/`attn_k` rows are in llama.cpp's interleaved RoPE order.
    interleaved: bool,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// Elements per I2_S block (resolved by [`resolve_i2s_block`]).
    i2s_block: usize,
    planned: Vec<Planned>,
}

/// The I2_S block size to read `file` with: `flag` (`--gguf-i2s-block`) unless the data shows it
/// is wrong, else what the data shows, else 128 with a warning. `None`: the file has no I2_S tensor.
fn resolve_i2s_block(
    path: &Path,
    file: &GgufFile<'_>,
    flag: Option<u32>,
    notes: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<Option<u32>, GgufError> {
    if let Some(b) = flag
        && !I2S_BLOCKS.contains(&b)
    {
        return Err(GgufError::Option(format!(
            "--gguf-i2s-block {b}: must be 128 (x86 builds of bitnet.cpp) or 64 (ARM builds)"
        )));
    }
    match (detect_i2s_block(file), flag) {
        (I2sBlockEvidence::NoI2s, None) => Ok(None),
        (I2sBlockEvidence::NoI2s, Some(b)) => {
            notes.push(format!(
                "--gguf-i2s-block {b} has no effect: the file has no I2_S tensor"
            ));
            Ok(None)
        }
        (
            I2sBlockEvidence::Shown {
                block,
                tensor,
                reason,
            },
            flag,
        ) => match flag {
            Some(b) if b != block => Err(GgufError::Tensor {
                path: path.into(),
                tensor,
                ty: type_name(GGML_TYPE_I2_S),
                detail: format!(
                    "--gguf-i2s-block {b} contradicts the data, which shows blocks of {block}: {reason}"
                ),
            }),
            _ => {
                notes.push(format!(
                    "I2_S read in blocks of {block}, as {tensor} shows: {reason}"
                ));
                Ok(Some(block))
            }
        },
        (I2sBlockEvidence::Unknown { reason }, Some(b)) => {
            notes.push(format!(
                "I2_S read in blocks of {b} as --gguf-i2s-block says; the data cannot tell ({reason})"
            ));
            Ok(Some(b))
        }
        (I2sBlockEvidence::Unknown { reason }, None) => {
            warnings.push(format!(
                "{}: the data cannot tell bitnet.cpp's two I2_S layouts apart ({reason}); reading blocks of 128 (x86 builds, the Hub's files): pass --gguf-i2s-block 64 if an ARM build wrote the file",
                path.display()
            ));
            Ok(Some(128))
        }
    }
}

fn tensor_error(path: &Path, name: &str, ty: u32, detail: String) -> GgufError {
    GgufError::Tensor {
        path: path.into(),
        tensor: name.to_string(),
        ty: type_name(ty),
        detail,
    }
}

fn not_full_precision(path: &Path, t: &TensorInfo) -> GgufError {
    let block_types: Vec<String> = blocks::TYPES.iter().map(|&ty| type_name(ty)).collect();
    tensor_error(
        path,
        &t.name,
        t.ggml_type,
        format!(
            "full-precision tensors must be F32, F16, BF16 or {}",
            block_types.join(", ")
        ),
    )
}

const NOT_TERNARY: &str =
    "a projection must be I2_S, TQ1_0, TQ2_0, F32, F16 or BF16 holding ternary values";

/// Check a GGUF file and plan its import: model, tokenizer, and every tensor's presence, shape,
/// type and encoding, so that a file wrong in these is refused before anything is written (faults
/// in tensor data are found while converting). `hash` gives the source file's provenance entry.
fn plan<'a>(
    path: &'a Path,
    bytes: &'a [u8],
    options: &'a ImportOptions,
    hash: impl FnOnce() -> Result<SourceFile, GgufError>,
) -> Result<Import<'a>, GgufError> {
    let file = GgufFile::parse(bytes).map_err(|source| GgufError::Container {
        path: path.into(),
        source,
    })?;
    let (config, arch, mut notes) = model_from_metadata(path, &file)?;
    let mut warnings = Vec::new();
    let tokenizer = vocab::import(&file).map_err(|detail| GgufError::Tokenizer {
        path: path.into(),
        detail,
    })?;
    let tensor_err = |name: &str, ty: u32, detail: String| tensor_error(path, name, ty, detail);
    // The list of expected tensors grows with block_count: refuse a count that the tensor
    // directory (itself bounded by the file's length) cannot back before building it.
    if config.num_layers as usize > file.tensors.len() {
        return Err(GgufError::Metadata {
            path: path.into(),
            key: format!("{arch}.block_count"),
            detail: format!(
                "{} layers, but the file has only {} tensors",
                config.num_layers,
                file.tensors.len()
            ),
        });
    }
    let expected = expected_tensors(&config, config.tied_embeddings);
    let i2s_block = resolve_i2s_block(path, &file, options.i2s_block, &mut notes, &mut warnings)?;
    let expected_names: HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let expected_gguf: HashSet<String> = expected.iter().map(|(n, _)| gguf_name(n)).collect();
    // Every tensor of the file must be expected (or a projection's optional `.scale`).
    let mut unknown = Vec::new();
    for t in &file.tensors {
        let known = expected_gguf.contains(&t.name)
            || t.name
                .strip_suffix(".scale")
                .is_some_and(|c| is_projection(c).is_some() && expected_names.contains(c));
        if !known {
            unknown.push(t.name.clone());
        }
    }
    if !unknown.is_empty() {
        return Err(GgufError::Model {
            path: path.into(),
            detail: format!(
                "tensors this {arch} model does not use: {} (rope_freqs.weight means Llama 3 RoPE scaling, which GGUF import does not support)",
                unknown.join(", ")
            ),
        });
    }
    let mut planned = Vec::with_capacity(expected.len());
    let mut ternary_types: BTreeMap<String, usize> = BTreeMap::new();
    for (canonical, shape) in &expected {
        let gname = gguf_name(canonical);
        let t = file.tensor(&gname).ok_or_else(|| GgufError::Model {
            path: path.into(),
            detail: format!("tensor {gname} is missing"),
        })?;
        if !same_shape(&t.dims, shape) {
            return Err(tensor_err(
                &gname,
                t.ggml_type,
                format!("shape {:?}, but the metadata implies {shape:?}", t.shape()),
            ));
        }
        let (encoding, make) = if let Some(projection) = is_projection(canonical) {
            if !matches!(
                t.ggml_type,
                GGML_TYPE_I2_S
                    | GGML_TYPE_TQ1_0
                    | GGML_TYPE_TQ2_0
                    | GGML_TYPE_F32
                    | GGML_TYPE_F16
                    | GGML_TYPE_BF16
            ) {
                return Err(tensor_err(&gname, t.ggml_type, NOT_TERNARY.into()));
            }
            let multiplier = match file.tensor(&format!("{canonical}.scale")) {
                None => None,
                Some(st) => {
                    let s = floats(st.ggml_type, file.data(st))
                        .filter(|v| v.len() == 1 && v[0].is_finite())
                        .ok_or_else(|| {
                            tensor_err(
                                &st.name,
                                st.ggml_type,
                                "a scale must be one finite F32, F16 or BF16".into(),
                            )
                        })?;
                    notes.push(format!("{canonical}: multiplied by its .scale tensor"));
                    Some(s[0])
                }
            };
            *ternary_types.entry(type_name(t.ggml_type)).or_default() += 1;
            (
                Encoding::Ternary(options.layout),
                Make::Ternary {
                    projection,
                    multiplier,
                },
            )
        } else {
            let ty = t.ggml_type;
            if !matches!(ty, GGML_TYPE_F32 | GGML_TYPE_F16 | GGML_TYPE_BF16)
                && !blocks::TYPES.contains(&ty)
            {
                return Err(not_full_precision(path, t));
            }
            let is_embedding = canonical == names::TOKEN_EMBD || canonical == names::OUTPUT;
            let make = match (is_embedding, options.embeddings, ty) {
                (false, _, _) | (true, EmbeddingsChoice::F32, _) => FloatMake::F32,
                (true, EmbeddingsChoice::F16 | EmbeddingsChoice::Source, GGML_TYPE_F16) => {
                    FloatMake::Copy(Encoding::F16)
                }
                (true, EmbeddingsChoice::Bf16 | EmbeddingsChoice::Source, GGML_TYPE_BF16) => {
                    FloatMake::Copy(Encoding::Bf16)
                }
                (true, EmbeddingsChoice::F16, _) => FloatMake::Narrow { bf16: false },
                (true, EmbeddingsChoice::Bf16, _) => FloatMake::Narrow { bf16: true },
                (true, EmbeddingsChoice::I8, _) => FloatMake::I8Row,
                // q4_b32 is Q4_0 with its scales stored apart: the same values, no loss.
                (true, EmbeddingsChoice::Q4 | EmbeddingsChoice::Source, blocks::GGML_TYPE_Q4_0) => {
                    FloatMake::Q4FromQ4_0
                }
                (true, EmbeddingsChoice::Q4, _) => {
                    // Embeddings are matrices (`expected_tensors`).
                    let cols = shape[1];
                    if !cols.is_multiple_of(bitnet_format::Q4_BLOCK) {
                        return Err(tensor_err(
                            &gname,
                            ty,
                            format!(
                                "--embeddings q4 needs a column count that is a multiple of {}, not {cols}",
                                bitnet_format::Q4_BLOCK
                            ),
                        ));
                    }
                    FloatMake::Q4
                }
                // Other block types become their exact dequantized values.
                (true, EmbeddingsChoice::Source, _) => FloatMake::F32,
            };
            (make.encoding(), Make::Float(make))
        };
        planned.push(Planned {
            spec: TensorSpec::new(canonical, encoding, shape),
            source: t.clone(),
            make,
        });
    }
    let tokenizer_info = match tokenizer {
        None => {
            notes.push(
                "the GGUF file has no tokenizer metadata: the file holds no tokenizer".into(),
            );
            None
        }
        Some(tk) => {
            notes.extend(tk.notes.iter().cloned());
            warnings.extend(tk.warnings.iter().cloned());
            let compact =
                serde_json::to_string(&tk.tokenizer_json).map_err(|e| GgufError::Tokenizer {
                    path: path.into(),
                    detail: e.to_string(),
                })?;
            Some(TokenizerInfo {
                tokenizer_json: RawValue::from_string(compact).map_err(|e| {
                    GgufError::Tokenizer {
                        path: path.into(),
                        detail: e.to_string(),
                    }
                })?,
                chat_template: tk.chat_template,
                bos_token_id: tk.bos_token_id,
                eos_token_ids: tk.eos_token_ids,
                pad_token_id: tk.pad_token_id,
                add_bos_token: tk.add_bos_token,
            })
        }
    };
    let mut provenance_options = BTreeMap::new();
    provenance_options.insert("layout".into(), options.layout.label().into());
    provenance_options.insert("embeddings".into(), options.embeddings.label().into());
    let generation = match file.get(GENERATION_KEY) {
        Some(MetadataValue::String(g)) => {
            serde_json::from_str(g).map_err(|e| GgufError::Metadata {
                path: path.into(),
                key: GENERATION_KEY.into(),
                detail: e.to_string(),
            })?
        }
        _ => GenerationDefaults::default(),
    };
    let (heads, kv_heads, head_dim) = (
        config.num_heads as usize,
        config.num_kv_heads as usize,
        config.head_dim as usize,
    );
    let header = Header {
        model: config,
        tokenizer: tokenizer_info,
        generation,
        provenance: Provenance {
            source: Source::Gguf {
                path: path.display().to_string(),
            },
            files: vec![hash()?],
            converter: crate::CONVERTER.to_string(),
            options: provenance_options,
        },
        tensors: Vec::new(),
    };
    let interleaved = interleaved_rope(&arch);
    let types: Vec<String> = ternary_types
        .iter()
        .map(|(t, n)| format!("{n} {t}"))
        .collect();
    let blocks = i2s_block.map_or(String::new(), |b| format!(" in blocks of {b}"));
    let mut summary = ConvertReport {
        output: options.output.clone(),
        source: format!(
            "{} (GGUF {arch}, ternary {}{blocks})",
            path.display(),
            types.join(", ")
        ),
        family: header.model.family.clone(),
        tensors: planned.len(),
        parameters: 0,
        ternary_weights: 0,
        ternary_bytes: 0,
        bytes_in: header.provenance.files.iter().map(|f| f.bytes).sum(),
        bytes_out: 0,
        elapsed: Duration::ZERO,
        verified: options.verify,
        notes,
        warnings,
    };
    for p in &planned {
        let n: u64 = p.spec.shape.iter().product();
        summary.parameters += n;
        if let Encoding::Ternary(_) = p.spec.encoding {
            summary.ternary_weights += n;
            summary.ternary_bytes += p.spec.encoding.byte_len(&p.spec.shape).unwrap_or(0);
        }
    }
    let report = ImportReport {
        summary,
        architecture: arch,
        ternary_types,
        i2s_block,
    };
    Ok(Import {
        header,
        tensors: Tensors {
            path,
            file,
            options,
            interleaved,
            heads,
            kv_heads,
            head_dim,
            i2s_block: i2s_block.unwrap_or(128) as usize,
            planned,
        },
        report,
    })
}

/// Where a converted tensor's bytes go, in order.
type Sink<'s> = dyn FnMut(&[u8]) -> Result<(), GgufError> + 's;

impl Tensors<'_> {
    fn error(&self, t: &TensorInfo, detail: String) -> GgufError {
        tensor_error(self.path, &t.name, t.ggml_type, detail)
    }

    /// Convert tensor `p`, handing its bytes to `out` in order: a full-precision tensor in pieces,
    /// a ternary tensor whole.
    fn convert(&self, p: &Planned, out: &mut Sink<'_>) -> Result<(), GgufError> {
        match p.make {
            Make::Ternary {
                projection,
                multiplier,
            } => out(&self.ternary(p, projection, multiplier)?),
            Make::Float(make) => self.float(p, make, out),
        }
    }

    fn ternary(
        &self,
        p: &Planned,
        projection: LayerTensor,
        multiplier: Option<f32>,
    ) -> Result<Vec<u8>, GgufError> {
        let t = &p.source;
        let data = self.file.data(t);
        let (rows, cols) = (p.spec.shape[0] as usize, p.spec.shape[1] as usize);
        let (mut values, mut scale) = match t.ggml_type {
            GGML_TYPE_I2_S => codec::decode_i2s(data, rows * cols, self.i2s_block),
            GGML_TYPE_TQ1_0 | GGML_TYPE_TQ2_0 => {
                let kind = if t.ggml_type == GGML_TYPE_TQ1_0 {
                    codec::Tq::Tq1_0
                } else {
                    codec::Tq::Tq2_0
                };
                codec::decode_tq(kind, data).and_then(|(mut v, d)| {
                    let s = codec::tensor_scale(&mut v, &d)?;
                    Ok((v, s))
                })
            }
            ty => match floats(ty, data) {
                Some(v) => codec::float_ternary(v.into_iter()),
                None => Err(NOT_TERNARY.to_string()),
            },
        }
        .map_err(|d| {
            let (n, block) = (rows * cols, self.i2s_block);
            if t.ggml_type == GGML_TYPE_I2_S && !n.is_multiple_of(block) {
                self.error(t, codec::i2s_partial_block_hint(d, n, block))
            } else {
                self.error(t, d)
            }
        })?;
        if let Some(m) = multiplier {
            scale *= m;
        }
        if self.interleaved {
            match projection {
                LayerTensor::AttnQ => {
                    values = permute_rope_rows(&values, self.heads, self.head_dim, cols, false)
                }
                LayerTensor::AttnK => {
                    values = permute_rope_rows(&values, self.kv_heads, self.head_dim, cols, false)
                }
                _ => {}
            }
        }
        let layout = self.options.layout;
        let packed = bitnet_format::parallel::pack(layout, rows, cols, &values, scale);
        if self.options.verify {
            crate::verify::check_ternary(&p.spec.name, layout, rows, cols, &packed, &values, scale)
                .map_err(|e| GgufError::Write(e.to_string()))?;
        }
        Ok(packed)
    }

    /// A full-precision tensor, decoded and encoded in chunks of rows. Tensors whose encoding puts
    /// scales first (`i8_row`, `q4_b32`) take two passes: the scales, then the codes.
    fn float(&self, p: &Planned, make: FloatMake, out: &mut Sink<'_>) -> Result<(), GgufError> {
        let t = &p.source;
        let data = self.file.data(t);
        let (rows, cols) = match p.spec.shape[..] {
            [rows, cols] => (rows as usize, cols as usize),
            _ => (1, p.spec.shape.iter().product::<u64>() as usize),
        };
        // Every row is whole blocks (the container checks the first dimension).
        let row_bytes = data.len() / rows.max(1);
        let rows_per_chunk = (CHUNK / cols.max(1)).max(1);
        let chunks = || {
            (0..rows)
                .step_by(rows_per_chunk)
                .map(move |r| r..(r + rows_per_chunk).min(rows))
        };
        let bytes = |r: &Range<usize>| &data[r.start * row_bytes..r.end * row_bytes];
        // The values of rows `r`, refused if one is NaN or infinite.
        let values = |r: &Range<usize>| -> Result<Vec<f32>, GgufError> {
            let v = float_values(t.ggml_type, bytes(r))
                .ok_or_else(|| not_full_precision(self.path, t))?;
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(self.error(t, format!("element {} is {}", r.start * cols + i, v[i])));
            }
            Ok(v)
        };
        match make {
            FloatMake::F32 => {
                for r in chunks() {
                    out(&le_bytes(&values(&r)?))?;
                }
            }
            FloatMake::Copy(_) => {
                for r in chunks() {
                    values(&r)?;
                    out(bytes(&r))?;
                }
            }
            FloatMake::Narrow { bf16 } => {
                // An element that overflows is reported only if none is NaN or infinite.
                let mut overflow = None;
                let mut buffer = Vec::new();
                for r in chunks() {
                    buffer.clear();
                    for (i, &x) in values(&r)?.iter().enumerate() {
                        let (b, finite) = if bf16 {
                            let b = half::bf16::from_f32(x);
                            (b.to_le_bytes(), b.is_finite())
                        } else {
                            let h = f16::from_f32(x);
                            (h.to_le_bytes(), h.is_finite())
                        };
                        if !finite && overflow.is_none() {
                            overflow = Some(r.start * cols + i);
                        }
                        buffer.extend_from_slice(&b);
                    }
                    out(&buffer)?;
                }
                if let Some(i) = overflow {
                    return Err(self.error(
                        t,
                        format!("element {i} overflows {}", p.spec.encoding.label()),
                    ));
                }
            }
            FloatMake::I8Row => {
                let mut scales = Vec::with_capacity(rows);
                for r in chunks() {
                    let raw = le_bytes(&values(&r)?);
                    let w = Floats::new(FloatKind::F32, &raw);
                    let s = i8_row::row_scales(w, r.len(), cols).map_err(|i| {
                        self.error(t, format!("element {} is not finite", r.start * cols + i))
                    })?;
                    scales.extend(s);
                }
                let mut head: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
                head.resize(
                    bitnet_format::align_up(4 * rows as u64).unwrap_or(0) as usize,
                    0,
                );
                out(&head)?;
                let mut codes = Vec::new();
                for r in chunks() {
                    let raw = le_bytes(&values(&r)?);
                    let w = Floats::new(FloatKind::F32, &raw);
                    codes.clear();
                    for (k, &s) in scales[r.clone()].iter().enumerate() {
                        i8_row::quantize_row(w.slice(k * cols, (k + 1) * cols), s, &mut codes);
                    }
                    out(&codes)?;
                }
            }
            FloatMake::Q4FromQ4_0 => {
                let mut head = Vec::new();
                for r in chunks() {
                    values(&r)?;
                    head.extend(blocks::q4_0_scales(bytes(&r)));
                }
                head.resize(
                    bitnet_format::q4_codes_offset((rows * cols) as u64) as usize,
                    0,
                );
                out(&head)?;
                for r in chunks() {
                    out(&blocks::q4_0_codes(bytes(&r)))?;
                }
            }
            FloatMake::Q4 => {
                let per_row = cols / q4_b32::BLOCK;
                let mut scales = Vec::with_capacity(rows * per_row);
                // A block whose scale overflows is reported only if no element is NaN or infinite.
                let mut refused = None;
                for r in chunks() {
                    let v = values(&r)?;
                    if refused.is_some() {
                        continue;
                    }
                    let raw = le_bytes(&v);
                    match q4_b32::scales(Floats::new(FloatKind::F32, &raw), r.len(), cols) {
                        Ok(s) => scales.extend(s),
                        Err(q4_b32::Refused::NonFinite(i)) => {
                            refused = Some(format!("element {} is {}", r.start * cols + i, v[i]))
                        }
                        Err(q4_b32::Refused::TooLarge(i)) => {
                            refused = Some(format!(
                                "element {} ({}) does not fit in q4_b32: its block scale overflows f16",
                                r.start * cols + i,
                                v[i]
                            ))
                        }
                    }
                }
                if let Some(detail) = refused {
                    return Err(self.error(t, detail));
                }
                out(&q4_b32::scale_bytes(&scales))?;
                let mut codes = Vec::new();
                for r in chunks() {
                    let raw = le_bytes(&values(&r)?);
                    codes.resize(r.len() * cols / 2, 0);
                    q4_b32::pack_rows(
                        Floats::new(FloatKind::F32, &raw),
                        &scales[r.start * per_row..r.end * per_row],
                        cols,
                        0..r.len(),
                        &mut codes,
                    );
                    out(&codes)?;
                }
            }
        }
        Ok(())
    }
}

/// A GGUF file decoded in memory: the header (without tensors) and each canonical tensor's
/// encoding, shape and bytes in the requested layout. For small inputs (fuzzing, tests);
/// [`import_gguf`] streams each tensor to the output instead.
pub struct Imported {
    pub header: Header,
    pub tensors: Vec<(TensorSpec, Vec<u8>)>,
    pub report: ImportReport,
}

/// Import a GGUF file held in memory (`path` is for messages and provenance).
pub fn import_bytes(
    path: &Path,
    bytes: &[u8],
    options: &ImportOptions,
) -> Result<Imported, GgufError> {
    let Import {
        header,
        report,
        tensors,
    } = plan(path, bytes, options, || Ok(sha256_file(path, bytes)?))?;
    let mut converted = Vec::with_capacity(tensors.planned.len());
    for p in &tensors.planned {
        let mut data = Vec::new();
        tensors.convert(p, &mut |b| {
            data.extend_from_slice(b);
            Ok(())
        })?;
        converted.push((p.spec.clone(), data));
    }
    Ok(Imported {
        header,
        tensors: converted,
        report,
    })
}

/// `bitnet-convert FILE.gguf -o OUT.bitnet`: the GGUF file is mapped, and each tensor converted,
/// written and dropped before the next, so memory stays near one tensor's, not the model's.
pub fn import_gguf(options: &ImportOptions) -> Result<ImportReport, GgufError> {
    let started = Instant::now();
    let (pool, note) = crate::convert::thread_pool(options.threads)
        .map_err(|e| GgufError::Option(e.to_string()))?;
    let mut report = pool.install(|| import_file(options))?;
    report.summary.notes.splice(0..0, note);
    report.summary.elapsed = started.elapsed();
    Ok(report)
}

fn import_file(options: &ImportOptions) -> Result<ImportReport, GgufError> {
    let out = &options.output;
    if out.exists() && !options.force {
        return Err(GgufError::OutputExists { path: out.clone() });
    }
    let io = |source| GgufError::Io {
        path: options.input.clone(),
        source,
    };
    let file = std::fs::File::open(&options.input).map_err(io)?;
    // SAFETY: the map is read-only and only read while the file is open; a file changed under us
    // can give wrong values, which every checksum of the output would then carry, not UB in safe
    // code paths that copy out of it.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    // The file is hashed through reads, not the map, so that it does not all become resident.
    let hash = || sha256_file(&options.input, &file).map_err(io);
    let Import {
        header,
        mut report,
        tensors,
    } = plan(&options.input, &map, options, hash)?;
    let fmt = |source| GgufError::Format {
        path: out.clone(),
        source,
    };
    let specs: Vec<TensorSpec> = tensors.planned.iter().map(|p| p.spec.clone()).collect();
    let staged = Staged::new(out).map_err(|source| GgufError::Io {
        path: out.clone(),
        source,
    })?;
    let writer = FileWriter::create(staged.path(), header, &specs).map_err(fmt)?;
    report.summary.bytes_out = writer.file_len();
    for p in &tensors.planned {
        let mut w = writer.begin_tensor(&p.spec.name).map_err(fmt)?;
        tensors.convert(p, &mut |b| w.write(b).map_err(fmt))?;
        w.finish().map_err(fmt)?;
        let range = tensors.file.range(&p.source);
        // SAFETY: the map is a private read-only file mapping that is never written, so
        // MADV_DONTNEED only drops this process's pages of the tensor just converted; a later
        // read (a neighbour sharing a boundary page) faults them in from the file unchanged.
        // Failure only means the pages stay resident.
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, range.start, range.len())
        };
    }
    writer.finish().map_err(fmt)?;
    if options.verify {
        BitnetFile::open(staged.path())
            .and_then(|f| f.verify())
            .map_err(fmt)?;
    }
    staged.persist(out).map_err(|source| GgufError::Io {
        path: out.clone(),
        source,
    })?;
    Ok(report)
}

/// `--type` of `export-gguf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportType {
    Tq1_0,
    Tq2_0,
    I2s,
}

impl ExportType {
    pub fn ggml_type(self) -> u32 {
        match self {
            ExportType::Tq1_0 => GGML_TYPE_TQ1_0,
            ExportType::Tq2_0 => GGML_TYPE_TQ2_0,
            ExportType::I2s => GGML_TYPE_I2_S,
        }
    }
}

/// Options of `bitnet-convert export-gguf IN.bitnet -o OUT.gguf --type T`.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub input: PathBuf,
    pub output: PathBuf,
    pub ty: ExportType,
    pub force: bool,
    /// Also store the exact `tokenizer.json` as `tokenizer.huggingface.json` (lossless re-import).
    pub embed_hf_tokenizer: bool,
}

impl ExportOptions {
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>, ty: ExportType) -> Self {
        ExportOptions {
            input: input.into(),
            output: output.into(),
            ty,
            force: false,
            embed_hf_tokenizer: true,
        }
    }
}

/// What an export did.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub output: PathBuf,
    pub architecture: String,
    pub tensors: usize,
    pub notes: Vec<String>,
    /// What may make the file wrong somewhere (a program known to misread it).
    pub warnings: Vec<String>,
}

impl std::fmt::Display for ExportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} tensors, GGUF architecture {}",
            self.output.display(),
            self.tensors,
            self.architecture
        )
    }
}

/// Printed when a ReLU² model is exported for llama.cpp: checked against llama.cpp 0c1e57098 (the
/// source in llama-cpp-python 0.3.36) with `tools/gguf/llama_cpp_check.sh`.
const RELU2_LLAMA_CPP_WARNING: &str = "this model uses ReLU², but mainline llama.cpp (checked at 0c1e57098) runs every `bitnet` model with SiLU and ignores bitnet.hidden_act/hidden_activation, so its output there is wrong; use --type i2_s with bitnet.cpp, or a llama.cpp with ReLU² support for bitnet";

/// The GGUF architecture an export of `model` to `ty` uses, or why there is none.
pub fn export_architecture(model: &ModelConfig, ty: ExportType) -> Result<&'static str, String> {
    // llama.cpp reads q/k/v biases only under `qwen2` and per-head q/k norms only under `qwen3`,
    // whose layers are otherwise Llama's.
    let qwen = match (model.attention_bias, model.qk_norm) {
        (false, false) => None,
        (true, false) => Some("qwen2"),
        (false, true) => Some("qwen3"),
        (true, true) => {
            return Err(
                "no llama.cpp architecture has both q/k/v biases and per-head q/k norms".into(),
            );
        }
    };
    if let Some(arch) = qwen {
        if model.sub_norms || model.activation != Activation::Silu {
            return Err(format!(
                "llama.cpp's {arch} architecture has no sub-norms and uses SiLU, unlike this model"
            ));
        }
        return Ok(arch);
    }
    match (model.sub_norms, model.activation, ty) {
        (false, Activation::Silu, _) => Ok("llama"),
        (false, Activation::Relu2, _) => Err(
            "a model with ReLU² and no sub-norms has no llama.cpp or bitnet.cpp architecture"
                .into(),
        ),
        (true, Activation::Relu2, ExportType::I2s) => Ok("bitnet-b1.58"),
        (true, _, _) => {
            if !model.tied_embeddings {
                return Err(
                    "the bitnet architecture has no output matrix, but this model's embeddings are not tied"
                        .into(),
                );
            }
            if model.num_heads as u64 * model.head_dim as u64 != model.hidden_size as u64 {
                return Err(format!(
                    "the bitnet architecture needs heads × head_dim = hidden size ({} × {} ≠ {})",
                    model.num_heads, model.head_dim, model.hidden_size
                ));
            }
            Ok("bitnet")
        }
    }
}

/// `bitnet-convert export-gguf`.
pub fn export_gguf(options: &ExportOptions) -> Result<ExportReport, GgufError> {
    let out = &options.output;
    if out.exists() && !options.force {
        return Err(GgufError::OutputExists { path: out.clone() });
    }
    let input = &options.input;
    let fmt = |source| GgufError::Format {
        path: input.clone(),
        source,
    };
    let file = BitnetFile::open(input).map_err(fmt)?;
    let model = file.header().model.clone();
    let arch = export_architecture(&model, options.ty).map_err(|detail| GgufError::Model {
        path: input.clone(),
        detail: format!("cannot export to {:?}: {detail}", options.ty),
    })?;
    let mut notes = Vec::new();
    let mut warnings = Vec::new();
    // Plan every tensor first, so an impossible one is refused before anything is written.
    let mut planned = Vec::new();
    for info in file.tensors() {
        let view = file.view(info);
        let name = gguf_name(&info.name);
        let dims: Vec<u64> = info.shape.iter().rev().copied().collect();
        let ty = match view.info.encoding {
            Encoding::Ternary(_) => {
                let cols = info.shape.get(1).copied().unwrap_or(0);
                if matches!(options.ty, ExportType::Tq1_0 | ExportType::Tq2_0)
                    && cols % codec::QK_K as u64 != 0
                {
                    return Err(GgufError::Tensor {
                        path: input.clone(),
                        tensor: info.name.clone(),
                        ty: "ternary".into(),
                        detail: format!(
                            "K = {cols} columns is not a multiple of 256, so {} cannot encode it (--type i2_s can)",
                            type_name(options.ty.ggml_type())
                        ),
                    });
                }
                options.ty.ggml_type()
            }
            Encoding::F16 => GGML_TYPE_F16,
            Encoding::Bf16 => GGML_TYPE_BF16,
            Encoding::Q4B32 => blocks::GGML_TYPE_Q4_0,
            Encoding::F32 | Encoding::I8Row => GGML_TYPE_F32,
        };
        planned.push(OutTensor {
            name,
            dims,
            ggml_type: ty,
        });
    }
    if file
        .tensors()
        .iter()
        .any(|t| file.view(t).info.encoding == Encoding::I8Row)
    {
        notes.push("i8_row embeddings are written as F32 (their exact values)".into());
    }
    if matches!(options.ty, ExportType::Tq1_0 | ExportType::Tq2_0) {
        notes.push(
            "TQ blocks store the scale as f16: re-importing gives each scale rounded to f16 (the ternary values are exact)"
                .into(),
        );
    }

    // Metadata.
    let key = |k: &str| format!("{arch}.{k}");
    let mut meta: Vec<(String, MetadataValue)> = vec![
        ("general.architecture".into(), string(arch)),
        ("general.name".into(), string(model.family.clone())),
        ("general.quantization_version".into(), MetadataValue::U32(2)),
        (key("vocab_size"), MetadataValue::U32(model.vocab_size)),
        (
            key("context_length"),
            MetadataValue::U32(model.context_length),
        ),
        (
            key("embedding_length"),
            MetadataValue::U32(model.hidden_size),
        ),
        (key("block_count"), MetadataValue::U32(model.num_layers)),
        (
            key("feed_forward_length"),
            MetadataValue::U32(model.intermediate_size),
        ),
        (
            key("attention.head_count"),
            MetadataValue::U32(model.num_heads),
        ),
        (
            key("attention.head_count_kv"),
            MetadataValue::U32(model.num_kv_heads),
        ),
        (
            key("rope.freq_base"),
            MetadataValue::F32(model.rope_theta as f32),
        ),
        (
            key("rope.dimension_count"),
            MetadataValue::U32(model.head_dim),
        ),
        (
            key("attention.layer_norm_rms_epsilon"),
            MetadataValue::F32(model.rms_norm_eps as f32),
        ),
    ];
    if model.head_dim as u64 * model.num_heads as u64 != model.hidden_size as u64 {
        meta.push((
            key("attention.key_length"),
            MetadataValue::U32(model.head_dim),
        ));
        meta.push((
            key("attention.value_length"),
            MetadataValue::U32(model.head_dim),
        ));
    }
    if arch == "bitnet" {
        let act = match model.activation {
            Activation::Relu2 => "relu2",
            Activation::Silu => "silu",
        };
        meta.push((key("hidden_act"), string(act)));
    }
    if model.activation == Activation::Relu2 {
        // The key llama.cpp reads for other architectures' activations, which the proposed ReLU²
        // fixes for `bitnet` (llama.cpp) and `bitnet-b1.58` (bitnet.cpp) read too.
        meta.push((key("hidden_activation"), string("relu2")));
        if arch == "bitnet" {
            warnings.push(RELU2_LLAMA_CPP_WARNING.into());
        }
    }
    match &model.rope_scaling {
        None => {}
        Some(RopeScaling::Linear { factor }) => {
            meta.push((key("rope.scaling.type"), string("linear")));
            meta.push((
                key("rope.scaling.factor"),
                MetadataValue::F32(*factor as f32),
            ));
        }
        Some(RopeScaling::Llama3 { .. }) => {
            return Err(GgufError::Model {
                path: input.clone(),
                detail: "Llama 3 RoPE scaling cannot be exported to GGUF yet (it needs a rope_freqs tensor)".into(),
            });
        }
    }
    let generation = &file.header().generation;
    if *generation != GenerationDefaults::default() {
        let g = serde_json::to_string(generation).map_err(|e| GgufError::Write(e.to_string()))?;
        meta.push((GENERATION_KEY.into(), string(g)));
    }
    if let Some(tk) = &file.header().tokenizer {
        let exported =
            vocab::export(tk, model.vocab_size, options.embed_hf_tokenizer).map_err(|detail| {
                GgufError::Tokenizer {
                    path: input.clone(),
                    detail,
                }
            })?;
        meta.extend(exported.metadata);
        notes.extend(exported.notes);
    } else {
        // Both llama.cpp and bitnet.cpp refuse a file without `tokenizer.ggml.model`; `no_vocab`
        // makes them load it for token-id input (benchmarks).
        meta.push(("tokenizer.ggml.model".into(), string("no_vocab")));
        notes.push(
            "the .bitnet file has no tokenizer: the GGUF holds none (tokenizer.ggml.model = no_vocab)"
                .into(),
        );
    }

    let heads = model.num_heads as usize;
    let kv_heads = model.num_kv_heads as usize;
    let head_dim = model.head_dim as usize;
    let ty = options.ty;
    let infos = file.tensors().to_vec();
    container::write(out, &meta, &planned, |i| -> Result<Vec<u8>, GgufError> {
        let info = &infos[i];
        let view = file.view(info);
        let terr = |detail: String| GgufError::Tensor {
            path: input.clone(),
            tensor: info.name.clone(),
            ty: format!("{:?}", view.info.encoding),
            detail,
        };
        Ok(match view.info.encoding {
            Encoding::Ternary(_) => {
                let (mut values, scale) = view.unpack_ternary().map_err(|e| terr(e.to_string()))?;
                let (rows, cols) = (info.shape[0] as usize, info.shape[1] as usize);
                if interleaved_rope(arch) {
                    let lt = is_projection(&info.name);
                    if lt == Some(LayerTensor::AttnQ) {
                        values = permute_rope_rows(&values, heads, head_dim, cols, true);
                    } else if lt == Some(LayerTensor::AttnK) {
                        values = permute_rope_rows(&values, kv_heads, head_dim, cols, true);
                    }
                }
                match ty {
                    ExportType::I2s => bitnet_format::parallel::pack(
                        TernaryLayout::I2s { block: 128 },
                        rows,
                        cols,
                        &values,
                        scale,
                    ),
                    ExportType::Tq1_0 | ExportType::Tq2_0 => {
                        let d = f16::from_f32(scale);
                        if !d.is_finite() || (d.to_f32() == 0.0 && scale != 0.0) {
                            return Err(terr(format!("scale {scale} does not fit in f16")));
                        }
                        let kind = if ty == ExportType::Tq1_0 {
                            codec::Tq::Tq1_0
                        } else {
                            codec::Tq::Tq2_0
                        };
                        codec::encode_tq(kind, &values, d)
                    }
                }
            }
            Encoding::F16 | Encoding::Bf16 => view.data.to_vec(),
            Encoding::Q4B32 => {
                blocks::q4_b32_to_q4_0(view.data, info.shape[0] as usize, info.shape[1] as usize)
            }
            Encoding::F32 | Encoding::I8Row => view
                .to_f32()
                .map_err(|e| terr(e.to_string()))?
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        })
    })
    .map_err(|e| match e {
        GgufError::Write(detail) => GgufError::Io {
            path: out.clone(),
            source: std::io::Error::other(detail),
        },
        other => other,
    })?;
    Ok(ExportReport {
        output: out.clone(),
        architecture: arch.to_string(),
        tensors: planned.len(),
        notes,
        warnings,
    })
}
