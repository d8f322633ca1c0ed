//! `GET /metrics`: Prometheus text, from the engine's counters (read at each scrape) and the
//! server's latency histograms.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bitnet_run::engine::EngineStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    pub requests: Counter,
    pub prompt_tokens: Counter,
    pub generated_tokens: Counter,
    pub time_to_first_token: Histogram,
    pub inter_token: Histogram,
}

/// The engine's counters, read when scraped.
#[derive(Debug)]
struct EngineCollector {
    stats: Arc<EngineStats>,
    slots: usize,
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.stats;
        let gauges = [
            (
                "bitnet_requests_running",
                "Requests in a slot (prompt or generation)",
                s.running.load(Relaxed) as i64,
            ),
            (
                "bitnet_requests_waiting",
                "Requests waiting for a free slot",
                s.waiting.load(Relaxed) as i64,
            ),
            (
                "bitnet_slots_busy",
                "Slots holding a running request",
                s.running.load(Relaxed) as i64,
            ),
            ("bitnet_slots_total", "Slots (-np)", self.slots as i64),
            (
                "bitnet_batch_sequences",
                "Sequences in the last batched step",
                s.last_step_sequences.load(Relaxed) as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let counters = [
            (
                "bitnet_steps",
                "Batched forward steps",
                s.steps_total.load(Relaxed),
            ),
            (
                "bitnet_step_sequences",
                "Sum over steps of their sequences (divide by bitnet_steps for the mean batch)",
                s.step_sequences_total.load(Relaxed),
            ),
            (
                "bitnet_prompt_tokens_evaluated",
                "Prompt tokens run (cached ones excluded)",
                s.prompt_tokens_total.load(Relaxed),
            ),
            (
                "bitnet_prompt_tokens_cached",
                "Prompt tokens taken from a slot's cache",
                s.cached_tokens_total.load(Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        Ok(())
    }
}

impl Metrics {
    pub fn new(stats: Arc<EngineStats>, slots: usize) -> Self {
        let mut registry = Registry::default();
        let requests = Counter::default();
        let prompt_tokens = Counter::default();
        let generated_tokens = Counter::default();
        // 1 ms .. 32 s.
        let time_to_first_token = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let inter_token = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "bitnet_requests",
            "Generation requests accepted",
            requests.clone(),
        );
        registry.register(
            "bitnet_prompt_tokens",
            "Prompt tokens of finished requests",
            prompt_tokens.clone(),
        );
        registry.register(
            "bitnet_generated_tokens",
            "Tokens generated",
            generated_tokens.clone(),
        );
        registry.register(
            "bitnet_time_to_first_token_seconds",
            "From a request's arrival to its first token",
            time_to_first_token.clone(),
        );
        registry.register(
            "bitnet_inter_token_latency_seconds",
            "Between consecutive tokens of a request",
            inter_token.clone(),
        );
        registry.register_collector(Box::new(EngineCollector { stats, slots }));
        Metrics {
            registry,
            requests,
            prompt_tokens,
            generated_tokens,
            time_to_first_token,
            inter_token,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
