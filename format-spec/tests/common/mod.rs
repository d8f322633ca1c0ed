//! Builders shared by the integration tests: a small valid header, and raw file assembly so tests can
//! craft files the writer would never produce.

#![allow(dead_code)]

use bitnet_format::{
    Activation, GenerationDefaults, Header, MAGIC, ModelConfig, PREAMBLE_LEN, Provenance, Source,
    align_up, header_checksum,
};

pub fn model() -> ModelConfig {
    ModelConfig {
        family: "test".into(),
        hidden_size: 8,
        intermediate_size: 12,
        num_layers: 1,
        num_heads: 2,
        num_kv_heads: 1,
        head_dim: 4,
        vocab_size: 16,
        context_length: 32,
        rope_theta: 10000.0,
        rope_scaling: None,
        rms_norm_eps: 1e-5,
        activation: Activation::Relu2,
        sub_norms: true,
        tied_embeddings: true,
        attention_bias: false,
        qk_norm: false,
    }
}

pub fn header() -> Header {
    Header {
        model: model(),
        tokenizer: None,
        generation: GenerationDefaults::default(),
        provenance: Provenance {
            source: Source::Synthetic {
                like: "test".into(),
                seed: 0,
            },
            files: vec![],
            converter: "tests".into(),
            options: Default::default(),
        },
        tensors: vec![],
    }
}

/// Assemble a file from a header JSON text and the data section, with a correct preamble.
pub fn assemble(header_json: &str, data: &[u8]) -> Vec<u8> {
    assemble_with(header_json, data, 1, 0)
}

pub fn assemble_with(header_json: &str, data: &[u8], major: u16, minor: u16) -> Vec<u8> {
    let header = header_json.as_bytes();
    let mut preamble = [0u8; PREAMBLE_LEN as usize];
    preamble[0..8].copy_from_slice(&MAGIC);
    preamble[8..10].copy_from_slice(&major.to_le_bytes());
    preamble[10..12].copy_from_slice(&minor.to_le_bytes());
    preamble[16..24].copy_from_slice(&(header.len() as u64).to_le_bytes());
    let crc = header_checksum(&preamble, header);
    preamble[12..16].copy_from_slice(&crc.to_le_bytes());
    let mut out = preamble.to_vec();
    out.extend_from_slice(header);
    out.resize(align_up(out.len() as u64).unwrap() as usize, 0);
    out.extend_from_slice(data);
    out
}

/// The header JSON of `header()` with the given tensor entries (JSON objects) spliced in.
pub fn header_json_with_tensors(entries: &[String]) -> String {
    let mut h = serde_json::to_value(header()).unwrap();
    h["tensors"] = serde_json::Value::Array(
        entries
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect(),
    );
    serde_json::to_string(&h).unwrap()
}

/// A tensor entry for an f32 vector of `n` elements at `offset` with the CRC of `data`.
pub fn f32_entry(name: &str, n: u64, offset: u64, data: &[u8]) -> String {
    format!(
        r#"{{"name":"{name}","encoding":"f32","shape":[{n}],"offset":{offset},"length":{},"crc32":"{:08x}"}}"#,
        n * 4,
        crc32fast::hash(data)
    )
}
