//! Model configurations no file can back are refused at load with the field named, before any
//! size derived from them overflows or is allocated.

mod common;

use bitnet_format::{Activation, Encoding, ModelConfig, TernaryLayout};
use bitnet_run::kernels::KernelPath;
use bitnet_run::model::{Model, ModelError};
use common::*;

/// Load a small valid model whose header describes `edit`ed sizes.
fn load_described(edit: impl FnOnce(&mut ModelConfig)) -> ModelError {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bitnet");
    let written = config(Activation::Relu2, true, true);
    let mut described = written.clone();
    edit(&mut described);
    described.validate().expect("the format itself accepts it");
    let tiled = TernaryLayout::Tiled { tile_rows: 16 };
    write_model_described(&path, &written, &described, tiled, Encoding::F32, 1);
    Model::load(open(&path), KernelPath::SCALAR, 1).unwrap_err()
}

fn config_field(err: &ModelError) -> &'static str {
    match err {
        ModelError::Config { field, .. } => field,
        other => panic!("expected a configuration error, got {other}"),
    }
}

#[test]
fn head_products_that_overflow_are_named() {
    // 65536 × 65536 = 2^32, one past u32 (this overflowed): representable now, so the query
    // projection that does not have that many rows is named.
    let err = load_described(|c| {
        c.num_heads = 65536;
        c.num_kv_heads = 1;
        c.head_dim = 65536;
    });
    assert!(
        matches!(err, ModelError::TensorShape { ref name, ref expected, .. }
            if name == "blk.0.attn_q" && expected[..] == [1 << 32, 40]),
        "{err}"
    );
    // Past the format's element bound: refused before any tensor is looked at.
    let err = load_described(|c| {
        c.num_heads = u32::MAX - 1;
        c.num_kv_heads = 1;
        c.head_dim = u32::MAX - 1;
    });
    assert_eq!(config_field(&err), "num_heads × head_dim", "{err}");
    assert!(
        err.to_string()
            .contains("more than 281474976710656 elements"),
        "{err}"
    );
}

#[test]
fn matrices_larger_than_any_file_are_named() {
    let err = load_described(|c| {
        c.vocab_size = u32::MAX;
        c.hidden_size = u32::MAX;
    });
    assert_eq!(config_field(&err), "vocab_size × hidden_size", "{err}");
    let err = load_described(|c| {
        c.intermediate_size = u32::MAX;
        c.hidden_size = 1 << 20;
    });
    assert_eq!(
        config_field(&err),
        "intermediate_size × hidden_size",
        "{err}"
    );
}

#[test]
fn more_layers_than_the_file_has_tensors_is_refused_before_allocating() {
    // The model has 2 layers of 11 tensors plus 2 others: 24 tensors hold at most 2 layers.
    for layers in [3, 1 << 20, u32::MAX] {
        let err = load_described(|c| c.num_layers = layers);
        assert_eq!(config_field(&err), "num_layers", "{err}");
        assert!(err.to_string().contains("only 24 tensors"), "{err}");
    }
}

#[test]
fn sizes_within_bounds_but_wrong_still_name_the_tensor() {
    // Large but representable: the first tensor that does not match is named, as before.
    let err = load_described(|c| c.vocab_size = 1 << 20);
    assert!(
        matches!(err, ModelError::TensorShape { ref name, .. } if name == "token_embd"),
        "{err}"
    );
}
