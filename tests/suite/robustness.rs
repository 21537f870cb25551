//! Robustness: request validation (400 with JSON messages), body limit (413), malformed HTTP on
//! raw sockets, unknown routes (404 JSON) and wrong methods (405 JSON). The server must answer
//! normally afterwards and never die. Reference acceptance items 2, 3.

use std::time::Duration;

use procwarden_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn still_serving(server: &Server) {
    server.assert_alive();
    let api = server.api();
    let id = api.start("echo still-alive").await;
    assert_eq!(api.wait_exit(&id).await.output, "still-alive\n");
    api.list().await;
    server.assert_alive();
}

#[tokio::test]
async fn malformed_json_is_400_with_message_and_detail() {
    let server = Server::start();
    let api = server.api();
    let r = api
        .post_raw("/api/v0/processes/start", "{invalid json")
        .await;
    let error = r.error_body(400);
    assert_eq!(error.message, "Request body must be valid JSON.");
    assert!(
        error.detail.is_some_and(|d| !d.is_empty()),
        "detail expected: {}",
        r.text
    );
    // Valid JSON whose value has the wrong type says so, and the detail names the value.
    let r = api
        .post_raw(
            "/api/v0/processes/start",
            r#"{"command": "true", "timeout_seconds": "ten"}"#,
        )
        .await;
    let error = r.error_body(400);
    assert!(
        error.message.contains("expected fields or types"),
        "{error:?}"
    );
    assert!(
        error
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("\"ten\"")),
        "{error:?}"
    );
    for body in [
        &b""[..],
        b"{\"command\": \"echo\"",
        b"\xff\xfe{}",
        b"{\"command\": \"a\"} trailing",
    ] {
        let r = api.post_raw("/api/v0/processes/start", body.to_vec()).await;
        r.error(400);
    }
    assert!(api.list().await.is_empty());
    still_serving(&server).await;
}

#[tokio::test]
async fn missing_or_empty_command_is_400() {
    let server = Server::start();
    let api = server.api();
    for body in [
        json!({}),
        json!({"command": ""}),
        json!({"env": {"A": "b"}}),
    ] {
        let msg = api.start_req(&body).await.error(400);
        assert_eq!(msg, "Command is required.", "for {body}");
    }
    api.start_req(&json!({"command": null})).await.error(400);
    assert!(api.list().await.is_empty());
    still_serving(&server).await;
}

#[tokio::test]
async fn wrong_types_are_400() {
    let server = Server::start();
    let api = server.api();
    let bodies = [
        json!({"command": 5}),
        json!({"command": ["echo", "hi"]}),
        json!({"command": "echo hi", "env": "A=b"}),
        json!({"command": "echo hi", "env": {"A": 5}}),
        json!({"command": "echo hi", "env": ["A=b"]}),
        json!({"command": "echo hi", "background": "yes"}),
        json!({"command": "echo hi", "timeout_seconds": "1"}),
        json!({"command": "echo hi", "workdir": 5}),
        json!({"command": "echo hi", "idempotency_key": 5}),
        json!([]),
        json!("echo hi"),
        json!(5),
        json!(null),
    ];
    for body in bodies {
        let r = api.start_req(&body).await;
        r.error(400);
    }
    assert!(api.list().await.is_empty(), "nothing may start");
    still_serving(&server).await;
}

#[tokio::test]
async fn body_over_max_body_bytes_is_413() {
    let server = Server::with_config("max_body_bytes = 1024\n");
    let api = server.api();
    let big = json!({"command": format!("echo {}", "x".repeat(2000))});
    let r = api.start_req(&big).await;
    r.error(413);
    let huge = json!({"command": format!("echo {}", "y".repeat(200_000))});
    api.start_req(&huge).await.error(413);
    // The unread rest of the body makes the server drop the connection: it says so, so that
    // clients do not send their next request into a closing connection.
    let reply = reqwest::Client::new()
        .post(api.url("/api/v0/processes/start"))
        .body(huge.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 413);
    assert_eq!(reply.headers()["connection"], "close");
    assert!(api.list().await.is_empty());

    // Under the limit still works.
    let ok = json!({"command": format!("echo {}", "z".repeat(900))});
    let id = api.start_with(ok).await;
    let body = api.wait_exit(&id).await;
    assert_eq!(body.output, format!("{}\n", "z".repeat(900)));
    still_serving(&server).await;
}

async fn raw(port: u16, bytes: &[u8], read: bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let _ = s.write_all(bytes).await;
    if read {
        let mut buf = vec![0u8; 4096];
        // The server may answer 400 and close, or just close: either way it must not hang us.
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    }
    drop(s);
}

#[tokio::test]
async fn malformed_http_does_not_affect_the_server() {
    let server = Server::start();
    let port = server.port();
    let cases: Vec<(Vec<u8>, bool)> = vec![
        (b"\x00\x01\x02garbage\xff\xfe\r\n\r\n".to_vec(), true),
        ((0..4096).map(|i| (i * 37 % 251) as u8).collect(), true),
        (b"GET / HTTP/1.1\r\n".to_vec(), false),
        (
            b"POST /api/v0/processes/start HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"comm".to_vec(),
            false,
        ),
        (
            b"POST /api/v0/processes/start HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n".to_vec(),
            true,
        ),
        (
            b"POST /api/v0/processes/start HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            true,
        ),
        (
            format!("GET /api/v0/processes/list HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(200_000)).into_bytes(),
            true,
        ),
        (b"BREW /coffee HTCPCP/1.0\r\n\r\n".to_vec(), true),
        (b"GET /api/v0/processes/list HTTP/9.9\r\n\r\n".to_vec(), true),
    ];
    for (bytes, read) in &cases {
        raw(port, bytes, *read).await;
        server.assert_alive();
        server.api().list().await;
    }
    still_serving(&server).await;
}

#[tokio::test]
async fn stalled_connection_does_not_block_others() {
    let server = Server::start();
    let mut stalled = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(("127.0.0.1", server.port()))
            .await
            .unwrap();
        s.write_all(b"POST /api/v0/processes/start HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"comm")
            .await
            .unwrap();
        stalled.push(s);
    }
    // Half-open requests are pending; everything else is served.
    let r = server
        .api()
        .try_send(
            "GET",
            "/api/v0/processes/list",
            None,
            Duration::from_secs(5),
        )
        .await
        .expect("server blocked by stalled connections");
    r.expect_status(200);
    still_serving(&server).await;
    drop(stalled);
    still_serving(&server).await;
}

#[tokio::test]
async fn unknown_route_is_404_json() {
    let server = Server::start();
    let api = server.api();
    let id = uuid::Uuid::new_v4();
    for path in [
        "/".to_string(),
        "/api/v0/nope".to_string(),
        "/api/v1/processes/list".to_string(),
        format!("/api/v0/processes/{id}/nope"),
        "/api/v0/processes/a/b/c".to_string(),
    ] {
        api.get(&path).await.error(404);
    }
    still_serving(&server).await;
}

#[tokio::test]
async fn wrong_method_is_405_json() {
    let server = Server::start();
    let api = server.api();
    let id = api.start("echo x").await;
    api.wait_exit(&id).await;
    for (method, path) in [
        ("GET", "/api/v0/processes/start".to_string()),
        ("DELETE", "/api/v0/processes/list".to_string()),
        ("POST", "/api/v0/processes/list".to_string()),
        ("PUT", format!("/api/v0/processes/{id}/output")),
        ("GET", format!("/api/v0/processes/{id}/signal")),
        ("POST", "/api/v0/health".to_string()),
    ] {
        let body = (method != "GET").then(|| b"{}".to_vec());
        api.send(method, &path, body).await.error(405);
    }
    still_serving(&server).await;
}

#[tokio::test]
async fn an_fd_the_agent_inherited_does_not_reach_its_commands() {
    let server = Server::builder().inherit_fd(9).spawn();
    let fd_of_agent = format!("/proc/{}/fd/9", server.pid());
    assert!(
        std::path::Path::new(&fd_of_agent).exists(),
        "the agent itself has fd 9"
    );
    let api = server.api();
    let id = api
        .start("[ -e /proc/$$/fd/9 ] && echo leaked || echo closed")
        .await;
    assert_eq!(api.wait_exit(&id).await.output, "closed\n");
}

#[tokio::test]
async fn a_command_longer_than_the_kernel_passes_is_413_naming_the_limit() {
    let server = Server::start();
    let api = server.api();
    // MAX_ARG_STRLEN with 4 KiB pages: 131,072 bytes with the NUL.
    let command = format!("echo {}", "x".repeat(131_072));
    let r = api.start_req(&json!({ "command": command })).await;
    let message = r.error(413);
    assert!(message.contains("MAX_ARG_STRLEN"), "{message}");
    assert!(message.contains("131071"), "{message}");

    // Checked before the policy chain: a command the `deny` built-in would refuse is still a
    // 413, and no plugin was asked (its decision counts do not move).
    let calls_before = deny_calls(&api).await;
    let denied_anyway = format!("rm -rf / {}", "x".repeat(131_072));
    let r = api.start_req(&json!({ "command": denied_anyway })).await;
    assert!(r.error(413).contains("MAX_ARG_STRLEN"));
    // An env value too.
    let r = api
        .start_req(&json!({ "command": "true", "env": {"BIG": "y".repeat(131_072)} }))
        .await;
    assert!(r.error(413).contains("MAX_ARG_STRLEN"));
    assert_eq!(deny_calls(&api).await, calls_before, "a plugin was asked");
    // (The count does move for a start that reaches the chain.)
    api.start("true").await;
    assert_eq!(deny_calls(&api).await, calls_before + 1);
    still_serving(&server).await;
}

/// How many requests the built-in `deny` plugin has decided, from health.
async fn deny_calls(api: &Api) -> u64 {
    let health: serde_json::Value = api.get("/api/v0/health").await.json();
    health["plugins"]
        .as_array()
        .and_then(|plugins| plugins.iter().find(|p| p["name"] == "deny"))
        .and_then(|deny| deny["calls"].as_u64())
        .unwrap_or_else(|| panic!("no deny plugin with calls in health: {health}"))
}
