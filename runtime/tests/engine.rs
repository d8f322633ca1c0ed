//! The serving engine on the bundled demo model: greedy requests give exactly the tokens of the
//! single-sequence generation loop (`bitnet-run`'s), alone or eight at once; a slot's cache is
//! re-used by the next turn; cancelled requests free their slot; a full queue refuses.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitnet_format::BitnetFile;
use bitnet_run::engine::{Engine, EngineConfig, Event, FinishReason, Request, SubmitError, Usage};
use bitnet_run::kernels::KernelPath;
use bitnet_run::model::{KvTypes, Logits, Model, Session};
use bitnet_run::sampling::argmax;
use bitnet_run::tokenizer::Tokenizer;

fn demo() -> Arc<Model> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/demo/demo.bitnet");
    let file = BitnetFile::open(&path).unwrap();
    Arc::new(Model::load(file, KernelPath::detect(), 2).unwrap())
}

fn prompts(model: &Model) -> Vec<Vec<u32>> {
    let tok = Tokenizer::from_info(model.file().header().tokenizer.as_ref()).unwrap();
    [
        "ROMEO:",
        "First Citizen:\nBefore we proceed any further, hear me speak.",
        "KING",
        "O, what a noble mind is here o'erthrown!",
        "JULIET:\nWherefore art thou",
        "To be, or not to be",
        "Now is the winter of our discontent made glorious summer by this sun of York;",
        "A",
    ]
    .iter()
    .map(|p| tok.encode_prompt(p).unwrap())
    .collect()
}

/// Greedy generation one sequence at a time, as `bitnet-run --temp 0` does it.
fn greedy_alone(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut session = Session::new(model, 4096, KvTypes::default());
    let mut logits = session.forward(prompt, Logits::Last).unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let id = argmax(&logits);
        out.push(id);
        if out.len() < n {
            logits = session.forward(&[id], Logits::Last).unwrap();
        }
    }
    out
}

/// Tokens, finish reason, usage and the `Started` event's cached tokens (none: the request was
/// refused or cancelled before it got a slot).
fn collect(events: impl Iterator<Item = Event>) -> (Vec<u32>, FinishReason, Usage, Option<usize>) {
    let (mut tokens, mut cached) = (Vec::new(), None);
    for e in events {
        match e {
            Event::Started { cached_tokens } => cached = Some(cached_tokens),
            Event::Token { id, .. } => {
                assert!(cached.is_some(), "Started comes first");
                tokens.push(id)
            }
            Event::Finished { reason, usage } => {
                return (tokens, reason, usage, cached);
            }
        }
    }
    panic!("no Finished event");
}

fn config(slots: usize) -> EngineConfig {
    EngineConfig {
        slots,
        ctx: 4096,
        step_tokens: 64,
        stall: None,
        max_waiting: 16,
        cache: KvTypes::default(),
    }
}

#[test]
fn greedy_requests_alone_and_eight_at_once_equal_single_sequence_generation() {
    let model = demo();
    let prompts = prompts(&model);
    let lengths = [24, 7, 30, 12, 19, 3, 28, 16];
    let want: Vec<Vec<u32>> = prompts
        .iter()
        .zip(lengths)
        .map(|(p, n)| greedy_alone(&model, p, n))
        .collect();
    let engine = Engine::start(Arc::clone(&model), config(8)).unwrap();
    // One at a time.
    for ((p, n), want) in prompts.iter().zip(lengths).zip(&want) {
        let (got, reason, usage, _) =
            collect(engine.submit(Request::greedy(p.clone(), n)).unwrap());
        assert_eq!(&got, want);
        assert_eq!(reason, FinishReason::Length);
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (p.len(), n));
    }
    // All eight at once, each in its own thread; prompt chunks of long prompts share steps with
    // the decoding of others: up to a step budget of 64 tokens, or, with a stall of 0, one token
    // a step beside generating sequences (the most chunks).
    for stall in [None, Some(0.0)] {
        let engine =
            Engine::start(Arc::clone(&model), EngineConfig { stall, ..config(8) }).unwrap();
        let handles: Vec<_> = prompts
            .iter()
            .zip(lengths)
            .map(|(p, n)| engine.submit(Request::greedy(p.clone(), n)).unwrap())
            .collect();
        let got: Vec<Vec<u32>> = std::thread::scope(|s| {
            let threads: Vec<_> = handles
                .into_iter()
                .map(|h| s.spawn(move || collect(h).0))
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert_eq!(got, want, "stall {stall:?}");
        let stats = engine.stats();
        let steps = stats.steps_total.load(std::sync::atomic::Ordering::Relaxed);
        let seqs = stats
            .step_sequences_total
            .load(std::sync::atomic::Ordering::Relaxed);
        // Batching happened: far fewer steps than sequence-steps.
        assert!(seqs >= 2 * steps, "{seqs} sequence-steps in {steps} steps");
    }
}

#[test]
fn the_next_turn_reuses_the_slot_cache_and_gives_the_same_tokens() {
    let model = demo();
    let prompt = prompts(&model)[1].clone();
    let engine = Engine::start(Arc::clone(&model), config(2)).unwrap();
    let (first, _, usage, cached) =
        collect(engine.submit(Request::greedy(prompt.clone(), 10)).unwrap());
    assert_eq!((cached, usage.cached_tokens), (Some(0), 0));
    // The next turn: the whole first exchange plus new tokens.
    let mut next = prompt.clone();
    next.extend_from_slice(&first);
    next.extend_from_slice(&prompts(&model)[5]);
    let (got, _, usage, cached) = collect(engine.submit(Request::greedy(next.clone(), 8)).unwrap());
    // Everything run before is cached: the prompt and all generated tokens but the last, which
    // was sampled and never run.
    assert_eq!(cached, Some(prompt.len() + first.len() - 1));
    assert_eq!(Some(usage.cached_tokens), cached);
    assert_eq!(got, greedy_alone(&model, &next, 8));
    // An unrelated prompt goes to the other, empty slot and reuses nothing.
    let (_, _, usage, _) = collect(engine.submit(Request::greedy(vec![5, 6, 7], 2)).unwrap());
    assert_eq!(usage.cached_tokens, 0);
}

/// Long enough (seconds) that a request is still running while a test looks at it.
const LONG: usize = 4000;

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_dropped_request_is_cancelled_and_frees_its_slot() {
    use std::sync::atomic::Ordering::Relaxed;
    let model = demo();
    let engine = Engine::start(Arc::clone(&model), config(1)).unwrap();
    let mut handle = engine.submit(Request::greedy(vec![1, 2, 3], LONG)).unwrap();
    assert!(matches!(handle.next(), Some(Event::Started { .. })));
    assert!(matches!(handle.next(), Some(Event::Token { .. })));
    assert_eq!(engine.stats().running.load(Relaxed), 1);
    drop(handle);
    wait_until("the slot is freed", || {
        engine.stats().running.load(Relaxed) == 0
    });
    assert!(engine.stats().generated_tokens_total.load(Relaxed) < LONG as u64);
    // The slot serves the next request.
    let (got, reason, ..) = collect(engine.submit(Request::greedy(vec![4, 5], 3)).unwrap());
    assert_eq!((got.len(), reason), (3, FinishReason::Length));
    // Cancelling explicitly ends with Cancelled.
    let handle = engine.submit(Request::greedy(vec![1, 2, 3], LONG)).unwrap();
    handle.cancel();
    let (_, reason, ..) = collect(handle);
    assert_eq!(reason, FinishReason::Cancelled);
}

#[test]
fn bad_requests_and_a_full_queue_are_refused() {
    use std::sync::atomic::Ordering::Relaxed;
    let model = demo();
    let vocab = model.config.vocab_size;
    let engine = Engine::start(
        Arc::clone(&model),
        EngineConfig {
            max_waiting: 2,
            ..config(1)
        },
    )
    .unwrap();
    let err = |r: Request| engine.submit(r).err().expect("refused");
    assert_eq!(err(Request::greedy(vec![], 4)), SubmitError::EmptyPrompt);
    assert_eq!(
        err(Request::greedy(vec![1; 4096], 4)),
        SubmitError::PromptTooLong {
            tokens: 4096,
            ctx: 4096
        }
    );
    assert_eq!(
        err(Request::greedy(vec![1, vocab], 4)),
        SubmitError::TokenOutOfRange { id: vocab, vocab }
    );
    let mut bad = Request::greedy(vec![1], 4);
    bad.sampling.top_p = 0.0;
    assert!(matches!(err(bad), SubmitError::Sampling(m) if m.contains("top-p")));
    // One running, two waiting: the fourth is refused.
    let mut running = engine.submit(Request::greedy(vec![1, 2], LONG)).unwrap();
    assert!(matches!(running.next(), Some(Event::Started { .. })));
    let waiting: Vec<_> = (0..2)
        .map(|_| engine.submit(Request::greedy(vec![3], 2)).unwrap())
        .collect();
    assert_eq!(engine.stats().waiting.load(Relaxed), 2);
    assert_eq!(
        err(Request::greedy(vec![3], 2)),
        SubmitError::QueueFull { waiting: 2 }
    );
    running.cancel();
    for h in waiting {
        assert_eq!(collect(h).0.len(), 2);
    }
}

#[test]
fn stop_ids_end_a_request_without_being_emitted() {
    let model = demo();
    let prompt = prompts(&model)[0].clone();
    let want = greedy_alone(&model, &prompt, 12);
    let engine = Engine::start(Arc::clone(&model), config(1)).unwrap();
    let mut request = Request::greedy(prompt, 12);
    request.stop_ids = vec![want[5]];
    let (got, reason, usage, _) = collect(engine.submit(request).unwrap());
    let first = want.iter().position(|&id| id == want[5]).unwrap();
    assert_eq!(got, want[..first]);
    assert_eq!(reason, FinishReason::Stop);
    assert_eq!(usage.completion_tokens, first);
}

#[test]
fn shutdown_cancels_what_is_still_running_at_the_deadline() {
    let model = demo();
    let engine = Engine::start(Arc::clone(&model), config(1)).unwrap();
    let handle = engine.submit(Request::greedy(vec![1, 2, 3], LONG)).unwrap();
    let queued = engine.submit(Request::greedy(vec![1, 2, 3], LONG)).unwrap();
    engine.shutdown(Instant::now() + Duration::from_millis(50));
    assert_eq!(collect(handle).1, FinishReason::Cancelled);
    assert_eq!(collect(queued).1, FinishReason::Cancelled);
}

#[test]
fn logprobs_of_a_greedy_request_name_its_tokens_as_the_most_likely() {
    let model = demo();
    let engine = Engine::start(Arc::clone(&model), config(1)).unwrap();
    let prompt = prompts(&model).remove(0);
    let mut request = Request::greedy(prompt.clone(), 6);
    request.logprobs = Some(3);
    let mut tokens = Vec::new();
    for event in engine.submit(request).unwrap() {
        if let Event::Token { id, logprobs } = event {
            let lp = logprobs.expect("asked for");
            assert_eq!(lp.top.len(), 3);
            assert_eq!(
                lp.top[0],
                (id, lp.logprob),
                "greedy takes the most likely token"
            );
            assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
            assert!(lp.logprob <= 0.0);
            tokens.push(id);
        }
    }
    assert_eq!(tokens, greedy_alone(&model, &prompt, 6));
}
