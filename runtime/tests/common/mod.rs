//! Tiny random models written with the format crate, for tests that need a whole model but no checkpoint.

#![allow(dead_code)]

use bitnet_format::names::{self, LayerTensor};
use bitnet_format::{
    Activation, BitnetFile, Encoding, FileWriter, GenerationDefaults, Header, ModelConfig,
    Provenance, Source, TensorSpec, TernaryLayout, ternary,
};

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

pub fn config(activation: Activation, sub_norms: bool, tied: bool) -> ModelConfig {
    ModelConfig {
        family: "test".into(),
        hidden_size: 40,
        intermediate_size: 72,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 12,
        vocab_size: 50,
        context_length: 64,
        rope_theta: 10000.0,
        rope_scaling: None,
        rms_norm_eps: 1e-5,
        activation,
        sub_norms,
        tied_embeddings: tied,
        attention_bias: false,
        qk_norm: false,
    }
}

/// Write a random model with `config` and ternary `layout` to `path`; the same seed gives the same
/// weights whatever the layout.
pub fn write_model(
    path: &std::path::Path,
    config: &ModelConfig,
    layout: TernaryLayout,
    embd: Encoding,
    seed: u64,
) {
    write_model_described(path, config, config, layout, embd, seed)
}

/// As [`write_model`], with tensors for `config` but `described` in the header (to craft mismatches).
pub fn write_model_described(
    path: &std::path::Path,
    config: &ModelConfig,
    described: &ModelConfig,
    layout: TernaryLayout,
    embd: Encoding,
    seed: u64,
) {
    let c = config;
    let (h, v) = (c.hidden_size as u64, c.vocab_size as u64);
    let mut specs = vec![TensorSpec::new(names::TOKEN_EMBD, embd, &[v, h])];
    for l in 0..c.num_layers {
        for t in LayerTensor::ALL {
            let Some(shape) = t.shape(c) else { continue };
            let enc = if t.is_projection() {
                Encoding::Ternary(layout)
            } else {
                Encoding::F32
            };
            specs.push(TensorSpec::new(names::layer(l, t), enc, &shape));
        }
    }
    specs.push(TensorSpec::new(names::OUTPUT_NORM, Encoding::F32, &[h]));
    if !c.tied_embeddings {
        specs.push(TensorSpec::new(names::OUTPUT, embd, &[v, h]));
    }
    let header = Header {
        model: described.clone(),
        tokenizer: None,
        generation: GenerationDefaults::default(),
        provenance: Provenance {
            source: Source::Synthetic {
                like: "test".into(),
                seed,
            },
            files: vec![],
            converter: "runtime tests".into(),
            options: Default::default(),
        },
        tensors: vec![],
    };
    let w = FileWriter::create(path, header, &specs).unwrap();
    let mut rng = Rng(seed | 1);
    for spec in &specs {
        let n: u64 = spec.shape.iter().product();
        let bytes = match spec.encoding {
            Encoding::Ternary(layout) => {
                let values: Vec<i8> = (0..n).map(|_| (rng.next() % 3) as i8 - 1).collect();
                let scale = 0.5 + rng.uniform();
                ternary::pack(layout, spec.shape[0], spec.shape[1], &values, scale).unwrap()
            }
            Encoding::F32 if spec.shape.len() == 1 => (0..n)
                .flat_map(|_| (0.5 + rng.uniform()).to_le_bytes())
                .collect(),
            Encoding::F32 => (0..n)
                .flat_map(|_| (2.0 * rng.uniform() - 1.0).to_le_bytes())
                .collect(),
            Encoding::F16 => (0..n)
                .flat_map(|_| half::f16::from_f32(2.0 * rng.uniform() - 1.0).to_le_bytes())
                .collect(),
            Encoding::Bf16 => (0..n)
                .flat_map(|_| half::bf16::from_f32(2.0 * rng.uniform() - 1.0).to_le_bytes())
                .collect(),
            Encoding::Q4B32 => {
                let g = bitnet_format::q4::Q4Geometry {
                    rows: spec.shape[0] as usize,
                    cols: spec.shape[1] as usize,
                };
                let mut bytes = vec![0u8; g.byte_len()];
                let scales = n as usize / 32 * 2;
                for s in bytes[..scales].chunks_exact_mut(2) {
                    let d = half::f16::from_f32((0.5 + rng.uniform()) / 8.0);
                    s.copy_from_slice(&d.to_le_bytes());
                }
                let codes = g.codes_offset();
                for b in &mut bytes[codes..] {
                    *b = rng.next() as u8;
                }
                bytes
            }
            Encoding::I8Row => unimplemented!("not used by these tests"),
        };
        w.write_tensor(&spec.name, &bytes).unwrap();
    }
    w.finish().unwrap();
}

/// A check cannot run here because `why`: under CI (`CI=true`) that is a failure (this panics);
/// elsewhere it is reported on stderr and the caller skips the check.
pub fn cannot_run(why: &str) {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(!in_ci, "{why}: required when CI=true");
    eprintln!("skipped: {why} (with CI=true this fails)");
}

pub fn open(path: &std::path::Path) -> BitnetFile {
    BitnetFile::open(path).unwrap()
}
