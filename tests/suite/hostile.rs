//! Hostile clients against the real binary: stalled and slow connections, oversized and
//! malformed requests, token rules, and MCP session churn. Timeouts are configured small so
//! every case runs in seconds; waits have deadlines.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use procwarden_tests::{Server, procwarden_command, write_config};
use serde_json::Value;

const TOKEN: &str = "hostile-test-token-0123456789";

/// A raw HTTP exchange: the response as text, read until the server closes the connection or
/// `limit` passes.
fn raw_exchange(port: u16, request: &[u8], limit: Duration) -> (String, Duration) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let started = Instant::now();
    stream.write_all(request).expect("send request");
    let text = read_until_closed(&mut stream, limit);
    (text, started.elapsed())
}

fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("read timeout");
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            // A reset after the answer (unread request bytes) still leaves the answer read.
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// Status code and JSON body of a raw response.
fn parse_response(text: &str) -> (u16, Value, String) {
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let json =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text:?}"));
    (status, json, head.to_ascii_lowercase())
}

#[track_caller]
fn assert_json_error(text: &str, status: u16) -> Value {
    let (got, body, head) = parse_response(text);
    assert_eq!(got, status, "{text:?}");
    assert!(
        head.contains("content-type: application/json"),
        "not JSON: {text:?}"
    );
    assert!(body["message"].is_string(), "no message: {text:?}");
    body
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_connections_neither_starve_health_nor_exhaust_fds() {
    const CAP: usize = 64;
    let server = Server::with_config(&format!(
        "max_connections = {CAP}\nheader_read_timeout_seconds = 60\n"
    ));
    let api = server.api();
    api.health().await;
    let baseline = open_fds(server.pid());

    // 300 stalled connections: half send nothing, half stop in the middle of a header.
    let port = server.port();
    let stalled = tokio::task::spawn_blocking(move || {
        (0..300)
            .map(|i| {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                if i % 2 == 1 {
                    stream
                        .write_all(b"GET /api/v0/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                        .expect("partial header");
                }
                stream
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();

    for _ in 0..20 {
        let started = Instant::now();
        let reply = api
            .fresh()
            .try_send("GET", "/api/v0/health", None, Duration::from_secs(3))
            .await
            .expect("/health must answer while connections are stalled");
        reply.expect_status(200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "/health took {:?}",
            started.elapsed()
        );
    }
    let fds = open_fds(server.pid());
    assert!(
        fds <= baseline + CAP + 8,
        "{fds} fds open with {CAP} connections allowed (baseline {baseline})"
    );
    // A start still gets through too.
    let id = api.fresh().start("echo through").await;
    api.fresh().wait_exit(&id).await;
    drop(stalled);
    server.assert_alive();
}

#[test]
fn when_every_connection_is_busy_a_new_one_is_refused_503() {
    let server = Server::with_config("max_connections = 2\n");
    let dir = tempfile::tempdir().unwrap();
    let mut busy = Vec::new();
    for i in 0..2 {
        let marker = dir.path().join(format!("started-{i}"));
        let body = serde_json::json!({"command": format!("touch {}; sleep 30", marker.display())})
            .to_string();
        let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
        write!(
            stream,
            "POST /api/v0/processes/start?wait=true HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        // The command runs: its request is in flight, its connection busy.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !marker.exists() {
            assert!(Instant::now() < deadline, "command {i} never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        busy.push(stream);
    }
    let health = b"GET /api/v0/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let (text, took) = raw_exchange(server.port(), health, Duration::from_secs(5));
    assert_json_error(&text, 503);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains(&format!("content-length: {}\r\n", body.len())),
        "{text:?}"
    );
    assert!(took < Duration::from_secs(2), "refusal took {took:?}");

    // Clients that go away free their places.
    drop(busy);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (text, _) = raw_exchange(server.port(), health, Duration::from_secs(5));
        if text.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "never admitted again: {text:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stalled_header_is_closed_after_the_header_read_timeout() {
    let server = Server::with_config("header_read_timeout_seconds = 1\n");
    for partial in [
        &b""[..],
        b"GET /api/v0/health HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    ] {
        let (text, took) = raw_exchange(server.port(), partial, Duration::from_secs(10));
        assert!(
            took < Duration::from_secs(5),
            "still open after {took:?}: {text:?}"
        );
    }
}

#[test]
fn a_slow_body_is_answered_408_json() {
    let server = Server::with_config("body_read_timeout_seconds = 1\n");
    for path in ["/api/v0/processes/start", "/mcp"] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 100\r\n\r\n{{\"command\":"
        );
        let (text, took) = raw_exchange(server.port(), request.as_bytes(), Duration::from_secs(10));
        assert_json_error(&text, 408);
        assert!(took < Duration::from_secs(5), "{path}: took {took:?}");
    }
}

#[test]
fn an_oversized_body_is_refused_413_without_100_continue() {
    let server = Server::start();
    for path in ["/api/v0/processes/start", "/mcp"] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nExpect: 100-continue\r\nContent-Length: 2097152\r\n\r\n"
        );
        let (text, _) = raw_exchange(server.port(), request.as_bytes(), Duration::from_secs(5));
        assert!(!text.contains("100 Continue"), "{path}: {text:?}");
        assert_json_error(&text, 413);
    }
}

#[test]
fn unauthenticated_requests_are_answered_401_before_their_body() {
    let server = Server::with_config(&format!("token = {TOKEN:?}\n"));
    let cases = ["/api/v0/processes/start", "/mcp"]
        .into_iter()
        .flat_map(|path| [(path, ""), (path, "Expect: 100-continue\r\n")]);
    for (path, expect) in cases {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{expect}Content-Length: 1000000\r\n\r\n{{\"comm"
        );
        let (text, took) = raw_exchange(server.port(), request.as_bytes(), Duration::from_secs(10));
        assert!(!text.contains("100 Continue"), "{text:?}");
        let (_, _, head) = parse_response(&text);
        assert_json_error(&text, 401);
        assert!(head.contains("www-authenticate: bearer"), "{text:?}");
        assert!(took < Duration::from_secs(2), "401 took {took:?}");
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_401_says_so() {
    let server = Server::with_config(&format!("token = {TOKEN:?}\n"));
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let api = server
            .api()
            .with_header("Authorization", &format!("{scheme} {TOKEN}"));
        assert!(api.list().await.is_empty(), "{scheme}");
    }
    let reply = reqwest::Client::new()
        .get(format!("{}/api/v0/health", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    assert_eq!(
        reply
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(' ').next().unwrap_or("").to_owned()),
        Some("Bearer".to_owned())
    );
}

#[test]
fn short_or_blank_tokens_are_refused_at_startup() {
    // 15 bytes is one short of the minimum; 16 spaces are blank however long.
    for token in ["short", "fifteen-bytes-x", "                ", ""] {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &format!("token = {token:?}\n"));
        let mut child = procwarden_command()
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let exited = std::thread::scope(|_| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        });
        if !exited {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            exited && !out.status.success(),
            "{token:?} accepted: {out:?}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line expected: {stderr:?}");
        assert!(lines[0].contains("token"), "{stderr:?}");
    }
}

#[tokio::test]
async fn a_token_of_sixteen_bytes_is_accepted() {
    let token = "sixteen-bytes-xx";
    assert_eq!(token.len(), 16);
    let server = Server::with_config(&format!("token = {token:?}\n"));
    server.api().get("/api/v0/health").await.expect_status(401);
    server
        .api()
        .token(token)
        .get("/api/v0/health")
        .await
        .expect_status(200);
}

#[test]
fn oversized_heads_and_uris_get_json_errors() {
    let server = Server::start();
    let port = server.port();
    let long_query = "x".repeat(9 * 1024);
    let (text, _) = raw_exchange(
        port,
        format!("GET /api/v0/health?{long_query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    );
    assert_json_error(&text, 414);

    let huge_header = "y".repeat(100 * 1024);
    let (text, _) = raw_exchange(
        port,
        format!("GET /api/v0/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {huge_header}\r\n\r\n")
            .as_bytes(),
        Duration::from_secs(5),
    );
    assert_json_error(&text, 431);

    let (text, _) = raw_exchange(port, b"NOT HTTP AT ALL\r\n\r\n", Duration::from_secs(5));
    assert_json_error(&text, 400);
    server.assert_alive();
}

#[tokio::test]
async fn routing_and_extractor_errors_are_json() {
    let server = Server::start();
    let api = server.api();
    api.get("/no/such/route").await.error(404);
    api.send("DELETE", "/api/v0/health", None).await.error(405);
    // Not UTF-8 once percent-decoded: a path extractor rejection.
    api.get("/api/v0/processes/%FF%FE/output").await.error(400);
    // rmcp's own plain-text refusals, rewrapped.
    api.get("/mcp").await;
    let reply = api.send("POST", "/mcp", Some(b"{}".to_vec())).await;
    assert!(reply.status >= 400, "{reply:?}");
    reply.message();
}

/// A raw MCP POST; returns status, headers and body text.
async fn mcp_post(
    server: &Server,
    session: Option<&str>,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/mcp", server.url()))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .timeout(Duration::from_secs(10))
        .body(body.to_owned());
    if let Some(id) = session {
        request = request.header("mcp-session-id", id);
    }
    let reply = request.send().await.expect("MCP POST");
    let status = reply.status().as_u16();
    let headers = reply.headers().clone();
    (status, headers, reply.text().await.unwrap_or_default())
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"hostile","version":"0"}}}"#;

async fn open_session(server: &Server) -> Option<String> {
    let (status, headers, body) = mcp_post(server, None, INITIALIZE).await;
    if status != 200 {
        return None;
    }
    assert!(body.contains("\"result\""), "{body}");
    headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn malformed_mcp_json_gets_a_jsonrpc_parse_error() {
    let server = Server::start();
    let (status, _, body) = mcp_post(&server, None, "{not json").await;
    assert_eq!(status, 400, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(body["error"]["code"], -32700, "{body}");
    assert_eq!(body["jsonrpc"], "2.0");

    let (status, _, body) = mcp_post(&server, None, r#"{"hello":"world"}"#).await;
    assert_eq!(status, 400, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(body["error"]["code"], -32600, "{body}");
}

#[tokio::test]
async fn mcp_sessions_are_capped() {
    let server = Server::with_config("mcp_max_sessions = 3\n");
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(open_session(&server).await.expect("under the cap"));
    }
    let (status, headers, body) = mcp_post(&server, None, INITIALIZE).await;
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after"));
    let body: Value = serde_json::from_str(&body).expect("JSON body");
    assert!(body["message"].is_string());

    // Closing one makes room.
    let reply = reqwest::Client::new()
        .delete(format!("{}/mcp", server.url()))
        .header("mcp-session-id", &sessions[0])
        .send()
        .await
        .unwrap();
    assert!(reply.status().is_success(), "{reply:?}");
    assert!(open_session(&server).await.is_some());
}

#[tokio::test]
async fn idle_mcp_sessions_are_closed_and_their_place_reused() {
    let server = Server::with_config("mcp_max_sessions = 2\nmcp_session_idle_seconds = 1\n");
    let first = open_session(&server).await.unwrap();
    open_session(&server).await.unwrap();
    // Full until the idle ones are closed; then both places are free again.
    let mut opened = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while opened < 2 {
        assert!(Instant::now() < deadline, "idle sessions were never closed");
        if open_session(&server).await.is_some() {
            opened += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let ping = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let (status, _, body) = mcp_post(&server, Some(&first), ping).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn a_long_call_keeps_its_idle_session_alive() {
    let server = procwarden_tests::mcp::HttpServer::start_with_config(Some(
        "mcp_session_idle_seconds = 1\n",
    ));
    let client = server.session(&[]).await;
    // Four idle periods without a message from either side.
    let reply = procwarden_tests::mcp::call(
        &client,
        "execute",
        serde_json::json!({"command": "sleep 4; echo done", "timeout_seconds": 30}),
    )
    .await
    .ok();
    assert_eq!(reply.output.as_deref(), Some("done\n"), "{reply:?}");
    // The idle clock restarts when the call ends: the session is still there.
    let reply = procwarden_tests::mcp::call(&client, "process_list", serde_json::json!({})).await;
    assert!(!reply.is_error, "{}", reply.text);
}
