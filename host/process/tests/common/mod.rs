//! Set-up shared by the containment-mode tests.

use std::time::{Duration, Instant};

use procwarden_process::StartRequest;

#[allow(dead_code)] // not every test file skips
#[path = "../../../../tests/support/skip.rs"]
mod skip;
#[allow(unused_imports)]
pub use skip::skip;

/// A background start of `command` with every other field at its default.
#[allow(dead_code)] // not every test file starts processes this way
pub fn background(command: &str) -> StartRequest {
    StartRequest {
        command: command.into(),
        background: true,
        ..StartRequest::default()
    }
}

/// Poll `check` until it holds or `limit` passes; returns whether it held.
#[allow(dead_code)] // not every test file polls
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    check()
}
