//! The chain's own small Tokio runtime.
//!
//! Plugin calls are futures (Wasmtime runs them on a fiber), so async callers run them on
//! their own task, with no thread hop. This runtime provides the rest:
//!
//! * the clock for plugins that sleep (every poll of a call enters this runtime's context,
//!   so the caller's runtime needs no timer driver, and a plain thread needs no runtime);
//! * a place to run calls made with the synchronous API: a plain thread drives the call
//!   itself with `block_on`; a thread inside some other Tokio runtime cannot (`block_on`
//!   there would panic), so its call is spawned here and the thread waits for the result.
//!
//! A panic in the host while a call runs is caught and becomes a failure of that call.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt as _;
use tokio::runtime::{Builder, Handle, Runtime};

/// The runtime; shut down in the background when dropped (dropping a runtime normally
/// blocks, which panics when the last chain handle goes away inside async code).
pub(crate) struct Workers {
    runtime: Option<Runtime>,
}

impl Workers {
    pub fn new(count: usize) -> std::io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(count.max(1))
            .thread_name("policy-worker")
            .enable_time()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("present until dropped")
    }

    /// The handle plugin calls take their timers from.
    pub fn handle(&self) -> &Handle {
        self.runtime().handle()
    }

    /// Whether the current thread is inside a Tokio runtime (and so must not `block_on`).
    pub fn needed() -> bool {
        Handle::try_current().is_ok()
    }

    /// Runs `fut` to completion from synchronous code. On a plain thread the future runs
    /// right here; inside a Tokio runtime it runs on this runtime's threads while the
    /// current thread waits. `None` if it panicked.
    pub fn run_blocking<F>(&self, fut: F) -> Option<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if Self::needed() {
            let task = self.runtime().spawn(fut);
            futures::executor::block_on(task).ok()
        } else {
            self.runtime().block_on(contained(fut))
        }
    }
}

/// `fut`, with a panic turned into `None`.
pub(crate) async fn contained<F: Future>(fut: F) -> Option<F::Output> {
    AssertUnwindSafe(fut).catch_unwind().await.ok()
}

impl Drop for Workers {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn boom() -> u8 {
        panic!("deliberate panic in a worker job (test)")
    }

    #[test]
    fn runs_jobs_and_survives_panics() {
        let w = Workers::new(2).unwrap();
        assert_eq!(w.run_blocking(async { 2 + 2 }), Some(4));
        assert_eq!(w.run_blocking(boom()), None);
        assert_eq!(w.run_blocking(async { "still here" }), Some("still here"));
        assert!(!Workers::needed());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(Workers::needed());
            assert_eq!(w.run_blocking(async { 7 }), Some(7));
            assert_eq!(w.run_blocking(boom()), None);
            assert_eq!(contained(boom()).await, None);
            // Timers come from the workers' runtime, not this one (which has none).
            let sleep = {
                let _timers = w.handle().enter();
                tokio::time::sleep(std::time::Duration::from_millis(1))
            };
            sleep.await;
        });
        drop(w);
    }
}
