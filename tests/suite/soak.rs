//! Soak: rounds of stalled connections, MCP session churn and start bursts against one real
//! agent. Its open fds and RSS must stay bounded across rounds, and `/health` must keep
//! answering promptly throughout. Sized to finish well under two minutes.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use procwarden_tests::{Server, rss_kib};

const ROUNDS: usize = 15;
const CONNECTION_CAP: usize = 64;
const STALLED_PER_ROUND: usize = 120;
const SESSIONS_PER_ROUND: usize = 40;
const STARTS_PER_ROUND: usize = 60;
/// Clients sending the churn and the starts at once.
const WORKERS: usize = 4;
/// Exited processes the agent keeps.
const MAX_EXITED: usize = 100;
/// The longest `/health` may take while the agent is under load.
const HEALTH_LIMIT: Duration = Duration::from_secs(2);
/// RSS the agent may grow between the end of the first round and the end of the last.
const RSS_GROWTH_LIMIT_KIB: u64 = 24 * 1024;

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"soak","version":"0"}}}"#;

/// One MCP session opened and, every other time, closed again; the rest are left to idle out.
/// Whether the agent gave it a session.
async fn churn_session(client: &reqwest::Client, url: &str, close: bool) -> bool {
    let Ok(reply) = client
        .post(format!("{url}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .timeout(Duration::from_secs(10))
        .body(INITIALIZE)
        .send()
        .await
    else {
        return false;
    };
    let session = reply
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let _ = reply.text().await;
    let opened = session.is_some();
    if let (true, Some(id)) = (close, session) {
        let _ = client
            .delete(format!("{url}/mcp"))
            .header("mcp-session-id", id)
            .send()
            .await;
    }
    opened
}

#[tokio::test(flavor = "multi_thread")]
async fn fds_rss_and_health_stay_bounded_under_hostile_load() {
    let server = Server::with_config(&format!(
        "max_connections = {CONNECTION_CAP}\nheader_read_timeout_seconds = 2\n\
         mcp_max_sessions = 32\nmcp_session_idle_seconds = 1\nmax_exited_processes = {MAX_EXITED}\n\
         reap_interval_seconds = 1\n"
    ));
    let api = server.api();
    api.health().await;
    let pid = server.pid();
    let fds_at_start = open_fds(pid);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut rss_after_first = 0;
    let mut worst_health = Duration::ZERO;
    let mut worst_fds = 0;
    // What the load achieved: a soak whose requests were all refused would prove nothing.
    let sessions_opened = std::sync::Arc::new(AtomicUsize::new(0));
    let starts_ok = std::sync::Arc::new(AtomicUsize::new(0));

    for round in 0..ROUNDS {
        // Stalled connections first (half send nothing, half stop in the middle of a header):
        // at the cap they are closed to make room for the requests that follow.
        let port = server.port();
        let stalled = tokio::task::spawn_blocking(move || {
            (0..STALLED_PER_ROUND)
                .filter_map(|i| {
                    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
                    if i % 2 == 1 {
                        let _ = stream.write_all(b"GET /api/v0/health HTTP/1.1\r\nX-Slow: ");
                    }
                    Some(stream)
                })
                .collect::<Vec<_>>()
        })
        .await
        .expect("stalled connections");
        // MCP session churn and start bursts at the same time, from a few workers (more
        // requests at once than the connection cap would be a flood that must be shed).
        let mut load = tokio::task::JoinSet::new();
        for worker in 0..WORKERS {
            let client = client.clone();
            let url = server.url().to_owned();
            let api = api.fresh();
            let (sessions_opened, starts_ok) = (sessions_opened.clone(), starts_ok.clone());
            load.spawn(async move {
                for i in (worker..SESSIONS_PER_ROUND).step_by(WORKERS) {
                    if churn_session(&client, &url, i % 2 == 0).await {
                        sessions_opened.fetch_add(1, Ordering::Relaxed);
                    }
                }
                for i in (worker..STARTS_PER_ROUND).step_by(WORKERS) {
                    let reply = api
                        .try_send(
                            "POST",
                            "/api/v0/processes/start",
                            Some(format!(r#"{{"command": "echo soak {i}"}}"#).into_bytes()),
                            Duration::from_secs(10),
                        )
                        .await;
                    if reply.is_ok_and(|r| r.status == 200) {
                        starts_ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        let load = async { while load.join_next().await.is_some() {} };
        let health = async {
            for _ in 0..10 {
                let asked = Instant::now();
                let reply = api
                    .fresh()
                    .try_send("GET", "/api/v0/health", None, HEALTH_LIMIT * 2)
                    .await
                    .expect("/health must answer under load");
                reply.expect_status(200);
                worst_health = worst_health.max(asked.elapsed());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::join!(load, health);
        worst_fds = worst_fds.max(open_fds(pid));
        drop(stalled);
        if round == 0 {
            rss_after_first = rss_kib(pid);
        }
        server.assert_alive();
    }
    let rss_at_end = rss_kib(pid);
    let (sessions_opened, starts_ok) = (
        sessions_opened.load(Ordering::Relaxed),
        starts_ok.load(Ordering::Relaxed),
    );
    eprintln!(
        "SOAK {ROUNDS} rounds in {:.1} s: fds {fds_at_start} at start, at most {worst_fds}; \
         RSS {rss_after_first} KiB after round 1, {rss_at_end} KiB at the end; slowest \
         /health {:?}; {starts_ok} of {} starts and {sessions_opened} of {} MCP sessions \
         granted",
        started.elapsed().as_secs_f64(),
        worst_health,
        ROUNDS * STARTS_PER_ROUND,
        ROUNDS * SESSIONS_PER_ROUND,
    );
    // Stalled connections are closed to make room, so the real clients' requests go through:
    // every start (there is no limit to meet), and sessions up to the session cap.
    assert_eq!(
        starts_ok,
        ROUNDS * STARTS_PER_ROUND,
        "starts refused under the soak"
    );
    assert!(
        sessions_opened >= ROUNDS * 32.min(SESSIONS_PER_ROUND) / 2,
        "only {sessions_opened} MCP sessions granted"
    );
    assert!(
        worst_health < HEALTH_LIMIT,
        "/health took {worst_health:?} under load"
    );
    // The connection cap bounds sockets; a running process holds its pidfd (its shell
    // pinned), its output pipe and perhaps its spool file; an exited one whose group is gone
    // holds none (see `finished_commands_hold_no_fd`), and retained exited ones are capped.
    let bound = fds_at_start + CONNECTION_CAP + MAX_EXITED + STARTS_PER_ROUND + 32;
    assert!(
        worst_fds <= bound,
        "{worst_fds} fds open (at start {fds_at_start}, bound {bound})"
    );
    assert!(
        rss_at_end <= rss_after_first + RSS_GROWTH_LIMIT_KIB,
        "RSS grew from {rss_after_first} KiB to {rss_at_end} KiB"
    );
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "the soak must stay under two minutes"
    );
}

/// A command that has exited, with nothing of it left running, keeps no fd in the agent: its
/// shell is reaped and the pidfd closed, and it never needed a spool file. Otherwise every
/// retained record would cost an fd, and every later start's child would inherit and close
/// them all.
#[tokio::test]
async fn finished_commands_hold_no_fd() {
    let server = Server::start();
    let api = server.api();
    api.health().await;
    let pid = server.pid();
    let before = open_fds(pid);
    for i in 0..40 {
        let done = api.wait_exit(&api.start(&format!("echo {i}")).await).await;
        assert_eq!(done.exit_code, Some(0));
    }
    // Reaping a finished group happens just after its exit is reported.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = open_fds(pid);
    while now > before + 8 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = open_fds(pid);
    }
    assert!(
        now <= before + 8,
        "{now} fds open after 40 finished commands (before: {before})"
    );
}
