//! Choosing the next token, with llama.cpp's options and order: repetition penalty, top-k, top-p,
//! min-p, temperature, then a draw (or the argmax at temperature 0).

/// Sampling options, checked by [`SamplerConfig::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means no limit.
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    /// 1 means none.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplerConfig {
    /// The defaults for a model: its file's generation settings where it has them, else these.
    pub fn for_file(g: &bitnet_format::GenerationDefaults) -> Self {
        let d = SamplerConfig::default();
        SamplerConfig {
            temperature: g.temperature.map_or(d.temperature, |v| v as f32),
            top_k: g.top_k.map_or(d.top_k, |v| v as usize),
            top_p: g.top_p.map_or(d.top_p, |v| v as f32),
            min_p: g.min_p.map_or(d.min_p, |v| v as f32),
            repeat_penalty: g.repetition_penalty.map_or(d.repeat_penalty, |v| v as f32),
            ..d
        }
    }

    /// `Err` names the option and the allowed range.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!("--temp {} must be a number ≥ 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("--top-p {} must be in (0, 1]", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("--min-p {} must be in [0, 1]", self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(format!(
                "--repeat-penalty {} must be a number > 0",
                self.repeat_penalty
            ));
        }
        Ok(())
    }
}

/// A fresh seed for a run that gave none (from the OS-seeded hasher keys std already draws).
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// A seeded sampler (xoshiro256** seeded through SplitMix64: small, fast, reproducible everywhere).
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    state: [u64; 4],
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Self {
        let mut s = config.seed;
        let mut split = || {
            s = s.wrapping_add(0x9E3779B97F4A7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            z ^ (z >> 31)
        };
        let state = [split(), split(), split(), split()];
        Sampler { config, state }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform draw in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Pick the next token from `logits`, given the tokens so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let c = &self.config;
        let mut logits = logits.to_vec();
        if c.repeat_penalty != 1.0 {
            let recent = &history[history.len().saturating_sub(c.repeat_last_n)..];
            let mut seen = std::collections::HashSet::new();
            for &id in recent.iter().filter(|&&id| seen.insert(id)) {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 {
                        *l / c.repeat_penalty
                    } else {
                        *l * c.repeat_penalty
                    };
                }
            }
        }
        if c.temperature == 0.0 {
            return argmax(&logits);
        }
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        // With top-k, select the k best first (linear) and sort only those: the same candidates
        // in the same order as sorting the whole vocabulary.
        if c.top_k > 0 && c.top_k < cand.len() {
            cand.select_nth_unstable_by(c.top_k - 1, order);
            cand.truncate(c.top_k);
        }
        cand.sort_by(order);
        let probs = softmax_of(&cand, 1.0);
        if c.top_p < 1.0 {
            let mut total = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    total += p;
                    total >= c.top_p as f64
                })
                .map_or(cand.len(), |i| i + 1);
            cand.truncate(keep);
        }
        if c.min_p > 0.0 {
            let probs = softmax_of(&cand, 1.0);
            let floor = probs[0] * c.min_p as f64;
            let keep = probs.iter().take_while(|&&p| p >= floor).count().max(1);
            cand.truncate(keep);
        }
        let probs = softmax_of(&cand, c.temperature);
        let mut u = self.uniform();
        for (&(id, _), p) in cand.iter().zip(&probs) {
            if u < *p {
                return id;
            }
            u -= p;
        }
        cand.last().map_or(0, |c| c.0)
    }
}

/// A generated token's log-probability and the most likely alternatives at its position
/// (OpenAI's `logprobs`), from the model's logits before any penalty or temperature.
#[derive(Debug, Clone, PartialEq)]
pub struct Logprobs {
    pub logprob: f32,
    /// Up to the requested number of `(id, logprob)`, most likely first (lower id first on ties).
    pub top: Vec<(u32, f32)>,
}

/// `id`'s log-softmax under `logits`, and the `top` most likely tokens' (found by selection, not
/// by sorting the vocabulary).
pub fn logprobs(logits: &[f32], id: u32, top: usize) -> Logprobs {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let log_sum = logits
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    let of = |i: u32| (logits[i as usize] as f64 - log_sum) as f32;
    let order = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    let top = top.min(ids.len());
    if top > 0 && top < ids.len() {
        ids.select_nth_unstable_by(top - 1, order);
    }
    ids.truncate(top);
    ids.sort_unstable_by(order);
    Logprobs {
        logprob: of(id),
        top: ids.into_iter().map(|i| (i, of(i))).collect(),
    }
}

/// Index of the largest logit (the first, on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Probabilities of sorted candidates at temperature `temp`, in f64.
fn softmax_of(cand: &[(u32, f32)], temp: f32) -> Vec<f64> {
    let max = cand[0].1 as f64;
    let e: Vec<f64> = cand
        .iter()
        .map(|&(_, l)| ((l as f64 - max) / temp as f64).exp())
        .collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Top-k by selection draws what sorting the whole vocabulary would: the same seed picks the
    /// same token as top-k 0 on logits where everything outside the k best is impossible.
    #[test]
    fn top_k_by_selection_samples_as_a_full_sort_would() {
        let logits: Vec<f32> = (0..5000u32)
            .map(|i| ((i.wrapping_mul(2654435761) >> 7) % 1000) as f32 / 90.0)
            .collect();
        for k in [1, 3, 40, 4999] {
            let mut ids: Vec<usize> = (0..logits.len()).collect();
            ids.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            let mut masked = vec![f32::NEG_INFINITY; logits.len()];
            for &i in &ids[..k] {
                masked[i] = logits[i];
            }
            for seed in 0..50 {
                let cfg = |top_k| SamplerConfig {
                    temperature: 0.9,
                    top_k,
                    top_p: 0.9,
                    min_p: 0.01,
                    seed,
                    ..SamplerConfig::default()
                };
                let got = Sampler::new(cfg(k)).sample(&logits, &[]);
                let want = Sampler::new(cfg(0)).sample(&masked, &[]);
                assert_eq!(got, want, "k {k} seed {seed}");
            }
        }
    }

    #[test]
    fn logprobs_are_a_log_softmax_and_the_top_ones_come_in_order() {
        let logits: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1009) as f32 / 50.0)
            .collect();
        // Ties: ids 1 and 2 get the largest logit, so the lower id comes first.
        let mut logits = logits;
        logits[1] = 30.0;
        logits[2] = 30.0;
        let lp = logprobs(&logits, 5, 4);
        let total: f64 = (0..1000)
            .map(|i| (logprobs(&logits, i, 0).logprob as f64).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-4, "probabilities sum to {total}");
        let mut sorted: Vec<u32> = (0..1000).collect();
        sorted.sort_by(|&a, &b| {
            logits[b as usize]
                .total_cmp(&logits[a as usize])
                .then(a.cmp(&b))
        });
        let ids: Vec<u32> = lp.top.iter().map(|t| t.0).collect();
        assert_eq!(ids, sorted[..4]);
        assert_eq!(ids[..2], [1, 2]);
        // Differences of log-probabilities are differences of logits.
        let (a, b) = (lp.top[0].1, lp.logprob);
        assert!(((a - b) - (logits[1] - logits[5])).abs() < 1e-4);
        assert!(logprobs(&logits, 0, 5000).top.len() == 1000);
    }

    fn config(temperature: f32) -> SamplerConfig {
        SamplerConfig {
            temperature,
            seed: 42,
            ..SamplerConfig::default()
        }
    }

    #[test]
    fn temperature_zero_is_argmax() {
        let mut s = Sampler::new(config(0.0));
        assert_eq!(s.sample(&[0.1, 3.0, 2.9, -1.0], &[]), 1);
    }

    #[test]
    fn same_seed_same_draws_and_draws_follow_the_distribution() {
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY];
        let cfg = SamplerConfig {
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..config(1.0)
        };
        let (mut a, mut b) = (Sampler::new(cfg.clone()), Sampler::new(cfg));
        let draws: Vec<u32> = (0..4000).map(|_| a.sample(&logits, &[])).collect();
        assert_eq!(
            draws,
            (0..4000)
                .map(|_| b.sample(&logits, &[]))
                .collect::<Vec<_>>()
        );
        let ones = draws.iter().filter(|&&d| d == 1).count() as f64 / 4000.0;
        assert!((ones - 0.75).abs() < 0.03, "P(1) = {ones}, expected 0.75");
        assert!(!draws.contains(&2));
    }

    #[test]
    fn top_k_one_and_min_p_one_are_greedy() {
        for cfg in [
            SamplerConfig {
                top_k: 1,
                ..config(1.5)
            },
            SamplerConfig {
                min_p: 1.0,
                ..config(1.5)
            },
        ] {
            let mut s = Sampler::new(cfg);
            for _ in 0..50 {
                assert_eq!(s.sample(&[1.0, 1.2, 0.3], &[]), 1);
            }
        }
    }

    #[test]
    fn repeat_penalty_demotes_recent_tokens() {
        let mut s = Sampler::new(SamplerConfig {
            repeat_penalty: 2.0,
            ..config(0.0)
        });
        assert_eq!(s.sample(&[1.0, 1.5, -1.0], &[1]), 0);
    }

    #[test]
    fn invalid_options_are_named() {
        for (cfg, opt) in [
            (
                SamplerConfig {
                    temperature: -1.0,
                    ..config(1.0)
                },
                "--temp",
            ),
            (
                SamplerConfig {
                    top_p: 0.0,
                    ..config(1.0)
                },
                "--top-p",
            ),
            (
                SamplerConfig {
                    min_p: 1.5,
                    ..config(1.0)
                },
                "--min-p",
            ),
            (
                SamplerConfig {
                    repeat_penalty: 0.0,
                    ..config(1.0)
                },
                "--repeat-penalty",
            ),
        ] {
            assert!(cfg.validate().unwrap_err().contains(opt));
        }
    }
}
