//! `config.json` → which BitNet b1.58 family a checkpoint is, how its weight scales are to be read,
//! and the format's [`ModelConfig`]. No library default stands in for a value the checkpoint must
//! give; the few defaults used are listed on [`from_config`].

use bitnet_format::{Activation, ModelConfig, RopeScaling};
use serde_json::{Map, Value};

/// The checkpoint families this converter knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// microsoft/bitnet-b1.58-2B-4T and -2B-4T-bf16 (`BitNetForCausalLM`).
    Bitnet2b4t,
    /// 1bitLLM/bitnet_b1_58-large and -3B (`BitnetForCausalLM`).
    OneBitLlm,
    /// HF1BitLLM/Llama3-8B-1.58 (`LlamaForCausalLM` + `quant_method: bitnet`).
    LlamaBitnet,
    /// tiiuae/Falcon3-*-1.58bit (also `LlamaForCausalLM` + `quant_method: bitnet`).
    Falcon3Bitnet,
    /// tiiuae/Falcon-E-* (Falcon-Edge; also `LlamaForCausalLM` + `quant_method: bitnet`).
    FalconE,
    /// `MistralForCausalLM` + `quant_method: bitnet`: Llama's forward pass.
    MistralBitnet,
    /// `Qwen2ForCausalLM` + `quant_method: bitnet`: biases on the q, k and v projections.
    Qwen2Bitnet,
    /// `Qwen3ForCausalLM` + `quant_method: bitnet`: an RMSNorm on each query and key head.
    Qwen3Bitnet,
}

impl Family {
    /// The informative `model.family` of the header.
    pub fn name(self) -> &'static str {
        match self {
            Family::Bitnet2b4t => "bitnet-2b4t",
            Family::OneBitLlm => "bitnet-1bitllm",
            Family::LlamaBitnet => "llama-bitnet",
            Family::Falcon3Bitnet => "falcon3-bitnet",
            Family::FalconE => "falcon-e",
            Family::MistralBitnet => "mistral-bitnet",
            Family::Qwen2Bitnet => "qwen2-bitnet",
            Family::Qwen3Bitnet => "qwen3-bitnet",
        }
    }
}

/// What the list of supported architectures says in errors.
pub const SUPPORTED: &str = "BitNetForCausalLM (microsoft/bitnet-b1.58-2B-4T, -2B-4T-bf16), \
BitnetForCausalLM (1bitLLM/bitnet_b1_58-large, -3B), LlamaForCausalLM with quantization_config \
quant_method \"bitnet\" (HF1BitLLM/Llama3-8B-1.58-100B-tokens, tiiuae/Falcon3-*-1.58bit, tiiuae/Falcon-E-*), \
and MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM with quant_method \"bitnet\"";

/// Decoder architectures transformers can load with `quant_method: bitnet` whose forward pass
/// needs something the format does not describe: what that is, for the error.
const MISSING_PIECES: &[(&str, &str)] = &[
    (
        "GemmaForCausalLM",
        "GELU activation, embeddings scaled by sqrt(hidden) and (1 + w) norms",
    ),
    (
        "Gemma2ForCausalLM",
        "GELU activation, logit soft-capping, sliding-window layers and extra norms",
    ),
    (
        "Gemma3ForCausalLM",
        "GELU activation, sliding-window layers and extra norms",
    ),
    (
        "Phi3ForCausalLM",
        "fused qkv_proj and gate_up_proj projections",
    ),
    (
        "PhiForCausalLM",
        "LayerNorm, a parallel attention/MLP block and partial RoPE",
    ),
    ("MixtralForCausalLM", "a mixture-of-experts MLP"),
    ("Qwen2MoeForCausalLM", "a mixture-of-experts MLP"),
    ("Qwen3MoeForCausalLM", "a mixture-of-experts MLP"),
    ("OlmoForCausalLM", "non-parametric LayerNorm"),
    (
        "GPTNeoXForCausalLM",
        "LayerNorm, fused QKV, a parallel block and partial RoPE",
    ),
    ("StableLmForCausalLM", "LayerNorm and partial RoPE"),
];

/// Whether a repo id, directory or model name names Falcon-E (Falcon-Edge): `falcon-e` or
/// `falcon_e` not followed by a letter or digit, in any case, e.g. `tiiuae/Falcon-E-1B-Instruct`,
/// `models--tiiuae--Falcon-E-3B-Base`, `falcon_e`; or `falcon-edge`.
pub fn is_falcon_e_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if name.contains("falcon-edge") {
        return true;
    }
    ["falcon-e", "falcon_e"].iter().any(|stem| {
        name.match_indices(stem).any(|(i, _)| {
            !name[i + stem.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
        })
    })
}

/// How a packed checkpoint's `weight_scale` relates to the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleRule {
    /// `y = acc · weight_scale` (`linear_class: autobitlinear`): the multiplier is `weight_scale`.
    Multiply,
    /// `y = acc / weight_scale` (`BitLinear`): the multiplier is `1 / weight_scale`.
    Divide,
}

/// Everything the converter learns from `config.json`.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub family: Family,
    pub architecture: String,
    /// The header's model configuration; `tied_embeddings` is what the config says and is settled
    /// against the tensors later.
    pub config: ModelConfig,
    /// `tie_word_embeddings` as written, if it is.
    pub config_ties_embeddings: Option<bool>,
    pub scale_rule: ScaleRule,
    /// One-line remarks for the user (defaults that were applied).
    pub notes: Vec<String>,
}

/// Why a `config.json` cannot be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config.json: not a JSON object")]
    NotAnObject,
    #[error(
        "config.json: unsupported architecture {architecture} (model_type {model_type}); supported: {SUPPORTED}"
    )]
    UnsupportedArchitecture {
        architecture: String,
        model_type: String,
    },
    #[error(
        "config.json: {architecture} with quant_method \"bitnet\" is not supported: the runtime has no {missing}"
    )]
    MissingPiece {
        architecture: String,
        missing: &'static str,
    },
    #[error("config.json: required field {field} is missing")]
    Missing { field: String },
    #[error("config.json: field {field}: {detail}")]
    Invalid { field: String, detail: String },
    #[error("config.json: hidden_act {value:?} is not supported (the format knows relu2 and silu)")]
    UnsupportedActivation { value: String },
    #[error(
        "config.json: rope_scaling type {kind:?} is not supported (the format knows linear and llama3)"
    )]
    UnsupportedRopeScaling { kind: String },
}

/// Read `config.json`. `name_hint` (repo id or directory name) helps tell Falcon-E and Falcon3
/// from Llama, which is informative only: the three are converted and run alike.
///
/// Defaults, each reported in [`ModelSpec::notes`] when used: `num_key_value_heads` = number of
/// attention heads; `head_dim` = hidden / heads; `rope_theta` = 10000 for `BitnetForCausalLM` and
/// Llama configs (transformers' LlamaConfig default; a `BitNetForCausalLM` config must give it).
pub fn from_config(config: &Value, name_hint: &str) -> Result<ModelSpec, ConfigError> {
    let c = config.as_object().ok_or(ConfigError::NotAnObject)?;
    let architectures: Vec<&str> = c
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let model_type = c.get("model_type").and_then(Value::as_str).unwrap_or("");
    let quant = c.get("quantization_config").and_then(Value::as_object);
    let quant_method = quant
        .and_then(|q| q.get("quant_method"))
        .and_then(Value::as_str);
    let linear_class = quant
        .and_then(|q| q.get("linear_class"))
        .and_then(Value::as_str);
    let mut notes = Vec::new();

    let unsupported = || ConfigError::UnsupportedArchitecture {
        architecture: if architectures.is_empty() {
            "(none given)".into()
        } else {
            architectures.join(", ")
        },
        model_type: if model_type.is_empty() {
            "(none)".into()
        } else {
            model_type.into()
        },
    };
    let (family, architecture) = if architectures.contains(&"BitNetForCausalLM") {
        (Family::Bitnet2b4t, "BitNetForCausalLM")
    } else if architectures.contains(&"BitnetForCausalLM") {
        (Family::OneBitLlm, "BitnetForCausalLM")
    } else if architectures.contains(&"LlamaForCausalLM") && quant_method == Some("bitnet") {
        let hidden = get_u32(c, "hidden_size")?;
        let heads = get_u32(c, "num_attention_heads")?;
        let explicit_head_dim = c
            .get("head_dim")
            .and_then(Value::as_u64)
            .is_some_and(|d| heads != 0 && d != (hidden / heads) as u64);
        let name = c
            .get("_name_or_path")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        let falcon = explicit_head_dim
            || name.contains("falcon")
            || name_hint.to_ascii_lowercase().contains("falcon");
        if is_falcon_e_name(&name) || is_falcon_e_name(name_hint) {
            (Family::FalconE, "LlamaForCausalLM")
        } else if falcon {
            (Family::Falcon3Bitnet, "LlamaForCausalLM")
        } else {
            (Family::LlamaBitnet, "LlamaForCausalLM")
        }
    } else if quant_method == Some("bitnet") && architectures.contains(&"MistralForCausalLM") {
        (Family::MistralBitnet, "MistralForCausalLM")
    } else if quant_method == Some("bitnet") && architectures.contains(&"Qwen2ForCausalLM") {
        (Family::Qwen2Bitnet, "Qwen2ForCausalLM")
    } else if quant_method == Some("bitnet") && architectures.contains(&"Qwen3ForCausalLM") {
        (Family::Qwen3Bitnet, "Qwen3ForCausalLM")
    } else if let Some((architecture, missing)) = MISSING_PIECES
        .iter()
        .find(|(a, _)| quant_method == Some("bitnet") && architectures.contains(a))
    {
        return Err(ConfigError::MissingPiece {
            architecture: architecture.to_string(),
            missing,
        });
    } else {
        return Err(unsupported());
    };

    // "autobitlinear" multiplies by weight_scale; BitLinear (absent or "bitlinear") divides.
    let scale_rule = match linear_class {
        Some("autobitlinear") => ScaleRule::Multiply,
        None | Some("bitlinear") => ScaleRule::Divide,
        Some(other) => {
            return Err(ConfigError::Invalid {
                field: "quantization_config.linear_class".into(),
                detail: format!("{other:?} is neither \"autobitlinear\" nor \"bitlinear\""),
            });
        }
    };

    let hidden_size = get_u32(c, "hidden_size")?;
    let num_heads = get_u32(c, "num_attention_heads")?;
    let num_kv_heads = match optional_u32(c, "num_key_value_heads")? {
        Some(v) => v,
        None => {
            notes.push(format!(
                "config.json has no num_key_value_heads; using num_attention_heads ({num_heads})"
            ));
            num_heads
        }
    };
    if num_heads == 0 {
        return Err(invalid("num_attention_heads", "must be positive"));
    }
    let head_dim = match optional_u32(c, "head_dim")? {
        Some(v) => v,
        None => {
            if hidden_size % num_heads != 0 {
                return Err(invalid(
                    "head_dim",
                    &format!(
                        "absent, and hidden_size {hidden_size} is not a multiple of num_attention_heads {num_heads}"
                    ),
                ));
            }
            hidden_size / num_heads
        }
    };
    let activation = match c.get("hidden_act").and_then(Value::as_str) {
        Some("relu2") => Activation::Relu2,
        Some("silu") => Activation::Silu,
        Some(other) => {
            return Err(ConfigError::UnsupportedActivation {
                value: other.to_string(),
            });
        }
        None => {
            return Err(ConfigError::Missing {
                field: "hidden_act".into(),
            });
        }
    };
    let rope_parameters = c.get("rope_parameters").and_then(Value::as_object);
    let rope_theta = match c
        .get("rope_theta")
        .or_else(|| rope_parameters.and_then(|p| p.get("rope_theta")))
    {
        Some(v) => v
            .as_f64()
            .ok_or_else(|| invalid("rope_theta", "not a number"))?,
        None if family != Family::Bitnet2b4t => {
            notes.push("config.json has no rope_theta; using 10000 (the Llama default)".into());
            10000.0
        }
        None => {
            return Err(ConfigError::Missing {
                field: "rope_theta".into(),
            });
        }
    };
    let rope_scaling = rope_scaling(c.get("rope_scaling").or(c.get("rope_parameters")))?;
    let rms_norm_eps = c
        .get("rms_norm_eps")
        .ok_or_else(|| ConfigError::Missing {
            field: "rms_norm_eps".into(),
        })?
        .as_f64()
        .ok_or_else(|| invalid("rms_norm_eps", "not a number"))?;
    let config_ties_embeddings = match c.get("tie_word_embeddings") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_bool()
                .ok_or_else(|| invalid("tie_word_embeddings", "not a boolean"))?,
        ),
    };

    let context_length = context_length(c, family, &mut notes)?;
    // Qwen3's attention_bias also puts a bias on o_proj, which the format has no place for.
    if family == Family::Qwen3Bitnet && c.get("attention_bias") == Some(&Value::Bool(true)) {
        return Err(invalid(
            "attention_bias",
            "true gives Qwen3's o_proj a bias, which the format has no place for",
        ));
    }
    let config = ModelConfig {
        family: family.name().to_string(),
        hidden_size,
        intermediate_size: get_u32(c, "intermediate_size")?,
        num_layers: get_u32(c, "num_hidden_layers")?,
        num_heads,
        num_kv_heads,
        head_dim,
        vocab_size: get_u32(c, "vocab_size")?,
        context_length,
        rope_theta,
        rope_scaling,
        rms_norm_eps,
        activation,
        sub_norms: matches!(family, Family::Bitnet2b4t | Family::OneBitLlm),
        // Settled against the tensors (lm_head.weight present or not) when planning.
        tied_embeddings: config_ties_embeddings.unwrap_or(true),
        // Qwen3 with attention_bias was refused above.
        attention_bias: family == Family::Qwen2Bitnet,
        qk_norm: family == Family::Qwen3Bitnet,
    };
    config.validate().map_err(|detail| ConfigError::Invalid {
        field: detail.split_whitespace().next().unwrap_or("").to_string(),
        detail,
    })?;
    Ok(ModelSpec {
        family,
        architecture: architecture.to_string(),
        config,
        config_ties_embeddings,
        scale_rule,
        notes,
    })
}

/// The trained context: `max_position_embeddings`, except that a sliding attention window shorter
/// than it (which the format does not describe) caps it where attention is still full: Mistral's
/// `sliding_window` with a note; Qwen's `use_sliding_window` (on some layers only) is refused.
fn context_length(
    c: &Map<String, Value>,
    family: Family,
    notes: &mut Vec<String>,
) -> Result<u32, ConfigError> {
    let max = get_u32(c, "max_position_embeddings")?;
    match family {
        Family::Qwen2Bitnet | Family::Qwen3Bitnet
            if c.get("use_sliding_window") == Some(&Value::Bool(true)) =>
        {
            Err(invalid(
                "use_sliding_window",
                "true: sliding-window attention on some layers is not supported",
            ))
        }
        Family::MistralBitnet => match optional_u32(c, "sliding_window")? {
            Some(w) if w < max => {
                notes.push(format!(
                    "config.json's sliding_window {w} is shorter than max_position_embeddings {max}: the context is capped at {w}, where attention is the same"
                ));
                Ok(w)
            }
            _ => Ok(max),
        },
        _ => Ok(max),
    }
}

fn invalid(field: &str, detail: &str) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_string(),
        detail: detail.to_string(),
    }
}

fn optional_u32(c: &Map<String, Value>, field: &str) -> Result<Option<u32>, ConfigError> {
    match c.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| invalid(field, &format!("{v} is not an integer in 0..2^32"))),
    }
}

fn get_u32(c: &Map<String, Value>, field: &str) -> Result<u32, ConfigError> {
    optional_u32(c, field)?.ok_or_else(|| ConfigError::Missing {
        field: field.to_string(),
    })
}

/// Hugging Face `rope_scaling` (or transformers 5's `rope_parameters`) → the format's.
fn rope_scaling(value: Option<&Value>) -> Result<Option<RopeScaling>, ConfigError> {
    let Some(obj) = value.and_then(Value::as_object) else {
        return match value {
            None | Some(Value::Null) => Ok(None),
            Some(_) => Err(invalid("rope_scaling", "not an object")),
        };
    };
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let real = |name: &str| -> Result<f64, ConfigError> {
        obj.get(name)
            .and_then(Value::as_f64)
            .ok_or_else(|| invalid(&format!("rope_scaling.{name}"), "missing or not a number"))
    };
    match kind {
        "default" => Ok(None),
        "linear" => Ok(Some(RopeScaling::Linear {
            factor: real("factor")?,
        })),
        "llama3" => Ok(Some(RopeScaling::Llama3 {
            factor: real("factor")?,
            low_freq_factor: real("low_freq_factor")?,
            high_freq_factor: real("high_freq_factor")?,
            original_context_length: obj
                .get("original_max_position_embeddings")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    invalid(
                        "rope_scaling.original_max_position_embeddings",
                        "missing or not an integer",
                    )
                })?,
        })),
        other => Err(ConfigError::UnsupportedRopeScaling {
            kind: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "quantization_config": {"quant_method": "bitnet"},
            "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
            "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "hidden_act": "silu",
            "rope_theta": 500000.0
        })
    }

    #[test]
    fn llama_bitnet_divides_and_falcon_is_recognised_by_head_dim_or_name() {
        let spec = from_config(&base(), "HF1BitLLM/Llama3-8B-1.58-100B-tokens").unwrap();
        assert_eq!(spec.family, Family::LlamaBitnet);
        assert_eq!(spec.scale_rule, ScaleRule::Divide);
        assert_eq!(spec.config.head_dim, 16);
        assert!(!spec.config.sub_norms);
        let spec = from_config(&base(), "tiiuae/Falcon3-3B-Instruct-1.58bit").unwrap();
        assert_eq!(spec.family, Family::Falcon3Bitnet);
        for hint in [
            "tiiuae/Falcon-E-1B-Instruct",
            "models--tiiuae--Falcon-E-3B-Base",
            "falcon-e",
            "my_falcon_e",
        ] {
            let spec = from_config(&base(), hint).unwrap();
            assert_eq!(spec.family, Family::FalconE, "{hint}");
            assert_eq!(spec.scale_rule, ScaleRule::Divide, "{hint}");
            assert!(!spec.config.sub_norms, "{hint}");
        }
        let mut c = base();
        c["_name_or_path"] = json!("tiiuae/Falcon-E-1B-Base");
        assert_eq!(from_config(&c, "x").unwrap().family, Family::FalconE);
        // Not Falcon-E: Falcon3 names, and words that merely start like it.
        for hint in ["tiiuae/Falcon3-1B-Instruct-1.58bit", "falcon-eval-runs"] {
            assert_eq!(
                from_config(&base(), hint).unwrap().family,
                Family::Falcon3Bitnet,
                "{hint}"
            );
        }
        let mut c = base();
        c["head_dim"] = json!(32);
        let spec = from_config(&c, "x").unwrap();
        assert_eq!(spec.family, Family::Falcon3Bitnet);
        assert_eq!(spec.config.head_dim, 32);
    }

    #[test]
    fn plain_llama_and_unknown_architectures_are_refused_with_the_supported_list() {
        let mut c = base();
        c.as_object_mut().unwrap().remove("quantization_config");
        let e = from_config(&c, "x").unwrap_err().to_string();
        assert!(
            e.contains("LlamaForCausalLM") && e.contains("BitNetForCausalLM"),
            "{e}"
        );
        c["architectures"] = json!(["MistralForCausalLM"]);
        let e = from_config(&c, "x").unwrap_err().to_string();
        assert!(
            e.contains("MistralForCausalLM") && e.contains("supported"),
            "{e}"
        );
    }

    #[test]
    fn other_decoders_with_bitnet_quantization_and_what_they_need() {
        let with = |arch: &str, model_type: &str, extra: Value| {
            let mut c = base();
            c["architectures"] = json!([arch]);
            c["model_type"] = json!(model_type);
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            from_config(&c, "x")
        };
        let qwen2 = with("Qwen2ForCausalLM", "qwen2", json!({})).unwrap();
        assert_eq!(qwen2.family, Family::Qwen2Bitnet);
        assert!(qwen2.config.attention_bias && !qwen2.config.qk_norm);
        let qwen3 = with(
            "Qwen3ForCausalLM",
            "qwen3",
            json!({"attention_bias": false}),
        )
        .unwrap();
        assert_eq!(qwen3.family, Family::Qwen3Bitnet);
        assert!(!qwen3.config.attention_bias && qwen3.config.qk_norm);
        // Qwen3's attention_bias also biases o_proj; Qwen's sliding windows cover some layers only.
        let e = with("Qwen3ForCausalLM", "qwen3", json!({"attention_bias": true}));
        assert!(e.unwrap_err().to_string().contains("o_proj"));
        let e = with(
            "Qwen2ForCausalLM",
            "qwen2",
            json!({"use_sliding_window": true}),
        );
        assert!(e.unwrap_err().to_string().contains("use_sliding_window"));
        // Mistral is Llama's forward pass; a window shorter than the positions caps the context.
        let m = with(
            "MistralForCausalLM",
            "mistral",
            json!({"sliding_window": null}),
        )
        .unwrap();
        assert_eq!(
            (m.family, m.config.context_length),
            (Family::MistralBitnet, 256)
        );
        let m = with(
            "MistralForCausalLM",
            "mistral",
            json!({"sliding_window": 64}),
        )
        .unwrap();
        assert_eq!(m.config.context_length, 64);
        assert!(
            m.notes.iter().any(|n| n.contains("sliding_window 64")),
            "{:?}",
            m.notes
        );
        // A decoder whose forward pass needs more than the format has is refused naming it.
        let e = with("Phi3ForCausalLM", "phi3", json!({}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Phi3ForCausalLM") && e.contains("fused qkv_proj"),
            "{e}"
        );
    }

    #[test]
    fn defaults_are_noted_and_bad_values_named() {
        let mut c = base();
        let o = c.as_object_mut().unwrap();
        o.remove("num_key_value_heads");
        o.remove("rope_theta");
        let spec = from_config(&c, "x").unwrap();
        assert_eq!(spec.config.num_kv_heads, 4);
        assert_eq!(spec.config.rope_theta, 10000.0);
        assert_eq!(spec.notes.len(), 2);
        let mut c = base();
        c["hidden_act"] = json!("gelu");
        assert!(
            from_config(&c, "x")
                .unwrap_err()
                .to_string()
                .contains("gelu")
        );
        let mut c = base();
        c["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
        assert!(
            from_config(&c, "x")
                .unwrap_err()
                .to_string()
                .contains("yarn")
        );
        let mut c = base();
        c["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let spec = from_config(&c, "x").unwrap();
        assert!(matches!(
            spec.config.rope_scaling,
            Some(RopeScaling::Llama3 { .. })
        ));
        let mut c = base();
        c.as_object_mut().unwrap().remove("vocab_size");
        assert!(
            from_config(&c, "x")
                .unwrap_err()
                .to_string()
                .contains("vocab_size")
        );
    }

    #[test]
    fn bitnet_2b4t_multiplies_and_requires_rope_theta() {
        let mut c = base();
        c["architectures"] = json!(["BitNetForCausalLM"]);
        c["hidden_act"] = json!("relu2");
        c["quantization_config"] =
            json!({"quant_method": "bitnet", "linear_class": "autobitlinear"});
        let spec = from_config(&c, "x").unwrap();
        assert_eq!(spec.scale_rule, ScaleRule::Multiply);
        assert!(spec.config.sub_norms);
        c.as_object_mut().unwrap().remove("rope_theta");
        assert!(
            from_config(&c, "x")
                .unwrap_err()
                .to_string()
                .contains("rope_theta")
        );
    }
}
