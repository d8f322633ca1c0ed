//! Writes the golden file `testdata/format/golden.bitnet` with the values it must decode to
//! (`golden.json`), the per-layout test vectors in `format-spec/vectors/`, and the files every reader
//! must reject in `testdata/format/reject/` (listed, with why, in `reject.json`).
//!
//! Run from the workspace root: `cargo run -p bitnet-format --example make_golden`.
//! The committed outputs are the compatibility reference: regenerate them only for a new format version.

use std::path::Path;

use bitnet_format::{
    Activation, Encoding, FileWriter, GenerationDefaults, Header, MAJOR, MINOR, ModelConfig,
    PREAMBLE_LEN, Preamble, Provenance, Source, TensorSpec, TernaryLayout, TokenizerInfo, align_up,
    header_checksum, q4, ternary,
};
use serde_json::json;

/// A small deterministic generator (64-bit LCG), so the outputs never depend on a crate's algorithm.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    /// A multiple of 1/8 in [-8, 8): exact in f16, bf16 and f32, and exact as a JSON decimal.
    fn float(&mut self) -> f32 {
        (self.next() % 128) as f32 / 8.0 - 8.0
    }
    fn trit(&mut self) -> i8 {
        (self.next() % 3) as i8 - 1
    }
}

fn float_bytes(encoding: Encoding, values: &[f32]) -> Vec<u8> {
    match encoding {
        Encoding::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Encoding::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        Encoding::Bf16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        _ => unreachable!("not a float encoding"),
    }
}

fn i8_row_bytes(rows: usize, cols: usize, rng: &mut Lcg) -> (Vec<u8>, Vec<f32>) {
    let scales: Vec<f32> = (0..rows).map(|r| 0.125 * (r + 1) as f32).collect();
    let q: Vec<i8> = (0..rows * cols)
        .map(|_| (rng.next() % 256) as u8 as i8)
        .collect();
    let mut bytes: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
    bytes.resize(align_up(rows as u64 * 4).unwrap() as usize, 0);
    bytes.extend(q.iter().map(|&v| v as u8));
    let values = (0..rows * cols)
        .map(|i| q[i] as f32 * scales[i / cols])
        .collect();
    (bytes, values)
}

/// A `q4_b32` tensor: scales that are exact in f16 (one of them negative), random codes.
fn q4_b32_bytes(rows: usize, cols: usize, rng: &mut Lcg) -> (Vec<u8>, Vec<f32>) {
    let g = q4::Q4Geometry { rows, cols };
    let blocks = rows * g.blocks();
    let scales: Vec<f32> = (0..blocks)
        .map(|b| {
            if b == 1 {
                -0.25
            } else {
                0.0625 * (b + 1) as f32
            }
        })
        .collect();
    let codes: Vec<u8> = (0..rows * cols).map(|_| (rng.next() % 16) as u8).collect();
    let bytes = q4::encode(g, &scales, &codes);
    let values = (0..rows * cols)
        .map(|i| (codes[i] as f32 - 8.0) * scales[i / 32])
        .collect();
    (bytes, values)
}

const TERNARY_CASES: [(TernaryLayout, u64, u64, f32); 6] = [
    (TernaryLayout::I2s { block: 128 }, 3, 50, 0.375),
    (TernaryLayout::I2s { block: 64 }, 2, 40, 1.5),
    (TernaryLayout::Tiled { tile_rows: 4 }, 5, 17, 0.03125),
    (TernaryLayout::Tiled { tile_rows: 8 }, 9, 20, 2.0),
    (TernaryLayout::Tiled { tile_rows: 16 }, 17, 33, 0.5),
    (TernaryLayout::Tiled { tile_rows: 32 }, 33, 18, 0.75),
];

/// Added later than [`TERNARY_CASES`], after `q4_b32`, so that earlier values stay as first committed.
const BASE3_CASES: [(TernaryLayout, u64, u64, f32); 4] = [
    (TernaryLayout::Base3 { tile_rows: 4 }, 5, 23, 0.25),
    (TernaryLayout::Base3 { tile_rows: 8 }, 9, 20, 1.0),
    (TernaryLayout::Base3 { tile_rows: 16 }, 17, 41, 0.5),
    (TernaryLayout::Base3 { tile_rows: 32 }, 33, 7, 0.0625),
];

/// One ternary tensor of random values: its test vector written to `format-spec/vectors/`, its
/// bytes, its expected values and its spec appended to the golden file's lists.
fn ternary_case(
    root: &Path,
    (layout, rows, cols, scale): (TernaryLayout, u64, u64, f32),
    rng: &mut Lcg,
    (specs, payloads, expected): (
        &mut Vec<TensorSpec>,
        &mut Vec<Vec<u8>>,
        &mut Vec<serde_json::Value>,
    ),
) {
    let name = format!("ternary_{}", layout.label());
    let values: Vec<i8> = (0..rows * cols).map(|_| rng.trit()).collect();
    let bytes = ternary::pack(layout, rows, cols, &values, scale).unwrap();
    expected.push(json!({"name": name, "values": values, "scale": scale}));
    let rows_json: Vec<String> = values
        .chunks(cols as usize)
        .map(|row| serde_json::to_string(row).unwrap())
        .collect();
    let vector = format!(
        "{{\n  \"layout\": {},\n  \"rows\": {rows},\n  \"cols\": {cols},\n  \"scale\": {scale:?},\n  \"values\": [\n    {}\n  ],\n  \"bytes_hex\": \"{}\"\n}}\n",
        serde_json::to_string(&layout.params()).unwrap(),
        rows_json.join(",\n    "),
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    );
    let path = root.join(format!("format-spec/vectors/{}.json", layout.label()));
    std::fs::write(&path, vector).unwrap();
    payloads.push(bytes);
    specs.push(TensorSpec::new(
        name,
        Encoding::Ternary(layout),
        &[rows, cols],
    ));
}

fn header() -> Header {
    Header {
        model: ModelConfig {
            family: "golden".into(),
            hidden_size: 8,
            intermediate_size: 12,
            num_layers: 1,
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 4,
            vocab_size: 5,
            context_length: 64,
            rope_theta: 10000.0,
            rope_scaling: None,
            rms_norm_eps: 1e-5,
            activation: Activation::Relu2,
            sub_norms: true,
            tied_embeddings: true,
            attention_bias: false,
            qk_norm: false,
        },
        tokenizer: Some(TokenizerInfo {
            tokenizer_json: serde_json::value::to_raw_value(&json!({
                "version": "1.0",
                "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "to": 1, "be": 2, "or": 3, "not": 4}, "unk_token": "<unk>"},
                "pre_tokenizer": {"type": "Whitespace"}
            }))
            .unwrap(),
            chat_template: None,
            bos_token_id: None,
            eos_token_ids: vec![0],
            pad_token_id: None,
            add_bos_token: false,
        }),
        generation: GenerationDefaults {
            temperature: Some(0.5),
            ..Default::default()
        },
        provenance: Provenance {
            source: Source::Synthetic {
                like: "golden".into(),
                seed: 1,
            },
            files: vec![],
            converter: "make_golden".into(),
            options: Default::default(),
        },
        tensors: vec![],
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut rng = Lcg(2024);
    let mut specs = Vec::new();
    let mut payloads = Vec::new();
    let mut expected = Vec::new();

    for (name, encoding, shape) in [
        ("f32", Encoding::F32, vec![3u64]),
        ("f16", Encoding::F16, vec![2, 3]),
        ("bf16", Encoding::Bf16, vec![4]),
    ] {
        let n = shape.iter().product::<u64>() as usize;
        let values: Vec<f32> = (0..n).map(|_| rng.float()).collect();
        payloads.push(float_bytes(encoding, &values));
        expected.push(json!({"name": name, "values": values}));
        specs.push(TensorSpec::new(name, encoding, &shape));
    }
    let (bytes, values) = i8_row_bytes(3, 5, &mut rng);
    payloads.push(bytes);
    expected.push(json!({"name": "i8_row", "values": values}));
    specs.push(TensorSpec::new("i8_row", Encoding::I8Row, &[3, 5]));

    std::fs::create_dir_all(root.join("format-spec/vectors")).unwrap();
    for case in TERNARY_CASES {
        ternary_case(
            &root,
            case,
            &mut rng,
            (&mut specs, &mut payloads, &mut expected),
        );
    }

    // Added after the ternary cases so that their random values stay as first committed.
    let (bytes, values) = q4_b32_bytes(2, 64, &mut rng);
    payloads.push(bytes);
    expected.push(json!({"name": "q4_b32", "values": values}));
    specs.push(TensorSpec::new("q4_b32", Encoding::Q4B32, &[2, 64]));
    for case in BASE3_CASES {
        ternary_case(
            &root,
            case,
            &mut rng,
            (&mut specs, &mut payloads, &mut expected),
        );
    }

    std::fs::create_dir_all(root.join("testdata/format")).unwrap();
    let writer =
        FileWriter::create(root.join("testdata/format/golden.bitnet"), header(), &specs).unwrap();
    for (spec, bytes) in specs.iter().zip(&payloads) {
        writer.write_tensor(&spec.name, bytes).unwrap();
    }
    writer.finish().unwrap();
    let lines: Vec<String> = expected
        .iter()
        .map(|t| serde_json::to_string(t).unwrap())
        .collect();
    let doc = format!("{{\"tensors\": [\n  {}\n]}}\n", lines.join(",\n  "));
    std::fs::write(root.join("testdata/format/golden.json"), doc).unwrap();
    write_rejects(&root);
    println!("wrote testdata/format/golden.bitnet, golden.json, reject/ and format-spec/vectors/");
}

/// Files that break exactly one rule of the spec: the golden file with its header edited (the edit
/// must match once) and the preamble and data section rebuilt around it.
/// `(file, text to find, replacement, rule, duplicated key, JSON Pointer of its object)`.
const REJECTS: [(&str, &str, &str, &str, &str, &str); 4] = [
    (
        "duplicate_top_level",
        r#"{"model":{"family""#,
        r#"{"note":"a","note":"b","model":{"family""#,
        "§3 duplicate member name",
        "note",
        "",
    ),
    (
        "duplicate_in_model",
        r#""family":"golden","#,
        r#""family":"golden","family":"golden","#,
        "§3 duplicate member name",
        "family",
        "/model",
    ),
    (
        "duplicate_in_options",
        r#""options":{}"#,
        r#""options":{"layout":"tiled16","layout":"i2s"}"#,
        "§3 duplicate member name",
        "layout",
        "/provenance/options",
    ),
    (
        "duplicate_in_tokenizer_json",
        r#""vocab":{"#,
        r#""vocab":{"be":4,"#,
        "§3 duplicate member name",
        "be",
        "/tokenizer/tokenizer_json/model/vocab",
    ),
];

fn write_rejects(root: &Path) {
    let golden = std::fs::read(root.join("testdata/format/golden.bitnet")).unwrap();
    let preamble = Preamble::parse(&golden).unwrap();
    let header_end = (PREAMBLE_LEN + preamble.header_len) as usize;
    let header = std::str::from_utf8(&golden[PREAMBLE_LEN as usize..header_end]).unwrap();
    let data = &golden[align_up(header_end as u64).unwrap() as usize..];
    let dir = root.join("testdata/format/reject");
    std::fs::create_dir_all(&dir).unwrap();
    let mut listed = Vec::new();
    for (name, find, replace, rule, key, path) in REJECTS {
        assert_eq!(header.matches(find).count(), 1, "{name}: {find}");
        let edited = header.replacen(find, replace, 1);
        let mut preamble = Preamble {
            major: MAJOR,
            minor: MINOR,
            header_crc32: 0,
            header_len: edited.len() as u64,
        }
        .to_bytes();
        let crc = header_checksum(&preamble, edited.as_bytes());
        preamble[12..16].copy_from_slice(&crc.to_le_bytes());
        let mut bytes = preamble.to_vec();
        bytes.extend_from_slice(edited.as_bytes());
        bytes.resize(align_up(bytes.len() as u64).unwrap() as usize, 0);
        bytes.extend_from_slice(data);
        let file = format!("{name}.bitnet");
        std::fs::write(dir.join(&file), bytes).unwrap();
        listed.push(
            serde_json::to_string(&json!({"file": file, "rule": rule, "key": key, "path": path}))
                .unwrap(),
        );
    }
    let doc = format!("{{\"files\": [\n  {}\n]}}\n", listed.join(",\n  "));
    std::fs::write(dir.join("reject.json"), doc).unwrap();
}
