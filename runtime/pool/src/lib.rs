//! Running a parallel section: `n` independent tasks, each a call `f(i)`, spread over a model's
//! threads. Generating one token is ~150 such sections of well under a millisecond each, so the
//! cost of waking threads matters. Two implementations, chosen with `BITNET_POOL=rayon|spin`
//! (measured against each other in BENCHMARKS.md, "Thread pools"):
//! - `spin` (the default): persistent workers that spin briefly before parking ([`SpinPool`]);
//! - `rayon`: a rayon pool, whose workers sleep sooner between sections.
//!
//! In both, a panicking task does not stop the section: the other tasks run, and the first panic
//! is resumed on the calling thread once no task is running.

mod spin;
mod sync;

pub use spin::SpinPool;

/// Which pool implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Rayon,
    Spin,
}

impl PoolKind {
    /// `BITNET_POOL` if set (`rayon` or `spin`), else the default.
    pub fn from_env() -> Result<Self, String> {
        PoolKind::parse(std::env::var("BITNET_POOL").ok().as_deref())
    }

    /// A pool name as `BITNET_POOL` takes it; unset or empty is the default.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("") => Ok(PoolKind::Spin),
            Some("rayon") => Ok(PoolKind::Rayon),
            Some("spin") => Ok(PoolKind::Spin),
            Some(other) => Err(format!("BITNET_POOL={other:?}: expected rayon or spin")),
        }
    }
}

/// A pool of threads for parallel sections.
pub enum Pool {
    Rayon(rayon::ThreadPool),
    Spin(SpinPool),
}

impl Pool {
    pub fn new(kind: PoolKind, threads: usize) -> Result<Self, String> {
        Ok(match kind {
            PoolKind::Rayon => Pool::Rayon(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
            PoolKind::Spin => Pool::Spin(SpinPool::new(threads).map_err(|e| e.to_string())?),
        })
    }

    pub fn threads(&self) -> usize {
        match self {
            Pool::Rayon(p) => p.current_num_threads(),
            Pool::Spin(p) => p.threads(),
        }
    }

    /// Call `f(i)` for every `i < tasks`, in parallel, returning when all calls have returned.
    pub fn for_each(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        match self {
            Pool::Rayon(p) => p.install(|| {
                use rayon::prelude::*;
                (0..tasks).into_par_iter().for_each(f)
            }),
            Pool::Spin(p) => p.for_each(tasks, f),
        }
    }
}
