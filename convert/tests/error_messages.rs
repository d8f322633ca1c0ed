//! Every variant of every public error of `bitnet-convert`, printed as its `main` prints errors
//! (`bitnet_format::error_chain`: the message, then each cause it does not already hold), names
//! each clause once: no path, tensor or cause twice. Causes are built the way the code builds them
//! (a file error of the same path a wrapper names), since that is where repeats come from.

use std::path::{Path, PathBuf};

use bitnet_convert::convert::ConvertError;
use bitnet_convert::family::ConfigError;
use bitnet_convert::gguf::GgufError;
use bitnet_convert::gguf::container::{ContainerError, GgufFile};
use bitnet_convert::plan::PlanError;
use bitnet_convert::quantize::QuantError;
use bitnet_convert::source::{HubError, SourceError};
use bitnet_convert::synthetic::SyntheticError;
use bitnet_convert::tokenizer::TokenizerError;
use bitnet_convert::verify::VerifyError;
use bitnet_format::{BitnetFile, FormatError, error_chain, repeated_clause};

const MISSING: &str = "no/such/model.bitnet";

fn path() -> PathBuf {
    PathBuf::from(MISSING)
}

/// What opening a missing file gives (the OS error does not name the path).
fn io() -> std::io::Error {
    std::fs::File::open(MISSING).unwrap_err()
}

/// What opening the missing `.bitnet` file gives (it names the path).
fn format() -> FormatError {
    BitnetFile::open(MISSING).unwrap_err()
}

fn tensor() -> String {
    "model.layers.0.self_attn.q_proj.weight".into()
}

/// Exactly one value per variant: adding a variant stops these compiling until it is listed.
fn convert_index(e: &ConvertError) -> usize {
    use ConvertError::*;
    match e {
        OutputExists { .. } => 0,
        OutputIsDirectory { .. } => 1,
        Threads { .. } => 2,
        Source(_) => 3,
        Config(_) => 4,
        Tokenizer(_) => 5,
        Plan(_) => 6,
        Quantize(_) => 7,
        Verify(_) => 8,
        Write { .. } => 9,
        Io { .. } => 10,
    }
}

fn gguf_index(e: &GgufError) -> usize {
    use GgufError::*;
    match e {
        Container { .. } => 0,
        Architecture { .. } => 1,
        Metadata { .. } => 2,
        Tensor { .. } => 3,
        Tokenizer { .. } => 4,
        Model { .. } => 5,
        OutputExists { .. } => 6,
        Format { .. } => 7,
        Io { .. } => 8,
        Option(_) => 9,
        Write(_) => 10,
    }
}

fn container_index(e: &ContainerError) -> usize {
    use ContainerError::*;
    match e {
        Magic { .. } => 0,
        Version(_) => 1,
        Truncated { .. } => 2,
        Metadata { .. } => 3,
        Tensor { .. } => 4,
        Other(_) => 5,
    }
}

fn source_index(e: &SourceError) -> usize {
    use SourceError::*;
    match e {
        Io { .. } => 0,
        NotFound { .. } => 1,
        NotADirectory { .. } => 2,
        GgufUnsupported { .. } => 3,
        RevisionForDirectory { .. } => 4,
        NoConfig { .. } => 5,
        NoWeights { .. } => 6,
        BadIndex { .. } => 7,
        BadJson { .. } => 8,
        BadSafetensors { .. } => 9,
        DuplicateTensor { .. } => 10,
        Hub(_) => 11,
    }
}

fn hub_index(e: &HubError) -> usize {
    use HubError::*;
    match e {
        RepoNotFound { .. } => 0,
        FileNotFound { .. } => 1,
        Unauthorized { .. } => 2,
        Http { .. } => 3,
        Network { .. } => 4,
        Download { .. } => 5,
        NotCached { .. } => 6,
        FileNotCached { .. } => 7,
        BadResponse { .. } => 8,
        Io { .. } => 9,
    }
}

fn verify_index(e: &VerifyError) -> usize {
    use VerifyError::*;
    match e {
        Unpack { .. } => 0,
        Value { .. } => 1,
        Scale { .. } => 2,
        File { .. } => 3,
        Directory { .. } => 4,
    }
}

fn synthetic_index(e: &SyntheticError) -> usize {
    use SyntheticError::*;
    match e {
        UnknownShape(_) => 0,
        Format(_) => 1,
        Io { .. } => 2,
    }
}

fn plan_index(e: &PlanError) -> usize {
    use PlanError::*;
    match e {
        Missing { .. } => 0,
        Unknown { .. } => 1,
        Ambiguous { .. } => 2,
        Shape { .. } => 3,
        Dtype { .. } => 4,
        MissingScale { .. } => 5,
        UnexpectedScale { .. } => 6,
        RowsNotDivisibleBy4 { .. } => 7,
        Q4Columns { .. } => 8,
    }
}

fn config_index(e: &ConfigError) -> usize {
    use ConfigError::*;
    match e {
        NotAnObject => 0,
        UnsupportedArchitecture { .. } => 1,
        Missing { .. } => 2,
        Invalid { .. } => 3,
        UnsupportedActivation { .. } => 4,
        UnsupportedRopeScaling { .. } => 5,
        MissingPiece { .. } => 6,
    }
}

fn quant_index(e: &QuantError) -> usize {
    use QuantError::*;
    match e {
        NonFinite { .. } => 0,
        InvalidCode { .. } => 1,
        MalformedScale { .. } => 2,
        OutOfRange { .. } => 3,
    }
}

fn tokenizer_index(e: &TokenizerError) -> usize {
    use TokenizerError::*;
    match e {
        Source(_) => 0,
        Invalid { .. } => 1,
    }
}

/// The values' indices are 0, 1, ... `variants - 1`, once each.
fn covers<E>(values: &[E], index: fn(&E) -> usize, variants: usize) {
    let mut seen: Vec<usize> = values.iter().map(index).collect();
    seen.sort();
    assert_eq!(
        seen,
        (0..variants).collect::<Vec<_>>(),
        "one value per variant"
    );
}

fn check<E: std::error::Error + 'static>(values: Vec<E>) {
    for e in values {
        let line = error_chain(&e);
        assert_eq!(repeated_clause(&line), None, "{e:?} prints {line:?}");
    }
}

fn container() -> Vec<ContainerError> {
    let values = vec![
        GgufFile::parse(b"PK\x03\x04 zip").unwrap_err(),
        ContainerError::Version(1),
        GgufFile::parse(b"GGUF\x03\0\0\0").unwrap_err(),
        ContainerError::Metadata {
            key: "general.alignment".into(),
            detail: "must be a positive integer of at most 32 bits, not U32(0)".into(),
        },
        ContainerError::Tensor {
            name: "blk.0.attn_q.weight".into(),
            detail: "its 96 bytes at offset 64 run past the end of the file".into(),
        },
        ContainerError::Other("the header announces 9 tensors, more than the file can hold".into()),
    ];
    covers(&values, container_index, 6);
    values
}

fn hub() -> Vec<HubError> {
    let repo = || "microsoft/bitnet-b1.58-2B-4T".to_string();
    let endpoint = || "https://huggingface.co".to_string();
    let values = vec![
        HubError::RepoNotFound {
            repo: repo(),
            revision: "main".into(),
            endpoint: endpoint(),
        },
        HubError::FileNotFound {
            repo: repo(),
            revision: "main".into(),
            file: "config.json".into(),
        },
        HubError::Unauthorized {
            repo: repo(),
            what: "config.json".into(),
            status: 401,
        },
        HubError::Http {
            repo: repo(),
            what: "config.json".into(),
            status: 500,
            endpoint: endpoint(),
            detail: ": Internal Server Error".into(),
        },
        HubError::Network {
            repo: repo(),
            what: "the file list".into(),
            endpoint: endpoint(),
            detail: "Connection refused (os error 111)".into(),
        },
        HubError::Download {
            repo: repo(),
            file: "model.safetensors".into(),
            detail: "unexpected end of file".into(),
        },
        HubError::NotCached {
            repo: repo(),
            revision: "main".into(),
            cache: PathBuf::from("/home/u/.cache/huggingface/hub"),
        },
        HubError::FileNotCached {
            repo: repo(),
            file: "model.safetensors".into(),
            snapshot: PathBuf::from("/home/u/.cache/huggingface/hub/snapshots/abc"),
        },
        HubError::BadResponse {
            repo: repo(),
            detail: "the file list is not JSON".into(),
        },
        HubError::Io {
            path: path(),
            source: io(),
        },
    ];
    covers(&values, hub_index, 10);
    values
}

fn source() -> Vec<SourceError> {
    let dir = || PathBuf::from("checkpoints/bitnet");
    let values = vec![
        SourceError::Io {
            path: path(),
            source: io(),
        },
        SourceError::NotFound {
            arg: "bitnet-2b".into(),
        },
        SourceError::NotADirectory {
            path: PathBuf::from("weights.bin"),
        },
        SourceError::GgufUnsupported {
            path: PathBuf::from("model.gguf"),
        },
        SourceError::RevisionForDirectory {
            revision: "v1".into(),
            path: dir(),
        },
        SourceError::NoConfig {
            where_: "checkpoints/bitnet".into(),
        },
        SourceError::NoWeights {
            where_: "checkpoints/bitnet".into(),
            hint: " (pytorch_model.bin is not read: convert it to safetensors)".into(),
        },
        SourceError::BadIndex {
            file: dir().join("model.safetensors.index.json"),
            detail: "weight_map is missing".into(),
        },
        SourceError::BadJson {
            file: dir().join("config.json"),
            detail: "expected value at line 1 column 1".into(),
        },
        SourceError::BadSafetensors {
            file: dir().join("model.safetensors"),
            detail: "header too large".into(),
        },
        SourceError::DuplicateTensor {
            name: tensor(),
            first: "model-00001-of-00002.safetensors".into(),
            second: "model-00002-of-00002.safetensors".into(),
        },
        SourceError::Hub(hub().swap_remove(0)),
    ];
    covers(&values, source_index, 12);
    values
}

fn config() -> Vec<ConfigError> {
    let values = vec![
        ConfigError::NotAnObject,
        ConfigError::UnsupportedArchitecture {
            architecture: "GPT2LMHeadModel".into(),
            model_type: "gpt2".into(),
        },
        ConfigError::Missing {
            field: "hidden_size".into(),
        },
        ConfigError::Invalid {
            field: "num_attention_heads".into(),
            detail: "must divide hidden_size".into(),
        },
        ConfigError::UnsupportedActivation {
            value: "gelu".into(),
        },
        ConfigError::UnsupportedRopeScaling {
            kind: "yarn".into(),
        },
        ConfigError::MissingPiece {
            architecture: "PhiForCausalLM".into(),
            missing: "LayerNorm, a parallel attention/MLP block and partial RoPE",
        },
    ];
    covers(&values, config_index, 7);
    values
}

fn tokenizer() -> Vec<TokenizerError> {
    let values = vec![
        TokenizerError::Source(SourceError::BadJson {
            file: PathBuf::from("checkpoints/bitnet/tokenizer.json"),
            detail: "EOF while parsing".into(),
        }),
        TokenizerError::Invalid {
            file: "tokenizer.json".into(),
            detail: "bos_token_id 900 is outside the model's vocab_size 352".into(),
        },
    ];
    covers(&values, tokenizer_index, 2);
    values
}

fn plan() -> Vec<PlanError> {
    let file = || "model.safetensors".to_string();
    let values = vec![
        PlanError::Missing {
            canonical: "blk.0.attn_q".into(),
            hf: tensor(),
        },
        PlanError::Unknown {
            names: vec!["model.rotary_emb.inv_freq".into()],
        },
        PlanError::Ambiguous {
            canonical: "token_embd".into(),
            first: "model.embed_tokens.weight".into(),
            second: "embed_tokens.weight".into(),
        },
        PlanError::Shape {
            tensor: tensor(),
            file: file(),
            shape: vec![64, 128],
            expected: vec![128, 128],
        },
        PlanError::Dtype {
            tensor: tensor(),
            file: file(),
            dtype: "I64".into(),
            expected: "F32, F16, BF16 or packed U8",
        },
        PlanError::MissingScale {
            tensor: tensor(),
            file: file(),
            scale: "model.layers.0.self_attn.q_proj.weight_scale".into(),
        },
        PlanError::UnexpectedScale {
            scale: "model.layers.0.self_attn.q_proj.weight_scale".into(),
            file: file(),
            tensor: tensor(),
            dtype: "BF16".into(),
        },
        PlanError::RowsNotDivisibleBy4 {
            tensor: tensor(),
            file: file(),
            rows: 6,
        },
        PlanError::Q4Columns {
            tensor: "model.embed_tokens.weight".into(),
            file: file(),
            cols: 120,
        },
    ];
    covers(&values, plan_index, 9);
    values
}

fn quant() -> Vec<QuantError> {
    let file = || "model.safetensors".to_string();
    let values = vec![
        QuantError::NonFinite {
            tensor: tensor(),
            file: file(),
            position: "row 3, column 7".into(),
            value: f32::NAN,
        },
        QuantError::InvalidCode {
            tensor: tensor(),
            file: file(),
            row: 5,
            col: 2,
            packed_row: 1,
        },
        QuantError::MalformedScale {
            tensor: tensor(),
            file: file(),
            detail: "2 values, expected 1".into(),
        },
        QuantError::OutOfRange {
            tensor: tensor(),
            file: file(),
            position: "row 0, column 1".into(),
            value: 1e6,
            encoding: "f16",
        },
    ];
    covers(&values, quant_index, 4);
    values
}

fn verify() -> Vec<VerifyError> {
    let values = vec![
        VerifyError::Unpack {
            tensor: "blk.0.attn_q".into(),
            detail: "code 3 at element 5".into(),
        },
        VerifyError::Value {
            tensor: "blk.0.attn_q".into(),
            row: 1,
            col: 2,
            expected: 1,
            actual: -1,
        },
        VerifyError::Scale {
            tensor: "blk.0.attn_q".into(),
            expected: 0.5,
            expected_bits: 0.5f32.to_bits(),
            actual: 0.25,
            actual_bits: 0.25f32.to_bits(),
        },
        // As `bitnet-convert verify` of a missing file makes it.
        bitnet_convert::verify::verify_file(Path::new(MISSING)).unwrap_err(),
        VerifyError::Directory {
            path: path(),
            detail: "3 tensors, 4 planned".into(),
        },
    ];
    covers(&values, verify_index, 5);
    values
}

fn synthetic() -> Vec<SyntheticError> {
    let values = vec![
        SyntheticError::UnknownShape("bitnet-9b".into()),
        SyntheticError::Format(format()),
        SyntheticError::Io {
            path: path(),
            source: io(),
        },
    ];
    covers(&values, synthetic_index, 3);
    values
}

fn gguf() -> Vec<GgufError> {
    use bitnet_convert::gguf::{ExportOptions, ExportType, ImportOptions, export_gguf};
    let gguf = || PathBuf::from("model.gguf");
    let values = vec![
        GgufError::Container {
            path: gguf(),
            source: container().swap_remove(0),
        },
        GgufError::Architecture {
            path: gguf(),
            arch: "gpt2".into(),
        },
        GgufError::Metadata {
            path: gguf(),
            key: "bitnet.block_count".into(),
            detail: "missing or not an integer".into(),
        },
        GgufError::Tensor {
            path: gguf(),
            tensor: "blk.0.attn_q.weight".into(),
            ty: "I2_S".into(),
            detail: "element 7 holds the invalid code 3".into(),
        },
        GgufError::Tokenizer {
            path: gguf(),
            detail: "tokenizer.ggml.pre \"deepseek-llm\" is not supported".into(),
        },
        GgufError::Model {
            path: gguf(),
            detail: "tensor blk.0.attn_q.weight is missing".into(),
        },
        GgufError::OutputExists { path: path() },
        // As `export-gguf` of a missing file makes it.
        export_gguf(&ExportOptions::new(MISSING, "out.gguf", ExportType::I2s)).unwrap_err(),
        // As an import of a missing file makes it.
        bitnet_convert::gguf::import_gguf(&ImportOptions::new(gguf(), "out.bitnet")).unwrap_err(),
        GgufError::Option("--gguf-i2s-block 32: must be 128 or 64".into()),
        GgufError::Write("writing GGUF: tensor blk.0.attn_q.weight: 10 bytes produced".into()),
    ];
    covers(&values, gguf_index, 11);
    values
}

fn convert() -> Vec<ConvertError> {
    let values = vec![
        ConvertError::OutputExists { path: path() },
        ConvertError::OutputIsDirectory {
            path: PathBuf::from("out"),
        },
        ConvertError::Threads {
            threads: 0,
            detail: "must be at least 1".into(),
        },
        ConvertError::Source(source().swap_remove(0)),
        ConvertError::Config(config().swap_remove(3)),
        ConvertError::Tokenizer(tokenizer().swap_remove(1)),
        ConvertError::Plan(plan().swap_remove(3)),
        ConvertError::Quantize(quant().swap_remove(0)),
        ConvertError::Verify(verify().swap_remove(3)),
        ConvertError::Write {
            path: path(),
            source: format(),
        },
        ConvertError::Io {
            path: path(),
            source: io(),
        },
    ];
    covers(&values, convert_index, 11);
    values
}

#[test]
fn every_variant_prints_each_clause_once() {
    check(convert());
    check(gguf());
    check(container());
    check(source());
    check(hub());
    check(verify());
    check(synthetic());
    check(plan());
    check(config());
    check(quant());
    check(tokenizer());
}
