//! Whole-model properties on tiny random models: every kernel path gives the scalar reference's
//! logits within float reordering (README's stated bound) and bit-identical logits across thread
//! counts, a prompt run as one batch gives the same logits as one token at a time, and the file's
//! layout does not change the result.

mod common;

use bitnet_format::{Activation, Encoding, TernaryLayout};
use bitnet_run::kernels::KernelPath;
use bitnet_run::model::{KvTypes, Logits, Model, ModelError, Session};
use common::*;

const TOKENS: [u32; 9] = [3, 17, 42, 0, 49, 8, 8, 23, 11];

fn logits_all(path: &std::path::Path, kernel: KernelPath, threads: usize) -> Vec<f32> {
    let model = Model::load(open(path), kernel, threads).unwrap();
    Session::new(&model, 64, KvTypes::default())
        .forward(&TOKENS, Logits::All)
        .unwrap()
}

/// `cfg` with heads of 16 values, four query heads sharing each KV head: the shape the SIMD
/// attention kernels take (the default 12-value heads take the reference path).
fn gqa_config(mut cfg: bitnet_format::ModelConfig) -> bitnet_format::ModelConfig {
    cfg.hidden_size = 64;
    cfg.num_heads = 4;
    cfg.num_kv_heads = 1;
    cfg.head_dim = 16;
    cfg
}

#[test]
fn every_kernel_path_and_thread_count_gives_identical_logits() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (act, sub, tied, embd)) in [
        (Activation::Relu2, true, true, Encoding::F32),
        (Activation::Silu, false, false, Encoding::F32),
        (Activation::Relu2, true, true, Encoding::Q4B32),
        (Activation::Silu, true, false, Encoding::F16),
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
        if embd == Encoding::F16 {
            cfg = gqa_config(cfg);
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

/// A tiny 2B-4T-like model (ReLU², sub-norms, tied embeddings of `embd`, four query heads per KV
/// head of 16 values, the SIMD attention kernels' shape) with weights from `seed`; `q4_b32` gets a
/// hidden size of 160 (one 128-column SIMD group and a one-block tail).
fn relu2_model(dir: &std::path::Path, seed: u64, embd: Encoding) -> std::path::PathBuf {
    let path = dir.join(format!("m-{embd:?}.bitnet"));
    let mut cfg = gqa_config(config(Activation::Relu2, true, true));
    if embd == Encoding::Q4B32 {
        cfg.hidden_size = 160;
    }
    write_model(
        &path,
        &cfg,
        TernaryLayout::Tiled { tile_rows: 16 },
        embd,
        seed,
    );
    path
}

#[test]
fn batch_prefill_equals_one_token_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = relu2_model(dir.path(), 5, Encoding::F16);
    for kernel in KernelPath::available() {
        let model = Model::load(open(&path), kernel, 2).unwrap();
        let batch = Session::new(&model, 64, KvTypes::default())
            .forward(&TOKENS, Logits::All)
            .unwrap();
        let mut session = Session::new(&model, 64, KvTypes::default());
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
            TernaryLayout::Base3 { tile_rows: 16 },
            TernaryLayout::Base3 { tile_rows: 4 },
        ] {
            let path = dir.path().join(format!("{}.bitnet", layout.label()));
            write_model(&path, &cfg, layout, Encoding::Bf16, 9);
            let model = Model::load(open(&path), kernel, 2).unwrap();
            assert_eq!(
                model.weights.repacked.is_empty(),
                kernel.reads_layout(layout)
            );
            let got = Session::new(&model, 64, KvTypes::default())
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
    let mut s = Session::new(&model, 8, KvTypes::default());
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
    // Biases or q/k norms the header does not announce are refused, not ignored; announced ones
    // must be there.
    let mut biased = tied.clone();
    biased.attention_bias = true;
    assert!(
        matches!(load(&biased, &tied), ModelError::UnexpectedTensor(ref n) if n == "blk.0.attn_q_bias")
    );
    let mut normed = tied.clone();
    normed.qk_norm = true;
    assert!(
        matches!(load(&tied, &normed), ModelError::MissingTensor(ref n) if n == "blk.0.attn_q_norm")
    );
    // So is a layer past num_layers.
    let mut deeper = tied.clone();
    deeper.num_layers = 3;
    assert!(
        matches!(load(&deeper, &tied), ModelError::UnexpectedTensor(ref n) if n == "blk.2.attn_norm")
    );
}

/// Biases and per-head q/k norms (Qwen2, Qwen3) run alike on every kernel path, within float
/// reordering, and change the output (they are not silently skipped).
#[test]
fn biases_and_qk_norms_run_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let tiled = TernaryLayout::Tiled { tile_rows: 16 };
    let mut plain = config(Activation::Silu, false, true);
    plain.num_heads = 4;
    let mut extended = plain.clone();
    extended.attention_bias = true;
    extended.qk_norm = true;
    let logits = |c: &bitnet_format::ModelConfig, path: KernelPath| {
        let file = dir.path().join("m.bitnet");
        write_model(&file, c, tiled, Encoding::F32, 7);
        let model = Model::load(open(&file), path, 2).unwrap();
        let mut s = Session::new(&model, 16, KvTypes::default());
        s.forward(&[3, 1, 4, 1, 5, 9], Logits::All).unwrap()
    };
    let reference = logits(&extended, KernelPath::SCALAR);
    for path in KernelPath::available() {
        let got = logits(&extended, path);
        let diff = got
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "{path:?}: {diff}");
    }
    let without = logits(&plain, KernelPath::SCALAR);
    let changed = without
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(changed > 1e-2, "{changed}");
}

/// Continuous batching's step: several sequences, each with its own cache, run as one batch (one
/// pass over every weight matrix), joining and leaving between steps, give each sequence the logits
/// it gets alone. Everything before the output matrix is exact; an f16 output matrix sums a batch
/// of rows in a different float order than one row (the fused matrix-vector kernel), hence the
/// bound; a `q4_b32` one gives each token the operations it gets alone, hence bit for bit.
#[test]
fn a_batch_of_sequences_gives_each_the_logits_it_gets_alone() {
    let dir = tempfile::tempdir().unwrap();
    batch_against_alone(&relu2_model(dir.path(), 21, Encoding::F16), false);
    batch_against_alone(&relu2_model(dir.path(), 22, Encoding::Q4B32), true);
}

/// Batched products of a `q4_b32` output matrix read a copy of it in tiles on a path that has a
/// tile kernel; a server's memory check counts that copy once it has slots enough to use it.
#[test]
fn the_memory_check_counts_the_q4_copy_for_batches() {
    use bitnet_run::kernels::q4::Q4Tiles;
    use bitnet_run::model::memory::MemoryNeed;
    let dir = tempfile::tempdir().unwrap();
    for embd in [Encoding::Q4B32, Encoding::F16] {
        let path = relu2_model(dir.path(), 23, embd);
        let file = open(&path);
        // Tied: the embedding table is the output matrix.
        let output = file.index().get("token_embd").unwrap().length;
        for kernel in KernelPath::available() {
            let one = MemoryNeed::of(&file, kernel, 64, KvTypes::default());
            assert_eq!(one.with_slots(&file, kernel, 1).batch_copy, 0);
            for slots in 2..=8 {
                let copy = match Q4Tiles::min_tokens(kernel) {
                    Some(n) if embd == Encoding::Q4B32 && slots >= n => output,
                    _ => 0,
                };
                let need = one.with_slots(&file, kernel, slots);
                assert_eq!(need.batch_copy, copy, "{kernel:?} {embd:?} {slots}");
                assert_eq!(
                    need.total(),
                    one.tensors() + copy + slots as u64 * one.kv_cache
                );
                assert_eq!(
                    need.describe().contains("copied for batches"),
                    copy > 0,
                    "{}",
                    need.describe()
                );
            }
        }
    }
}

fn batch_against_alone(path: &std::path::Path, exact: bool) {
    use bitnet_run::model::{KvCache, Runner, SeqStep, StepLogits};
    let prompts: [&[u32]; 4] = [&[3, 17, 42], &[5], &[9, 9, 8, 7, 6, 1, 2], &[30, 31]];
    // Sequence i joins at step `join[i]` (its prompt is that step's chunk) and then decodes the
    // given next tokens, one per step.
    let join = [0, 0, 1, 3];
    let decode: [u32; 4] = [11, 12, 13, 14];
    for kernel in KernelPath::available() {
        let model = Model::load(open(path), kernel, 2).unwrap();
        let vocab = model.config.vocab_size as usize;
        let alone: Vec<Vec<Vec<f32>>> = prompts
            .iter()
            .map(|p| {
                let mut s = Session::new(&model, 32, KvTypes::default());
                let mut out = vec![s.forward(p, Logits::All).unwrap()];
                for &id in &decode {
                    out.push(s.forward(&[id], Logits::Last).unwrap());
                }
                out
            })
            .collect();
        let mut runner = Runner::new(&model);
        let mut out = StepLogits::default();
        let mut caches: Vec<KvCache> = prompts
            .iter()
            .map(|_| KvCache::new(&model, 32, KvTypes::default()))
            .collect();
        let mut checked = 0;
        for step in 0..8 {
            // (sequence, its step number): 0 is the prompt, then one decode token per step.
            let active: Vec<(usize, usize)> = (0..4)
                .filter(|&i| step >= join[i] && step - join[i] <= decode.len())
                .map(|i| (i, step - join[i]))
                .collect();
            let mut seqs: Vec<SeqStep> = caches
                .iter_mut()
                .enumerate()
                .filter_map(|(i, cache)| {
                    let &(_, n) = active.iter().find(|(a, _)| *a == i)?;
                    Some(SeqStep {
                        cache,
                        tokens: if n == 0 {
                            prompts[i]
                        } else {
                            &decode[n - 1..n]
                        },
                        logits: if n == 0 { Logits::All } else { Logits::Last },
                    })
                })
                .collect();
            // One buffer for every step, as the engine keeps it: a step with fewer or shorter
            // sequences than the last must not show the last one's values.
            runner.step(&mut seqs, &mut out).unwrap();
            assert_eq!(out.len(), active.len());
            for (k, (i, n)) in active.into_iter().enumerate() {
                let got = out.get(k);
                let want = &alone[i][n];
                assert_eq!(got.len(), want.len());
                for (r, (g, w)) in got.chunks(vocab).zip(want.chunks(vocab)).enumerate() {
                    if exact {
                        assert_eq!(g, w, "{kernel:?} step {step} seq {i} row {r}");
                    }
                    let max = g
                        .iter()
                        .zip(w)
                        .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
                        .fold(0.0, f32::max);
                    assert!(max <= 1e-5, "{kernel:?} step {step} seq {i} row {r}: {max}");
                }
                checked += 1;
            }
        }
        assert_eq!(
            checked,
            4 * (1 + decode.len()),
            "every step of every sequence"
        );
    }
}

#[test]
fn a_batch_is_refused_whole_when_one_sequence_is_bad() {
    use bitnet_run::model::{KvCache, Runner, SeqStep, StepLogits};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bitnet");
    let cfg = config(Activation::Silu, false, false);
    write_model(
        &path,
        &cfg,
        TernaryLayout::Tiled { tile_rows: 16 },
        Encoding::F32,
        3,
    );
    let model = Model::load(open(&path), KernelPath::SCALAR, 1).unwrap();
    let mut runner = Runner::new(&model);
    let (mut a, mut b) = (
        KvCache::new(&model, 8, KvTypes::default()),
        KvCache::new(&model, 2, KvTypes::default()),
    );
    let mut out = StepLogits::default();
    runner
        .step(
            &mut [SeqStep {
                cache: &mut a,
                tokens: &[1],
                logits: Logits::Last,
            }],
            &mut out,
        )
        .unwrap();
    a.truncate(0);
    assert_eq!((out.len(), out.get(0).len()), (1, cfg.vocab_size as usize));
    let err = runner
        .step(
            &mut [
                SeqStep {
                    cache: &mut a,
                    tokens: &[1, 2],
                    logits: Logits::Last,
                },
                SeqStep {
                    cache: &mut b,
                    tokens: &[1, 2, 3],
                    logits: Logits::Last,
                },
            ],
            &mut out,
        )
        .unwrap_err();
    assert!(
        matches!(err, ModelError::ContextFull { needed: 3, ctx: 2 }),
        "{err}"
    );
    assert_eq!((a.position(), b.position()), (0, 0), "nothing ran");
    assert!(out.is_empty(), "no logits from a refused step");
    let bad = cfg.vocab_size;
    let err = runner
        .step(
            &mut [SeqStep {
                cache: &mut a,
                tokens: &[bad],
                logits: Logits::Last,
            }],
            &mut out,
        )
        .unwrap_err();
    assert!(matches!(err, ModelError::TokenOutOfRange { .. }), "{err}");
}

/// The f16 cache rounds each key and value once. On the bundled demo model (trained weights; the
/// random test models amplify any rounding through their activation quantization) its logits stay
/// close to the f32 cache's on every path, and its greedy choices are the same.
#[test]
fn an_f16_cache_stays_close_to_the_f32_cache() {
    use bitnet_run::model::KvType;
    use bitnet_run::sampling::argmax;
    let text = "Once upon a time, there was a little girl named Lily. She loved to play outside \
                in the park with her friends. One day, she saw a big red ball.";
    for kernel in KernelPath::available() {
        let model = Model::load(bitnet_run::demo::open().unwrap(), kernel, 2).unwrap();
        let tok =
            bitnet_run::tokenizer::Tokenizer::from_info(model.file().header().tokenizer.as_ref())
                .unwrap();
        let ids = tok.encode_prompt(text).unwrap();
        let vocab = model.config.vocab_size as usize;
        let run = |t| {
            Session::new(&model, 256, KvTypes::uniform(t))
                .forward(&ids, Logits::All)
                .unwrap()
        };
        let (half, full) = (run(KvType::F16), run(KvType::F32));
        assert_ne!(half, full, "{kernel:?}: the f16 cache must round something");
        // Measured: at most 0.22 on logits up to 9.
        for (t, (a, b)) in half.chunks(vocab).zip(full.chunks(vocab)).enumerate() {
            let max = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(
                max < 0.5,
                "{kernel:?} position {t}: f16 cache differs by {max}"
            );
            assert_eq!(argmax(a), argmax(b), "{kernel:?} position {t}");
        }
    }
}
