//! Per-token int8 activation quantization, as BitNet b1.58's reference implementation does it
//! (the formula is at [`quantize_row`]).
//! The SIMD paths give exactly the scalar result: `cvtps2dq` rounds half to even (the default
//! MXCSR mode) and saturating packs clamp to [-128, 127]; on AArch64 `fcvtns` rounds half to even
//! and `sqxtn` saturates.

use bitnet_pool::Pool;

use super::{Isa, KernelPath};

/// A batch of token rows quantized to i8, zero-padded to `kpad` columns.
#[derive(Debug, Clone, Default)]
pub struct QuantizedActs {
    /// `tokens × kpad` codes, row-major.
    pub q: Vec<i8>,
    /// Per token: `s = 127 / max(absmax, 1e-5)`; the real activation is `q / s`.
    pub scale: Vec<f32>,
    /// Per token: `Σ q`, which the unsigned-code SIMD kernels subtract.
    pub sum: Vec<i32>,
    pub tokens: usize,
    pub kpad: usize,
    /// The codes rearranged for a matrix-matrix kernel by [`QuantizedActs::quantize_rows`] (none
    /// if it was not asked to).
    pub grouped: Grouped,
}

/// Codes in the order of [`QuantizedActs::with_grouped`], and the grouping they are in that order
/// for.
#[derive(Debug, Clone, Default)]
pub struct Grouped {
    codes: Vec<i8>,
    shape: Option<Grouping>,
}

/// How a matrix-matrix kernel reads activations ([`QuantizedActs::with_grouped`]): tokens in the
/// groups of [`token_groups`]`(tokens, block)`, a group of at least `quads_from` tokens a quad of
/// codes (4 bytes) of each token at a time, a smaller one `block_bytes` (a block of the matrix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    pub block: usize,
    pub quads_from: usize,
    pub block_bytes: usize,
}

impl Grouping {
    /// The bytes of each token a group of `m` tokens takes at a time.
    fn piece(self, m: usize) -> usize {
        if m >= self.quads_from {
            4
        } else {
            self.block_bytes
        }
    }
}

impl QuantizedActs {
    /// Quantize `tokens` rows of `k` values each (`x.len() == tokens · k`), padding rows to `kpad`.
    pub fn quantize(&mut self, path: KernelPath, x: &[f32], k: usize, kpad: usize) {
        debug_assert!(kpad >= k && x.len().is_multiple_of(k));
        let shape = Shape {
            tokens: x.len() / k,
            k,
            kpad,
            grouping: None,
        };
        self.quantize_rows(path, shape, None, &|t, row| {
            row.copy_from_slice(&x[t * k..(t + 1) * k])
        });
    }

    /// Quantize `shape.tokens` rows of `shape.k` values each, padded to `shape.kpad`, where
    /// `values(t, row)` writes token `t`'s values into `row` (a buffer of the calling thread's,
    /// so that a norm or an activation function can run in it on the way). Groups of tokens run
    /// as tasks on `pool` (one group runs here), and with `shape.grouping` each group's codes are
    /// also rearranged as [`QuantizedActs::with_grouped`] reads them, by the same task.
    pub fn quantize_rows(
        &mut self,
        path: KernelPath,
        shape: Shape,
        pool: Option<&Pool>,
        values: &(dyn Fn(usize, &mut [f32]) + Sync),
    ) {
        std::thread_local! {
            static ROW: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let Shape {
            tokens,
            k,
            kpad,
            grouping,
        } = shape;
        debug_assert!(kpad >= k);
        self.tokens = tokens;
        self.kpad = kpad;
        // Every code, pad, scale and sum is written below: no clearing.
        set_len(&mut self.q, tokens * kpad);
        set_len(&mut self.scale, tokens);
        set_len(&mut self.sum, tokens);
        let grouping = grouping.filter(|_| tokens > 1);
        set_len(
            &mut self.grouped.codes,
            if grouping.is_some() { tokens * kpad } else { 0 },
        );
        self.grouped.shape = grouping;
        let block = grouping.map_or(TASK_TOKENS, |g| g.block);
        let mut parts = Vec::new();
        let (mut q, mut scale, mut sum) = (&mut self.q[..], &mut self.scale[..], &mut self.sum[..]);
        let mut grouped = &mut self.grouped.codes[..];
        for (t0, m) in token_groups(tokens, block) {
            let g;
            (g, grouped) = grouped.split_at_mut(if grouping.is_some() { m * kpad } else { 0 });
            let part = Part {
                t0,
                q: split_off(&mut q, m * kpad),
                scale: split_off(&mut scale, m),
                sum: split_off(&mut sum, m),
                grouped: g,
            };
            parts.push(std::sync::Mutex::new(part));
        }
        let task = |i: usize| {
            let mut part = parts[i].lock().unwrap_or_else(|e| e.into_inner());
            let Part {
                t0,
                ref mut q,
                ref mut scale,
                ref mut sum,
                ref mut grouped,
            } = *part;
            ROW.with_borrow_mut(|row| {
                row.resize(k, 0.0);
                for (i, codes) in q.chunks_exact_mut(kpad).enumerate() {
                    values(t0 + i, row);
                    let (codes, pad) = codes.split_at_mut(k);
                    (scale[i], sum[i]) = quantize_row(path, row, codes);
                    pad.fill(0);
                }
            });
            if let Some(grouping) = grouping {
                interleave_group(grouping.piece(scale.len()), kpad, q, grouped);
            }
        };
        match pool {
            Some(pool) if parts.len() > 1 => pool.for_each(parts.len(), &task),
            _ => (0..parts.len()).for_each(task),
        }
    }

    /// The codes of token `t`.
    pub fn row(&self, t: usize) -> &[i8] {
        &self.q[t * self.kpad..(t + 1) * self.kpad]
    }

    /// Run `f` on the codes rearranged as `grouping` says: the group of `m` tokens from `t0`
    /// starts at `t0 · kpad`, and token `t0 + i`'s `j`-th piece of `p = grouping.piece(m)` codes
    /// is at `(j · m + i) · p` within it. A register block then reads its tokens' activations for
    /// one block from one or two cache lines instead of `m` lines a row apart (the AVX2 `tiled16`
    /// kernel's 128-token products went from 142.5–143.0 to 149.6–155.9 G MAC/s on Zen 4,
    /// BENCHMARKS.md, twelfth session), and a quad's tokens are side by side, vectors of 8.
    /// Uses the codes [`QuantizedActs::quantize_rows`] grouped if they are in this order (done
    /// once for every matrix-matrix call that reads them: with 128 tokens, redoing it for each run
    /// of tiles made prompts 5–7% slower than not grouping at all); otherwise rearranges them
    /// now, into a buffer of the calling thread's.
    pub fn with_grouped<R>(&self, grouping: Grouping, f: impl FnOnce(&[i8]) -> R) -> R {
        std::thread_local! {
            static GROUPED: std::cell::RefCell<Vec<i8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        // One token's row is already in this order.
        if self.tokens == 1 {
            return f(&self.q);
        }
        if self.grouped.shape == Some(grouping) {
            return f(&self.grouped.codes);
        }
        let mut codes = GROUPED.take();
        self.interleave(grouping, &mut codes);
        let r = f(&codes);
        GROUPED.set(codes);
        r
    }

    /// Write the codes into `out` in [`QuantizedActs::with_grouped`]'s order.
    fn interleave(&self, grouping: Grouping, out: &mut Vec<i8>) {
        let kpad = self.kpad;
        set_len(out, self.tokens * kpad);
        for (t0, m) in token_groups(self.tokens, grouping.block) {
            let span = t0 * kpad..(t0 + m) * kpad;
            interleave_group(
                grouping.piece(m),
                kpad,
                &self.q[span.clone()],
                &mut out[span],
            );
        }
    }
}

/// What [`QuantizedActs::quantize_rows`] makes: `tokens` rows of `k` values, padded to `kpad`
/// codes, grouped for a matrix-matrix kernel or not.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub tokens: usize,
    pub k: usize,
    pub kpad: usize,
    pub grouping: Option<Grouping>,
}

/// Tokens per task of [`QuantizedActs::quantize_rows`] when they are not grouped.
const TASK_TOKENS: usize = 32;

/// One task's tokens in [`QuantizedActs::quantize_rows`]: from `t0`, their codes, scales, sums and
/// grouped codes (empty when not grouped).
struct Part<'a> {
    t0: usize,
    q: &'a mut [i8],
    scale: &'a mut [f32],
    sum: &'a mut [i32],
    grouped: &'a mut [i8],
}

/// The first `n` values of `*s`, leaving it the rest.
fn split_off<'a, T>(s: &mut &'a mut [T], n: usize) -> &'a mut [T] {
    let (head, tail) = std::mem::take(s).split_at_mut(n);
    *s = tail;
    head
}

/// `v` at `len` values, keeping its old values: callers overwrite every one.
fn set_len<T: Copy + Default>(v: &mut Vec<T>, len: usize) {
    v.resize(len, T::default());
    v.truncate(len);
}

/// One group's token rows (`rows`, each `kpad` codes) rearranged into `out`: token `i`'s `j`-th
/// piece of `piece` codes at `(j · m + i) · piece`. The common piece sizes copy as fixed-size
/// arrays, which compile to a move each (a `memcpy` call each otherwise).
fn interleave_group(piece: usize, kpad: usize, rows: &[i8], out: &mut [i8]) {
    fn pieces<const N: usize>(kpad: usize, rows: &[i8], out: &mut [i8]) {
        let m = rows.len() / kpad;
        let (out, _) = out.as_chunks_mut::<N>();
        for (i, row) in rows.chunks_exact(kpad).enumerate() {
            let (row, _) = row.as_chunks::<N>();
            for (j, codes) in row.iter().enumerate() {
                out[j * m + i] = *codes;
            }
        }
    }
    debug_assert!(kpad.is_multiple_of(piece) && rows.len() == out.len());
    match piece {
        4 => pieces::<4>(kpad, rows, out),
        16 => pieces::<16>(kpad, rows, out),
        20 => pieces::<20>(kpad, rows, out),
        _ => {
            let m = rows.len() / kpad;
            for (i, row) in rows.chunks_exact(kpad).enumerate() {
                for (j, codes) in row.chunks_exact(piece).enumerate() {
                    out[(j * m + i) * piece..][..piece].copy_from_slice(codes);
                }
            }
        }
    }
}

/// How the matrix-matrix kernels split `tokens` into register blocks, as `(first token, tokens)`:
/// blocks of `block` (a power of two), then at most one of each smaller power of two.
pub fn token_groups(tokens: usize, block: usize) -> impl Iterator<Item = (usize, usize)> {
    debug_assert!(block.is_power_of_two());
    let mut t = 0;
    std::iter::from_fn(move || {
        let left = tokens - t;
        let m = if left >= block {
            block
        } else if left == 0 {
            return None;
        } else {
            1 << left.ilog2()
        };
        t += m;
        Some((t - m, m))
    })
}

/// Quantize one row: `s = 127 / max(max|x|, 1e-5)`, `q = clamp(round_half_even(x · s), -128, 127)`.
/// Returns `(s, Σ q)`.
pub fn quantize_row(path: KernelPath, x: &[f32], out: &mut [i8]) -> (f32, i32) {
    assert_eq!(x.len(), out.len());
    match path.isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `KernelPath` for this instruction set exists only when the CPU has AVX-512 F/BW.
        Isa::Avx512 => unsafe { super::avx512::quantize_row(x, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `KernelPath` for these instruction sets exists only when the CPU has AVX2.
        Isa::Avx2 | Isa::AvxVnni => unsafe { super::avx2::quantize_row(x, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of every AArch64 CPU.
        Isa::Neon | Isa::NeonDot => unsafe { super::neon::quantize_row(x, out) },
        _ => quantize_row_scalar(x, out),
    }
}

/// The reference for [`quantize_row`].
pub fn quantize_row_scalar(x: &[f32], out: &mut [i8]) -> (f32, i32) {
    let absmax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let s = 127.0 / absmax.max(1e-5);
    let mut sum = 0i32;
    for (o, &v) in out.iter_mut().zip(x) {
        let q = (v * s).round_ties_even().clamp(-128.0, 127.0) as i8;
        *o = q;
        sum += q as i32;
    }
    (s, sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_to_even_and_scales_by_absmax() {
        // absmax 127 -> s = 1: values land exactly on halves.
        let x = [127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -127.0];
        let mut q = [0i8; 7];
        let (s, sum) = quantize_row_scalar(&x, &mut q);
        assert_eq!(s, 1.0);
        assert_eq!(q, [127, 0, 2, 2, 0, -2, -127]);
        assert_eq!(sum, q.iter().map(|&v| v as i32).sum::<i32>());
    }

    #[test]
    fn every_path_quantizes_exactly_like_the_reference() {
        let mut seed = 3u32;
        for len in [1usize, 7, 16, 33, 64, 100, 2560] {
            for scale in [1e-7f32, 0.01, 1.0, 300.0] {
                let x: Vec<f32> = (0..len)
                    .map(|i| {
                        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                        // Include exact halves after scaling: multiples of 0.5 / s land on them.
                        let v = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                        if i % 5 == 0 {
                            (v * 254.0).round() / 2.0 * scale / 63.5
                        } else {
                            v * scale
                        }
                    })
                    .collect();
                let mut want = vec![0i8; len];
                let expected = quantize_row_scalar(&x, &mut want);
                for path in KernelPath::available() {
                    let mut got = vec![0i8; len];
                    assert_eq!(
                        quantize_row(path, &x, &mut got),
                        expected,
                        "{path:?} len {len}"
                    );
                    assert_eq!(got, want, "{path:?} len {len} scale {scale}");
                }
            }
        }
    }

    /// `quantize_rows` on a pool, grouped or not, against each row quantized on its own by the
    /// scalar reference and placed where `with_grouped`'s documented order says; the buffers
    /// first hold a larger batch's values, which must not leak into the pads.
    #[test]
    fn parallel_rows_match_the_reference_in_the_documented_order() {
        let pool = Pool::new(bitnet_pool::PoolKind::Spin, 2).unwrap();
        let (k, kpad) = (70, 80);
        let value = |t: usize, c: usize| ((t * 131 + c * 17) % 23) as f32 - 11.0 + 0.25 * t as f32;
        let values = |t: usize, row: &mut [f32]| {
            for (c, v) in row.iter_mut().enumerate() {
                *v = value(t, c);
            }
            // What a caller does on the way: scale the row in place.
            row.iter_mut().for_each(|v| *v *= 0.5);
        };
        let mut acts = QuantizedActs::default();
        let groupings = [
            None,
            Some(Grouping {
                block: 32,
                quads_from: 16,
                block_bytes: 16,
            }),
            Some(Grouping {
                block: 32,
                quads_from: 16,
                block_bytes: 20,
            }),
        ];
        for grouping in groupings {
            for tokens in [200, 1, 5, 16, 37, 100] {
                let shape = Shape {
                    tokens,
                    k,
                    kpad,
                    grouping,
                };
                let path = KernelPath::SCALAR;
                acts.quantize_rows(path, shape, Some(&pool), &values);
                assert_eq!((acts.tokens, acts.kpad), (tokens, kpad));
                let mut want = vec![0i8; tokens * kpad];
                for t in 0..tokens {
                    let x: Vec<f32> = (0..k).map(|c| value(t, c) * 0.5).collect();
                    let (s, sum) = quantize_row_scalar(&x, &mut want[t * kpad..t * kpad + k]);
                    assert_eq!(
                        (acts.scale[t], acts.sum[t]),
                        (s, sum),
                        "token {t} of {tokens}"
                    );
                }
                assert_eq!(acts.q, want, "{tokens} tokens, {grouping:?}");
                let Some(grouping) = grouping.filter(|_| tokens > 1) else {
                    continue;
                };
                let mut grouped = vec![0i8; tokens * kpad];
                for (t0, m) in token_groups(tokens, grouping.block) {
                    let p = grouping.piece(m);
                    for i in 0..m {
                        for j in 0..kpad / p {
                            let at = t0 * kpad + (j * m + i) * p;
                            let from = (t0 + i) * kpad + j * p;
                            grouped[at..at + p].copy_from_slice(&want[from..from + p]);
                        }
                    }
                }
                // The order `quantize_rows` made is the one `with_grouped` hands the kernels, and
                // the one it makes itself for an ungrouped batch.
                acts.with_grouped(grouping, |codes| assert_eq!(codes, grouped));
                let mut plain = QuantizedActs::default();
                plain.quantize(path, &values_of(tokens, k, &values), k, kpad);
                plain.with_grouped(grouping, |codes| assert_eq!(codes, grouped));
            }
        }
    }

    fn values_of(tokens: usize, k: usize, values: &dyn Fn(usize, &mut [f32])) -> Vec<f32> {
        let mut x = vec![0.0; tokens * k];
        for (t, row) in x.chunks_exact_mut(k).enumerate() {
            values(t, row);
        }
        x
    }

    #[test]
    fn all_zero_row_uses_the_floor() {
        let mut q = [1i8; 3];
        let (s, sum) = quantize_row_scalar(&[0.0; 3], &mut q);
        assert_eq!(s, 127.0 / 1e-5);
        assert_eq!((q, sum), ([0; 3], 0));
    }

    #[test]
    fn batch_pads_with_zeros() {
        let mut a = QuantizedActs::default();
        a.quantize(KernelPath::SCALAR, &[1.0, -1.0, 0.5, 2.0, 0.0, -2.0], 3, 16);
        assert_eq!(a.tokens, 2);
        assert_eq!(&a.row(0)[..4], &[127, -127, 64, 0]);
        assert_eq!(&a.row(1)[..3], &[127, 0, -127]);
        assert!(a.row(1)[3..].iter().all(|&v| v == 0));
    }
}
