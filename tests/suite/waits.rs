//! Waits that end on more than exit: `until=regex:`, `port:`, `quiet:`, a cursor's new
//! output, on `GET /output?wait=true` and on a start with `?wait=true`.

use std::time::{Duration, Instant};

use procwarden_tests::*;

async fn wait_on(api: &Api, id: &str, query: &str) -> OutputSnapshot {
    let resp = api
        .get(&format!("/api/v0/processes/{id}/output?wait=true&{query}"))
        .await;
    resp.expect_status(200);
    resp.json()
}

#[tokio::test]
async fn until_regex_returns_when_a_dev_server_says_it_is_ready() {
    let server = Server::start();
    let api = server.api();
    let id = api
        .start_with(json!({
            "command": "echo 'compiling...'; sleep 0.5; echo 'VITE ready in 512 ms'; sleep 60",
            "background": true,
        }))
        .await;
    let started = Instant::now();
    let body = wait_on(&api, &id, "until=regex:ready%20in%20%5Cd%2B%20ms").await;
    assert_eq!(body.ended_by.as_deref(), Some("regex"), "{body}");
    assert!(body.running, "{body}");
    assert!(body.output.contains("VITE ready"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Already printed: a second wait returns at once.
    let again = wait_on(&api, &id, "until=regex:ready").await;
    assert_eq!(again.ended_by.as_deref(), Some("regex"));
    // From a cursor past it, the line no longer counts; the exit of a killed process ends it.
    let cursor = again.covers.end;
    let _ = api.signal(&id, "kill").await;
    let after = wait_on(&api, &id, &format!("since={cursor}&until=regex:ready")).await;
    assert_eq!(after.ended_by.as_deref(), Some("exit"), "{after}");
}

#[tokio::test]
async fn start_with_wait_until_regex_returns_while_it_keeps_running() {
    let server = Server::start();
    let api = server.api();
    let resp = api
        .post(
            "/api/v0/processes/start?wait=true&until=regex:listening",
            &json!({"command": "sleep 0.2; echo listening on 3000; sleep 60"}),
        )
        .await;
    resp.expect_status(200);
    let reply: StartWaitReply = resp.json();
    assert_eq!(reply.output.ended_by.as_deref(), Some("regex"));
    assert!(reply.output.running);
    let _ = api.signal(&reply.start.id, "kill").await;
    // A bad condition is refused before anything starts.
    let resp = api
        .post(
            "/api/v0/processes/start?wait=true&until=regex:(",
            &json!({"command": "echo never"}),
        )
        .await;
    assert!(resp.error(400).contains("\"until\""));
    assert!(api.list().await.iter().all(|p| p.command != "echo never"));
}

#[tokio::test]
async fn until_port_returns_once_the_process_listens() {
    if std::process::Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        eprintln!("skipped: python3 is not available to listen on a port");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server::start();
    let api = server.api();
    let id = api
        .start_with(json!({
            "command": format!("sleep 0.3; exec python3 -m http.server {port} --bind 127.0.0.1"),
            "background": true,
        }))
        .await;
    let body = wait_on(&api, &id, &format!("until=port:{port}")).await;
    assert_eq!(body.ended_by.as_deref(), Some("port"), "{body}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let _ = api.signal(&id, "kill").await;
}

#[tokio::test]
async fn until_quiet_and_cursor_waits_end_on_silence_and_on_new_output() {
    let server = Server::start();
    let api = server.api();
    let id = api
        .start_with(json!({
            "command": "echo first; sleep 1; echo second; sleep 60",
            "background": true,
        }))
        .await;
    let quiet = wait_on(&api, &id, "until=quiet:0.3").await;
    assert_eq!(quiet.ended_by.as_deref(), Some("quiet"), "{quiet}");
    assert_eq!(quiet.output, "first\n");
    let next = wait_on(&api, &id, &format!("since={}", quiet.covers.end)).await;
    assert_eq!(next.ended_by.as_deref(), Some("output"), "{next}");
    assert_eq!(next.output, "second\n");
    assert_eq!(next.covers.start, quiet.covers.end);
    let _ = api.signal(&id, "kill").await;
    let gone = wait_on(&api, &id, "until=regex:never").await;
    assert_eq!(gone.ended_by.as_deref(), Some("exit"));
}
