//! Input beyond a single text write, over HTTP and MCP: a write while another holds the input
//! is refused with a 409 sentence (never a 500), `data_base64` carries arbitrary bytes (NUL,
//! invalid UTF-8) intact, and the terminal of a `tty` process is resized after start (the
//! process gets SIGWINCH).

use std::future::Future;
use std::time::{Duration, Instant};

use procwarden_tests::mcp::{self as m, call};
use procwarden_tests::*;
use serde_json::Value;

async fn input(api: &Api, id: &str, body: Value) -> Resp {
    api.post(&format!("/api/v0/processes/{id}/input"), &body)
        .await
}

async fn resize(api: &Api, id: &str, body: Value) -> Resp {
    api.post(&format!("/api/v0/processes/{id}/resize"), &body)
        .await
}

/// Standard padded base64, so the test does not share the agent's decoder.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every byte value, NUL first, then bytes that are not UTF-8 (a lone continuation byte, an
/// overlong encoding, a truncated sequence) and a CR LF.
fn awkward_bytes() -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..=255u8).collect();
    bytes.extend_from_slice(&[0x80, 0xc0, 0xaf, 0xe2, 0x82, 0x00, b'\r', b'\n']);
    bytes
}

/// `od -An -tx1 -v` output back to bytes.
fn from_od(output: &str) -> Vec<u8> {
    output
        .split_whitespace()
        .map(|hex| u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("od: {hex:?}")))
        .collect()
}

/// Small writes until one is refused because `holder` (a write the command never reads)
/// holds the input; the small writes that went before it were written at once. Runs both
/// together, and returns the refusal and the holder's answer.
async fn refused_while_held<H, P, F>(holder: H, mut probe: P) -> (String, H::Output)
where
    H: Future,
    P: FnMut() -> F,
    F: Future<Output = Option<String>>,
{
    let prober = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(refusal) = probe().await {
                return refusal;
            }
        }
        panic!("no write was refused while another held the input");
    };
    // The holder is polled first, but nothing orders the requests at the agent: hence the loop.
    let (held, refusal) = tokio::join!(holder, prober);
    (refusal, held)
}

#[tokio::test]
async fn a_write_while_another_holds_the_input_is_a_409_over_http() {
    let server = Server::start();
    let api = server.api();
    let id = api
        .start_with(json!({"command": "exec sleep 1000", "stdin": "pipe"}))
        .await;
    // Far more than a pipe holds, to a command that never reads: it holds the input.
    let big = "x".repeat(512 * 1024);
    let holder = input(&api, &id, json!({"data": big}));
    let (refusal, held) = refused_while_held(holder, || async {
        let resp = input(&api, &id, json!({"data": "y"})).await;
        match resp.status {
            200 => None,
            409 => {
                let message = resp.error(409);
                // Kill it: the held write then ends at once (the reader is gone).
                api.signal(&id, "kill").await.expect_status(200);
                Some(message)
            }
            _ => panic!("neither written nor refused: {} {}", resp.status, resp.text),
        }
    })
    .await;
    assert!(
        refusal.contains("another write to its input is in progress"),
        "{refusal}"
    );
    assert!(
        held.status == 200 || held.status == 409,
        "the held write ends without a server error: {} {}",
        held.status,
        held.text
    );
}

#[tokio::test]
async fn a_write_while_another_holds_the_input_is_a_tool_error_over_mcp() {
    let session = m::stdio_session(&[]).await;
    let client = &session.client;
    let started = call(
        client,
        "execute",
        json!({"command": "exec sleep 1000", "stdin": "pipe", "run_in_background": true}),
    )
    .await
    .ok();
    let id = started.process_id().to_owned();
    let big = "x".repeat(512 * 1024);
    let holder = call(client, "process_input", json!({"id": id, "data": big}));
    let (refusal, held) = refused_while_held(holder, || async {
        let reply = call(client, "process_input", json!({"id": id, "data": "y"})).await;
        if !reply.is_error {
            return None;
        }
        call(
            client,
            "process_signal",
            json!({"id": id, "signal": "kill"}),
        )
        .await;
        Some(reply.text)
    })
    .await;
    assert!(
        refusal.contains("another write to its input is in progress"),
        "{refusal}"
    );
    assert!(
        !held.text.contains("Internal") && !held.text.contains("internal"),
        "{}",
        held.text
    );
}

#[tokio::test]
async fn data_base64_carries_nul_and_invalid_utf8_intact_over_http() {
    let server = Server::start();
    let api = server.api();
    let bytes = awkward_bytes();
    let id = api
        .start_with(json!({"command": "od -An -tx1 -v", "stdin": "pipe"}))
        .await;
    let resp = input(
        &api,
        &id,
        json!({"data_base64": base64(&bytes), "eof": true}),
    )
    .await;
    resp.expect_status(200);
    assert_eq!(
        resp.json::<InputReply>(),
        InputReply {
            written: bytes.len() as u64,
            eof: true
        }
    );
    let done = api.wait_exit(&id).await;
    assert_eq!(from_od(&done.output), bytes, "{done}");

    // Both forms, or base64 that is not: 400s naming the field, before anything is written.
    let id = api
        .start_with(json!({"command": "exec sleep 1000", "stdin": "pipe"}))
        .await;
    let both = input(&api, &id, json!({"data": "a", "data_base64": "YQ=="})).await;
    let message = both.error(400);
    assert!(
        message.contains("data_base64") && message.contains("not both"),
        "{message}"
    );
    let bad = input(&api, &id, json!({"data_base64": "not base64!"})).await;
    assert!(bad.error(400).starts_with("data_base64 "), "{}", bad.text);
    api.signal(&id, "kill").await.expect_status(200);
}

#[tokio::test]
async fn data_base64_carries_bytes_intact_over_mcp() {
    let session = m::stdio_session(&[]).await;
    let client = &session.client;
    let bytes = awkward_bytes();
    let started = call(
        client,
        "execute",
        json!({"command": "od -An -tx1 -v", "stdin": "pipe", "run_in_background": true}),
    )
    .await
    .ok();
    let id = started.process_id().to_owned();
    let wrote = call(
        client,
        "process_input",
        json!({"id": id, "data_base64": base64(&bytes), "eof": true}),
    )
    .await;
    assert!(!wrote.is_error, "{}", wrote.text);
    assert_eq!(wrote.json["written"], bytes.len(), "{}", wrote.text);
    let done = call(
        client,
        "process_output",
        json!({"id": id, "wait_timeout_seconds": 10}),
    )
    .await
    .ok();
    assert_eq!(from_od(done.output()), bytes, "{}", done.output());

    let both = call(
        client,
        "process_input",
        json!({"id": id, "data": "a", "data_base64": "YQ=="}),
    )
    .await
    .err();
    assert!(both.contains("not both"), "{both}");
}

/// A shell on a terminal that prints its size on every SIGWINCH (the trap runs as soon as
/// `wait` is interrupted).
const WINCH: &str = "bash -c 'trap \"stty size\" WINCH; sleep 1000 & echo ready; \
                     while :; do wait; done'";

#[tokio::test]
async fn a_terminal_is_resized_after_start_and_the_process_gets_sigwinch() {
    let server = Server::start();
    let api = server.api();
    let id = api
        .start_with(json!({"command": WINCH, "tty": true, "rows": 24, "cols": 80}))
        .await;
    let ready = api
        .get(&format!(
            "/api/v0/processes/{id}/output?wait=true&until=regex:ready"
        ))
        .await;
    ready.expect_status(200);
    let resp = resize(&api, &id, json!({"rows": 50, "cols": 132})).await;
    resp.expect_status(200);
    assert_eq!(
        resp.json::<ResizeReply>(),
        ResizeReply {
            rows: 50,
            cols: 132
        }
    );
    let seen = api
        .get(&format!(
            "/api/v0/processes/{id}/output?wait=true&until=regex:50.132"
        ))
        .await;
    seen.expect_status(200);
    let seen: OutputSnapshot = seen.json();
    assert_eq!(seen.ended_by.as_deref(), Some("regex"), "{seen}");
    assert!(seen.output.contains("50 132\r\n"), "{seen}");

    // Sizes out of range, a malformed body, unknown processes.
    let zero = resize(&api, &id, json!({"rows": 0, "cols": 80})).await;
    assert!(zero.error(400).contains("rows must be"), "{}", zero.text);
    let huge = resize(&api, &id, json!({"rows": 24, "cols": 5000})).await;
    assert!(huge.error(400).contains("cols must be"), "{}", huge.text);
    resize(&api, &id, json!({"rows": 24}))
        .await
        .expect_status(400);
    resize(&api, "no-such-id", json!({"rows": 24, "cols": 80}))
        .await
        .expect_status(404);
    api.signal(&id, "kill").await.expect_status(200);
    api.wait_exit(&id).await;
    let exited = resize(&api, &id, json!({"rows": 24, "cols": 80})).await;
    assert!(exited.error(409).contains("exited"), "{}", exited.text);

    // Without a terminal: a pipe, and the default /dev/null.
    for body in [
        json!({"command": "exec sleep 1000", "stdin": "pipe"}),
        json!({"command": "exec sleep 1000"}),
    ] {
        let plain = api.start_with(body).await;
        let refused = resize(&api, &plain, json!({"rows": 24, "cols": 80})).await;
        assert!(
            refused.error(409).contains("has no terminal"),
            "{}",
            refused.text
        );
        api.signal(&plain, "kill").await.expect_status(200);
    }
}

#[tokio::test]
async fn process_input_resizes_a_terminal_over_mcp() {
    let session = m::stdio_session(&[]).await;
    let client = &session.client;
    let started = call(
        client,
        "execute",
        json!({"command": WINCH, "tty": true, "run_in_background": true}),
    )
    .await
    .ok();
    let id = started.process_id().to_owned();
    let ready = call(
        client,
        "process_output",
        json!({"id": id, "until": "regex:ready", "wait_timeout_seconds": 10}),
    )
    .await;
    assert!(!ready.is_error, "{}", ready.text);
    let resized = call(
        client,
        "process_input",
        json!({"id": id, "rows": 40, "cols": 100}),
    )
    .await;
    assert!(!resized.is_error, "{}", resized.text);
    assert!(
        resized.json["note"]
            .as_str()
            .unwrap_or_default()
            .contains("40 rows by 100 columns"),
        "{}",
        resized.text
    );
    let seen = call(
        client,
        "process_output",
        json!({"id": id, "until": "regex:40.100", "wait_timeout_seconds": 10}),
    )
    .await;
    assert!(seen.text.contains("40 100"), "{}", seen.text);

    let half = call(client, "process_input", json!({"id": id, "rows": 40}))
        .await
        .err();
    assert!(half.contains("pass both"), "{half}");
    call(
        client,
        "process_signal",
        json!({"id": id, "signal": "kill"}),
    )
    .await;
    let plain = m::start_background(client, "sleep 1000").await;
    let refused = call(
        client,
        "process_input",
        json!({"id": plain, "rows": 40, "cols": 100}),
    )
    .await
    .err();
    assert!(refused.contains("has no terminal"), "{refused}");
    call(
        client,
        "process_signal",
        json!({"id": plain, "signal": "kill"}),
    )
    .await;
}
