//! The accept loop: HTTP/1 connections served by hyper, bounded against hostile clients.
//!
//! - A request header must arrive within `header_read_timeout` (also between keep-alive
//!   requests), or the connection is closed.
//! - A request body must arrive within `body_read_timeout` of its header, or the request is
//!   answered 408.
//! - At most `max_connections` connections are open (see [`super::connections`]).
//! - Request heads are at most [`MAX_HEAD_BYTES`] (431) and URIs [`MAX_URI_BYTES`] (414),
//!   answered with JSON like every other error.
//! - Shutdown closes waiting connections at once and lets requests in flight finish.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use super::body_timeout::{BodyProgress, TimedBody};
use super::connections::{Busy, Connections, Order, Slot};
use super::error::ApiError;
use super::raw_errors::JsonParseErrors;

/// Largest request head (request line and headers) read; hyper answers 431 beyond it.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest request target.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// After a failed `accept` (out of file descriptors, typically), before the next: the
/// pending connection stays queued, so retrying at once would only spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Refused connections drained at once, and for how long at most.
const MAX_LINGERING_REFUSALS: usize = 32;
const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// Answer to a connection over the cap when every open one is busy.
static REFUSAL: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let body = serde_json::json!({
        "message": "Too many connections.",
        "detail": "every connection has a request in flight",
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

#[derive(Debug, Clone)]
pub struct ListenerLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
}

impl ListenerLimits {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            header_read_timeout: config.header_read_timeout(),
            body_read_timeout: config.body_read_timeout(),
            max_connections: config.max_connections,
        }
    }
}

/// Serve `app` on `listener` until `shutdown` completes; then stop accepting, close waiting
/// connections, and return once the requests in flight have finished.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Connections::new(limits.max_connections);
    let refusals = Arc::new(Semaphore::new(MAX_LINGERING_REFUSALS));
    let tasks = TaskTracker::new();
    let limits = Arc::new(limits);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(%err, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Some(slot) = connections.admit() else {
            tracing::debug!("connection refused: every connection is busy");
            refuse(stream, &refusals);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tasks.spawn(serve_connection(stream, app.clone(), slot, limits.clone()));
    }
    drop(listener);
    connections.shut_down();
    tasks.close();
    tasks.wait().await;
}

/// Tell a connection over the cap so, without waiting on it. Closing a socket whose request
/// is unread resets it, which can destroy the answer before the client reads it; so a few
/// refused connections are kept a moment to drain, and the rest are simply closed.
fn refuse(stream: TcpStream, refusals: &Arc<Semaphore>) {
    let _ = stream.try_write(&REFUSAL);
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let mut stream = stream;
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        drop(permit);
    });
}

async fn serve_connection(stream: TcpStream, app: Router, slot: Slot, limits: Arc<ListenerLimits>) {
    let slot = Arc::new(slot);
    let service = {
        let slot = slot.clone();
        let body_read_timeout = limits.body_read_timeout;
        service_fn(move |req| handle(req, app.clone(), slot.clone(), body_read_timeout))
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        // Bounds what one connection buffers (a stalled one included).
        .max_buf_size(2 * MAX_HEAD_BYTES);
    let connection = builder.serve_connection(TokioIo::new(JsonParseErrors::new(stream)), service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        order = slot.order() => match order {
            // No request in flight: dropping the connection loses nothing.
            Order::Close => return,
            Order::Drain => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        },
    };
    if let Err(err) = result {
        tracing::debug!(%err, "connection closed with an error");
    }
}

async fn handle(
    req: Request<Incoming>,
    mut app: Router,
    slot: Arc<Slot>,
    body_read_timeout: Duration,
) -> Result<Response<Body>, Infallible> {
    let Some(busy) = slot.begin() else {
        // The connection was closed to make room while this request's header arrived.
        return Ok(
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Too many connections.")
                .closing_connection()
                .into_response(),
        );
    };
    let uri_bytes = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    let response = if uri_bytes > MAX_URI_BYTES {
        ApiError::new(StatusCode::URI_TOO_LONG, "The request URI is too long.")
            .with_detail(format!("{uri_bytes} bytes; the limit is {MAX_URI_BYTES}"))
            .closing_connection()
            .into_response()
    } else {
        let (parts, body) = req.into_parts();
        let (body, progress) = TimedBody::new(body, body_read_timeout);
        let mut req = Request::from_parts(parts, Body::new(body));
        req.extensions_mut().insert(progress.clone());
        let response = match app.call(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        if progress.timed_out() {
            body_timeout_response(body_read_timeout)
        } else {
            response
        }
    };
    Ok(response.map(|body| Body::new(BusyBody { body, _busy: busy })))
}

/// 408 for a body that did not arrive within `limit`.
pub fn body_timeout_response(limit: Duration) -> Response<Body> {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "The request body was not received in time.",
    )
    .with_detail(format!(
        "the body must arrive within {} s of the header",
        limit.as_secs_f64()
    ))
    .closing_connection()
    .into_response()
}

/// Whether the request's body is still being received (it has not timed out yet).
pub fn body_incomplete(progress: Option<&BodyProgress>) -> bool {
    progress.is_some_and(|p| !p.is_complete())
}

/// A response body that keeps its connection marked busy until it is done: an SSE stream
/// or a long wait is never closed to make room.
struct BusyBody {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for BusyBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
