//! What the handlers share: the loaded model (set once loading has finished), its tokenizer and
//! chat template, and the server's settings.

use std::sync::OnceLock;
use std::time::Duration;

use bitnet_run::chat::ChatTemplate;
use bitnet_run::engine::Engine;
use bitnet_run::sampling::SamplerConfig;
use bitnet_run::tokenizer::Tokenizer;

use crate::metrics::Metrics;

pub struct AppState {
    pub loaded: OnceLock<Loaded>,
    pub api_key: Option<String>,
    pub timeout: Duration,
}

pub struct Loaded {
    pub engine: Engine,
    pub tokenizer: Option<Tokenizer>,
    pub template: Option<ChatTemplate>,
    pub model_id: String,
    pub created: u64,
    pub vocab: u32,
    /// Sampling defaults: the file's generation settings, else llama.cpp's.
    pub defaults: SamplerConfig,
    pub metrics: Metrics,
}
