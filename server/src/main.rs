//! `bitnet-serve`: an OpenAI-compatible HTTP server for `.bitnet` models.

mod args;
mod error;
mod generate;
mod metrics;
mod openai;
mod routes;
mod state;
mod ui;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use axum::serve::ListenerExt;
use bitnet_format::BitnetFile;
use bitnet_run::chat::ChatTemplate;
use bitnet_run::engine::{Engine, EngineConfig};
use bitnet_run::kernels::KernelPath;
use bitnet_run::model::Model;
use bitnet_run::model::memory::{self, MemoryNeed};
use bitnet_run::sampling::SamplerConfig;
use bitnet_run::tokenizer::{Tokenizer, TokenizerError};
use clap::Parser;

use args::Args;
use metrics::Metrics;
use state::{AppState, Loaded};

/// How long in-flight requests may run after SIGINT/SIGTERM before they are cancelled.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

fn main() {
    let args = Args::parse_from(args::normalize(std::env::args()));
    if let Err(e) = run(args) {
        eprintln!("error: {}", bitnet_format::error_chain(e.as_ref()));
        std::process::exit(1);
    }
}

#[tokio::main]
async fn run(args: Args) -> Result<()> {
    let api_key = match (&args.api_key, &args.api_key_file) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --api-key-file {}", path.display()))?;
            Some(text.lines().next().unwrap_or("").trim().to_string())
        }
        (None, None) => None,
    };
    if api_key.as_deref() == Some("") {
        bail!("the API key is empty");
    }
    let state = Arc::new(AppState {
        loaded: OnceLock::new(),
        api_key,
        timeout: Duration::from_secs(args.timeout.max(1)),
    });
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    eprintln!(
        "bitnet-serve: listening on http://{} (loading the model)",
        listener.local_addr()?
    );

    // Loading runs beside the server, which answers /health with 503 meanwhile.
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    {
        let state = Arc::clone(&state);
        tokio::task::spawn_blocking(move || match load(&args) {
            Ok(loaded) => {
                eprintln!(
                    "bitnet-serve: ready: model {}, {} slots of {} positions",
                    loaded.model_id,
                    loaded.engine.config().slots,
                    loaded.engine.config().ctx
                );
                let _ = state.loaded.set(loaded);
            }
            Err(e) => {
                let _ = failed_tx.send(e);
            }
        });
    }
    let failure = Arc::new(Mutex::new(None));
    let stop = {
        let (state, failure) = (Arc::clone(&state), Arc::clone(&failure));
        async move {
            tokio::select! {
                () = signal() => {
                    eprintln!("bitnet-serve: shutting down (running requests get {} s)", SHUTDOWN_GRACE.as_secs());
                    if let Some(l) = state.loaded.get() {
                        l.engine.drain(Instant::now() + SHUTDOWN_GRACE);
                    }
                }
                Ok(e) = failed_rx => *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e),
            }
        }
    };
    // Each streamed token is a small write: with Nagle's algorithm on, the kernel holds it until
    // the client acknowledges the previous one, which a client delaying its ACKs does after up to
    // 40 ms. A socket left without TCP_NODELAY still works, only slower.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, routes::router(Arc::clone(&state)))
        .with_graceful_shutdown(stop)
        .await
        .context("the server failed")?;
    match failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

fn load(args: &Args) -> Result<Loaded> {
    let path = KernelPath::chosen(args.kernel.as_deref())?;
    let (threads, note) = bitnet_run::model::thread_count(args.threads.map(|t| t as usize));
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    let (file, model_id, name) = match &args.model {
        Some(p) => (
            BitnetFile::open(p).with_context(|| format!("cannot open model {}", p.display()))?,
            p.file_stem()
                .map_or("model".into(), |s| s.to_string_lossy().into_owned()),
            p.display().to_string(),
        ),
        None => {
            eprintln!("note: {}", bitnet_run::demo::NOTE);
            let id = "bitnet-demo".to_string();
            (bitnet_run::demo::open()?, id.clone(), id)
        }
    };
    let trained = file.header().model.context_length as usize;
    let ctx = match args.ctx {
        Some(c) if c < 2 => bail!("-c/--ctx-size must be at least 2"),
        Some(c) if c > trained => {
            bail!("-c/--ctx-size {c} exceeds the model's context length {trained}")
        }
        Some(c) => c,
        None => trained.min(4096),
    };
    let slots = args.parallel as usize;
    let cache = args.cache.types();
    // Every slot's cache may fill to the context.
    let need = MemoryNeed::of(&file, path, ctx, cache).with_slots(&file, path, slots);
    if !args.placement.no_memory_check {
        let smaller = "lower -c (positions per slot) or -np (slots), which the KV caches hold";
        if let Some(warning) = memory::check_system(&name, &need, smaller)? {
            eprintln!("warning: {warning}");
        }
    }
    let file = memory::place(
        file,
        &need,
        args.placement.placement(),
        memory::available()?,
    )
    .with_context(|| format!("cannot read {name} into memory"))?;
    let model = Model::load(file, path, threads).context("cannot load the model")?;
    let header = model.file().header();
    let info = header.tokenizer.as_ref();
    let tokenizer = match Tokenizer::from_info(info) {
        Ok(t) => Some(t),
        Err(TokenizerError::Missing) => None,
        Err(e) => return Err(e.into()),
    };
    let template = match &tokenizer {
        Some(t) => ChatTemplate::for_model(info, t)
            .context("the model's chat template does not compile")?,
        None => None,
    };
    let defaults = SamplerConfig::for_file(&header.generation);
    let vocab = model.config.vocab_size;
    let engine = Engine::start(
        Arc::new(model),
        EngineConfig {
            slots,
            ctx,
            step_tokens: args.batch_tokens as usize,
            stall: args.max_stall.0,
            max_waiting: args.queue,
            cache,
        },
    )?;
    let metrics = Metrics::new(Arc::clone(engine.stats()), slots);
    Ok(Loaded {
        engine,
        tokenizer,
        template,
        model_id: args.alias.clone().unwrap_or(model_id),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        vocab,
        defaults,
        metrics,
    })
}
