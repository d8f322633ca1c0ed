//! The forward pass: a batch of tokens through every block (matrix-matrix kernels), one token at a
//! time when generating (the same code with one row). A batch may hold several sequences, each with
//! its own KV cache: every weight matrix is then streamed once for all of them, and only attention
//! runs per sequence (continuous batching's step).

use std::ops::Range;

use crate::kernels::activation::{QuantizedActs, Shape};
use crate::kernels::q4::{self, Q4Tiles};
use crate::kernels::{TernaryMatrix, attention as attn, float, scale_tile, ternary_matmul};

use super::kv_cache::{KvCache, KvTypes};
use super::ops::{Rope, gated_activation, rms_norm, rms_norm_rows};
use super::weights::TernaryWeight;
use super::{Model, ModelError};

/// Which positions' logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity, logits dumps).
    All,
    /// None (a prompt chunk that is not the prompt's last).
    None,
}

/// The logits a batched step returns, in one buffer that the caller keeps from step to step (a
/// step of eight sequences returns 4 MB of them for a 128k vocabulary; a fresh buffer each step
/// costs page faults and copies that the worker threads wait for).
#[derive(Debug, Default)]
pub struct StepLogits {
    data: Vec<f32>,
    /// Per sequence of the last step: where its logits start in `data`, and how many there are.
    spans: Vec<(usize, usize)>,
}

impl StepLogits {
    /// Sequence `i`'s logits from the last step: `vocab` values for [`Logits::Last`],
    /// `tokens × vocab` for [`Logits::All`], none for [`Logits::None`] or no tokens.
    pub fn get(&self, i: usize) -> &[f32] {
        let (start, len) = self.spans[i];
        &self.data[start..start + len]
    }

    /// Sequences in the last step.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Sequence `i`'s logits as a vector of their own: the buffer itself (no copy) when they are
    /// all of it.
    pub fn take(&mut self, i: usize) -> Vec<f32> {
        let (start, len) = self.spans[i];
        if start == 0 && len == self.data.len() {
            std::mem::take(&mut self.data)
        } else {
            self.data[start..start + len].to_vec()
        }
    }
}

/// One sequence's part of a batched step: `tokens` to run at the next positions of `cache`.
pub struct SeqStep<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
    pub logits: Logits,
}

/// Runs forward passes of one model, keeping the RoPE tables and scratch buffers between steps.
pub struct Runner<'m> {
    model: &'m Model,
    rope: Rope,
    acts: QuantizedActs,
    scratch: Scratch,
}

/// Buffers reused from one forward pass to the next (prefill sizes would otherwise be fresh,
/// page-faulting allocations every layer).
#[derive(Default)]
struct Scratch {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    down: Vec<f32>,
}

/// Where a sequence's rows sit in a step: `rows` rows from `start`, at cache positions `pos..`.
#[derive(Debug, Clone, Copy)]
struct Span {
    seq: usize,
    start: usize,
    rows: usize,
    pos: usize,
}

impl<'m> Runner<'m> {
    pub fn new(model: &'m Model) -> Self {
        let c = &model.config;
        Runner {
            model,
            rope: Rope::new(c.head_dim as usize, c.rope_theta, c.rope_scaling.as_ref()),
            acts: QuantizedActs::default(),
            scratch: Scratch::default(),
        }
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Run every sequence's tokens as one batch and put each one's logits in `out` (see
    /// [`StepLogits::get`]).
    /// Nothing runs if any sequence's tokens are out of range or overflow its context; `out` then
    /// holds no sequence.
    pub fn step(&mut self, seqs: &mut [SeqStep], out: &mut StepLogits) -> Result<(), ModelError> {
        let model = self.model;
        let vocab = model.config.vocab_size;
        out.spans.clear();
        let mut spans = Vec::with_capacity(seqs.len());
        let mut rows = 0;
        for (i, seq) in seqs.iter().enumerate() {
            if let Some(&id) = seq.tokens.iter().find(|&&id| id >= vocab) {
                return Err(ModelError::TokenOutOfRange { id, vocab });
            }
            let needed = seq.cache.pos + seq.tokens.len();
            if needed > seq.cache.context() {
                return Err(ModelError::ContextFull {
                    needed,
                    ctx: seq.cache.context(),
                });
            }
            if !seq.tokens.is_empty() {
                spans.push(Span {
                    seq: i,
                    start: rows,
                    rows: seq.tokens.len(),
                    pos: seq.cache.pos,
                });
                rows += seq.tokens.len();
            }
        }
        out.spans.resize(seqs.len(), (0, 0));
        if rows == 0 {
            return Ok(());
        }
        let end = spans.iter().map(|sp| sp.pos + sp.rows).max().unwrap_or(0);
        self.rope.extend(end);
        let c = &model.config;
        let h = c.hidden_size as usize;
        let eps = c.rms_norm_eps as f32;
        let embd = model.weights.token_embd.matrix(model.bytes());
        let mut x = vec![0.0f32; rows * h];
        let ids = spans.iter().flat_map(|sp| seqs[sp.seq].tokens);
        for (row, &id) in x.chunks_exact_mut(h).zip(ids) {
            embd.row_into(model.path, id as usize, row);
        }
        for l in 0..model.weights.layers.len() {
            self.block(l, &mut x, seqs, &spans, eps);
        }
        // The rows whose logits are wanted, gathered for one pass over the output matrix.
        let mut wanted = Vec::with_capacity(spans.len());
        let mut normed = Vec::new();
        for sp in &spans {
            let seq = &mut seqs[sp.seq];
            seq.cache.pos += sp.rows;
            let end = sp.start + sp.rows;
            let first = match seq.logits {
                Logits::Last => end - 1,
                Logits::All => sp.start,
                Logits::None => continue,
            };
            normed.extend_from_slice(&x[first * h..end * h]);
            wanted.push((sp.seq, end - first));
        }
        if normed.is_empty() {
            return Ok(());
        }
        rms_norm_rows(&mut normed, &model.weights.output_norm, eps);
        let vocab = vocab as usize;
        let mut at = 0;
        for (seq, n) in wanted {
            out.spans[seq] = (at * vocab, n * vocab);
            at += n;
        }
        // Every value is written by `output`: a buffer reused at the same size needs no clearing.
        out.data.resize(at * vocab, 0.0);
        self.output(&normed, &mut out.data);
        Ok(())
    }

    fn block(&mut self, l: usize, x: &mut [f32], seqs: &mut [SeqStep], spans: &[Span], eps: f32) {
        let model = self.model;
        let c = &model.config;
        let w = &model.weights.layers[l];
        let h = c.hidden_size as usize;
        let (q_dim, kv_dim) = (w.q.rows, w.k.rows);
        let s = &mut self.scratch;

        let rows = x.len() / h;
        let xs = &*x;
        quantize(model, &mut self.acts, &w.q, rows, &|t, row| {
            row.copy_from_slice(&xs[t * h..(t + 1) * h]);
            rms_norm(row, &w.attn_norm, eps);
        });
        project(
            model,
            &self.acts,
            &mut [(&w.q, &mut s.q), (&w.k, &mut s.k), (&w.v, &mut s.v)],
        );
        if let Some(biases) = &w.qkv_bias {
            for (out, bias) in [&mut s.q, &mut s.k, &mut s.v].into_iter().zip(biases) {
                for row in out.chunks_exact_mut(bias.len()) {
                    row.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
                }
            }
        }
        // Each head's query and key normalised on its own (Qwen3), before RoPE.
        if let Some([q_norm, k_norm]) = &w.qk_norm {
            rms_norm_rows(&mut s.q, q_norm, eps);
            rms_norm_rows(&mut s.k, k_norm, eps);
        }
        for sp in spans {
            for t in 0..sp.rows {
                let (row, pos) = (sp.start + t, sp.pos + t);
                self.rope
                    .apply(&mut s.q[row * q_dim..(row + 1) * q_dim], pos);
                self.rope
                    .apply(&mut s.k[row * kv_dim..(row + 1) * kv_dim], pos);
            }
            let rows = sp.start * kv_dim..(sp.start + sp.rows) * kv_dim;
            let (k, v) = (&s.k[rows.clone()], &s.v[rows]);
            seqs[sp.seq].cache.append(model.path, l, k, v);
        }

        let caches: Vec<&KvCache> = spans.iter().map(|sp| &*seqs[sp.seq].cache).collect();
        attention(model, l, &caches, spans, &s.q, &mut s.attn);
        let attn = &s.attn;
        quantize(model, &mut self.acts, &w.o, rows, &|t, row| {
            row.copy_from_slice(&attn[t * q_dim..(t + 1) * q_dim]);
            if let Some(norm) = &w.attn_sub_norm {
                rms_norm(row, norm, eps);
            }
        });
        project(model, &self.acts, &mut [(&w.o, &mut s.o)]);
        x.iter_mut().zip(&s.o).for_each(|(a, b)| *a += b);

        let xs = &*x;
        quantize(model, &mut self.acts, &w.gate, rows, &|t, row| {
            row.copy_from_slice(&xs[t * h..(t + 1) * h]);
            rms_norm(row, &w.ffn_norm, eps);
        });
        project(
            model,
            &self.acts,
            &mut [(&w.gate, &mut s.gate), (&w.up, &mut s.up)],
        );
        let (gate, up, ff) = (&s.gate, &s.up, w.up.rows);
        quantize(model, &mut self.acts, &w.down, rows, &|t, row| {
            row.copy_from_slice(&gate[t * ff..(t + 1) * ff]);
            gated_activation(c.activation, row, &up[t * ff..(t + 1) * ff]);
            if let Some(norm) = &w.ffn_sub_norm {
                rms_norm(row, norm, eps);
            }
        });
        project(model, &self.acts, &mut [(&w.down, &mut s.down)]);
        x.iter_mut().zip(&s.down).for_each(|(a, b)| *a += b);
    }

    /// Logits of each row of `x` into `logits` (`tokens × vocab`), rows of the output matrix
    /// split across threads.
    fn output(&self, x: &[f32], logits: &mut [f32]) {
        let model = self.model;
        let w = model.output_matrix();
        let m = w.matrix(model.bytes());
        let tokens = x.len() / m.cols;
        assert_eq!(logits.len(), tokens * m.rows);
        let dst = SharedOut(logits.as_mut_ptr());
        let x = float::DenseInput::new(model.path, &m, x);
        let tiles = match &x {
            float::DenseInput::Q4(acts) => model.output_tiles(tokens).map(|tiles| (tiles, acts)),
            _ => None,
        };
        // Runs of whole tiles (the tiles' kernel needs them; the rows' kernels take any rows).
        let unit = Q4Tiles::ROWS;
        let runs = guided_runs(&[m.rows.div_ceil(unit)], model.threads());
        model.pool.for_each(runs.len(), &|i| {
            let run = &runs[i].1;
            let rows = run.start * unit..(run.end * unit).min(m.rows);
            BY_ROW.with_borrow_mut(|by_row| {
                // The kernels write every value: no clearing.
                by_row.resize(rows.len() * tokens, 0.0);
                let by_row = &mut by_row[..rows.len() * tokens];
                match tiles {
                    Some((tiles, acts)) => {
                        q4::matmul_tiles(model.path, tiles, acts, rows.clone(), by_row)
                    }
                    None => float::matmul(model.path, &m, &x, rows.clone(), by_row),
                }
                for (k, r) in rows.enumerate() {
                    for t in 0..tokens {
                        // SAFETY: row `r` of every token is written by this task only, within
                        // the buffer.
                        unsafe { dst.slice(t * m.rows + r, 1)[0] = by_row[k * tokens + t] };
                    }
                }
            });
        });
    }
}

/// One sequence being run: a [`Runner`] and a [`KvCache`]. Cheap to create; the model is shared.
pub struct Session<'m> {
    runner: Runner<'m>,
    cache: KvCache,
}

impl<'m> Session<'m> {
    /// A session holding up to `ctx` positions in a cache of `types`.
    pub fn new(model: &'m Model, ctx: usize, types: KvTypes) -> Self {
        Session {
            runner: Runner::new(model),
            cache: KvCache::new(model, ctx, types),
        }
    }

    /// Positions already in the cache.
    pub fn position(&self) -> usize {
        self.cache.position()
    }

    pub fn context(&self) -> usize {
        self.cache.context()
    }

    /// Forget positions from `pos` on (`0` starts over).
    pub fn truncate(&mut self, pos: usize) {
        self.cache.truncate(pos);
    }

    /// Run `tokens` at the next positions and return logits: `vocab` values for [`Logits::Last`],
    /// `tokens.len() × vocab` for [`Logits::All`].
    pub fn forward(&mut self, tokens: &[u32], which: Logits) -> Result<Vec<f32>, ModelError> {
        let mut seqs = [SeqStep {
            cache: &mut self.cache,
            tokens,
            logits: which,
        }];
        let mut out = StepLogits::default();
        self.runner.step(&mut seqs, &mut out)?;
        Ok(out.take(0))
    }
}

/// Causal grouped-query attention of each span's queries (at positions `pos..`) against its own
/// cache, which already holds their keys and values. Tasks are (sequence, KV head, run of rows):
/// each reads the head's cached rows once for all the query heads sharing it. Writes
/// `rows × q_dim` into `out`.
fn attention(
    model: &Model,
    layer: usize,
    caches: &[&KvCache],
    spans: &[Span],
    q: &[f32],
    out: &mut Vec<f32>,
) {
    let c = &model.config;
    let (heads, kv_heads, d) = (
        c.num_heads as usize,
        c.num_kv_heads as usize,
        c.head_dim as usize,
    );
    let group = heads / kv_heads;
    let q_dim = heads * d;
    let scale = (d as f64).powf(-0.5) as f32;
    let path = model.path;
    let rows: usize = spans.iter().map(|sp| sp.rows).sum();
    out.clear();
    out.resize(rows * q_dim, 0.0);
    // Enough tasks to keep every thread busy on one long prompt, but no row split for generation.
    let per_span = (4 * model.threads()).div_ceil(spans.len() * kv_heads);
    let mut tasks = Vec::new();
    for (i, sp) in spans.iter().enumerate() {
        let chunk = sp.rows.div_ceil(per_span).max(1);
        for kv in 0..kv_heads {
            tasks.extend(
                (0..sp.rows)
                    .step_by(chunk)
                    .map(|t| (i, kv, t..(t + chunk).min(sp.rows))),
            );
        }
    }
    let dst = SharedOut(out.as_mut_ptr());
    model.pool.for_each(tasks.len(), &|task| {
        let (i, kv, ref run) = tasks[task];
        let sp = &spans[i];
        SCORES.with_borrow_mut(|scores| {
            // Every score a row uses is written by `attn::scores` first: no need to clear.
            scores.resize(scores.len().max(group * (sp.pos + run.end)), 0.0);
            for t in run.clone() {
                let (row, n) = (sp.start + t, sp.pos + t + 1);
                let (keys, values) = caches[i].head(layer, kv, n);
                let qg = &q[row * q_dim + kv * group * d..][..group * d];
                let s = &mut scores[..group * n];
                attn::scores(path, qg, keys, scale, s);
                attn::softmax_rows(path, s, n);
                // SAFETY: the query heads of KV head `kv` in row `row` are written by this task
                // only, and lie within `out`.
                let o = unsafe { dst.slice(row * q_dim + kv * group * d, group * d) };
                attn::accumulate(path, s, values, o);
            }
        });
    });
}

/// Quantize `tokens` rows of the input of `w` (its columns, padded as it is, grouped as the
/// path's kernel reads its packing), `values(t, row)` writing token `t`'s values: a norm, an
/// activation function, run row by row in the tasks that quantize.
fn quantize(
    model: &Model,
    acts: &mut QuantizedActs,
    w: &TernaryWeight,
    tokens: usize,
    values: &(dyn Fn(usize, &mut [f32]) + Sync),
) {
    let block_k = w.matrix(model.bytes()).packing.block_k();
    let shape = Shape {
        tokens,
        k: w.cols,
        kpad: w.kpad(),
        grouping: model.path.act_grouping(block_k),
    };
    acts.quantize_rows(model.path, shape, Some(&model.pool), values);
}

/// Run projections that share one quantized input in one parallel section: each task takes a run
/// of tiles of one matrix, computes their exact accumulators and writes `y[t, n] = acc / s_t · w`
/// into that matrix's output (`tokens × rows`).
fn project(model: &Model, acts: &QuantizedActs, jobs: &mut [(&TernaryWeight, &mut Vec<f32>)]) {
    let bytes = model.bytes();
    let tokens = acts.tokens;
    let mut tiles = Vec::with_capacity(jobs.len());
    for (w, out) in jobs.iter_mut() {
        // Every output is written below: a buffer reused at the same size needs no clearing.
        out.resize(tokens * w.rows, 0.0);
        tiles.push(w.rows.div_ceil(w.tile_rows));
    }
    let work = guided_runs(&tiles, model.threads());
    let outs: Vec<SharedOut> = jobs
        .iter_mut()
        .map(|(_, out)| SharedOut(out.as_mut_ptr()))
        .collect();
    let mats: Vec<TernaryMatrix> = jobs.iter().map(|(w, _)| w.matrix(bytes)).collect();
    model.pool.for_each(work.len(), &|k| {
        let (j, tiles) = work[k].clone();
        let m = &mats[j];
        let r_count = m.tile_rows;
        ACC.with_borrow_mut(|acc| {
            // The kernels write every accumulator (`ternary_matmul`): no clearing.
            acc.resize(tiles.len() * tokens * r_count, 0);
            ternary_matmul(model.path, m, acts, tiles.clone(), acc);
            for (i, tile) in tiles.enumerate() {
                let rows = tile * r_count..((tile + 1) * r_count).min(m.rows);
                // SAFETY: these rows of every token are written by this task only, and
                // `t · m.rows + n` lies within the `tokens × m.rows` output.
                unsafe {
                    scale_tile(
                        model.path,
                        &acc[i * tokens * r_count..(i + 1) * tokens * r_count],
                        r_count,
                        rows.len(),
                        &acts.scale[..tokens],
                        m.scale,
                        (outs[j].0.add(rows.start), m.rows),
                    )
                };
            }
        });
    });
}

/// Runs of tiles `(matrix, tiles)` over matrices of `tiles[j]` tiles each, in order, each run a
/// share of what is left (`1 / (2 · threads)` of it, at least one tile): the threads take the long
/// runs first and finish on single tiles, so that none waits long at the end of the section for
/// another's last run, with few runs in all.
fn guided_runs(tiles: &[usize], threads: usize) -> Vec<(usize, Range<usize>)> {
    let mut left: usize = tiles.iter().sum();
    let mut runs = Vec::new();
    let (mut j, mut at) = (0, 0);
    while left > 0 {
        let mut size = left.div_ceil(2 * threads);
        left -= size;
        while size > 0 {
            if at == tiles[j] {
                (j, at) = (j + 1, 0);
                continue;
            }
            let take = size.min(tiles[j] - at);
            runs.push((j, at..at + take));
            at += take;
            size -= take;
        }
    }
    runs
}

thread_local! {
    /// Per-thread accumulators for [`project`].
    static ACC: std::cell::RefCell<Vec<i32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Per-thread logits of a run of output rows for [`Runner::output`], token by token.
    static BY_ROW: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Per-thread attention scores for [`attention`], reused across layers and tokens.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An output buffer that parallel tasks write disjoint parts of.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: tasks write only disjoint ranges through it (each use says why), and the buffer outlives
// the parallel section that uses it.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `[start, start + len)` must lie within the buffer and be written by no other task meanwhile.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::guided_runs;

    #[test]
    fn guided_runs_cover_every_tile_once_and_shrink() {
        for threads in 1..=4 {
            for tiles in [
                vec![1],
                vec![160, 40, 40],
                vec![432],
                vec![0, 7, 0, 3],
                vec![8016],
            ] {
                let runs = guided_runs(&tiles, threads);
                // Each matrix's tiles in order, once, no run empty or crossing a matrix.
                let mut next = vec![0; tiles.len()];
                let mut j_prev = 0;
                for (j, run) in &runs {
                    assert!(*j >= j_prev && !run.is_empty(), "{tiles:?} {runs:?}");
                    assert_eq!(run.start, next[*j], "{tiles:?} {runs:?}");
                    next[*j] = run.end;
                    j_prev = *j;
                }
                assert_eq!(next, tiles, "{runs:?}");
                // The last runs are single tiles, and there are few runs in all.
                let total: usize = tiles.iter().sum();
                assert!(runs.last().is_none_or(|(_, r)| r.len() == 1));
                let bound = tiles.len() + 2 * threads * (1 + total.max(1).ilog2() as usize) * 2;
                assert!(runs.len() <= bound, "{} runs for {tiles:?}", runs.len());
            }
        }
    }
}
