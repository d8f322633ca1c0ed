//! A pool of persistent workers that spin briefly on an epoch counter before parking, and take
//! tasks from a shared atomic counter; the calling thread works too.
//!
//! The hand-off. A section's [`Job`] lives on the caller's stack, so the caller must not return
//! while a worker can still reach it. Entry to the job goes through one atomic word, `gate`: its
//! low bit says the job is open, the rest counts the workers inside. A worker enters with one
//! read-modify-write (`fetch_add`) that also tells it whether the job was open; the caller closes
//! it with another (`fetch_and`) and then waits for the count to reach zero. Read-modify-writes of
//! one word are totally ordered, so a worker either entered before the close (and is waited for)
//! or sees the job closed and leaves without reading it. Parking works the same way: a worker
//! sets the `SLEEPY` bit of `epoch` with a compare-exchange that fails if a new section was posted
//! meanwhile, and the caller bumps the epoch and clears the bit in one read-modify-write, waking
//! the workers if it was set. No step relies on sequential consistency; `tests/loom.rs` checks
//! the protocol over every interleaving.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use crate::sync::{
    Arc, AtomicBool, AtomicPtr, AtomicUsize, Idle, Mutex, Ordering, spin_pause, thread,
};

use Ordering::{AcqRel, Acquire, Relaxed, Release};

/// `gate`: the job is open.
const OPEN: usize = 1;
/// `gate`: one worker inside.
const INSIDE: usize = 2;
/// `epoch`: a worker may be parked (the section count is `epoch >> 1`).
const SLEEPY: usize = 1;

/// The job of the current parallel section: a type-erased `&dyn Fn(usize)` and its task count.
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    tasks: usize,
    /// Under loom, every worker access to the job and its end of life are tracked accesses to this
    /// cell, so a worker touching a job after its caller returned is reported as a data race.
    #[cfg(loom)]
    alive: loom::cell::UnsafeCell<()>,
}

#[cfg(loom)]
impl Drop for Job {
    fn drop(&mut self) {
        self.alive.with_mut(|_| ());
    }
}

type Panic = Box<dyn Any + Send + 'static>;

struct Shared {
    /// The section count (shifted left by one) and the `SLEEPY` bit.
    epoch: AtomicUsize,
    /// The `OPEN` bit and `INSIDE` times the workers that entered the job.
    gate: AtomicUsize,
    /// The current section's job; read only by workers inside an open gate.
    job: AtomicPtr<Job>,
    /// Next task index to hand out.
    next: AtomicUsize,
    /// Tasks finished, including those that panicked.
    done: AtomicUsize,
    stop: AtomicBool,
    /// The first panic of the current section, re-raised on the caller.
    panic: Mutex<Option<Panic>>,
}

impl Shared {
    /// Announce a new section (or the stop) to the workers, waking them if any may be parked.
    fn bump_epoch(&self, workers: &[thread::JoinHandle<()>], wake_all: bool) {
        let prev = self
            .epoch
            .fetch_update(AcqRel, Acquire, |e| Some(((e >> 1).wrapping_add(1)) << 1))
            .unwrap_or_else(|e| e);
        if wake_all || prev & SLEEPY != 0 {
            for w in workers {
                w.thread().unpark();
            }
        }
    }
}

/// Persistent worker threads for short parallel sections.
pub struct SpinPool {
    shared: Arc<Shared>,
    workers: Vec<thread::JoinHandle<()>>,
    /// One section at a time.
    caller: Mutex<()>,
}

impl SpinPool {
    /// A pool of `threads` threads in all: `threads - 1` workers plus the calling thread.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            gate: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            panic: Mutex::new(None),
        });
        let mut pool = SpinPool {
            shared,
            workers: Vec::new(),
            caller: Mutex::new(()),
        };
        for i in 1..threads.max(1) {
            let shared = Arc::clone(&pool.shared);
            // On an error, dropping `pool` stops and joins the workers started so far.
            pool.workers.push(spawn(i, move || worker(&shared))?);
        }
        Ok(pool)
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Call `f(i)` for every `i < tasks`, returning when all calls have returned. If any call
    /// panicked, the section still completes and the first panic is then resumed here.
    pub fn for_each(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        let _one_section = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        let job = Job {
            // SAFETY: the lifetime is erased only for the duration of this call: workers reach
            // `f` only through the gate, which this function closes and sees empty before it
            // returns (the module's comment shows why that suffices).
            f: unsafe {
                std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static (dyn Fn(usize) + Sync)>(f)
            },
            tasks,
            #[cfg(loom)]
            alive: loom::cell::UnsafeCell::new(()),
        };
        // Workers read these only after entering through the gate, whose opening publishes them.
        s.next.store(0, Relaxed);
        s.done.store(0, Relaxed);
        s.job.store((&raw const job).cast_mut(), Relaxed);
        s.gate.fetch_or(OPEN, Release);
        s.bump_epoch(&self.workers, false);
        run_tasks(s, &job);
        while s.done.load(Acquire) < tasks {
            spin_pause();
        }
        s.gate.fetch_and(!OPEN, AcqRel);
        while s.gate.load(Acquire) != 0 {
            spin_pause();
        }
        let panic = s.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
    }
}

#[cfg(not(loom))]
fn spawn(i: usize, f: impl FnOnce() + Send + 'static) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("bitnet-worker-{i}"))
        .spawn(f)
}

#[cfg(loom)]
fn spawn(_: usize, f: impl FnOnce() + Send + 'static) -> std::io::Result<thread::JoinHandle<()>> {
    Ok(thread::spawn(f))
}

/// Take and run tasks of `job` until none are left; a panicking task is recorded and counted done.
fn run_tasks(s: &Shared, job: &Job) {
    #[cfg(loom)]
    job.alive.with(|_| ());
    loop {
        let i = s.next.fetch_add(1, Relaxed);
        if i >= job.tasks {
            return;
        }
        // SAFETY: `job.f` is valid while the job is published (see `SpinPool::for_each`).
        let f = unsafe { &*job.f };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(i))) {
            s.panic
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(payload);
        }
        s.done.fetch_add(1, Release);
    }
}

fn worker(s: &Shared) {
    let mut seen = 0usize;
    loop {
        let mut idle = Idle::start();
        loop {
            if s.stop.load(Acquire) {
                return;
            }
            let e = s.epoch.load(Acquire);
            if e >> 1 != seen {
                seen = e >> 1;
                break;
            }
            if idle.should_park() {
                // Fails, and so does not park, if a section was posted since `e` was read.
                if s.epoch
                    .compare_exchange(e, e | SLEEPY, AcqRel, Acquire)
                    .is_ok()
                {
                    thread::park();
                }
            } else {
                spin_pause();
            }
        }
        if s.gate.fetch_add(INSIDE, AcqRel) & OPEN != 0 {
            // SAFETY: the gate was open when this worker entered, so the job is the live one (its
            // opening published the pointer) and stays alive until this worker leaves the gate.
            run_tasks(s, unsafe { &*s.job.load(Relaxed) });
        }
        s.gate.fetch_sub(INSIDE, Release);
    }
}

impl Drop for SpinPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Release);
        self.shared.bump_epoch(&self.workers, true);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
