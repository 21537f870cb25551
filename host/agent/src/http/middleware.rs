//! Cross-cutting request handling: bearer auth, per-request deadlines, access log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::body_timeout::BodyProgress;
use super::error::ApiError;

/// Headroom past the wait cap, so a blocked request always gets to write its answer.
pub const WAIT_DEADLINE_HEADROOM: Duration = Duration::from_secs(30);

/// The checks every request passes before it is routed, in this order: web pages kept out,
/// the token, the announced body size. One layer rather than three: each layer of a router
/// clones the route's boxed service on every request.
pub async fn admit(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    if let Some(refusal) = browser_refusal(&state, &req)
        .or_else(|| token_refusal(&state, &req))
        .or_else(|| oversized_refusal(&state, &req))
    {
        return refusal;
    }
    next.run(req).await
}

/// Runs before anything reads the body: an unauthenticated request is answered at once,
/// whatever body it announces or trickles, and gets no `100 Continue`.
fn token_refusal(state: &ApiState, req: &Request) -> Option<Response> {
    let token = state.token.as_ref()?;
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credentials);
    match presented {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => None,
        _ => {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "A valid bearer token is required.",
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"procwarden\""),
            );
            Some(response)
        }
    }
}

/// The credentials of `Bearer <credentials>`; the scheme is case-insensitive (RFC 9110).
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start_matches(' '))
}

/// A body announced larger than the limit is refused from its `Content-Length`, before the
/// body is polled: hyper sends `100 Continue` only when the body is first read, so a client
/// that asked for it is told 413 without having sent a byte. (A chunked body is still cut
/// at the limit while it is read.)
fn oversized_refusal(state: &ApiState, req: &Request) -> Option<Response> {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match announced {
        Some(length) if length > state.max_body_bytes as u64 => Some(
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large.")
                .with_detail(format!(
                    "Content-Length {length} exceeds the limit of {} bytes",
                    state.max_body_bytes
                ))
                .closing_connection()
                .into_response(),
        ),
        _ => None,
    }
}

/// Without a token, anything that can reach the port can run commands, so keep web pages out:
/// a cross-site `fetch` (a no-cors POST needs no preflight) carries the page's `Origin`, and a
/// DNS-rebinding page reaches us under its own host name. Allow only loopback names for both.
/// With a token, which a page cannot attach, every request is authenticated anyway.
fn browser_refusal(state: &ApiState, req: &Request) -> Option<Response> {
    if state.token.is_none() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        if host.is_some_and(|h| !is_loopback_authority(h)) {
            return Some(
                ApiError::new(StatusCode::FORBIDDEN, "Host must be a loopback address.")
                    .with_detail("set a token in the config to serve other host names")
                    .into_response(),
            );
        }
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        let foreign_origin = origin.is_some_and(|o| {
            o.strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                .is_none_or(|authority| !is_loopback_authority(authority))
        });
        if foreign_origin {
            return Some(
                ApiError::new(StatusCode::FORBIDDEN, "Cross-origin requests are refused.")
                    .with_detail("requests from web pages need a token")
                    .into_response(),
            );
        }
    }
    None
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Every request gets the server's deadline, except blocking waits (output reads and starts
/// with `?wait=true`), whose deadline is extended past the wait cap: a long wait must never
/// be cut by the server's own timeout.
pub async fn deadline(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let limit = if is_blocking_wait(&req) {
        state.agent.wait_cap() + WAIT_DEADLINE_HEADROOM
    } else {
        state.request_timeout
    };
    let body = req.extensions().get::<BodyProgress>().cloned();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        // Still receiving the body: the client is slow, not the server.
        Err(_) if super::listener::body_incomplete(body.as_ref()) => {
            super::listener::body_timeout_response(limit)
        }
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The request took too long.",
        )
        .with_detail(format!("deadline of {} s exceeded", limit.as_secs_f64()))
        .into_response(),
    }
}

fn is_blocking_wait(req: &Request) -> bool {
    let path = req.uri().path();
    (path.ends_with("/output") || path.ends_with("/start"))
        && super::extract::wants_wait(req.uri().query())
}

/// Around every request, in one layer (each layer of a router clones the route's boxed
/// service per request): an error answer rewrapped as JSON, the request counted under its
/// route and the status it was finally answered with, and a debug log line.
pub async fn observe(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    // The route template (`/api/v0/processes/{id}/output`), never the ID; an `Arc` clone.
    let route = req.extensions().get::<MatchedPath>().cloned();
    // Skip copying the path and parsing the chat header when nobody reads the line.
    let log = tracing::enabled!(tracing::Level::DEBUG).then(|| {
        let chat_id = crate::chat::chat_from_headers(req.headers()).unwrap_or_default();
        (Instant::now(), req.uri().path().to_owned(), chat_id)
    });
    let response = super::json_errors::as_json(next.run(req).await).await;
    let status = response.status().as_u16();
    if let Some((started, path, chat_id)) = log {
        tracing::debug!(
            %method,
            path,
            status,
            chat_id = chat_id.unwrap_or_default(),
            micros = started.elapsed().as_micros() as u64,
            "request"
        );
    }
    state.agent.metrics().http_request(
        method.as_str(),
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        status,
    );
    response
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::{bearer_credentials, is_loopback_authority};

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for (header, expected) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc", Some("abc")),
            ("Basic abc", None),
            ("Bearerabc", None),
            ("abc", None),
        ] {
            assert_eq!(bearer_credentials(header), expected, "{header}");
        }
    }

    #[test]
    fn loopback_authorities() {
        for ok in [
            "localhost",
            "localhost:7077",
            "127.0.0.1:1",
            "127.1.2.3",
            "[::1]:80",
            "[::1]",
        ] {
            assert!(is_loopback_authority(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7077",
            "10.0.0.1:7077",
            "[::2]:1",
            "localhost.evil.example",
            "",
        ] {
            assert!(!is_loopback_authority(bad), "{bad}");
        }
    }
}
