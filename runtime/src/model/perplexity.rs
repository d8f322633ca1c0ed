//! Scoring text: the negative log-likelihood behind `bitnet-run perplexity`.

use super::{KvTypes, Logits, Model, ModelError, Session};

/// Total negative log-likelihood (natural log) of `ids` and the number of tokens scored. The ids are
/// cut into non-overlapping windows of `ctx` tokens, each run from an empty cache; every token after
/// a window's first is scored given the ones before it (a final window needs at least 2 tokens),
/// with a KV cache of `cache`.
pub fn negative_log_likelihood(
    model: &Model,
    ids: &[u32],
    ctx: usize,
    cache: KvTypes,
) -> Result<(f64, usize), ModelError> {
    let vocab = model.config.vocab_size as usize;
    let mut session = Session::new(model, ctx, cache);
    let (mut nll, mut count) = (0.0f64, 0usize);
    for window in ids.chunks(ctx).filter(|w| w.len() >= 2) {
        session.truncate(0);
        let logits = session.forward(window, Logits::All)?;
        for (i, &target) in window.iter().enumerate().skip(1) {
            let row = &logits[(i - 1) * vocab..i * vocab];
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let log_sum = row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln()
                + max;
            nll += log_sum - row[target as usize] as f64;
            count += 1;
        }
    }
    Ok((nll, count))
}
