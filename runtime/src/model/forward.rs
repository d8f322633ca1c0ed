//! The forward pass: a batch of tokens through every block (matrix-matrix kernels), one token at a
//! time when generating (the same code with one row), with a KV cache for the whole context.

use crate::kernels::activation::QuantizedActs;
use crate::kernels::float;
use crate::kernels::{TernaryMatrix, ternary_matmul};

use super::ops::{Rope, gated_activation, rms_norm_rows, softmax};
use super::weights::TernaryWeight;
use super::{Model, ModelError};

/// Which positions' logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity, logits dumps).
    All,
}

/// One sequence being run: its KV cache and position. Cheap to create; the model is shared.
pub struct Session<'m> {
    model: &'m Model,
    rope: Rope,
    ctx: usize,
    pos: usize,
    /// Per layer, `pos × kv_dim` keys and values.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    acts: QuantizedActs,
    scratch: Scratch,
}

/// Buffers reused from one forward pass to the next (prefill sizes would otherwise be fresh,
/// page-faulting allocations every layer).
#[derive(Default)]
struct Scratch {
    normed: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    down: Vec<f32>,
}

impl<'m> Session<'m> {
    /// A session holding up to `ctx` positions.
    pub fn new(model: &'m Model, ctx: usize) -> Self {
        let c = &model.config;
        Session {
            model,
            rope: Rope::new(c.head_dim as usize, c.rope_theta, c.rope_scaling.as_ref()),
            ctx,
            pos: 0,
            keys: vec![Vec::new(); c.num_layers as usize],
            values: vec![Vec::new(); c.num_layers as usize],
            acts: QuantizedActs::default(),
            scratch: Scratch::default(),
        }
    }

    /// Positions already in the cache.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn context(&self) -> usize {
        self.ctx
    }

    /// Forget positions from `pos` on (`0` starts over).
    pub fn truncate(&mut self, pos: usize) {
        let c = &self.model.config;
        let kv_dim = c.num_kv_heads as usize * c.head_dim as usize;
        self.pos = self.pos.min(pos);
        for cache in self.keys.iter_mut().chain(self.values.iter_mut()) {
            cache.truncate(self.pos * kv_dim);
        }
    }

    /// Run `tokens` at the next positions and return logits: `vocab` values for [`Logits::Last`],
    /// `tokens.len() × vocab` for [`Logits::All`].
    pub fn forward(&mut self, tokens: &[u32], which: Logits) -> Result<Vec<f32>, ModelError> {
        let model = self.model;
        let vocab = model.config.vocab_size;
        if let Some(&id) = tokens.iter().find(|&&id| id >= vocab) {
            return Err(ModelError::TokenOutOfRange { id, vocab });
        }
        let needed = self.pos + tokens.len();
        if needed > self.ctx {
            return Err(ModelError::ContextFull {
                needed,
                ctx: self.ctx,
            });
        }
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.run(tokens, which))
    }

    fn run(&mut self, tokens: &[u32], which: Logits) -> Vec<f32> {
        let model = self.model;
        let c = &model.config;
        let (h, t_count) = (c.hidden_size as usize, tokens.len());
        let eps = c.rms_norm_eps as f32;
        let embd = model.weights.token_embd.matrix(model.bytes());
        let mut x = vec![0.0f32; t_count * h];
        for (row, &id) in x.chunks_exact_mut(h).zip(tokens) {
            embd.row_into(model.path, id as usize, row);
        }
        for l in 0..model.weights.layers.len() {
            self.block(l, &mut x, t_count, eps);
        }
        self.pos += t_count;
        let rows: &[f32] = match which {
            Logits::Last => &x[(t_count - 1) * h..],
            Logits::All => &x,
        };
        let mut normed = rows.to_vec();
        rms_norm_rows(&mut normed, &model.weights.output_norm, eps);
        self.output(&normed)
    }

    fn block(&mut self, l: usize, x: &mut [f32], t_count: usize, eps: f32) {
        let model = self.model;
        let c = &model.config;
        let w = &model.weights.layers[l];
        let (h, head_dim) = (c.hidden_size as usize, c.head_dim as usize);
        let (q_dim, kv_dim) = (w.q.rows, w.k.rows);
        let s = &mut self.scratch;

        s.normed.clear();
        s.normed.extend_from_slice(x);
        rms_norm_rows(&mut s.normed, &w.attn_norm, eps);
        self.acts.quantize(model.path, &s.normed, h, w.q.kpad());
        project(
            model,
            &self.acts,
            &mut [(&w.q, &mut s.q), (&w.k, &mut s.k), (&w.v, &mut s.v)],
        );
        for t in 0..t_count {
            self.rope
                .apply(&mut s.q[t * q_dim..(t + 1) * q_dim], self.pos + t);
            self.rope
                .apply(&mut s.k[t * kv_dim..(t + 1) * kv_dim], self.pos + t);
        }
        self.keys[l].extend_from_slice(&s.k);
        self.values[l].extend_from_slice(&s.v);

        let cache = (&self.keys[l][..], &self.values[l][..]);
        attention(model, cache, self.pos, &s.q, t_count, head_dim, &mut s.attn);
        if let Some(norm) = &w.attn_sub_norm {
            rms_norm_rows(&mut s.attn, norm, eps);
        }
        self.acts.quantize(model.path, &s.attn, q_dim, w.o.kpad());
        project(model, &self.acts, &mut [(&w.o, &mut s.o)]);
        x.iter_mut().zip(&s.o).for_each(|(a, b)| *a += b);

        s.normed.clear();
        s.normed.extend_from_slice(x);
        rms_norm_rows(&mut s.normed, &w.ffn_norm, eps);
        self.acts.quantize(model.path, &s.normed, h, w.gate.kpad());
        project(
            model,
            &self.acts,
            &mut [(&w.gate, &mut s.gate), (&w.up, &mut s.up)],
        );
        gated_activation(c.activation, &mut s.gate, &s.up);
        if let Some(norm) = &w.ffn_sub_norm {
            rms_norm_rows(&mut s.gate, norm, eps);
        }
        self.acts
            .quantize(model.path, &s.gate, w.up.rows, w.down.kpad());
        project(model, &self.acts, &mut [(&w.down, &mut s.down)]);
        x.iter_mut().zip(&s.down).for_each(|(a, b)| *a += b);
    }

    /// Logits of each row of `x`, rows of the output matrix split across threads.
    fn output(&self, x: &[f32]) -> Vec<f32> {
        let model = self.model;
        let w = model
            .weights
            .output
            .as_ref()
            .unwrap_or(&model.weights.token_embd);
        let m = w.matrix(model.bytes());
        let tokens = x.len() / m.cols;
        let mut logits = vec![0.0f32; tokens * m.rows];
        let dst = SharedOut(logits.as_mut_ptr());
        let chunk = m.rows.div_ceil(8 * model.threads()).max(1);
        model.pool.for_each(m.rows.div_ceil(chunk), &|i| {
            let rows = i * chunk..((i + 1) * chunk).min(m.rows);
            let mut by_row = vec![0.0f32; rows.len() * tokens];
            float::matmul(model.path, &m, x, rows.clone(), &mut by_row);
            for (k, r) in rows.enumerate() {
                for t in 0..tokens {
                    // SAFETY: row `r` of every token is written by this task only, within the buffer.
                    unsafe { dst.slice(t * m.rows + r, 1)[0] = by_row[k * tokens + t] };
                }
            }
        });
        logits
    }
}

/// Causal multi-head attention of `t_count` new queries (at positions `start..`) against the
/// `(keys, values)` cache, which already holds their own; heads split across threads. Writes
/// `t_count × q_dim` into `out`.
fn attention(
    model: &Model,
    (keys, values): (&[f32], &[f32]),
    start: usize,
    q: &[f32],
    t_count: usize,
    head_dim: usize,
    out: &mut Vec<f32>,
) {
    let c = &model.config;
    let (heads, kv_heads) = (c.num_heads as usize, c.num_kv_heads as usize);
    let group = heads / kv_heads;
    let (q_dim, kv_dim) = (heads * head_dim, kv_heads * head_dim);
    let scale = (head_dim as f64).powf(-0.5) as f32;
    let path = model.path;
    out.clear();
    out.resize(t_count * q_dim, 0.0);
    let dst = SharedOut(out.as_mut_ptr());
    model.pool.for_each(heads, &|hd| {
        let kv = hd / group;
        let mut scores = Vec::with_capacity(start + t_count);
        for t in 0..t_count {
            let qh = &q[t * q_dim + hd * head_dim..][..head_dim];
            scores.clear();
            for j in 0..=start + t {
                let kj = &keys[j * kv_dim + kv * head_dim..][..head_dim];
                scores.push(float::dot(path, qh, kj) * scale);
            }
            softmax(&mut scores);
            // SAFETY: head `hd` of token `t` is written by this task only, and lies within `out`.
            let o = unsafe { dst.slice(t * q_dim + hd * head_dim, head_dim) };
            o.fill(0.0);
            for (j, &p) in scores.iter().enumerate() {
                let vj = &values[j * kv_dim + kv * head_dim..][..head_dim];
                o.iter_mut().zip(vj).for_each(|(a, &b)| *a += p * b);
            }
        }
    });
}

/// Run projections that share one quantized input in one parallel section: each task takes a run
/// of tiles of one matrix, computes their exact accumulators and writes `y[t, n] = acc / s_t · w`
/// into that matrix's output (`tokens × rows`).
fn project(model: &Model, acts: &QuantizedActs, jobs: &mut [(&TernaryWeight, &mut Vec<f32>)]) {
    let bytes = model.bytes();
    let tokens = acts.tokens;
    let mut work = Vec::new();
    for (j, (w, out)) in jobs.iter_mut().enumerate() {
        out.clear();
        out.resize(tokens * w.rows, 0.0);
        let tiles = w.rows.div_ceil(w.tile_rows);
        let chunk = tiles.div_ceil(4 * model.threads()).max(1);
        work.extend(
            (0..tiles)
                .step_by(chunk)
                .map(|start| (j, start..(start + chunk).min(tiles))),
        );
    }
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
            acc.clear();
            acc.resize(tiles.len() * tokens * r_count, 0);
            ternary_matmul(model.path, m, acts, tiles.clone(), acc);
            for (i, tile) in tiles.enumerate() {
                let rows = tile * r_count..((tile + 1) * r_count).min(m.rows);
                for t in 0..tokens {
                    let base = (i * tokens + t) * r_count;
                    // SAFETY: these rows are written by this task only, and `t · rows + n` lies
                    // within the `tokens × rows` output.
                    let y = unsafe { outs[j].slice(t * m.rows + rows.start, rows.len()) };
                    for (r, y) in y.iter_mut().enumerate() {
                        *y = acc[base + r] as f32 / acts.scale[t] * m.scale;
                    }
                }
            }
        });
    });
}

thread_local! {
    /// Per-thread accumulators for [`project`].
    static ACC: std::cell::RefCell<Vec<i32>> = const { std::cell::RefCell::new(Vec::new()) };
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
