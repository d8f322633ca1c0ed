//! Running a parallel section: `n` independent tasks, each a call `f(i)`, spread over the model's
//! threads. Generating one token is ~150 such sections of well under a millisecond each, so the cost
//! of waking threads matters. Two implementations, chosen with `BITNET_POOL=rayon|spin` (measured
//! against each other in BENCHMARKS.md: `spin`, the default, generated 23% faster on a quiet machine;
//! on a machine busy with other work, `rayon` degrades more gracefully):
//! - `rayon`: a rayon pool (workers sleep between sections);
//! - `spin`: persistent workers that spin briefly on an epoch counter before parking, and take tasks
//!   from a shared atomic counter; the calling thread works too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

    fn parse(value: Option<&str>) -> Result<Self, String> {
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

/// The job of the current parallel section: a type-erased `&dyn Fn(usize)` and its task count.
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    tasks: usize,
}

struct Shared {
    /// Incremented to announce a new job.
    epoch: AtomicUsize,
    job: AtomicPtr<Job>,
    /// Next task index to hand out.
    next: AtomicUsize,
    /// Tasks finished.
    done: AtomicUsize,
    /// Workers currently inside a job (the caller waits for 0 before the job goes out of scope).
    active: AtomicUsize,
    /// Workers parked (the caller unparks them when it posts a job).
    parked: AtomicUsize,
    stop: AtomicBool,
}

/// Persistent worker threads for short parallel sections.
pub struct SpinPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// One caller at a time: sections are posted from one thread.
    caller: std::sync::Mutex<()>,
}

/// How long an idle worker spins before parking.
const SPIN: Duration = Duration::from_millis(2);

impl SpinPool {
    /// A pool of `threads` threads in all: `threads - 1` workers plus the calling thread.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("bitnet-worker-{i}"))
                    .spawn(move || worker(&shared))
            })
            .collect::<std::io::Result<_>>()?;
        Ok(SpinPool {
            shared,
            workers,
            caller: std::sync::Mutex::new(()),
        })
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    pub fn for_each(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        let _one_caller = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        let mut job = Job {
            // SAFETY: the lifetime is erased only for the duration of this call: workers read `f`
            // only while counted in `active`, and this function returns only when `active` is 0
            // and every task is done.
            f: unsafe {
                std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static (dyn Fn(usize) + Sync)>(f)
            },
            tasks,
        };
        s.job.store(&mut job, Ordering::Release);
        s.done.store(0, Ordering::Release);
        s.next.store(0, Ordering::Release);
        s.epoch.fetch_add(1, Ordering::AcqRel);
        if s.parked.load(Ordering::Acquire) > 0 {
            for w in &self.workers {
                w.thread().unpark();
            }
        }
        run_tasks(s, &job);
        while s.done.load(Ordering::Acquire) < tasks || s.active.load(Ordering::Acquire) > 0 {
            std::hint::spin_loop();
        }
        s.job.store(std::ptr::null_mut(), Ordering::Release);
    }
}

/// Take and run tasks of `job` until none are left.
fn run_tasks(s: &Shared, job: &Job) {
    loop {
        let i = s.next.fetch_add(1, Ordering::AcqRel);
        if i >= job.tasks {
            return;
        }
        // SAFETY: `job.f` is valid while the posting caller waits (see `SpinPool::for_each`).
        unsafe { (*job.f)(i) };
        s.done.fetch_add(1, Ordering::AcqRel);
    }
}

fn worker(s: &Shared) {
    let mut seen = 0usize;
    loop {
        let idle_since = Instant::now();
        let mut spins = 0u32;
        let epoch = loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen || s.stop.load(Ordering::Acquire) {
                break e;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) && idle_since.elapsed() > SPIN {
                s.parked.fetch_add(1, Ordering::AcqRel);
                // Re-check after announcing: a job posted in between would otherwise wait for the
                // park timeout.
                if s.epoch.load(Ordering::Acquire) == seen && !s.stop.load(Ordering::Acquire) {
                    std::thread::park_timeout(Duration::from_millis(50));
                }
                s.parked.fetch_sub(1, Ordering::AcqRel);
            } else {
                std::hint::spin_loop();
            }
        };
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        seen = epoch;
        s.active.fetch_add(1, Ordering::AcqRel);
        let job = s.job.load(Ordering::Acquire);
        if !job.is_null() && s.epoch.load(Ordering::Acquire) == epoch {
            // SAFETY: non-null and the epoch unchanged: the job is the live one, and the caller
            // cannot return while this worker is counted in `active`.
            run_tasks(s, unsafe { &*job });
        }
        s.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for SpinPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for w in self.workers.drain(..) {
            w.thread().unpark();
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_exactly_once_across_many_sections() {
        for kind in [PoolKind::Rayon, PoolKind::Spin] {
            let pool = Pool::new(kind, 3).unwrap();
            for round in 0..2000usize {
                let tasks = round % 17;
                let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                pool.for_each(tasks, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(
                    hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                    "{kind:?} round {round}"
                );
            }
        }
    }

    #[test]
    fn workers_wake_after_parking() {
        let pool = Pool::new(PoolKind::Spin, 2).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let sum = AtomicUsize::new(0);
        pool.for_each(100, &|i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 4950);
    }

    #[test]
    fn pool_names_parse() {
        assert_eq!(PoolKind::parse(None), Ok(PoolKind::Spin));
        assert_eq!(PoolKind::parse(Some("rayon")), Ok(PoolKind::Rayon));
        assert_eq!(PoolKind::parse(Some("rayon")), Ok(PoolKind::Rayon));
        assert!(
            PoolKind::parse(Some("tokio"))
                .unwrap_err()
                .contains("tokio")
        );
    }
}
