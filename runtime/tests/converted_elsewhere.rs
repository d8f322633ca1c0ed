//! Files converted on another machine run here: bitnet.cpp's most reported ARM failure is a model
//! file made on x86 giving garbage on ARM. CI converts the six family fixtures on x86-64 with the
//! native `bitnet-convert`, in several layouts, into a directory named by `BITNET_CONVERTED_DIR`
//! (files `<fixture>.<layout>.bitnet`), then runs this test on AArch64 under emulation: every file,
//! on every kernel path the CPU has, must give transformers' logits (the same bounds as
//! `tests/tests/runtime_fixtures.rs`). With `BITNET_CONVERTED_DIR`, every expected file must be
//! there. Without it, off AArch64 the test converts the fixtures itself into a temporary directory
//! and checks those; on AArch64 (where the converter is not built for these tests) it cannot run.

mod common;

use std::path::{Path, PathBuf};

use bitnet_format::{BitnetFile, Encoding};
use bitnet_run::kernels::KernelPath;
use bitnet_run::model::{KvType, KvTypes, Logits, Model, Session};
use bitnet_run::sampling::argmax;
use serde_json::Value;

/// Transformers keeps its cache in f32: the comparison with it uses the f32 cache.
const F32_CACHE: KvTypes = KvTypes {
    keys: KvType::F32,
    values: KvType::F32,
};

const FIXTURES: [&str; 9] = [
    "bitnet-2b4t",
    "bitnet-2b4t-bf16",
    "bitnet-1bitllm",
    "llama3-bitnet",
    "falcon3-bitnet",
    "falcon-e",
    "mistral-bitnet",
    "qwen2-bitnet",
    "qwen3-bitnet",
];

/// The converter's default on x86-64, the NEON-sized one, and bitnet.cpp's I2_S (repacked at load).
const LAYOUTS: [&str; 5] = ["tiled16", "tiled4", "i2s128", "base3x16", "base3x4"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/fixtures")
        .join(name)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A little-endian float32 `.npy` array: `(shape, values)`.
fn read_npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let (header_len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    let shape: Vec<usize> = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let values = bytes[start + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (shape, values)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Every fixture in every layout, converted here into a temporary directory with the converter
/// library, as CI converts them for the AArch64 run.
#[cfg(not(target_arch = "aarch64"))]
fn convert_fixtures() -> Option<tempfile::TempDir> {
    use bitnet_convert::{ConvertOptions, HubOptions, SourceSpec, convert};
    use bitnet_format::TernaryLayout;

    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        for layout in LAYOUTS {
            let out = dir.path().join(format!("{name}.{layout}.bitnet"));
            let source = SourceSpec::Directory {
                path: fixture(name),
            };
            let mut options = ConvertOptions::new(source, &out);
            options.layout = TernaryLayout::from_label(layout).unwrap();
            // A local directory needs no hub: cut it off entirely.
            options.hub = HubOptions {
                endpoint: "http://127.0.0.1:9".into(),
                cache_dir: dir.path().join("no-hub-cache"),
                token: None,
                offline: true,
                progress: false,
                retries: 0,
            };
            convert(&options).unwrap_or_else(|e| panic!("{name} {layout}: {e}"));
        }
    }
    Some(dir)
}

/// On AArch64 the files must come from elsewhere (`BITNET_CONVERTED_DIR`).
#[cfg(target_arch = "aarch64")]
fn convert_fixtures() -> Option<tempfile::TempDir> {
    common::cannot_run("BITNET_CONVERTED_DIR is not set");
    None
}

/// `BITNET_EXPECT_KERNELS=scalar,neon,neon-dot` (set by CI, from /proc/cpuinfo on x86-64 and by
/// the emulated CPU on AArch64) makes sure the paths meant to be covered really are available, and
/// that detection picks the last one.
#[test]
fn the_expected_kernel_paths_are_available() {
    let names: Vec<&str> = KernelPath::available().iter().map(|p| p.name()).collect();
    eprintln!(
        "kernel paths on this {} CPU: {} (detected: {})",
        std::env::consts::ARCH,
        names.join(", "),
        KernelPath::detect().name()
    );
    match std::env::var("BITNET_EXPECT_KERNELS") {
        Ok(expect) => {
            assert_eq!(names.join(","), expect);
            assert_eq!(Some(&KernelPath::detect().name()), names.last());
        }
        Err(_) => common::cannot_run(
            "BITNET_EXPECT_KERNELS (which kernel paths this CPU must test) is not set",
        ),
    }
}

#[test]
fn files_converted_elsewhere_match_transformers_on_every_path() {
    let converted_here;
    let dir = match std::env::var_os("BITNET_CONVERTED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let Some(dir) = convert_fixtures() else {
                return;
            };
            converted_here = dir;
            converted_here.path().to_path_buf()
        }
    };
    let paths = KernelPath::available();
    eprintln!(
        "{} on {}: kernel paths {:?}",
        dir.display(),
        std::env::consts::ARCH,
        paths.iter().map(|p| p.name()).collect::<Vec<_>>()
    );
    let mut checked = 0;
    for name in FIXTURES {
        let reference = read_json(&fixture(name).join("reference.json"));
        for layout in LAYOUTS {
            let file = dir.join(format!("{name}.{layout}.bitnet"));
            assert!(file.exists(), "missing {}", file.display());
            let opened = BitnetFile::open(&file).unwrap();
            let in_file = opened
                .tensors()
                .iter()
                .find_map(|t| match t.encoding {
                    Encoding::Ternary(l) => Some(l),
                    _ => None,
                })
                .unwrap();
            assert_eq!(in_file.label(), layout, "{}", file.display());
            for &path in &paths {
                let model = Model::load(BitnetFile::open(&file).unwrap(), path, 2).unwrap();
                // The kernels read the file's layout in place exactly when they say they do.
                assert_eq!(
                    model.weights.repacked.is_empty(),
                    path.reads_layout(in_file),
                    "{name} {layout} {path:?}"
                );
                let vocab = model.config.vocab_size as usize;
                for seq in reference["sequences"].as_array().unwrap() {
                    let tokens = ids(&seq["token_ids"]);
                    let (shape, want) =
                        read_npy_f32(&fixture(name).join(seq["logits_file"].as_str().unwrap()));
                    assert_eq!(shape, [tokens.len(), vocab]);
                    let got = Session::new(&model, tokens.len(), F32_CACHE)
                        .forward(&tokens, Logits::All)
                        .unwrap();
                    let diffs: Vec<f64> = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (*a as f64 - *b as f64).abs())
                        .collect();
                    let max = diffs.iter().cloned().fold(0.0, f64::max);
                    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
                    let agree = (0..tokens.len())
                        .filter(|&t| {
                            let row = t * vocab..(t + 1) * vocab;
                            argmax(&got[row.clone()]) == argmax(&want[row])
                        })
                        .count() as f64
                        / tokens.len() as f64;
                    let label = format!(
                        "{name}.{layout} {:?} {} tokens, {}",
                        seq["name"],
                        tokens.len(),
                        path.name()
                    );
                    eprintln!(
                        "{label}: max |Δ| {max:.2e}, mean |Δ| {mean:.2e}, argmax agreement {agree:.3}"
                    );
                    if tokens.len() <= 16 {
                        assert!(max < 1e-3, "{label}: max |Δ| {max}");
                    } else {
                        assert!(agree >= 0.9, "{label}: argmax agreement {agree}");
                        assert!(mean < 1e-2, "{label}: mean |Δ| {mean}");
                    }
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, FIXTURES.len() * LAYOUTS.len() * paths.len());
    eprintln!("{checked} (file, kernel path) pairs match transformers");
}
