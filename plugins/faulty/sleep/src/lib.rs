//! **Test fixture, not a sample.** A policy plugin that waits inside the host, or probes
//! what WASI grants it, depending on its `mode` setting:
//!
//! * `sleep` (the default): `on-start` sleeps for an hour. A sleep waits in the host (WASI
//!   `poll`), where epoch interruption does not reach; the host's tests check that the call
//!   is still stopped at its real-time limit.
//! * `sleep-loop`: sleeps 1 ms at a time, forever.
//! * `probe`: tries to read environment variables and arguments, then denies with a
//!   `; `-separated list of what worked. A plugin gets WASI with nothing granted, so the
//!   host's tests expect only the clock check: `clock+sleep ok (true)`. (Files and sockets
//!   are not even importable: see the `filesystem` fixture.)
//! * `count`: denies with `call N of this instance`, N counting this instance's calls. The
//!   host runs every call in a fresh instance, so its tests expect `call 1` every time.
//! * `wall-clock`: denies with the wall-clock time in nanoseconds.
//! * `random`: denies with a random number (WASI `get-random-u64`).
//!
//!   These two answer differently every time, so the host must not remember their answers.

// Natively (the plugins' own tests) the wasm export glue compiles to nothing, so the
// guest type and its helpers look unused there.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use procwarden_plugin_sdk::{Context, Decision, Guest, StartRequest, host};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Calls this instance has seen (a fresh instance starts at zero).
static CALLS: AtomicU32 = AtomicU32::new(0);

struct Sleep;

impl Guest for Sleep {
    fn on_start(req: StartRequest, _ctx: Context) -> Decision {
        match host::config("mode").as_deref() {
            Some("sleep-loop") => loop {
                std::thread::sleep(Duration::from_millis(1));
            },
            Some("probe") => Decision::Deny(probe().join("; ")),
            Some("wall-clock") => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                Decision::Deny(format!("now {}", now.as_nanos()))
            }
            Some("random") => match getrandom::u64() {
                Ok(n) => Decision::Deny(format!("random {n}")),
                Err(e) => Decision::Deny(format!("no random numbers: {e}")),
            },
            Some("count") => {
                let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
                Decision::Deny(format!("call {n} of this instance"))
            }
            _ => {
                std::thread::sleep(Duration::from_secs(3600));
                Decision::Allow(req)
            }
        }
    }
}

/// What the plugin could do that a plugin should not be able to.
fn probe() -> Vec<String> {
    let mut found = Vec::new();
    let vars = std::env::vars().count();
    if vars > 0 {
        found.push(format!("{vars} env vars"));
    }
    if std::env::args().next().is_some() {
        found.push("args".into());
    }
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(2));
    found.push(format!(
        "clock+sleep ok ({})",
        start.elapsed() >= Duration::from_millis(2)
    ));
    found
}

procwarden_plugin_sdk::export!(Sleep);
