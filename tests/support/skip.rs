//! Saying that a test cannot run on this machine.
//!
//! Rust's test harness has no runtime skip, and it hides a passing test's output: a skip that
//! only printed would read as a pass. So each skip is also appended to the file named by
//! `PROCWARDEN_TEST_SKIPS`, which `scripts/test` sets and lists at the end of the run.
//! (Shared by the black-box suite and the process crate's tests, by path.)

use std::io::Write;

/// Report that `test` (or a part of it) is skipped, and why. The caller then returns.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIP {test}: {why}");
    let Some(path) = std::env::var_os("PROCWARDEN_TEST_SKIPS") else {
        return;
    };
    // One short write with O_APPEND: lines from tests running in parallel do not interleave.
    let line = format!("{test}: {why}\n");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(err) = written {
        eprintln!(
            "could not record the skip in {}: {err}",
            path.to_string_lossy()
        );
    }
}
