//! Exhaustive interleavings of the spinning pool's hand-off, under loom:
//! `RUSTFLAGS="--cfg loom" cargo test -p bitnet-pool --test loom --release`.
//! Loom reports a worker touching a section's job after its caller returned as a data race (the
//! job's end of life is a tracked write), a lost wake-up as a deadlock, and a task run twice or
//! never through the assertions below.
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};

use bitnet_pool::SpinPool;

fn check_sections(threads: usize, sections: &[usize]) {
    let pool = SpinPool::new(threads).unwrap();
    for &tasks in sections {
        let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
        pool.for_each(tasks, &|i| {
            hits[i].fetch_add(1, Ordering::Relaxed);
        });
        for h in &hits {
            assert_eq!(h.load(Ordering::Relaxed), 1);
        }
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(3);
    builder.check(f);
}

#[test]
fn one_worker_two_sections() {
    model(|| check_sections(2, &[2, 1]));
}

#[test]
fn one_worker_three_sections() {
    model(|| check_sections(2, &[1, 1, 1]));
}

#[test]
fn two_workers_one_section() {
    model(|| check_sections(3, &[2]));
}
