//! End-to-end tests across the workspace's binaries and file formats live in `tests/`; this library
//! holds what they share.

use std::process::Command;

/// Whether this is a CI run (`CI=true`), where every check must run.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A check cannot run here because `why`: under CI that is a failure (this panics); elsewhere it is
/// reported on stderr and the caller skips the check.
pub fn cannot_run(why: &str) {
    assert!(!in_ci(), "{why}: required when CI=true");
    eprintln!("skipped: {why} (with CI=true this fails)");
}

/// A `python3` command, or `None` (after [`cannot_run`]) when there is no working `python3`.
pub fn python3() -> Option<Command> {
    let works = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        Some(Command::new("python3"))
    } else {
        cannot_run("python3 is not installed");
        None
    }
}
