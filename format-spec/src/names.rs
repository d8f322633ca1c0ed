//! Canonical tensor names (SPEC.md §4) and their mapping from Hugging Face checkpoint names.

use crate::ModelConfig;

/// Token embedding `[vocab, hidden]`.
pub const TOKEN_EMBD: &str = "token_embd";
/// Final RMSNorm weight `[hidden]`.
pub const OUTPUT_NORM: &str = "output_norm";
/// Output matrix `[vocab, hidden]`; absent when embeddings are tied.
pub const OUTPUT: &str = "output";

/// The tensors of one transformer block, by canonical suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerTensor {
    AttnNorm,
    AttnQ,
    AttnK,
    AttnV,
    AttnQBias,
    AttnKBias,
    AttnVBias,
    AttnQNorm,
    AttnKNorm,
    AttnSubNorm,
    AttnOutput,
    FfnNorm,
    FfnGate,
    FfnUp,
    FfnSubNorm,
    FfnDown,
}

impl LayerTensor {
    /// Every layer tensor, in file order.
    pub const ALL: [LayerTensor; 16] = [
        LayerTensor::AttnNorm,
        LayerTensor::AttnQ,
        LayerTensor::AttnK,
        LayerTensor::AttnV,
        LayerTensor::AttnQBias,
        LayerTensor::AttnKBias,
        LayerTensor::AttnVBias,
        LayerTensor::AttnQNorm,
        LayerTensor::AttnKNorm,
        LayerTensor::AttnSubNorm,
        LayerTensor::AttnOutput,
        LayerTensor::FfnNorm,
        LayerTensor::FfnGate,
        LayerTensor::FfnUp,
        LayerTensor::FfnSubNorm,
        LayerTensor::FfnDown,
    ];

    /// The canonical suffix, as in `blk.3.attn_q`.
    pub fn suffix(self) -> &'static str {
        match self {
            LayerTensor::AttnNorm => "attn_norm",
            LayerTensor::AttnQ => "attn_q",
            LayerTensor::AttnK => "attn_k",
            LayerTensor::AttnV => "attn_v",
            LayerTensor::AttnQBias => "attn_q_bias",
            LayerTensor::AttnKBias => "attn_k_bias",
            LayerTensor::AttnVBias => "attn_v_bias",
            LayerTensor::AttnQNorm => "attn_q_norm",
            LayerTensor::AttnKNorm => "attn_k_norm",
            LayerTensor::AttnSubNorm => "attn_sub_norm",
            LayerTensor::AttnOutput => "attn_output",
            LayerTensor::FfnNorm => "ffn_norm",
            LayerTensor::FfnGate => "ffn_gate",
            LayerTensor::FfnUp => "ffn_up",
            LayerTensor::FfnSubNorm => "ffn_sub_norm",
            LayerTensor::FfnDown => "ffn_down",
        }
    }

    /// Whether this is a ternary projection (as opposed to a full-precision vector: a norm
    /// weight or a bias).
    pub fn is_projection(self) -> bool {
        matches!(
            self,
            LayerTensor::AttnQ
                | LayerTensor::AttnK
                | LayerTensor::AttnV
                | LayerTensor::AttnOutput
                | LayerTensor::FfnGate
                | LayerTensor::FfnUp
                | LayerTensor::FfnDown
        )
    }

    /// The logical shape (`[rows, cols]` of a projection, `[len]` of a vector) of this tensor in
    /// a model of `config`, or `None` when such a model has no such tensor (SPEC.md §4).
    pub fn shape(self, config: &ModelConfig) -> Option<Vec<u64>> {
        let h = config.hidden_size as u64;
        let i = config.intermediate_size as u64;
        let d = config.head_dim as u64;
        let q = config.num_heads as u64 * d;
        let kv = config.num_kv_heads as u64 * d;
        let (bias, qk_norm, sub) = (config.attention_bias, config.qk_norm, config.sub_norms);
        Some(match self {
            LayerTensor::AttnNorm | LayerTensor::FfnNorm => vec![h],
            LayerTensor::AttnQ => vec![q, h],
            LayerTensor::AttnK | LayerTensor::AttnV => vec![kv, h],
            LayerTensor::AttnQBias if bias => vec![q],
            LayerTensor::AttnKBias | LayerTensor::AttnVBias if bias => vec![kv],
            LayerTensor::AttnQNorm | LayerTensor::AttnKNorm if qk_norm => vec![d],
            LayerTensor::AttnSubNorm if sub => vec![q],
            LayerTensor::AttnOutput => vec![h, q],
            LayerTensor::FfnGate | LayerTensor::FfnUp => vec![i, h],
            LayerTensor::FfnSubNorm if sub => vec![i],
            LayerTensor::FfnDown => vec![h, i],
            LayerTensor::AttnQBias
            | LayerTensor::AttnKBias
            | LayerTensor::AttnVBias
            | LayerTensor::AttnQNorm
            | LayerTensor::AttnKNorm
            | LayerTensor::AttnSubNorm
            | LayerTensor::FfnSubNorm => return None,
        })
    }

    /// The Hugging Face tensor name(s) of this tensor inside `model.layers.{i}.`, across families.
    fn hf_names(self) -> &'static [&'static str] {
        match self {
            LayerTensor::AttnNorm => &["input_layernorm.weight"],
            LayerTensor::AttnQ => &["self_attn.q_proj.weight"],
            LayerTensor::AttnK => &["self_attn.k_proj.weight"],
            LayerTensor::AttnV => &["self_attn.v_proj.weight"],
            LayerTensor::AttnQBias => &["self_attn.q_proj.bias"],
            LayerTensor::AttnKBias => &["self_attn.k_proj.bias"],
            LayerTensor::AttnVBias => &["self_attn.v_proj.bias"],
            LayerTensor::AttnQNorm => &["self_attn.q_norm.weight"],
            LayerTensor::AttnKNorm => &["self_attn.k_norm.weight"],
            LayerTensor::AttnSubNorm => &[
                "self_attn.attn_sub_norm.weight",
                "self_attn.inner_attn_ln.weight",
            ],
            LayerTensor::AttnOutput => &["self_attn.o_proj.weight"],
            LayerTensor::FfnNorm => &["post_attention_layernorm.weight"],
            LayerTensor::FfnGate => &["mlp.gate_proj.weight"],
            LayerTensor::FfnUp => &["mlp.up_proj.weight"],
            LayerTensor::FfnSubNorm => &["mlp.ffn_sub_norm.weight", "mlp.ffn_layernorm.weight"],
            LayerTensor::FfnDown => &["mlp.down_proj.weight"],
        }
    }
}

/// The canonical name of a layer tensor: `blk.{layer}.{suffix}`.
pub fn layer(layer: u32, tensor: LayerTensor) -> String {
    format!("blk.{layer}.{}", tensor.suffix())
}

/// What a Hugging Face tensor name means in canonical terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HfTensor {
    /// A tensor stored under this canonical name.
    Canonical(String),
    /// The `weight_scale` of the projection with this canonical name (folded into its ternary tensor).
    WeightScale(String),
}

/// Map a Hugging Face checkpoint tensor name to its canonical meaning, or `None` if unknown.
pub fn from_hf(name: &str) -> Option<HfTensor> {
    let global = match name {
        "model.embed_tokens.weight" => Some(TOKEN_EMBD),
        "model.norm.weight" => Some(OUTPUT_NORM),
        "lm_head.weight" => Some(OUTPUT),
        _ => None,
    };
    if let Some(g) = global {
        return Some(HfTensor::Canonical(g.to_string()));
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (index, module) = rest.split_once('.')?;
    let index: u32 = index.parse().ok()?;
    if index.to_string() != index_text(rest) {
        return None;
    }
    // `*.weight_scale` is the scale of the projection whose weight is `*.weight`.
    let (name, is_scale) = match module.strip_suffix("_scale") {
        Some(weight) if weight.ends_with(".weight") => (weight, true),
        _ => (module, false),
    };
    let tensor = LayerTensor::ALL
        .into_iter()
        .find(|t| t.hf_names().contains(&name))?;
    let canonical = layer(index, tensor);
    match (is_scale, tensor.is_projection()) {
        (false, _) => Some(HfTensor::Canonical(canonical)),
        (true, true) => Some(HfTensor::WeightScale(canonical)),
        (true, false) => None,
    }
}

fn index_text(rest: &str) -> &str {
    rest.split('.').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_family_spelling() {
        let cases = [
            (
                "model.embed_tokens.weight",
                HfTensor::Canonical("token_embd".into()),
            ),
            ("lm_head.weight", HfTensor::Canonical("output".into())),
            (
                "model.norm.weight",
                HfTensor::Canonical("output_norm".into()),
            ),
            (
                "model.layers.0.self_attn.q_proj.weight",
                HfTensor::Canonical("blk.0.attn_q".into()),
            ),
            (
                "model.layers.12.mlp.down_proj.weight",
                HfTensor::Canonical("blk.12.ffn_down".into()),
            ),
            (
                "model.layers.3.self_attn.inner_attn_ln.weight",
                HfTensor::Canonical("blk.3.attn_sub_norm".into()),
            ),
            (
                "model.layers.3.self_attn.attn_sub_norm.weight",
                HfTensor::Canonical("blk.3.attn_sub_norm".into()),
            ),
            (
                "model.layers.3.mlp.ffn_layernorm.weight",
                HfTensor::Canonical("blk.3.ffn_sub_norm".into()),
            ),
            (
                "model.layers.3.mlp.ffn_sub_norm.weight",
                HfTensor::Canonical("blk.3.ffn_sub_norm".into()),
            ),
            (
                "model.layers.7.post_attention_layernorm.weight",
                HfTensor::Canonical("blk.7.ffn_norm".into()),
            ),
            (
                "model.layers.1.self_attn.o_proj.weight_scale",
                HfTensor::WeightScale("blk.1.attn_output".into()),
            ),
            (
                "model.layers.2.self_attn.k_proj.bias",
                HfTensor::Canonical("blk.2.attn_k_bias".into()),
            ),
            (
                "model.layers.2.self_attn.q_norm.weight",
                HfTensor::Canonical("blk.2.attn_q_norm".into()),
            ),
        ];
        for (hf, want) in cases {
            assert_eq!(from_hf(hf), Some(want), "{hf}");
        }
    }

    #[test]
    fn rejects_unknown_and_malformed_names() {
        for hf in [
            "model.layers.x.self_attn.q_proj.weight",
            "model.layers.01.self_attn.q_proj.weight",
            "model.layers.0.self_attn.rotary_emb.inv_freq",
            "model.layers.0.input_layernorm.weight_scale",
            "model.layers.0.self_attn.o_proj.bias",
            "model.layers.0.self_attn.q_proj.bias_scale",
            "transformer.h.0.attn.weight",
        ] {
            assert_eq!(from_hf(hf), None, "{hf}");
        }
    }
}
