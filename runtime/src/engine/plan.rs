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

/// Plan a step under a budget of `budget` tokens: every decoding sequence runs one token, then
/// prompts take what is left in admission order (a long prompt is cut into chunks over several
/// steps, so decoding sequences are never starved by a newcomer's prompt), but at least a
/// quarter of the budget, so prompts are not starved by more decoders than the budget either.
/// `pending[i]` is `None` for a decoding sequence, `Some(n)` for one with `n` prompt tokens
/// still to run. At least one token always runs if any sequence has work, whatever the budget.
pub fn plan_step(pending: &[Option<usize>], budget: usize) -> Vec<Option<Work>> {
    let decoding = pending.iter().filter(|p| p.is_none()).count();
    let mut left = budget
        .saturating_sub(decoding)
        .max(budget / 4)
        .max(usize::from(decoding == 0));
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
        let plan = plan_step(&[None, Some(100), None, Some(30)], 64);
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
        let plan = plan_step(&[Some(10), Some(30)], 64);
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
        // More decoders than budget: all decode, and prompts still get a quarter of the budget.
        let mut crowded = vec![None; 40];
        crowded.push(Some(50));
        assert_eq!(
            plan_step(&crowded, 32)[40],
            Some(Work::Prompt {
                len: 8,
                last: false
            })
        );
        assert_eq!(plan_step(&[None, None, Some(5)], 1)[2], None);
        // A budget of 0 still makes progress.
        assert_eq!(
            plan_step(&[Some(5)], 0),
            [Some(Work::Prompt {
                len: 1,
                last: false
            })]
        );
    }
}
