//! The scheduler's decisions, as pure functions of the slots' state: which slot a request goes
//! to, and what each sequence contributes to the next step.

/// The slot for a prompt: among the free slots, the one whose cached tokens share the longest
/// prefix with it (the next turn of a conversation re-uses its cache), ties to the lowest index.
/// Returns the slot and how many of its cached tokens are kept: at most `prompt.len() - 1`, since
/// the prompt's last token must run to give the first logits.
pub fn choose_slot<'a>(
    prompt: &[u32],
    free: impl Iterator<Item = (usize, &'a [u32])>,
) -> Option<(usize, usize)> {
    free.map(|(i, cached)| {
        let common = cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        (i, common.min(prompt.len().saturating_sub(1)))
    })
    .fold(None, |best: Option<(usize, usize)>, (i, keep)| match best {
        Some((_, k)) if k >= keep => best,
        _ => Some((i, keep)),
    })
}

/// What one sequence runs in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Its last sampled token (one position).
    Decode,
    /// The next `len` prompt tokens; `last` when they end the prompt (its logits are wanted).
    Prompt { len: usize, last: bool },
}

/// Prompt tokens a step may carry under a budget of `budget` tokens: what is left after every
/// decoding sequence's one, but at least a quarter of the budget, so prompts are not starved by
/// more decoders than the budget either, and at least one when nothing decodes.
pub fn prompt_budget(decoding: usize, budget: usize) -> usize {
    budget
        .saturating_sub(decoding)
        .max(budget / 4)
        .max(usize::from(decoding == 0))
}

/// Plan a step: every decoding sequence runs one token, then prompts take up to `prompt_tokens`
/// in admission order (a long prompt is cut into chunks over several steps, so decoding sequences
/// are never starved by a newcomer's prompt). `pending[i]` is `None` for a decoding sequence,
/// `Some(n)` for one with `n` prompt tokens still to run.
pub fn plan_step(pending: &[Option<usize>], prompt_tokens: usize) -> Vec<Option<Work>> {
    let mut left = prompt_tokens;
    pending
        .iter()
        .map(|p| match *p {
            None => Some(Work::Decode),
            Some(0) => None,
            Some(n) if left > 0 => {
                let len = n.min(left);
                left -= len;
                Some(Work::Prompt {
                    len,
                    last: len == n,
                })
            }
            Some(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_shared_prefix_wins_and_one_token_is_left_to_run() {
        let a: &[u32] = &[1, 2, 3];
        let b: &[u32] = &[1, 2, 3, 4, 5];
        let empty: &[u32] = &[];
        let free = || [(0, empty), (1, a), (2, b)].into_iter();
        assert_eq!(choose_slot(&[1, 2, 3, 4, 5, 6], free()), Some((2, 5)));
        assert_eq!(choose_slot(&[1, 2, 9], free()), Some((1, 2)));
        // The whole prompt is cached: all but its last token are kept.
        assert_eq!(choose_slot(&[1, 2, 3, 4, 5], free()), Some((2, 4)));
        assert_eq!(choose_slot(&[7], free()), Some((0, 0)));
        assert_eq!(choose_slot(&[7], std::iter::empty()), None);
    }

    #[test]
    fn decoding_sequences_always_run_and_prompts_share_the_rest() {
        let plan = plan_step(&[None, Some(100), None, Some(30)], prompt_budget(2, 64));
        assert_eq!(
            plan,
            [
                Some(Work::Decode),
                Some(Work::Prompt {
                    len: 62,
                    last: false
                }),
                Some(Work::Decode),
                None,
            ]
        );
        let plan = plan_step(&[Some(10), Some(30)], prompt_budget(0, 64));
        assert_eq!(
            plan,
            [
                Some(Work::Prompt {
                    len: 10,
                    last: true
                }),
                Some(Work::Prompt {
                    len: 30,
                    last: true
                }),
            ]
        );
        // A smaller allowance cuts the first prompt and leaves the second for later.
        assert_eq!(
            plan_step(&[Some(10), None, Some(30)], 3),
            [
                Some(Work::Prompt {
                    len: 3,
                    last: false
                }),
                Some(Work::Decode),
                None,
            ]
        );
    }

    #[test]
    fn prompts_get_what_decoders_leave_and_never_nothing() {
        assert_eq!(prompt_budget(2, 64), 62);
        // More decoders than budget: prompts still get a quarter of it.
        assert_eq!(prompt_budget(40, 32), 8);
        assert_eq!(prompt_budget(2, 1), 0);
        // A budget of 0 still makes progress when nothing else runs.
        assert_eq!(prompt_budget(0, 0), 1);
        assert_eq!(
            plan_step(&[Some(5)], prompt_budget(0, 0)),
            [Some(Work::Prompt {
                len: 1,
                last: false
            })]
        );
    }
}
