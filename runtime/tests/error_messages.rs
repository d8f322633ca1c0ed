//! Every error variant of the runtime, printed as the binaries print errors, names each clause once.

use bitnet_format::{error_chain, repeated_clause};
use bitnet_run::engine::{EngineError, SubmitError};
use bitnet_run::kernels::KernelError;
use bitnet_run::model::memory::{MemoryError, MemoryNeed};
use bitnet_run::model::{KvType, KvTypes, ModelError, UnknownKvType};
use bitnet_run::tokenizer::{TokenizerError, UserDefinedError};

fn check(errors: Vec<Box<dyn std::error::Error>>) {
    for e in errors {
        let line = error_chain(e.as_ref());
        assert_eq!(repeated_clause(&line), None, "{e:?} prints {line:?}");
    }
}

/// The index of each variant: adding a variant stops this compiling until it is listed below.
fn model_index(e: &ModelError) -> usize {
    use ModelError::*;
    match e {
        Format(_) => 0,
        MissingTensor(_) => 1,
        UnexpectedTensor(_) => 2,
        TensorShape { .. } => 3,
        TensorEncoding { .. } => 4,
        Config { .. } => 5,
        Repack(..) => 6,
        TokenOutOfRange { .. } => 7,
        ContextFull { .. } => 8,
        Threads(..) => 9,
    }
}

fn tokenizer_index(e: &TokenizerError) -> usize {
    use TokenizerError::*;
    match e {
        Missing => 0,
        Load(_) => 1,
        Encode(_) => 2,
        Decode(_) => 3,
        UserDefined(e) => 4 + user_defined_index(e),
    }
}

fn user_defined_index(e: &UserDefinedError) -> usize {
    use UserDefinedError::*;
    match e {
        UnknownMark(_) => 0,
        Model(_) => 1,
        PreTokenizer(_) => 2,
        Malformed(_) => 3,
        Stripped { .. } => 4,
        NotInModel { .. } => 5,
    }
}

fn submit_index(e: &SubmitError) -> usize {
    use SubmitError::*;
    match e {
        EmptyPrompt => 0,
        PromptTooLong { .. } => 1,
        TokenOutOfRange { .. } => 2,
        Sampling(_) => 3,
        QueueFull { .. } => 4,
        ShuttingDown => 5,
    }
}

fn engine_index(e: &EngineError) -> usize {
    match e {
        EngineError::Config => 0,
        EngineError::Thread(_) => 1,
    }
}

fn kernel_index(e: &KernelError) -> usize {
    match e {
        KernelError::Unknown(_) => 0,
        KernelError::Unsupported(..) => 1,
    }
}

fn memory_index(e: &MemoryError) -> usize {
    match e {
        MemoryError::TooLarge { .. } => 0,
        MemoryError::BadOverride { .. } => 1,
    }
}

fn covers<E>(values: &[E], index: fn(&E) -> usize, variants: usize) {
    let mut seen: Vec<usize> = values.iter().map(index).collect();
    seen.sort();
    assert_eq!(
        seen,
        (0..variants).collect::<Vec<_>>(),
        "one value per variant"
    );
}

#[test]
fn every_variant_prints_each_clause_once() {
    let name = || "blk.0.attn_q".to_string();
    let model = vec![
        ModelError::Format(bitnet_format::BitnetFile::open("no/such.bitnet").unwrap_err()),
        ModelError::MissingTensor(name()),
        ModelError::UnexpectedTensor("output".into()),
        ModelError::TensorShape {
            name: name(),
            expected: vec![4, 8],
            actual: vec![8, 4],
        },
        ModelError::TensorEncoding {
            name: name(),
            encoding: "f16".into(),
            allowed: "ternary".into(),
        },
        ModelError::Config {
            field: "num_heads",
            detail: "must divide hidden_size".into(),
        },
        ModelError::Repack(name(), "tile 7 is not a layout".into()),
        ModelError::TokenOutOfRange { id: 9, vocab: 4 },
        ModelError::ContextFull { needed: 9, ctx: 8 },
        ModelError::Threads(2, "Resource temporarily unavailable".into()),
    ];
    covers(&model, model_index, 10);
    let tokenizer = vec![
        TokenizerError::Missing,
        TokenizerError::Load("expected value at line 1 column 1".into()),
        TokenizerError::Encode("bad input".into()),
        TokenizerError::Decode("id 9 unknown".into()),
        UserDefinedError::UnknownMark("\"llama.cpp\"".into()).into(),
        UserDefinedError::Model("\"WordPiece\"".into()).into(),
        UserDefinedError::PreTokenizer("{\"type\":\"Whitespace\"}".into()).into(),
        UserDefinedError::Malformed("{\"id\":-1}".into()).into(),
        UserDefinedError::Stripped {
            content: "<sep>".into(),
        }
        .into(),
        UserDefinedError::NotInModel {
            content: "<sep>".into(),
            id: 9,
            found: Some("▁a".into()),
        }
        .into(),
    ];
    covers(&tokenizer, tokenizer_index, 10);
    let submit = vec![
        SubmitError::EmptyPrompt,
        SubmitError::PromptTooLong { tokens: 9, ctx: 8 },
        SubmitError::TokenOutOfRange { id: 9, vocab: 4 },
        SubmitError::Sampling("top_p must be in (0, 1]".into()),
        SubmitError::QueueFull { waiting: 4 },
        SubmitError::ShuttingDown,
    ];
    covers(&submit, submit_index, 6);
    let engine = vec![
        EngineError::Config,
        EngineError::Thread(std::io::Error::other("Resource temporarily unavailable")),
    ];
    covers(&engine, engine_index, 2);
    let kernel = vec![
        bitnet_run::kernels::KernelPath::parse("sse9").unwrap_err(),
        KernelError::Unsupported("avx512", "avx512f, avx512bw".into()),
    ];
    covers(&kernel, kernel_index, 2);

    let need = MemoryNeed {
        mapped: 20 << 30,
        repacked: 0,
        repacked_tensors: 0,
        batch_copy: 0,
        kv_cache: 1 << 30,
        positions: 4096,
        slots: 8,
        kv_types: KvTypes::uniform(KvType::F16),
    };
    let memory = vec![
        MemoryError::TooLarge {
            file: "b100.bitnet".into(),
            need,
            available: 16 << 30,
            advice: "lower -c".into(),
        },
        MemoryError::BadOverride {
            value: "lots".into(),
        },
    ];
    covers(&memory, memory_index, 2);

    let mut all: Vec<Box<dyn std::error::Error>> = Vec::new();
    all.extend(memory.into_iter().map(|e| Box::new(e) as _));
    all.extend(model.into_iter().map(|e| Box::new(e) as _));
    all.extend(tokenizer.into_iter().map(|e| Box::new(e) as _));
    all.extend(submit.into_iter().map(|e| Box::new(e) as _));
    all.extend(engine.into_iter().map(|e| Box::new(e) as _));
    all.extend(kernel.into_iter().map(|e| Box::new(e) as _));
    let kv: UnknownKvType = "f8".parse::<bitnet_run::model::KvType>().unwrap_err();
    all.push(Box::new(kv));
    check(all);
}
