//! The synchronisation primitives of the spinning pool: std's, or loom's when the crate is built
//! with `--cfg loom` so that the model checker sees every access.

#[cfg(loom)]
pub(crate) use loom::{
    sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering},
    sync::{Arc, Mutex},
    thread,
};
#[cfg(not(loom))]
pub(crate) use std::{
    sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering},
    sync::{Arc, Mutex},
    thread,
};

/// A pause in a spin-wait. Under loom, a yield: the checker must run another thread to make progress.
pub(crate) fn spin_pause() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// How long an idle worker has spun, to decide when to park it.
pub(crate) struct Idle {
    spins: u32,
    #[cfg(not(loom))]
    since: std::time::Instant,
}

impl Idle {
    pub(crate) fn start() -> Self {
        Idle {
            spins: 0,
            #[cfg(not(loom))]
            since: std::time::Instant::now(),
        }
    }

    /// Whether to park now. A worker spins for about 2 ms (a token's sections follow each other
    /// closely), checking the clock every 1024 spins; under loom it parks at once, which keeps the
    /// explored state space small and exercises the park/unpark hand-off in every run.
    pub(crate) fn should_park(&mut self) -> bool {
        self.spins = self.spins.wrapping_add(1);
        #[cfg(loom)]
        return true;
        #[cfg(not(loom))]
        return self.spins.is_multiple_of(1024)
            && self.since.elapsed() > std::time::Duration::from_millis(2);
    }
}
