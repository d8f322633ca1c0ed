//! The model: configuration, weights bound to a mapped `.bitnet` file, and the forward pass.

mod forward;
mod kv_cache;
pub mod memory;
pub mod ops;
mod perplexity;
mod weights;

pub use forward::{Logits, Runner, SeqStep, Session, StepLogits};
pub use kv_cache::{KvCache, KvType, KvTypeArgs, KvTypes, UnknownKvType};
pub use perplexity::negative_log_likelihood;
pub use weights::{DenseWeight, LayerWeights, TernaryWeight, Weights};

use bitnet_format::{BitnetFile, FormatError, ModelConfig};

use crate::kernels::KernelPath;
use crate::kernels::q4::Q4Tiles;
use bitnet_pool::{Pool, PoolKind};

/// Why a model cannot be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("the model lacks tensor {0}")]
    MissingTensor(String),
    #[error("tensor {0} must not be present for this model configuration")]
    UnexpectedTensor(String),
    #[error("tensor {name} has shape {actual:?}, the configuration needs {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<u64>,
        actual: Vec<u64>,
    },
    #[error("tensor {name} is encoded as {encoding}; it must be {allowed}")]
    TensorEncoding {
        name: String,
        encoding: String,
        allowed: String,
    },
    #[error("invalid model configuration: {field}: {detail}")]
    Config { field: &'static str, detail: String },
    #[error("tensor {0}: cannot repack: {1}")]
    Repack(String, String),
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { id: u32, vocab: u32 },
    #[error("{needed} positions are needed but the context holds {ctx}")]
    ContextFull { needed: usize, ctx: usize },
    #[error("could not start {0} threads: {1}")]
    Threads(usize, String),
}

/// The threads to run for a `-t` request: the request, capped at the cores this process may use
/// (with a note saying so), or all of them when nothing was asked.
pub fn thread_count(requested: Option<usize>) -> (usize, Option<String>) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match requested {
        Some(n) if n > cores => (
            cores,
            Some(format!(
                "-t {n} is more than the {cores} cores this process may use; running {cores} threads"
            )),
        ),
        Some(n) => (n, None),
        None => (cores, None),
    }
}

/// A loaded model: the mapped file, its configuration and its weights, and the kernel path and
/// thread pool it runs with.
pub struct Model {
    file: BitnetFile,
    pub config: ModelConfig,
    pub weights: Weights,
    pub path: KernelPath,
    pool: Pool,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .field("path", &self.path)
            .finish()
    }
}

impl Model {
    /// Bind `file`'s tensors for kernel `path`, running on `threads` threads.
    pub fn load(file: BitnetFile, path: KernelPath, threads: usize) -> Result<Self, ModelError> {
        let config = file.header().model.clone();
        let weights = Weights::load(&file, &config, path)?;
        let kind = PoolKind::from_env().map_err(|e| ModelError::Threads(threads, e))?;
        let pool = Pool::new(kind, threads).map_err(|e| ModelError::Threads(threads, e))?;
        Ok(Model {
            file,
            config,
            weights,
            path,
            pool,
        })
    }

    pub fn file(&self) -> &BitnetFile {
        &self.file
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The output matrix: `output`, or the embedding table when they are tied.
    pub fn output_matrix(&self) -> &weights::DenseWeight {
        self.weights
            .output
            .as_ref()
            .unwrap_or(&self.weights.token_embd)
    }

    /// Make now what steps of up to `sequences` sequences will read, rather than in the first step
    /// that needs it: the output matrix's [`Q4Tiles`], if it is `q4_b32` and this path has a tile
    /// kernel that so many tokens use.
    pub fn prepare_for_batches(&self, sequences: usize) {
        self.output_tiles(sequences);
    }

    /// The output matrix's [`Q4Tiles`] for a product of `tokens` tokens (made the first time):
    /// if it is `q4_b32` and this path has a tile kernel that so many tokens use.
    pub(crate) fn output_tiles(&self, tokens: usize) -> Option<&Q4Tiles> {
        Q4Tiles::min_tokens(self.path)
            .filter(|&n| tokens >= n)
            .and_then(|_| self.output_matrix().q4_tiles(self.path, self.bytes()))
    }

    /// The file's bytes, which weights index into.
    fn bytes(&self) -> &[u8] {
        self.file.bytes()
    }
}
