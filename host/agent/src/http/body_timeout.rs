//! A deadline for receiving a request body: a client that trickles its body (or stops sending
//! it) is answered 408 instead of holding a connection and a handler indefinitely.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// Whether a request's body arrived in time; shared between the body and whoever answers.
#[derive(Clone, Default)]
pub struct BodyProgress {
    inner: Arc<ProgressFlags>,
}

#[derive(Default)]
struct ProgressFlags {
    complete: AtomicBool,
    timed_out: AtomicBool,
}

impl BodyProgress {
    /// The whole body has been received.
    pub fn is_complete(&self) -> bool {
        self.inner.complete.load(Ordering::Acquire)
    }

    /// The deadline passed before the whole body was received.
    pub fn timed_out(&self) -> bool {
        self.inner.timed_out.load(Ordering::Acquire)
    }
}

/// The request body, failing with [`BodyTimedOut`] once its deadline has passed.
pub struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    progress: BodyProgress,
}

impl TimedBody {
    /// The deadline runs from now (the end of the request header).
    pub fn new(inner: Incoming, limit: Duration) -> (Self, BodyProgress) {
        let progress = BodyProgress::default();
        if inner.is_end_stream() {
            progress.inner.complete.store(true, Ordering::Release);
        }
        let body = Self {
            inner,
            deadline: Instant::now() + limit,
            limit,
            sleep: None,
            progress: progress.clone(),
        };
        (body, progress)
    }

    fn time_out(&mut self) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.progress.inner.timed_out.store(true, Ordering::Release);
        Poll::Ready(Some(Err(Box::new(BodyTimedOut(self.limit)))))
    }
}

type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.progress.is_complete() {
            return Poll::Ready(None);
        }
        if this.progress.timed_out() || Instant::now() >= this.deadline {
            return this.time_out();
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.progress.inner.complete.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                if this.inner.is_end_stream() {
                    this.progress.inner.complete.store(true, Ordering::Release);
                }
                Poll::Ready(Some(frame.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => this.time_out(),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.progress.is_complete() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Debug)]
pub struct BodyTimedOut(pub Duration);

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body was not received within {} s",
            self.0.as_secs_f64()
        )
    }
}

impl std::error::Error for BodyTimedOut {}
