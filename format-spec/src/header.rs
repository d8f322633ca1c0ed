//! The JSON header (SPEC.md §3): model configuration, tokenizer, generation defaults, provenance and
//! the tensor directory. Unknown fields are ignored so that newer minor versions stay readable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::encoding::LayoutParams;

/// The whole header as stored in the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub model: ModelConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<TokenizerInfo>,
    #[serde(default)]
    pub generation: GenerationDefaults,
    pub provenance: Provenance,
    pub tensors: Vec<TensorEntry>,
}

/// The hyper-parameters the runtime needs; nothing here has a default, so no library default can
/// silently stand in for a checkpoint's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Informative family name (`bitnet-2b4t`, `bitnet-1bitllm`, `llama-bitnet`, `falcon3-bitnet`, ...).
    pub family: String,
    pub hidden_size: u32,
    pub intermediate_size: u32,
    pub num_layers: u32,
    pub num_heads: u32,
    pub num_kv_heads: u32,
    pub head_dim: u32,
    pub vocab_size: u32,
    pub context_length: u32,
    pub rope_theta: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    pub rms_norm_eps: f64,
    pub activation: Activation,
    /// RMSNorms before `o_proj` (`attn_sub_norm`) and before `down_proj` (`ffn_sub_norm`).
    pub sub_norms: bool,
    /// The output matrix is the token embedding (no `output` tensor).
    pub tied_embeddings: bool,
    /// Biases added to the q, k and v projections (`attn_{q,k,v}_bias`, Qwen2). Absent: false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub attention_bias: bool,
    /// RMSNorm of each query and key head before RoPE (`attn_q_norm`, `attn_k_norm`, Qwen3).
    /// Absent: false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub qk_norm: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Activation of the gated MLP: `act(gate) · up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `relu(x)²`
    Relu2,
    /// `x · sigmoid(x)`
    Silu,
}

/// RoPE frequency scaling, as in Hugging Face's `rope_scaling`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RopeScaling {
    /// Positions divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's piecewise frequency scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_context_length: u32,
    },
}

/// Everything needed to turn text into token ids and back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenizerInfo {
    /// The Hugging Face `tokenizer.json` document, embedded as a JSON object.
    pub tokenizer_json: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    /// Generation stops at any of these.
    #[serde(default)]
    pub eos_token_ids: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
    /// Whether a prompt starts with the BOS token.
    #[serde(default)]
    pub add_bos_token: bool,
}

/// Sampling defaults from the checkpoint's `generation_config.json`; absent means "runtime default".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<u32>,
}

/// Where the model came from and how it was converted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub source: Source,
    /// Every source file read, with its SHA-256.
    #[serde(default)]
    pub files: Vec<SourceFile>,
    /// Converter name and version, e.g. `bitnet-convert 0.1.0`.
    pub converter: String,
    /// The options the converter ran with.
    #[serde(default)]
    pub options: BTreeMap<String, serde_json::Value>,
}

/// The checkpoint a file was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    HuggingFace {
        repo: String,
        revision: String,
    },
    Directory {
        path: String,
    },
    Gguf {
        path: String,
    },
    Synthetic {
        like: String,
        seed: u64,
    },
    /// A kind written by a newer converter; provenance is informative, so it is not an error.
    #[serde(other)]
    Other,
}

/// One source file and its SHA-256 (lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// One entry of the tensor directory, as stored. [`crate::TensorInfo`] is its checked form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorEntry {
    pub name: String,
    pub encoding: String,
    pub shape: Vec<u64>,
    /// Offset of the first byte, relative to the start of the data section.
    pub offset: u64,
    pub length: u64,
    /// CRC-32 (ISO-HDLC, as zlib's `crc32`) of the tensor's bytes: 8 lower-case hex digits.
    pub crc32: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<LayoutParams>,
}

impl ModelConfig {
    /// Key elements (and as many value elements) one cached position holds: every layer's KV
    /// heads × head dim. Saturating, so that it can be asked of a header not yet validated.
    pub fn kv_elements_per_position(&self) -> u64 {
        [self.num_layers, self.num_kv_heads, self.head_dim]
            .into_iter()
            .fold(1u64, |acc, n| acc.saturating_mul(n as u64))
    }

    /// Structural checks a runtime relies on; `Err` names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("context_length", self.context_length),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(format!(
                "num_heads {} is not a multiple of num_kv_heads {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!("rope_theta {} must be positive", self.rope_theta));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!(
                "rms_norm_eps {} must be positive",
                self.rms_norm_eps
            ));
        }
        let positive_real = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("rope_scaling.{name} {v} must be positive"))
            }
        };
        match self.rope_scaling {
            None => {}
            Some(RopeScaling::Linear { factor }) => positive_real("factor", factor)?,
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context_length,
            }) => {
                positive_real("factor", factor)?;
                positive_real("low_freq_factor", low_freq_factor)?;
                positive_real("high_freq_factor", high_freq_factor)?;
                if high_freq_factor <= low_freq_factor {
                    return Err("rope_scaling.high_freq_factor must exceed low_freq_factor".into());
                }
                if original_context_length == 0 {
                    return Err("rope_scaling.original_context_length must be positive".into());
                }
            }
        }
        Ok(())
    }
}
