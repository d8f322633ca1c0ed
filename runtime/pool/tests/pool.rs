//! The pools against their contract: every task runs exactly once per section, across many
//! sections and after workers park; panics finish the section and reach the caller.
#![cfg(not(loom))]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bitnet_pool::{Pool, PoolKind};

const KINDS: [PoolKind; 2] = [PoolKind::Rayon, PoolKind::Spin];

#[test]
fn every_task_runs_exactly_once_across_many_sections() {
    for kind in KINDS {
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

/// About a million tiny sections per pool size, each counting into a variable of its caller's
/// frame: a task run twice, never, or after its section returned shows as a wrong count.
#[test]
fn stress_a_million_tiny_sections() {
    for threads in [2, 3] {
        let pool = Pool::new(PoolKind::Spin, threads).unwrap();
        for round in 0..500_000usize {
            let tasks = 1 + round % 3;
            let seen = AtomicUsize::new(0);
            pool.for_each(tasks, &|_| {
                seen.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(seen.load(Ordering::Relaxed), tasks, "round {round}");
        }
    }
}

#[test]
fn workers_wake_after_parking() {
    let pool = Pool::new(PoolKind::Spin, 2).unwrap();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(20));
        let sum = AtomicUsize::new(0);
        pool.for_each(100, &|i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 4950);
    }
}

/// A panic in any task (on a worker or on the caller) ends the section only when no task is
/// running, reaches the caller with its payload, and leaves the pool usable.
#[test]
fn a_panicking_task_finishes_the_section_and_reaches_the_caller() {
    for kind in KINDS {
        let pool = Pool::new(kind, 3).unwrap();
        for bad in [0, 5, 63] {
            let ran = AtomicUsize::new(0);
            let result = catch_unwind(AssertUnwindSafe(|| {
                pool.for_each(64, &|i| {
                    if i == bad {
                        panic!("task {i} failed");
                    }
                    std::thread::sleep(Duration::from_micros(50));
                    ran.fetch_add(1, Ordering::Relaxed);
                })
            }));
            let at_return = ran.load(Ordering::Relaxed);
            let payload = result.expect_err("the panic reaches the caller");
            let message = payload
                .downcast_ref::<String>()
                .expect("a formatted message");
            assert_eq!(message, &format!("task {bad} failed"), "{kind:?}");
            // No task runs after the caller got control back.
            std::thread::sleep(Duration::from_millis(5));
            assert_eq!(
                ran.load(Ordering::Relaxed),
                at_return,
                "{kind:?}, task {bad}"
            );
            // The spinning pool runs every other task (rayon may drop the rest of a split).
            if kind == PoolKind::Spin {
                assert_eq!(at_return, 63, "task {bad}");
            }
        }
        let count = AtomicUsize::new(0);
        pool.for_each(10, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 10, "{kind:?} after a panic");
    }
}

#[test]
fn every_task_panicking_still_returns() {
    let pool = Pool::new(PoolKind::Spin, 2).unwrap();
    let result = catch_unwind(AssertUnwindSafe(|| {
        pool.for_each(8, &|_| panic!("all fail"))
    }));
    assert!(result.is_err());
}

#[test]
fn pool_names_parse() {
    assert_eq!(PoolKind::parse(None), Ok(PoolKind::Spin));
    assert_eq!(PoolKind::parse(Some("")), Ok(PoolKind::Spin));
    assert_eq!(PoolKind::parse(Some("spin")), Ok(PoolKind::Spin));
    assert_eq!(PoolKind::parse(Some("rayon")), Ok(PoolKind::Rayon));
    assert!(
        PoolKind::parse(Some("tokio"))
            .unwrap_err()
            .contains("tokio")
    );
}
