//! Whole-model properties on tiny random models: every kernel path gives the scalar reference's
//! logits within float reordering (README's stated bound) and bit-identical logits across thread
//! counts, a prompt run as one batch gives the same logits as one token at a time, and the file's
//! layout does not change the result.

mod common;

use bitnet_format::{Activation, Encoding, TernaryLayout};
use bitnet_run::kernels::KernelPath;
use bitnet_run::model::{Logits, Model, ModelError, Session};
use common::*;

const TOKENS: [u32; 9] = [3, 17, 42, 0, 49, 8, 8, 23, 11];

fn logits_all(path: &std::path::Path, kernel: KernelPath, threads: usize) -> Vec<f32> {
    let model = Model::load(open(path), kernel, threads).unwrap();
    Session::new(&model, 64)
        .forward(&TOKENS, Logits::All)
        .unwrap()
}

#[test]
fn every_kernel_path_and_thread_count_gives_identical_logits() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (act, sub, tied, embd)) in [
        (Activation::Relu2, true, true, Encoding::F32),
        (Activation::Silu, false, false, Encoding::F32),
        (Activation::Relu2, true, true, Encoding::Q4B32),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("m{i}.bitnet"));
        let mut cfg = config(act, sub, tied);
        if embd == Encoding::Q4B32 {
            // Whole blocks of 32: one 128-column SIMD group and a one-block tail.
            cfg.hidden_size = 160;
        }
        write_model(
            &path,
            &cfg,
            TernaryLayout::Tiled { tile_rows: 16 },
            embd,
            11 + i as u64,
        );
        let reference = logits_all(&path, KernelPath::SCALAR, 1);
        assert!(reference.iter().all(|v| v.is_finite()));
        for kernel in KernelPath::available() {
            let one_thread = logits_all(&path, kernel, 1);
            for threads in [1, 2, 3] {
                let got = logits_all(&path, kernel, threads);
                assert_eq!(
                    got, one_thread,
                    "{kernel:?}: {threads} threads change the logits"
                );
                // The output matrix is f32 or q4_b32 here, where summation order differs by path: the
                // ternary parts and q4's block products are exact, so only float rounding remains.
                let max = got
                    .iter()
                    .zip(&reference)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(
                    max < 1e-4,
                    "{kernel:?} × {threads} threads differs by {max}"
                );
            }
        }
    }
}

#[test]
fn batch_prefill_equals_one_token_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bitnet");
    write_model(
        &path,
        &config(Activation::Relu2, true, true),
        TernaryLayout::Tiled { tile_rows: 16 },
        Encoding::F16,
        5,
    );
    for kernel in KernelPath::available() {
        let model = Model::load(open(&path), kernel, 2).unwrap();
        let batch = Session::new(&model, 64)
            .forward(&TOKENS, Logits::All)
            .unwrap();
        let mut session = Session::new(&model, 64);
        let vocab = model.config.vocab_size as usize;
        // Everything up to the output matrix is exact; a single token's output row takes the fused
        // matrix-vector kernel, whose float summation order differs from the batched one.
        let close = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
        };
        for (t, &id) in TOKENS.iter().enumerate() {
            let one = session.forward(&[id], Logits::Last).unwrap();
            assert!(
                close(&one, &batch[t * vocab..(t + 1) * vocab]),
                "{kernel:?} position {t}"
            );
        }
        // Truncating and re-running reproduces the same logits exactly (the same batched path).
        session.truncate(4);
        let again = session.forward(&TOKENS[4..], Logits::All).unwrap();
        assert_eq!(again, batch[4 * vocab..], "{kernel:?} after truncate");
    }
}

#[test]
fn every_layout_gives_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(Activation::Silu, true, false);
    let base = dir.path().join("tiled16.bitnet");
    write_model(
        &base,
        &cfg,
        TernaryLayout::Tiled { tile_rows: 16 },
        Encoding::Bf16,
        9,
    );
    for kernel in KernelPath::available() {
        let reference = logits_all(&base, kernel, 2);
        for layout in [
            TernaryLayout::Tiled { tile_rows: 4 },
            TernaryLayout::Tiled { tile_rows: 32 },
            TernaryLayout::I2s { block: 128 },
            TernaryLayout::I2s { block: 64 },
        ] {
            let path = dir.path().join(format!("{}.bitnet", layout.label()));
            write_model(&path, &cfg, layout, Encoding::Bf16, 9);
            let model = Model::load(open(&path), kernel, 2).unwrap();
            assert_eq!(
                model.weights.repacked.is_empty(),
                kernel.reads_layout(layout)
            );
            let got = Session::new(&model, 64)
                .forward(&TOKENS, Logits::All)
                .unwrap();
            assert_eq!(got, reference, "{kernel:?} reading {layout:?}");
        }
    }
}

#[test]
fn context_and_vocabulary_limits_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bitnet");
    write_model(
        &path,
        &config(Activation::Relu2, true, true),
        TernaryLayout::Tiled { tile_rows: 16 },
        Encoding::F32,
        1,
    );
    let model = Model::load(open(&path), KernelPath::SCALAR, 1).unwrap();
    let mut s = Session::new(&model, 8);
    assert!(matches!(
        s.forward(&[1; 9], Logits::Last),
        Err(ModelError::ContextFull { needed: 9, ctx: 8 })
    ));
    assert!(matches!(
        s.forward(&[50], Logits::Last),
        Err(ModelError::TokenOutOfRange { id: 50, vocab: 50 })
    ));
    assert_eq!(s.position(), 0, "failed calls leave the cache untouched");
}

#[test]
fn tensors_that_do_not_fit_the_configuration_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bitnet");
    let tiled = TernaryLayout::Tiled { tile_rows: 16 };
    let load = |written: &bitnet_format::ModelConfig, described: &bitnet_format::ModelConfig| {
        write_model_described(&path, written, described, tiled, Encoding::F32, 1);
        Model::load(open(&path), KernelPath::SCALAR, 1).unwrap_err()
    };
    let untied = config(Activation::Relu2, true, false);
    let tied = config(Activation::Relu2, true, true);
    assert!(matches!(load(&untied, &tied), ModelError::UnexpectedTensor(ref n) if n == "output"));
    let no_sub = config(Activation::Relu2, false, true);
    assert!(
        matches!(load(&no_sub, &tied), ModelError::MissingTensor(ref n) if n == "blk.0.attn_sub_norm")
    );
    let mut wider = tied.clone();
    wider.intermediate_size = 80;
    let err = load(&tied, &wider);
    assert!(
        matches!(err, ModelError::TensorShape { ref name, .. } if name == "blk.0.ffn_gate"),
        "{err}"
    );
    assert!(err.to_string().contains("[80, 40]"), "{err}");
}
