//! Random-weight models of the real checkpoints' shapes, for benchmarks: written as `.bitnet` directly,
//! or as a Hugging Face checkpoint (to benchmark conversion itself). Both stream one tensor at a time,
//! so even the 8B and 10B shapes need little memory.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bitnet_format::names::{self, LayerTensor};
use bitnet_format::partial::PartialDir;
use bitnet_format::{
    Activation, Encoding, FileWriter, GenerationDefaults, Header, ModelConfig, Provenance, Source,
    TensorSpec, TernaryLayout,
};
use rayon::prelude::*;
use serde_json::json;

use bitnet_format::parallel;

/// Why a synthetic model could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SyntheticError {
    #[error("unknown shape {0:?}; known shapes: {known}", known = SHAPES.iter().map(|s| s.name).collect::<Vec<_>>().join(", "))]
    UnknownShape(String),
    #[error(transparent)]
    Format(#[from] bitnet_format::FormatError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The Hugging Face family a shape belongs to, which decides its checkpoint layout for `--hf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HfStyle {
    /// `BitNetForCausalLM`, bf16 latent weights, `online` quantization (2B-4T-bf16).
    BitNetLatent,
    /// `BitnetForCausalLM` (1bitLLM), latent weights.
    OneBitLlm,
    /// `LlamaForCausalLM` + `quant_method: bitnet`: packed u8 weights with a divide scale.
    LlamaPacked,
}

/// A real checkpoint's shape.
pub struct Shape {
    pub name: &'static str,
    hidden: u32,
    intermediate: u32,
    layers: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    vocab: u32,
    context: u32,
    theta: f64,
    style: HfStyle,
}

/// Shapes as published in each repository's config.json, except the last three:
///
/// `bitnet-30b`, `bitnet-70b` and `bitnet-100b`: the "30B", "70B" and "100B" rows of the
/// `model_config` table of bitnet.cpp's `utils/generate-dummy-bitnet-model.py` (microsoft/BitNet
/// `16da220`), the dummy models bitnet.cpp benchmarks at those sizes. No such checkpoints are
/// published. That script builds a `BitnetForCausalLM` (1bitLLM) model: hidden size, intermediate
/// size, layers and heads from the table, as many KV heads as heads (`num_key_value_heads =
/// num_attention_heads`), a vocabulary of 32002 (its `embed_tokens` is `[32002, hidden]`), the
/// sub-norms `inner_attn_ln` and `ffn_layernorm`, and no `lm_head` (tied embeddings). The rest
/// comes from the 1bitLLM `config.json` the script is run with, as for `bitnet-large` and
/// `bitnet-3b`: SiLU, context 2048, RoPE θ 10000, ε 1e-5; head dimension = hidden / heads (128 for
/// all three).
pub const SHAPES: [Shape; 11] = [
    Shape {
        name: "bitnet-2b4t",
        hidden: 2560,
        intermediate: 6912,
        layers: 30,
        heads: 20,
        kv_heads: 5,
        head_dim: 128,
        vocab: 128256,
        context: 4096,
        theta: 500000.0,
        style: HfStyle::BitNetLatent,
    },
    Shape {
        name: "bitnet-large",
        hidden: 1536,
        intermediate: 4096,
        layers: 24,
        heads: 16,
        kv_heads: 16,
        head_dim: 96,
        vocab: 32002,
        context: 2048,
        theta: 10000.0,
        style: HfStyle::OneBitLlm,
    },
    Shape {
        name: "bitnet-3b",
        hidden: 3200,
        intermediate: 8640,
        layers: 26,
        heads: 32,
        kv_heads: 32,
        head_dim: 100,
        vocab: 32002,
        context: 2048,
        theta: 10000.0,
        style: HfStyle::OneBitLlm,
    },
    Shape {
        name: "llama3-8b-1.58",
        hidden: 4096,
        intermediate: 14336,
        layers: 32,
        heads: 32,
        kv_heads: 8,
        head_dim: 128,
        vocab: 128256,
        context: 8192,
        theta: 500000.0,
        style: HfStyle::LlamaPacked,
    },
    Shape {
        name: "falcon3-1b",
        hidden: 2048,
        intermediate: 8192,
        layers: 18,
        heads: 8,
        kv_heads: 4,
        head_dim: 256,
        vocab: 131072,
        context: 8192,
        theta: 1000042.0,
        style: HfStyle::LlamaPacked,
    },
    Shape {
        name: "falcon3-3b",
        hidden: 3072,
        intermediate: 9216,
        layers: 22,
        heads: 12,
        kv_heads: 4,
        head_dim: 256,
        vocab: 131072,
        context: 8192,
        theta: 1000042.0,
        style: HfStyle::LlamaPacked,
    },
    Shape {
        name: "falcon3-7b",
        hidden: 3072,
        intermediate: 23040,
        layers: 28,
        heads: 12,
        kv_heads: 4,
        head_dim: 256,
        vocab: 131072,
        context: 8192,
        theta: 1000042.0,
        style: HfStyle::LlamaPacked,
    },
    Shape {
        name: "falcon3-10b",
        hidden: 3072,
        intermediate: 23040,
        layers: 40,
        heads: 12,
        kv_heads: 4,
        head_dim: 256,
        vocab: 131072,
        context: 8192,
        theta: 1000042.0,
        style: HfStyle::LlamaPacked,
    },
    Shape {
        name: "bitnet-30b",
        hidden: 6656,
        intermediate: 16384,
        layers: 60,
        heads: 52,
        kv_heads: 52,
        head_dim: 128,
        vocab: 32002,
        context: 2048,
        theta: 10000.0,
        style: HfStyle::OneBitLlm,
    },
    Shape {
        name: "bitnet-70b",
        hidden: 8192,
        intermediate: 24576,
        layers: 80,
        heads: 64,
        kv_heads: 64,
        head_dim: 128,
        vocab: 32002,
        context: 2048,
        theta: 10000.0,
        style: HfStyle::OneBitLlm,
    },
    Shape {
        name: "bitnet-100b",
        hidden: 8192,
        intermediate: 45568,
        layers: 72,
        heads: 64,
        kv_heads: 64,
        head_dim: 128,
        vocab: 32002,
        context: 2048,
        theta: 10000.0,
        style: HfStyle::OneBitLlm,
    },
];

impl Shape {
    pub fn find(name: &str) -> Result<&'static Shape, SyntheticError> {
        SHAPES
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| SyntheticError::UnknownShape(name.to_string()))
    }

    /// The model configuration of this shape.
    pub fn config(&self) -> ModelConfig {
        let bitnet = self.style == HfStyle::BitNetLatent;
        ModelConfig {
            family: format!("synthetic-{}", self.name),
            hidden_size: self.hidden,
            intermediate_size: self.intermediate,
            num_layers: self.layers,
            num_heads: self.heads,
            num_kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            vocab_size: self.vocab,
            context_length: self.context,
            rope_theta: self.theta,
            rope_scaling: None,
            rms_norm_eps: 1e-5,
            activation: if bitnet {
                Activation::Relu2
            } else {
                Activation::Silu
            },
            sub_norms: self.style != HfStyle::LlamaPacked,
            tied_embeddings: self.style != HfStyle::LlamaPacked,
            attention_bias: false,
            qk_norm: false,
        }
    }

    /// Every tensor of the model: canonical name, shape `[rows, cols]` (`cols == 0` for vectors),
    /// and whether it is a ternary projection.
    fn tensors(&self) -> Vec<(String, [u64; 2], bool)> {
        let c = self.config();
        let (h, v) = (c.hidden_size as u64, c.vocab_size as u64);
        let mut out = vec![(names::TOKEN_EMBD.to_string(), [v, h], false)];
        for l in 0..c.num_layers {
            for t in LayerTensor::ALL {
                if let Some(shape) = t.shape(&c) {
                    let shape = [shape[0], shape.get(1).copied().unwrap_or(0)];
                    out.push((names::layer(l, t), shape, t.is_projection()));
                }
            }
        }
        out.push((names::OUTPUT_NORM.to_string(), [h, 0], false));
        if !c.tied_embeddings {
            out.push((names::OUTPUT.to_string(), [v, h], false));
        }
        out
    }
}

/// xorshift64*: fast, and each tensor (and each chunk of rows) gets its own stream, so the output
/// is the same whatever the thread count.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        Rng((seed ^ stream.wrapping_mul(0x9E3779B97F4A7C15)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
}

/// Rows generated per parallel work item and per streamed piece of a dense matrix.
const CHUNK_ROWS: usize = 1024;

/// Random ternary values, about a third each of -1, 0 and +1.
fn ternary_values(rows: usize, cols: usize, seed: u64, stream: u64) -> Vec<i8> {
    let mut values = vec![0i8; rows * cols];
    values
        .par_chunks_mut(CHUNK_ROWS * cols)
        .enumerate()
        .for_each(|(i, chunk)| {
            let mut rng = Rng::new(seed, stream ^ ((i as u64) << 32));
            for v in chunk {
                *v = (rng.next() % 3) as i8 - 1;
            }
        });
    values
}

/// Random dense values in ±0.05 (about the spread of trained embeddings), as little-endian bytes
/// (for `i8_row`, the codes of those values at the scale 0.05 / 127; for `q4_b32`, random codes,
/// two a byte, for the scale 0.05 / 8).
fn dense_rows(
    rows: std::ops::Range<usize>,
    cols: usize,
    encoding: Encoding,
    seed: u64,
    stream: u64,
) -> Vec<u8> {
    let width = match encoding {
        Encoding::F32 => 4,
        Encoding::I8Row | Encoding::Q4B32 => 1,
        _ => 2,
    };
    let row_bytes = match encoding {
        Encoding::Q4B32 => cols / 2,
        _ => cols * width,
    };
    let mut out = vec![0u8; rows.len() * row_bytes];
    out.par_chunks_mut(row_bytes.max(1))
        .enumerate()
        .for_each(|(i, row)| {
            let mut rng = Rng::new(seed, stream ^ (((rows.start + i) as u64) << 24));
            if encoding == Encoding::Q4B32 {
                row.fill_with(|| (rng.next() >> 56) as u8);
                return;
            }
            for v in row.chunks_exact_mut(width) {
                let x = ((rng.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
                match encoding {
                    Encoding::F32 => v.copy_from_slice(&x.to_le_bytes()),
                    Encoding::I8Row => v[0] = (x / 0.05 * 127.0).round() as i8 as u8,
                    Encoding::Bf16 => v.copy_from_slice(&half::bf16::from_f32(x).to_le_bytes()),
                    _ => v.copy_from_slice(&half::f16::from_f32(x).to_le_bytes()),
                }
            }
        });
    out
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    pub tensors: usize,
    pub parameters: u64,
    pub bytes: u64,
}

/// Write a `.bitnet` model of `shape` with random weights.
pub fn write_bitnet(
    dest: &Path,
    shape: &Shape,
    layout: TernaryLayout,
    embeddings: Encoding,
    seed: u64,
) -> Result<Written, SyntheticError> {
    let tensors = shape.tensors();
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .map(|(name, [rows, cols], ternary)| match (ternary, cols) {
            (true, _) => TensorSpec::new(name, Encoding::Ternary(layout), &[*rows, *cols]),
            (false, 0) => TensorSpec::new(name, Encoding::F32, &[*rows]),
            (false, _) => TensorSpec::new(name, embeddings, &[*rows, *cols]),
        })
        .collect();
    let header = Header {
        model: shape.config(),
        tokenizer: None,
        generation: GenerationDefaults::default(),
        provenance: Provenance {
            source: Source::Synthetic {
                like: shape.name.to_string(),
                seed,
            },
            files: vec![],
            converter: format!("bitnet-convert {}", env!("CARGO_PKG_VERSION")),
            options: [
                ("layout".to_string(), json!(layout.label())),
                ("embeddings".to_string(), json!(embeddings.label())),
            ]
            .into_iter()
            .collect(),
        },
        tensors: vec![],
    };
    let writer = FileWriter::create(dest, header, &specs)?;
    let mut parameters = 0u64;
    for (stream, (spec, (_, [rows, cols], ternary))) in specs.iter().zip(&tensors).enumerate() {
        let (rows, cols) = (*rows as usize, *cols as usize);
        let stream = stream as u64;
        parameters += (rows * cols.max(1)) as u64;
        if *ternary {
            let values = ternary_values(rows, cols, seed, stream);
            let scale = 1.0 / (cols as f32).sqrt();
            writer.write_tensor(
                &spec.name,
                &parallel::pack(layout, rows, cols, &values, scale),
            )?;
        } else if cols == 0 {
            let ones: Vec<u8> = (0..rows).flat_map(|_| 1.0f32.to_le_bytes()).collect();
            writer.write_tensor(&spec.name, &ones)?;
        } else {
            let mut w = writer.begin_tensor(&spec.name)?;
            // Scales first (SPEC.md §5), then the rows: random codes at a trained-like spread.
            let scales = match embeddings {
                Encoding::I8Row => Some((0.05f32 / 127.0).to_le_bytes().repeat(rows)),
                Encoding::Q4B32 => {
                    let blocks = rows * cols / bitnet_format::Q4_BLOCK as usize;
                    Some(half::f16::from_f32(0.05 / 8.0).to_le_bytes().repeat(blocks))
                }
                _ => None,
            };
            if let Some(mut scales) = scales {
                scales.resize(
                    bitnet_format::align_up(scales.len() as u64).expect("small") as usize,
                    0,
                );
                w.write(&scales)?;
            }
            for start in (0..rows).step_by(CHUNK_ROWS) {
                let end = (start + CHUNK_ROWS).min(rows);
                w.write(&dense_rows(start..end, cols, embeddings, seed, stream))?;
            }
            w.finish()?;
        }
    }
    let bytes = writer.file_len();
    writer.finish()?;
    Ok(Written {
        tensors: specs.len(),
        parameters,
        bytes,
    })
}

/// The Hugging Face name of a canonical tensor, in `style`.
fn hf_name(canonical: &str, style: HfStyle) -> String {
    match canonical {
        names::TOKEN_EMBD => return "model.embed_tokens.weight".into(),
        names::OUTPUT_NORM => return "model.norm.weight".into(),
        names::OUTPUT => return "lm_head.weight".into(),
        _ => {}
    }
    let (layer, suffix) = canonical
        .strip_prefix("blk.")
        .and_then(|r| r.split_once('.'))
        .expect("canonical layer name");
    let module = match (suffix, style) {
        ("attn_norm", _) => "input_layernorm",
        ("attn_q", _) => "self_attn.q_proj",
        ("attn_k", _) => "self_attn.k_proj",
        ("attn_v", _) => "self_attn.v_proj",
        ("attn_output", _) => "self_attn.o_proj",
        ("attn_sub_norm", HfStyle::OneBitLlm) => "self_attn.inner_attn_ln",
        ("attn_sub_norm", _) => "self_attn.attn_sub_norm",
        ("ffn_norm", _) => "post_attention_layernorm",
        ("ffn_gate", _) => "mlp.gate_proj",
        ("ffn_up", _) => "mlp.up_proj",
        ("ffn_down", _) => "mlp.down_proj",
        ("ffn_sub_norm", HfStyle::OneBitLlm) => "mlp.ffn_layernorm",
        ("ffn_sub_norm", _) => "mlp.ffn_sub_norm",
        _ => unreachable!("every canonical layer tensor is listed"),
    };
    format!("model.layers.{layer}.{module}.weight")
}

/// The `config.json` of `shape` as its Hugging Face repository would have it.
fn hf_config(shape: &Shape) -> serde_json::Value {
    let c = shape.config();
    let mut config = json!({
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "vocab_size": c.vocab_size,
        "max_position_embeddings": c.context_length,
        "rope_theta": c.rope_theta,
        "rms_norm_eps": c.rms_norm_eps,
        "tie_word_embeddings": c.tied_embeddings,
        "bos_token_id": 1,
        "eos_token_id": 2,
    });
    let extra = match shape.style {
        HfStyle::BitNetLatent => json!({
            "architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "hidden_act": "relu2",
            "torch_dtype": "bfloat16",
            "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"},
        }),
        HfStyle::OneBitLlm => json!({
            "architectures": ["BitnetForCausalLM"], "model_type": "llama", "hidden_act": "silu", "torch_dtype": "bfloat16",
        }),
        HfStyle::LlamaPacked => json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "torch_dtype": "bfloat16",
            "head_dim": c.head_dim,
            "quantization_config": {"quant_method": "bitnet", "modules_to_not_convert": null},
        }),
    };
    for (k, v) in extra.as_object().expect("object") {
        config[k] = v.clone();
    }
    config
}

/// Transformers' `pack_weights` layout: `u8 [rows/4, cols]`, byte `[r, c]` holding rows
/// `r, R+r, 2R+r, 3R+r` of column `c` in bit pairs 1:0, 3:2, 5:4, 7:6, code = w + 1.
fn hf_pack(values: &[i8], rows: usize, cols: usize) -> Vec<u8> {
    let quarter = rows / 4;
    let mut out = vec![0u8; quarter * cols];
    out.par_chunks_mut(cols).enumerate().for_each(|(r, row)| {
        for (c, byte) in row.iter_mut().enumerate() {
            *byte = (0..4).fold(0u8, |b, q| {
                b | (((values[(q * quarter + r) * cols + c] + 1) as u8) << (2 * q))
            });
        }
    });
    out
}

/// Write a Hugging Face checkpoint (config.json + one model.safetensors) of `shape` into `dir`:
/// bf16 latent projections for the BitNet and 1bitLLM shapes, packed u8 with a `weight_scale` for the
/// Llama-architecture ones, as those repositories publish them. The files are written into a
/// temporary directory beside `dir`, moved into place when complete ([`PartialDir`]).
pub fn write_hf(dir: &Path, shape: &Shape, seed: u64) -> Result<Written, SyntheticError> {
    // Errors name the files' final paths, not the temporary directory's.
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SyntheticError::Io { path, source }
    };
    let partial = PartialDir::create(dir).map_err(io(dir))?;
    let config_path = dir.join("config.json");
    let config = serde_json::to_string_pretty(&hf_config(shape)).expect("json");
    std::fs::write(partial.path().join("config.json"), config + "\n").map_err(io(&config_path))?;

    // Plan every safetensors entry (name, dtype, shape, bytes) so the header can be written first.
    let packed = shape.style == HfStyle::LlamaPacked;
    let mut entries: Vec<(String, &str, Vec<u64>, u64)> = Vec::new();
    for (name, [rows, cols], ternary) in shape.tensors() {
        let hf = hf_name(&name, shape.style);
        if ternary && packed {
            entries.push((hf.clone(), "U8", vec![rows / 4, cols], rows / 4 * cols));
            let scale = hf.replace(".weight", ".weight_scale");
            entries.push((scale, "BF16", vec![1], 2));
        } else if cols == 0 {
            entries.push((hf, "BF16", vec![rows], rows * 2));
        } else {
            entries.push((hf, "BF16", vec![rows, cols], rows * cols * 2));
        }
    }
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, dtype, shape, bytes) in &entries {
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header = serde_json::to_vec(&header).expect("json");
    header.resize(header.len().next_multiple_of(8), b' ');

    let path = dir.join("model.safetensors");
    let file =
        std::fs::File::create(partial.path().join("model.safetensors")).map_err(io(&path))?;
    let mut out = BufWriter::with_capacity(1 << 22, file);
    out.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io(&path))?;
    out.write_all(&header).map_err(io(&path))?;
    let mut parameters = 0u64;
    for (stream, (_, [rows, cols], ternary)) in shape.tensors().into_iter().enumerate() {
        let (rows, cols, stream) = (rows as usize, cols as usize, stream as u64);
        parameters += (rows * cols.max(1)) as u64;
        let write = |out: &mut BufWriter<std::fs::File>, bytes: &[u8]| {
            out.write_all(bytes).map_err(io(&path))
        };
        if ternary && packed {
            let values = ternary_values(rows, cols, seed, stream);
            write(&mut out, &hf_pack(&values, rows, cols))?;
            write(
                &mut out,
                &half::bf16::from_f32((cols as f32).sqrt()).to_le_bytes(),
            )?;
        } else if ternary {
            // Latent weights: ternary values times a per-tensor scale, so absmean recovers them.
            let values = ternary_values(rows, cols, seed, stream);
            let scale = 0.02f32;
            let bytes: Vec<u8> = values
                .par_iter()
                .flat_map_iter(|&v| half::bf16::from_f32(v as f32 * scale).to_le_bytes())
                .collect();
            write(&mut out, &bytes)?;
        } else if cols == 0 {
            let ones: Vec<u8> = (0..rows)
                .flat_map(|_| half::bf16::from_f32(1.0).to_le_bytes())
                .collect();
            write(&mut out, &ones)?;
        } else {
            for start in (0..rows).step_by(CHUNK_ROWS) {
                let end = (start + CHUNK_ROWS).min(rows);
                write(
                    &mut out,
                    &dense_rows(start..end, cols, Encoding::Bf16, seed, stream),
                )?;
            }
        }
    }
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|file| file.sync_all())
        .map_err(io(&path))?;
    partial.persist(dir).map_err(io(dir))?;
    Ok(Written {
        tensors: entries.len(),
        parameters,
        bytes: 8 + header.len() as u64 + offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_format::BitnetFile;

    #[test]
    fn q4_embeddings_are_random_codes_at_one_trained_like_scale() {
        let shape = Shape {
            name: "tiny",
            hidden: 256,
            intermediate: 512,
            layers: 1,
            heads: 2,
            kv_heads: 1,
            head_dim: 128,
            vocab: 300,
            context: 64,
            theta: 10000.0,
            style: HfStyle::LlamaPacked,
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.bitnet");
        let layout = TernaryLayout::Tiled { tile_rows: 16 };
        let written = write_bitnet(&out, &shape, layout, Encoding::Q4B32, 7).unwrap();
        let file = BitnetFile::open(&out).unwrap();
        file.verify().unwrap();
        assert_eq!(written.tensors, file.tensors().len());
        assert_eq!(file.header().provenance.options["embeddings"], "q4_b32");
        for name in [names::TOKEN_EMBD, names::OUTPUT] {
            let view = file.tensor(name).unwrap();
            assert_eq!(view.info.encoding, Encoding::Q4B32, "{name}");
            let values = view.to_f32().unwrap();
            assert_eq!(values.len(), 300 * 256);
            // Codes 0 and 15 at d = 0.05 / 8: both ends of the range occur.
            let d = half::f16::from_f32(0.05 / 8.0).to_f32();
            assert!(values.iter().all(|&v| v >= -8.0 * d && v <= 7.0 * d));
            assert!(values.contains(&(-8.0 * d)) && values.contains(&(7.0 * d)));
        }
    }

    /// bitnet.cpp's dummy models hold as many parameters as their names say (within 2%), with the
    /// conventions of its `BitnetForCausalLM`: sub-norms, tied embeddings, one KV head per head.
    #[test]
    fn bitnet_cpp_dummy_shapes_have_the_size_of_their_names() {
        for (name, billions) in [
            ("bitnet-30b", 30.0),
            ("bitnet-70b", 70.0),
            ("bitnet-100b", 100.0),
        ] {
            let shape = Shape::find(name).unwrap();
            let c = shape.config();
            assert!(c.sub_norms && c.tied_embeddings, "{name}");
            assert_eq!(c.activation, Activation::Silu, "{name}");
            assert_eq!(c.num_kv_heads, c.num_heads, "{name}");
            assert_eq!(c.head_dim * c.num_heads, c.hidden_size, "{name}");
            assert_eq!((c.vocab_size, c.context_length), (32002, 2048), "{name}");
            let parameters: u64 = shape
                .tensors()
                .iter()
                .map(|(_, [rows, cols], _)| rows * (*cols).max(1))
                .sum();
            let ratio = parameters as f64 / (billions * 1e9);
            assert!((0.98..1.02).contains(&ratio), "{name}: {parameters}");
        }
    }
}
