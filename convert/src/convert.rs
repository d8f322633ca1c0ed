//! The conversion pipeline: find the checkpoint, read its configuration and tokenizer, plan the
//! output, then convert tensors in parallel, writing each as soon as it is done, verify, and move the
//! file into place. On any error nothing is left at the output path.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bitnet_format::partial::PartialFile;
use bitnet_format::{
    Encoding, FileWriter, FormatError, Header, Provenance, SourceFile, TensorSpec, TernaryLayout,
};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::family::{self, ConfigError};
use crate::plan::{self, EmbeddingsChoice, PlanError};
use crate::quantize::QuantError;
use crate::source::{self, Checkpoint, HubOptions, SourceError, SourceSpec};
use crate::summary::ConvertReport;
use crate::tokenizer::{self, TokenizerError};
use crate::verify::{self, VerifyError};
use crate::write;

/// `name version` of this converter, recorded in every file's provenance.
pub const CONVERTER: &str = concat!("bitnet-convert ", env!("CARGO_PKG_VERSION"));

/// Everything a conversion needs to know.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub source: SourceSpec,
    pub output: PathBuf,
    pub layout: TernaryLayout,
    pub embeddings: EmbeddingsChoice,
    /// Size of the thread pool (`None`: one thread per core).
    pub threads: Option<usize>,
    /// Check every ternary tensor against the reference unpacker and re-read the written file.
    pub verify: bool,
    /// Replace an existing output file.
    pub force: bool,
    pub hub: HubOptions,
}

impl ConvertOptions {
    /// Defaults for everything but the source and output: the machine's layout, embeddings in the
    /// source dtype, verification on, hub settings from the environment.
    pub fn new(source: SourceSpec, output: impl Into<PathBuf>) -> Self {
        ConvertOptions {
            source,
            output: output.into(),
            layout: auto_layout(),
            embeddings: EmbeddingsChoice::Source,
            threads: None,
            verify: true,
            force: false,
            hub: HubOptions::from_env(),
        }
    }
}

/// The tile height the kernels of this architecture read best: 16 rows on x86-64 (AVX2, AVX-512),
/// 4 on AArch64 (NEON), 16 elsewhere.
fn native_tile_rows() -> u32 {
    if cfg!(target_arch = "aarch64") { 4 } else { 16 }
}

/// `--layout auto`: `tiled` with this architecture's tile height.
pub fn auto_layout() -> TernaryLayout {
    TernaryLayout::Tiled {
        tile_rows: native_tile_rows(),
    }
}

/// `--layout compact`: the smallest layout, `base3` (1.6 bits per weight), with this
/// architecture's tile height.
pub fn compact_layout() -> TernaryLayout {
    TernaryLayout::Base3 {
        tile_rows: native_tile_rows(),
    }
}

/// Why a conversion failed. Every variant names the file, tensor or option at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path} already exists; pass --force to replace it")]
    OutputExists { path: PathBuf },
    #[error("{path} is a directory; -o takes a file path")]
    OutputIsDirectory { path: PathBuf },
    #[error("--threads {threads}: {detail}")]
    Threads { threads: usize, detail: String },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Quantize(#[from] QuantError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("writing {}", crate::at_path(.path, .source))]
    Write {
        path: PathBuf,
        #[source]
        source: FormatError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<FormatError> for ConvertError {
    fn from(source: FormatError) -> Self {
        ConvertError::Write {
            path: PathBuf::new(),
            source,
        }
    }
}

pub use bitnet_format::remove_partial_files;

/// The finished but not yet verified file, beside the output: the writer renames its own temporary
/// file onto this registered one, which is renamed to the output after verification (or removed).
pub(crate) struct Staged(PartialFile);

impl Staged {
    pub(crate) fn new(output: &Path) -> std::io::Result<Self> {
        PartialFile::create(output).map(|(_, partial)| Staged(partial))
    }

    pub(crate) fn path(&self) -> &Path {
        self.0.path()
    }

    /// Move the file to `output`.
    pub(crate) fn persist(self, output: &Path) -> std::io::Result<()> {
        self.0.persist(output)
    }
}

/// Convert a checkpoint to a `.bitnet` file.
pub fn convert(options: &ConvertOptions) -> Result<ConvertReport, ConvertError> {
    let output = &options.output;
    if output.is_dir() {
        return Err(ConvertError::OutputIsDirectory {
            path: output.clone(),
        });
    }
    if output.exists() && !options.force {
        return Err(ConvertError::OutputExists {
            path: output.clone(),
        });
    }
    // Refuse an impossible output before downloading gigabytes.
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        let (kind, what) = if parent.exists() {
            (
                std::io::ErrorKind::NotADirectory,
                "the output's directory is a file, not a directory",
            )
        } else {
            (
                std::io::ErrorKind::NotFound,
                "the output's directory does not exist",
            )
        };
        return Err(ConvertError::Io {
            path: parent,
            source: std::io::Error::new(kind, what),
        });
    }
    let (pool, note) = thread_pool(options.threads)?;
    let mut report = pool.install(|| run(options))?;
    report.notes.splice(0..0, note);
    Ok(report)
}

/// The pool of `--threads` threads (`None`: one per core the process may use). A larger request
/// is capped at that count, with the note returned: more threads than cores only take turns.
pub fn thread_pool(
    requested: Option<usize>,
) -> Result<(rayon::ThreadPool, Option<String>), ConvertError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (threads, note) = match requested {
        Some(0) => {
            return Err(ConvertError::Threads {
                threads: 0,
                detail: "must be at least 1".into(),
            });
        }
        Some(n) if n > cores => (
            cores,
            Some(format!(
                "--threads {n} is more than the {cores} cores this process may use; running {cores} threads"
            )),
        ),
        Some(n) => (n, None),
        None => (cores, None),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| ConvertError::Threads {
            threads,
            detail: e.to_string(),
        })?;
    Ok((pool, note))
}

fn run(options: &ConvertOptions) -> Result<ConvertReport, ConvertError> {
    let started = Instant::now();
    let mut checkpoint = Checkpoint::open(&options.source, &options.hub)?;
    let config = checkpoint
        .read_json(source::CONFIG)?
        .expect("a checkpoint always has config.json");
    let spec = family::from_config(&config, &checkpoint.name_hint())?;
    let mut notes = spec.notes.clone();
    let tokenizer = tokenizer::read(&checkpoint, &config, spec.config.vocab_size)?;
    notes.extend(tokenizer.notes.iter().cloned());

    checkpoint.fetch_weights()?;
    let weights = checkpoint.weights()?;
    let plan = plan::plan(
        &spec.config,
        spec.config_ties_embeddings,
        spec.scale_rule,
        &weights,
        options.layout,
        options.embeddings,
    )?;
    notes.extend(plan.notes.iter().cloned());
    let mut model = spec.config.clone();
    model.tied_embeddings = plan.tied_embeddings;

    let files = hash_files(&checkpoint.files_read())?;
    let bytes_in = files.iter().map(|f| f.bytes).sum();
    let mut provenance_options = BTreeMap::new();
    provenance_options.insert("layout".into(), options.layout.label().into());
    provenance_options.insert("embeddings".into(), options.embeddings.label().into());
    let header = Header {
        model,
        tokenizer: tokenizer.tokenizer,
        generation: tokenizer.generation,
        provenance: Provenance {
            source: checkpoint.provenance().clone(),
            files,
            converter: CONVERTER.to_string(),
            options: provenance_options,
        },
        tensors: Vec::new(),
    };
    let specs: Vec<TensorSpec> = plan
        .tensors
        .iter()
        .map(|t| TensorSpec::new(&t.name, t.encoding, &t.shape))
        .collect();

    let staged = Staged::new(&options.output).map_err(|source| ConvertError::Io {
        path: options.output.clone(),
        source,
    })?;
    let write_error = |source| ConvertError::Write {
        path: options.output.clone(),
        source,
    };
    let writer = FileWriter::create(staged.path(), header, &specs).map_err(write_error)?;
    let bytes_out = writer.file_len();

    // Tensors in parallel (and in parallel within each); the first failure in file order is the
    // one reported, and the others stop early.
    let failed = AtomicBool::new(false);
    let first_error = plan
        .tensors
        .par_iter()
        .enumerate()
        .filter_map(|(i, t)| {
            if failed.load(Ordering::Relaxed) {
                return None;
            }
            let result = write::write_tensor(&writer, t, &weights, options.verify);
            result.err().map(|e| {
                failed.store(true, Ordering::Relaxed);
                (i, e)
            })
        })
        .min_by_key(|(i, _)| *i);
    if let Some((_, e)) = first_error {
        return Err(match e {
            ConvertError::Write { source, .. } => write_error(source),
            other => other,
        });
    }
    writer.finish().map_err(write_error)?;
    if options.verify {
        verify::check_written(staged.path(), &plan.tensors)?;
    }
    staged
        .persist(&options.output)
        .map_err(|source| ConvertError::Io {
            path: options.output.clone(),
            source,
        })?;

    let mut report = ConvertReport {
        output: options.output.clone(),
        source: checkpoint.label().to_string(),
        family: spec.family.name().to_string(),
        tensors: plan.tensors.len(),
        parameters: 0,
        ternary_weights: 0,
        ternary_bytes: 0,
        bytes_in,
        bytes_out,
        elapsed: Duration::ZERO,
        verified: options.verify,
        notes,
        warnings: Vec::new(),
    };
    for t in &plan.tensors {
        let n: u64 = t.shape.iter().product();
        report.parameters += n;
        if let Encoding::Ternary(_) = t.encoding {
            report.ternary_weights += n;
            report.ternary_bytes += t.encoding.byte_len(&t.shape).unwrap_or(0);
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Size and SHA-256 of every source file read, hashed in parallel.
fn hash_files(files: &[(String, PathBuf)]) -> Result<Vec<SourceFile>, ConvertError> {
    files
        .par_iter()
        .map(|(name, path)| {
            let io = |source| ConvertError::Io {
                path: path.clone(),
                source,
            };
            let mut file = std::fs::File::open(path).map_err(io)?;
            let mut hasher = Sha256::new();
            let mut buffer = vec![0u8; 1 << 20];
            let mut bytes = 0u64;
            loop {
                let n = file.read(&mut buffer).map_err(io)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
                bytes += n as u64;
            }
            let sha256 = hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            Ok(SourceFile {
                name: name.clone(),
                bytes,
                sha256,
            })
        })
        .collect()
}
