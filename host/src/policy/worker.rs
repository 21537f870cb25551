//! Threads that run plugin calls when the chain is used from inside a Tokio runtime.
//!
//! Plugins run synchronously, and Wasmtime's synchronous WASI implementation blocks on a Tokio
//! runtime for stream and poll operations (a plugin printing, or panicking, writes to stderr).
//! Doing that on a thread that is driving async tasks would panic ("cannot start a runtime
//! from within a runtime"), so calls made from such a thread are handed to these plain
//! threads and the caller waits for the result. Calls from plain threads run inline.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

type Job = Box<dyn FnOnce() + Send>;

/// A small fixed pool of plain (non-Tokio) threads.
pub(crate) struct Workers {
    tx: mpsc::Sender<Job>,
}

impl Workers {
    pub fn new(count: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..count.max(1) {
            let rx = rx.clone();
            // Detached: they exit when `tx` is dropped and the queue is drained.
            thread::Builder::new()
                .name(format!("policy-worker-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            // A panicking job drops its reply sender; the caller sees that.
                            Ok(job) => drop(catch_unwind(AssertUnwindSafe(job))),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Self { tx })
    }

    /// Whether the current thread must not run plugins itself.
    pub fn needed() -> bool {
        tokio::runtime::Handle::try_current().is_ok()
    }

    /// Runs `f` on a worker and blocks until it returns. `None` if it panicked.
    pub fn run_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let (reply, result) = mpsc::sync_channel(1);
        self.tx
            .send(Box::new(move || {
                let _ = reply.send(f());
            }))
            .ok()?;
        result.recv().ok()
    }

    /// Runs `f` on a worker without blocking the calling task. `None` if it panicked.
    pub async fn run_async<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.tx
            .send(Box::new(move || {
                let _ = reply.send(f());
            }))
            .ok()?;
        result.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_jobs_and_survives_panics() {
        let w = Workers::new(2).unwrap();
        assert_eq!(w.run_blocking(|| 2 + 2), Some(4));
        assert_eq!(
            w.run_blocking(|| -> u8 { panic!("deliberate panic in a worker job (test)") }),
            None
        );
        assert_eq!(w.run_blocking(|| "still here"), Some("still here"));
        assert!(!Workers::needed());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(Workers::needed());
            assert_eq!(w.run_async(Workers::needed).await, Some(false));
            assert_eq!(w.run_blocking(|| 7), Some(7));
        });
    }
}
