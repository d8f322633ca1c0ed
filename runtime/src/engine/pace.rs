//! How many prompt tokens a step may carry while other sequences generate. A step's duration is
//! the next inter-token gap of every generating stream, so a newcomer's prompt read in one step
//! stalls them all; reading it in chunks keeps their streams even, at the cost of the newcomer's
//! time to its first token.
//!
//! The rule: with `running` sequences, of which `decoding` generate, a step may carry the work of
//! `running − decoding + stall · running` generating sequences, so that it takes at most
//! `1 + stall` times the step the streams will have once every prompt is read. A prompt token
//! counts as the measured ratio of its cost (in steps that only read prompts) to a generating
//! sequence's share of a step of at least `running` sequences; as a whole sequence until both are
//! measured. A generating sequence also runs its output row and is sampled, so it costs more
//! than a prompt token (about 12 against 7 ms with eight of them on 2 cores, BENCHMARKS.md): the
//! ratio is below 1 and prompts move faster than one token per place.

/// Weight of the newest step in the running means.
const WEIGHT: f64 = 0.25;

/// Step costs measured so far.
#[derive(Debug, Clone, Default)]
pub struct Pace {
    /// Mean seconds per sequence of generation-only steps, indexed by their sequences.
    share: Vec<Option<f64>>,
    /// Mean seconds per token of steps that only read prompts.
    prompt_token: Option<f64>,
}

fn update(mean: &mut Option<f64>, value: f64) {
    *mean = Some(mean.map_or(value, |m| m + WEIGHT * (value - m)));
}

impl Pace {
    /// Record a step of `decoding` generating sequences and `prompt` prompt tokens that took
    /// `seconds`.
    pub fn observe(&mut self, decoding: usize, prompt: usize, seconds: f64) {
        match (decoding, prompt) {
            (0, 0) => {}
            (0, p) => update(&mut self.prompt_token, seconds / p as f64),
            (d, 0) => {
                if self.share.len() <= d {
                    self.share.resize(d + 1, None);
                }
                update(&mut self.share[d], seconds / d as f64);
            }
            _ => {}
        }
    }

    /// A prompt token's cost in generating sequences, at most 1: measured against the smallest
    /// generation-only step of at least `running` sequences (its share per sequence is at most
    /// that of a step of `running`, which keeps the ratio on the safe side).
    fn prompt_weight(&self, running: usize) -> f64 {
        let share = self.share.iter().skip(running).find_map(|s| *s);
        match (self.prompt_token, share) {
            (Some(token), Some(share)) if share > 0.0 => (token / share).min(1.0),
            _ => 1.0,
        }
    }

    /// Prompt tokens for a step of `decoding` generating sequences among `running` ones (the
    /// others still reading their prompts), by the rule above; at least 1, so prompts always
    /// progress. `None` when nothing generates: there is no stream to stall.
    pub fn prompt_limit(&self, decoding: usize, running: usize, stall: f64) -> Option<usize> {
        if decoding == 0 {
            return None;
        }
        let running = running.max(decoding);
        let places = (running - decoding) as f64 + stall * running as f64;
        let tokens = places / self.prompt_weight(running).max(f64::MIN_POSITIVE);
        // `as` saturates: a weight measured as 0 gives usize::MAX, and the budget bounds it.
        Some((tokens as usize).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step's seconds on a machine where generating costs 33 ms alone (reading the weights)
    /// or 12 ms per sequence once that is more, and a prompt token 7 ms.
    fn cost(decoding: usize, prompt: usize) -> f64 {
        (0.012 * decoding as f64 + 0.007 * prompt as f64).max(0.033)
    }

    #[test]
    fn nothing_is_limited_while_nothing_generates() {
        let pace = Pace::default();
        assert_eq!(pace.prompt_limit(0, 4, 0.2), None);
    }

    #[test]
    fn unmeasured_a_prompt_token_counts_as_a_sequence() {
        let mut pace = Pace::default();
        // The places of the 2 still reading, plus 60% of 6.
        assert_eq!(pace.prompt_limit(4, 6, 0.6), Some(2 + 3));
        assert_eq!(pace.prompt_limit(4, 4, 0.01), Some(1));
        // A prompt timed, but no generation-only step of 6 or more.
        pace.observe(0, 16, cost(0, 16));
        pace.observe(4, 0, cost(4, 0));
        assert_eq!(pace.prompt_limit(4, 6, 0.6), Some(5));
    }

    #[test]
    fn measured_prompt_tokens_count_for_less_and_the_step_stays_within_the_stall() {
        let mut pace = Pace::default();
        pace.observe(0, 16, cost(0, 16));
        pace.observe(8, 0, cost(8, 0));
        pace.observe(1, 0, cost(1, 0));
        // 7 / 12 of a sequence: (1 + 0.2 · 8) / (7 / 12) = 4.46 tokens.
        assert_eq!(pace.prompt_limit(7, 8, 0.2), Some(4));
        // The share of a step of 1 (33 ms) is not used for 8 running: it would allow 12.
        for decoding in 1..=7 {
            let p = pace.prompt_limit(decoding, 8, 0.2).unwrap();
            let stretch = cost(decoding, p) / cost(8, 0);
            assert!(
                stretch <= 1.2,
                "{decoding} generating, {p} prompt: {stretch}"
            );
        }
    }

    #[test]
    fn the_weight_follows_the_newest_steps() {
        let mut pace = Pace::default();
        pace.observe(0, 10, 0.1);
        pace.observe(4, 0, 0.08);
        assert_eq!(pace.prompt_weight(4), 0.5);
        for _ in 0..40 {
            pace.observe(0, 10, 0.05);
        }
        assert!((pace.prompt_weight(4) - 0.25).abs() < 1e-3);
        // A prompt token measured dearer than a sequence counts as one.
        pace.observe(0, 1, 1.0);
        assert_eq!(pace.prompt_weight(4), 1.0);
    }
}
