//! The serving engine without HTTP: four prompts generated concurrently in one batch on the
//! bundled demo model (or a model given as the first argument).
//!
//! `cargo run --release -p bitnet-run --example serve_batch [MODEL.bitnet]`

use std::sync::Arc;

use bitnet_format::BitnetFile;
use bitnet_run::engine::{Engine, EngineConfig, Event, Request};
use bitnet_run::kernels::KernelPath;
use bitnet_run::model::Model;
use bitnet_run::tokenizer::Tokenizer;

fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/demo/demo.bitnet").to_string()
    });
    let model = Model::load(BitnetFile::open(&path)?, KernelPath::detect(), 2)?;
    let tok = Tokenizer::from_info(model.file().header().tokenizer.as_ref())?;
    let engine = Engine::start(Arc::new(model), EngineConfig::default())?;
    let prompts = ["ROMEO:", "JULIET:", "KING HENRY:", "First Citizen:"];
    let handles = prompts
        .iter()
        .map(|p| {
            let mut request = Request::greedy(tok.encode_prompt(p)?, 40);
            request.stop_ids = tok.eos().to_vec();
            Ok(engine.submit(request)?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (prompt, handle) in prompts.iter().zip(handles) {
        let ids: Vec<u32> = handle
            .filter_map(|e| match e {
                Event::Token { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        println!("{prompt}{}\n---", tok.decode(&ids)?);
    }
    let stats = engine.stats();
    let steps = stats.steps_total.load(std::sync::atomic::Ordering::Relaxed);
    let seqs = stats
        .step_sequences_total
        .load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "{steps} batched steps, {:.1} sequences per step",
        seqs as f64 / steps.max(1) as f64
    );
    Ok(())
}
