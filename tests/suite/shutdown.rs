//! Server shutdown: SIGTERM/SIGINT terminate every process group (pipelines, `&` jobs, children of
//! already exited shells), SIGKILL after `shutdown_grace_seconds` for groups ignoring SIGTERM, and
//! the server exits 0 within the grace.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use procwarden_tests::*;

const GONE: Duration = Duration::from_secs(5);

async fn wait_server_exit(server: &Server, timeout: Duration) -> std::process::ExitStatus {
    if !eventually_sync(timeout, || server.try_wait().is_some()).await {
        panic!(
            "server did not exit within {timeout:?} after the signal; stderr:\n{}",
            server.stderr_text()
        );
    }
    server.try_wait().unwrap()
}

#[tokio::test]
async fn sigterm_terminates_all_groups_and_exits_zero() {
    let server = Server::with_config("shutdown_grace_seconds = 2\n");
    let m = Marker::new();
    let api = server.api();
    api.start(&format!("{} & {} & wait", m.sleep(), m.sleep()))
        .await;
    api.start(&format!("{} | {}", m.sleep(), m.sleep())).await;
    api.start_with(json!({"command": m.sleep(), "background": true}))
        .await;
    assert!(
        m.wait_sleeps(5, GONE).await,
        "not all started: {:?}",
        m.live()
    );

    let t0 = Instant::now();
    server.send_signal(Signal::SIGTERM);
    let status = wait_server_exit(&server, Duration::from_secs(2 + 5)).await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(secs(t0) < 2.0 + 3.0, "took {:.2}s", secs(t0));
    m.assert_gone(GONE, "after server shutdown").await;
}

#[tokio::test]
async fn sigint_also_shuts_down_cleanly() {
    let server = Server::with_config("shutdown_grace_seconds = 2\n");
    let m = Marker::new();
    let api = server.api();
    api.start(&m.sleep()).await;
    assert!(m.wait_sleeps(1, GONE).await);
    server.send_signal(Signal::SIGINT);
    let status = wait_server_exit(&server, Duration::from_secs(7)).await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    m.assert_gone(GONE, "after SIGINT shutdown").await;
}

#[tokio::test]
async fn shutdown_kills_groups_that_ignore_sigterm_after_the_grace() {
    let server = Server::with_config("shutdown_grace_seconds = 1\n");
    let m = Marker::new();
    let api = server.api();
    api.start(&format!("trap '' TERM; {}", m.sleep())).await;
    api.start(&format!("trap '' TERM; {} & wait", m.sleep()))
        .await;
    assert!(m.wait_sleeps(2, GONE).await);

    let t0 = Instant::now();
    server.send_signal(Signal::SIGTERM);
    let status = wait_server_exit(&server, Duration::from_secs(1 + 5)).await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(secs(t0) < 1.0 + 3.0, "took {:.2}s", secs(t0));
    m.assert_gone(GONE, "TERM-ignoring group after shutdown")
        .await;
}

#[tokio::test]
async fn shutdown_kills_children_left_behind_by_exited_shells() {
    let server = Server::with_config("shutdown_grace_seconds = 2\n");
    let m = Marker::new();
    let api = server.api();
    let id = api.start(&format!("{} & echo hi", m.sleep())).await;
    let body = api.wait_exit(&id).await;
    assert!(body.group_alive, "{body}");
    assert!(m.wait_sleeps(1, GONE).await);

    server.send_signal(Signal::SIGTERM);
    let status = wait_server_exit(&server, Duration::from_secs(7)).await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    m.assert_gone(GONE, "orphaned group member after shutdown")
        .await;
}

#[tokio::test]
async fn sigterm_right_after_the_listening_line_is_a_clean_shutdown() {
    // The handler must be in place before the server says it is listening: a signal in
    // between would kill it outright, leaving its process groups behind.
    for _ in 0..5 {
        let server = Server::start();
        server.send_signal(Signal::SIGTERM);
        let status = wait_server_exit(&server, Duration::from_secs(5)).await;
        assert_eq!(status.code(), Some(0), "exit status {status:?}");
    }
}

#[tokio::test]
async fn idle_server_exits_zero_on_sigterm() {
    let server = Server::start();
    server.api().health().await;
    let t0 = Instant::now();
    server.send_signal(Signal::SIGTERM);
    let status = wait_server_exit(&server, Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(secs(t0) < 2.0, "idle shutdown took {:.2}s", secs(t0));
}

#[tokio::test]
async fn no_process_starts_or_survives_during_shutdown() {
    let server = Server::with_config("shutdown_grace_seconds = 2\n");
    let holder = Marker::new();
    let late = Marker::new();
    let api = server.api();
    // A TERM-ignoring group keeps the shutdown in progress for the whole grace.
    api.start(&format!("trap '' TERM; {}", holder.sleep()))
        .await;
    assert!(holder.wait_sleeps(1, GONE).await);
    api.list().await;

    server.send_signal(Signal::SIGTERM);
    let body = serde_json::to_vec(&json!({"command": late.sleep()})).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut refused = None;
    while Instant::now() < deadline {
        match api
            .try_send(
                "POST",
                "/api/v0/processes/start",
                Some(body.clone()),
                Duration::from_secs(3),
            )
            .await
        {
            // Accepted before the signal was handled: must still be killed below.
            Ok(r) if r.status == 200 => continue,
            Ok(r) => {
                assert_eq!(r.status, 503, "start during shutdown: {}", r.text);
                refused = Some(format!("HTTP 503 {}", r.message()));
                break;
            }
            Err(e) => {
                refused = Some(format!("connection refused/closed: {e}"));
                break;
            }
        }
    }
    assert!(
        refused.is_some(),
        "starts were still accepted 2 s into the shutdown"
    );
    eprintln!("start during shutdown: {}", refused.unwrap());
    let status = wait_server_exit(&server, Duration::from_secs(2 + 5)).await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    holder.assert_gone(GONE, "TERM-ignoring group").await;
    late.assert_gone(GONE, "processes started around the shutdown")
        .await;
}
