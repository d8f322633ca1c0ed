//! Which checkpoint tensor becomes which canonical tensor, in what encoding, in what order. Every
//! tensor the configuration requires must be there with the right dtype and shape; anything else in
//! the checkpoint is an error, except the few harmless buffers skipped with a note.

use std::collections::BTreeMap;

use bitnet_format::names::{self, HfTensor, LayerTensor};
use bitnet_format::{Encoding, ModelConfig, TernaryLayout};
use safetensors::Dtype;

use crate::family::ScaleRule;
use crate::floats::FloatKind;
use crate::source::Weights;

/// What `--embeddings` asks for `token_embd` and `output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingsChoice {
    /// Keep the checkpoint's dtype (f16, bf16 or f32).
    Source,
    F16,
    Bf16,
    F32,
    /// `i8_row`: per-row absmax int8.
    I8,
    /// `q4_b32`: 4-bit codes with an f16 scale per block of 32 columns (GGML's Q4_0 arithmetic).
    Q4,
}

impl EmbeddingsChoice {
    pub fn label(self) -> &'static str {
        match self {
            EmbeddingsChoice::Source => "source",
            EmbeddingsChoice::F16 => "f16",
            EmbeddingsChoice::Bf16 => "bf16",
            EmbeddingsChoice::F32 => "f32",
            EmbeddingsChoice::I8 => "i8",
            EmbeddingsChoice::Q4 => "q4",
        }
    }
}

/// How a planned tensor is made from its source.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorKind {
    /// A full-precision tensor, converted to the planned encoding.
    Float { source: FloatKind },
    /// Latent weights, quantized with per-tensor absmean.
    Latent { source: FloatKind },
    /// Weights packed by `pack_weights`, with their `weight_scale` tensor.
    Packed { scale: String, rule: ScaleRule },
}

/// One tensor of the output file.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTensor {
    /// Canonical name, e.g. `blk.0.attn_q`.
    pub name: String,
    /// The checkpoint's name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub source: String,
    /// The shard file holding it.
    pub file: String,
    /// Logical shape (`[out, in]` for matrices).
    pub shape: Vec<u64>,
    pub encoding: Encoding,
    pub kind: TensorKind,
}

/// The output file's tensors, in file order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tensors: Vec<PlannedTensor>,
    /// Settled from the tensors: no `lm_head.weight` means tied.
    pub tied_embeddings: bool,
    pub notes: Vec<String>,
}

/// Why the checkpoint's tensors do not make the model its configuration describes.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the checkpoint lacks tensor {hf} ({canonical}), which config.json requires")]
    Missing { canonical: String, hf: String },
    #[error("the checkpoint has tensors this converter does not know: {}", .names.join(", "))]
    Unknown { names: Vec<String> },
    #[error("tensors {first} and {second} both map to {canonical}")]
    Ambiguous {
        canonical: String,
        first: String,
        second: String,
    },
    #[error("tensor {tensor} ({file}): shape {shape:?}, but config.json implies {expected:?}")]
    Shape {
        tensor: String,
        file: String,
        shape: Vec<usize>,
        expected: Vec<u64>,
    },
    #[error("tensor {tensor} ({file}): dtype {dtype:?} is not supported here ({expected})")]
    Dtype {
        tensor: String,
        file: String,
        dtype: String,
        expected: &'static str,
    },
    #[error("tensor {tensor} ({file}): packed ternary weights without their scale tensor {scale}")]
    MissingScale {
        tensor: String,
        file: String,
        scale: String,
    },
    #[error(
        "tensor {scale} ({file}): a weight_scale for {tensor}, whose weights are not packed ({dtype:?})"
    )]
    UnexpectedScale {
        scale: String,
        file: String,
        tensor: String,
        dtype: String,
    },
    #[error(
        "tensor {tensor} ({file}): packed ternary weights need a row count divisible by 4, but config.json implies {rows} rows"
    )]
    RowsNotDivisibleBy4 {
        tensor: String,
        file: String,
        rows: u64,
    },
    #[error(
        "tensor {tensor} ({file}): --embeddings q4 needs a column count that is a multiple of 32, not {cols}"
    )]
    Q4Columns {
        tensor: String,
        file: String,
        cols: u64,
    },
}

/// Buffers some checkpoints carry that the format recomputes (RoPE frequencies).
fn is_harmless(name: &str) -> bool {
    name.ends_with(".rotary_emb.inv_freq") || name == "rotary_emb.inv_freq"
}

/// The HF name a canonical tensor is expected under (for messages about missing tensors).
fn expected_hf_name(canonical: &str, one_bit_llm_names: bool) -> String {
    let global = match canonical {
        names::TOKEN_EMBD => Some("model.embed_tokens.weight"),
        names::OUTPUT_NORM => Some("model.norm.weight"),
        names::OUTPUT => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(g) = global {
        return g.to_string();
    }
    let Some((layer, suffix)) = canonical
        .strip_prefix("blk.")
        .and_then(|rest| rest.split_once('.'))
    else {
        return canonical.to_string();
    };
    let module = match suffix {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_q_bias" => return format!("model.layers.{layer}.self_attn.q_proj.bias"),
        "attn_k_bias" => return format!("model.layers.{layer}.self_attn.k_proj.bias"),
        "attn_v_bias" => return format!("model.layers.{layer}.self_attn.v_proj.bias"),
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "attn_sub_norm" if one_bit_llm_names => "self_attn.inner_attn_ln",
        "attn_sub_norm" => "self_attn.attn_sub_norm",
        "attn_output" => "self_attn.o_proj",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_sub_norm" if one_bit_llm_names => "mlp.ffn_layernorm",
        "ffn_sub_norm" => "mlp.ffn_sub_norm",
        "ffn_down" => "mlp.down_proj",
        other => other,
    };
    format!("model.layers.{layer}.{module}.weight")
}

/// Expected canonical tensors with their logical shapes, in file order.
pub fn expected_tensors(config: &ModelConfig, tied: bool) -> Vec<(String, Vec<u64>)> {
    let h = config.hidden_size as u64;
    let v = config.vocab_size as u64;
    let mut out = vec![(names::TOKEN_EMBD.to_string(), vec![v, h])];
    for layer in 0..config.num_layers {
        for t in LayerTensor::ALL {
            if let Some(shape) = t.shape(config) {
                out.push((names::layer(layer, t), shape));
            }
        }
    }
    out.push((names::OUTPUT_NORM.to_string(), vec![h]));
    if !tied {
        out.push((names::OUTPUT.to_string(), vec![v, h]));
    }
    out
}

fn is_projection(canonical: &str) -> bool {
    canonical
        .rsplit('.')
        .next()
        .and_then(|s| LayerTensor::ALL.into_iter().find(|t| t.suffix() == s))
        .is_some_and(|t| canonical.starts_with("blk.") && t.is_projection())
}

/// Plan the output file from the checkpoint's tensors.
pub fn plan(
    config: &ModelConfig,
    config_ties: Option<bool>,
    scale_rule: ScaleRule,
    weights: &Weights,
    layout: TernaryLayout,
    embeddings: EmbeddingsChoice,
) -> Result<Plan, PlanError> {
    let mut notes = Vec::new();
    let mut by_canonical: BTreeMap<String, String> = BTreeMap::new();
    let mut scales: BTreeMap<String, String> = BTreeMap::new();
    let mut unknown = Vec::new();
    let mut skipped = 0usize;
    for name in weights.names() {
        let (map, canonical) = match names::from_hf(name) {
            Some(HfTensor::Canonical(c)) => (&mut by_canonical, c),
            Some(HfTensor::WeightScale(c)) => (&mut scales, c),
            None if is_harmless(name) => {
                skipped += 1;
                continue;
            }
            None => {
                unknown.push(name.to_string());
                continue;
            }
        };
        if let Some(first) = map.insert(canonical.clone(), name.to_string()) {
            return Err(PlanError::Ambiguous {
                canonical,
                first,
                second: name.to_string(),
            });
        }
    }
    if skipped > 0 {
        notes.push(format!(
            "skipped {skipped} rotary_emb.inv_freq buffer(s): RoPE frequencies come from rope_theta"
        ));
    }

    let has_output = by_canonical.contains_key(names::OUTPUT);
    let tied = !has_output;
    if let Some(says) = config_ties
        && says != tied
    {
        notes.push(format!(
            "config.json says tie_word_embeddings = {says}, but the checkpoint {} lm_head.weight: following the tensors ({})",
            if has_output { "has" } else { "has no" },
            if tied { "tied" } else { "untied" }
        ));
    }

    let expected = expected_tensors(config, tied);
    for canonical in by_canonical.keys().chain(scales.keys()) {
        if !expected.iter().any(|(n, _)| n == canonical) {
            let hf = by_canonical
                .get(canonical)
                .or_else(|| scales.get(canonical))
                .expect("key of one of the maps");
            unknown.push(hf.clone());
        }
    }
    if !unknown.is_empty() {
        unknown.sort();
        unknown.dedup();
        return Err(PlanError::Unknown { names: unknown });
    }

    let one_bit_llm_names = by_canonical.values().any(|n| n.contains("inner_attn_ln"));
    let mut tensors = Vec::with_capacity(expected.len());
    for (canonical, shape) in expected {
        let Some(hf) = by_canonical.get(&canonical) else {
            return Err(PlanError::Missing {
                hf: expected_hf_name(&canonical, one_bit_llm_names),
                canonical,
            });
        };
        let t = weights.get(hf).expect("name listed by the checkpoint");
        let file = t.file.to_string();
        let dtype_error = |expected| PlanError::Dtype {
            tensor: hf.clone(),
            file: file.clone(),
            dtype: format!("{:?}", t.dtype),
            expected,
        };
        let shape_error = |expected: Vec<u64>| PlanError::Shape {
            tensor: hf.clone(),
            file: file.clone(),
            shape: t.shape.to_vec(),
            expected,
        };
        let same_shape = |want: &[u64]| {
            t.shape.len() == want.len() && t.shape.iter().zip(want).all(|(a, b)| *a as u64 == *b)
        };
        let (encoding, kind) = if is_projection(&canonical) {
            let (rows, cols) = (shape[0], shape[1]);
            let scale = scales.get(&canonical);
            if t.dtype == Dtype::U8 {
                if rows % 4 != 0 {
                    return Err(PlanError::RowsNotDivisibleBy4 {
                        tensor: hf.clone(),
                        file,
                        rows,
                    });
                }
                if !same_shape(&[rows / 4, cols]) {
                    return Err(shape_error(vec![rows / 4, cols]));
                }
                let scale = scale.ok_or_else(|| PlanError::MissingScale {
                    tensor: hf.clone(),
                    file: file.clone(),
                    scale: hf
                        .strip_suffix(".weight")
                        .map(|s| format!("{s}.weight_scale"))
                        .unwrap_or_default(),
                })?;
                (
                    Encoding::Ternary(layout),
                    TensorKind::Packed {
                        scale: scale.clone(),
                        rule: scale_rule,
                    },
                )
            } else {
                let source = FloatKind::from_dtype(t.dtype).ok_or_else(|| {
                    dtype_error("projections are packed U8 or f16, bf16, f32 latent weights")
                })?;
                if let Some(scale) = scale {
                    return Err(PlanError::UnexpectedScale {
                        scale: scale.clone(),
                        file: weights
                            .get(scale)
                            .map(|s| s.file.to_string())
                            .unwrap_or_default(),
                        tensor: hf.clone(),
                        dtype: format!("{:?}", t.dtype),
                    });
                }
                if !same_shape(&shape) {
                    return Err(shape_error(shape));
                }
                (Encoding::Ternary(layout), TensorKind::Latent { source })
            }
        } else {
            let source = FloatKind::from_dtype(t.dtype)
                .ok_or_else(|| dtype_error("full-precision tensors are f16, bf16 or f32"))?;
            if !same_shape(&shape) {
                return Err(shape_error(shape));
            }
            let is_embedding = canonical == names::TOKEN_EMBD || canonical == names::OUTPUT;
            let encoding = match (is_embedding, embeddings) {
                (false, _) => Encoding::F32,
                (true, EmbeddingsChoice::F16) => Encoding::F16,
                (true, EmbeddingsChoice::Bf16) => Encoding::Bf16,
                (true, EmbeddingsChoice::F32) => Encoding::F32,
                (true, EmbeddingsChoice::I8) => Encoding::I8Row,
                (true, EmbeddingsChoice::Q4) => Encoding::Q4B32,
                (true, EmbeddingsChoice::Source) => match source {
                    FloatKind::F16 => Encoding::F16,
                    FloatKind::Bf16 => Encoding::Bf16,
                    FloatKind::F32 => Encoding::F32,
                },
            };
            if encoding == Encoding::Q4B32 && !shape[1].is_multiple_of(bitnet_format::Q4_BLOCK) {
                return Err(PlanError::Q4Columns {
                    tensor: hf.clone(),
                    file,
                    cols: shape[1],
                });
            }
            (encoding, TensorKind::Float { source })
        };
        tensors.push(PlannedTensor {
            name: canonical,
            source: hf.clone(),
            file,
            shape,
            encoding,
            kind,
        });
    }
    Ok(Plan {
        tensors,
        tied_embeddings: tied,
        notes,
    })
}
