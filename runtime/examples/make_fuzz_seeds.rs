//! Writes the named seeds of the model fuzz target, `runtime/fuzz/corpus/model_load/seed-*`: tiny
//! valid models covering both activations, sub-norms or not, tied and untied output, every RoPE
//! scaling, a tokenizer, every dense encoding the runtime reads but i8_row, and tiled layouts read in
//! place as well as one repacked at load.
//!
//! Run from the workspace root: `cargo run -p bitnet-run --example make_fuzz_seeds`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;

use bitnet_format::{Activation, Encoding, ModelConfig, RopeScaling, TernaryLayout};
use bitnet_run::fuzz::{header_text, with_header};

fn tiny(activation: Activation, sub_norms: bool, tied: bool) -> ModelConfig {
    ModelConfig {
        hidden_size: 32,
        intermediate_size: 24,
        num_layers: 1,
        num_heads: 2,
        num_kv_heads: 1,
        head_dim: 8,
        vocab_size: 12,
        context_length: 8,
        ..common::config(activation, sub_norms, tied)
    }
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/model_load");
    std::fs::create_dir_all(&dir).unwrap();
    let tiled = |tile_rows| TernaryLayout::Tiled { tile_rows };
    let llama3 = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_context_length: 4,
    };
    let seeds = [
        (
            "relu2-tiled16-f32",
            tiny(Activation::Relu2, true, true),
            tiled(16),
            Encoding::F32,
        ),
        (
            "silu-tiled4-f16-untied",
            tiny(Activation::Silu, false, false),
            tiled(4),
            Encoding::F16,
        ),
        (
            "relu2-i2s-q4-llama3",
            ModelConfig {
                rope_scaling: Some(llama3),
                num_layers: 2,
                ..tiny(Activation::Relu2, true, true)
            },
            TernaryLayout::I2s { block: 128 },
            Encoding::Q4B32,
        ),
        (
            "silu-tiled32-bf16-linear",
            ModelConfig {
                rope_scaling: Some(RopeScaling::Linear { factor: 2.0 }),
                num_heads: 4,
                num_kv_heads: 4,
                ..tiny(Activation::Silu, true, false)
            },
            tiled(32),
            Encoding::Bf16,
        ),
    ];
    for (name, config, layout, embd) in seeds {
        common::write_model(&dir.join(format!("seed-{name}")), &config, layout, embd, 7);
    }

    // The first seed again with a word-level tokenizer and a chat template in its header.
    let path = dir.join("seed-relu2-tiled16-f32");
    let bytes = std::fs::read(&path).unwrap();
    let mut header: serde_json::Value = serde_json::from_str(header_text(&bytes).unwrap()).unwrap();
    header["tokenizer"] = serde_json::json!({
        "tokenizer_json": {
            "version": "1.0",
            "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "to": 1, "be": 2}, "unk_token": "<unk>"},
            "pre_tokenizer": {"type": "Whitespace"}
        },
        "chat_template": "{% for m in messages %}{{ m.content }} {% endfor %}",
        "eos_token_ids": [0],
        "add_bos_token": false
    });
    let with_tokenizer = with_header(&bytes, &header.to_string()).unwrap();
    std::fs::write(dir.join("seed-relu2-tiled16-f32-tokenizer"), with_tokenizer).unwrap();
    println!("wrote {}", dir.display());
}
