//! Lifecycle: blocking waits (`?wait=true`, server cap, write deadline, disconnects, concurrent
//! waiters), list order and cap, reaping on the timer, `timeout_seconds`, idempotency keys.
//! Reference acceptance items 15-17, 22-25 and the gaps (reaping, cap) it never tested.

use std::time::{Duration, Instant};

use procwarden_tests::*;

const GONE: Duration = Duration::from_secs(5);

// ------------------------------------------------------------------------------------------
// ?wait=true
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn wait_blocks_until_exit_and_returns_final_output() {
    let server = Server::start();
    let api = server.api();
    let t0 = Instant::now();
    let id = api.start("sleep 0.3; echo done").await;
    let body = api.output_ok(&id, true).await; // a single call
    let took = secs(t0);
    assert!(!body.running, "one wait call must see the exit: {body}");
    assert_eq!(body.exit_code, Some(0), "{body}");
    assert_eq!(
        body.output, "done\n",
        "running:false comes with the final output"
    );
    assert!(
        took >= 0.28,
        "returned before the process could exit: {took:.3}s"
    );
    assert!(
        took < 1.3,
        "wait returned too late after the exit: {took:.3}s"
    );
}

#[tokio::test]
async fn blocked_waiter_is_answered_within_100_ms_of_the_exit() {
    let server = Server::start();
    let api = server.api();
    // The shell prints the wall-clock time as its very last act; the reply's arrival is
    // compared with it, so the figure is exit -> reply, whatever the start cost.
    let id = api.start("sleep 0.2; date +%s.%N").await;
    let body = api.output_ok(&id, true).await;
    let replied = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(!body.running, "{body}");
    let exited: f64 = body.output.trim().parse().expect("a timestamp");
    let latency = replied - exited;
    assert!(
        (0.0..0.1).contains(&latency),
        "exit -> reply took {:.1} ms",
        latency * 1e3
    );
}

#[tokio::test]
async fn wait_is_woken_by_exit_not_by_output() {
    let server = Server::start();
    let api = server.api();
    let t0 = Instant::now();
    let id = api.start("echo first; sleep 0.4; echo second").await;
    let body = api.output_ok(&id, true).await;
    assert!(!body.running, "{body}");
    assert_eq!(body.output, "first\nsecond\n");
    assert!(secs(t0) >= 0.35);
}

#[tokio::test]
async fn wait_on_exited_process_returns_immediately() {
    let server = Server::start();
    let api = server.api();
    let id = api.start("echo hello-wait").await;
    api.wait_exit(&id).await;
    let t0 = Instant::now();
    let body = api.output_ok(&id, true).await;
    assert!(secs(t0) < 1.0, "took {:.3}s", secs(t0));
    assert!(!body.running);
    assert_eq!(body.output, "hello-wait\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_false_always_comes_with_the_final_output() {
    // Snapshots taken while processes finish: whenever one says running:false, the output must
    // already be complete (status is read before the buffer).
    let server = Server::start();
    let api = server.api();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let api = api.fresh();
        set.spawn(async move {
            let id = api.start("seq 1 3000 | tail -n 200; echo END").await;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let body = api.output_ok(&id, false).await;
                if !body.running {
                    assert!(
                        body.output.ends_with("2999\n3000\nEND\n"),
                        "running:false with incomplete output: {}",
                        short(&body)
                    );
                    assert_eq!(body.exit_code, Some(0));
                    break;
                }
                assert!(Instant::now() < deadline, "never exited");
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

#[tokio::test]
async fn snapshot_without_wait_is_immediate() {
    let server = Server::start();
    let m = Marker::new();
    let api = server.api();
    let id = api.start(&format!("echo partial; {}", m.sleep())).await;
    let t0 = Instant::now();
    let body = api.output_ok(&id, false).await;
    assert!(secs(t0) < 1.0, "took {:.3}s", secs(t0));
    assert!(body.running, "{body}");
    api.signal(&id, "kill").await.expect_status(200);
    api.wait_exit(&id).await;
}

#[tokio::test]
async fn wait_is_capped_by_wait_cap_seconds() {
    let server = Server::with_config("wait_cap_seconds = 1\n");
    let m = Marker::new();
    let api = server.api();
    let id = api.start(&format!("echo partial; {}", m.sleep())).await;
    let t0 = Instant::now();
    let r = api.output(&id, true).await;
    let took = secs(t0);
    r.expect_status(200);
    let body: OutputSnapshot = r.json();
    assert!(body.running, "{body}");
    assert!(body.exit_code.is_none(), "{body}");
    assert!(body.output.contains("partial"));
    assert!((0.9..4.0).contains(&took), "cap of 1 s, took {took:.3}s");
    api.signal(&id, "kill").await.expect_status(200);
}

#[tokio::test]
async fn wait_outlives_the_request_timeout() {
    let server = Server::with_config("request_timeout_seconds = 1\nwait_cap_seconds = 3\n");
    let api = server.api();
    let t0 = Instant::now();
    let id = api.start("sleep 2; echo slept").await;
    let r = api.output(&id, true).await;
    let took = secs(t0);
    r.expect_status(200);
    let body: OutputSnapshot = r.json();
    assert!(
        !body.running,
        "the wait must not be cut at request_timeout: {body} after {took:.2}s"
    );
    assert_eq!(body.output, "slept\n");
    assert!(took >= 1.9, "{took:.3}s");
}

// ------------------------------------------------------------------------------------------
// POST start?wait=true: start and wait in one request
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn start_with_wait_returns_the_finished_process_in_one_request() {
    let server = Server::start();
    let api = server.api();
    let r = api
        .start_wait_req(&json!({"command": "sleep 0.3; echo done; exit 3"}))
        .await;
    r.expect_status(200);
    let body: StartWaitReply = r.json();
    assert!(body.start.started, "{body}");
    assert!(!body.start.background, "{body}");
    assert!(!body.output.running, "{body}");
    assert_eq!(body.output.exit_code, Some(3), "{body}");
    assert_eq!(body.output.output, "done\n", "{body}");
    // The id is that of a tracked process, which reports the same.
    let snap = api.output_ok(&body.start.id, false).await;
    assert_eq!(snap.exit_code, Some(3), "{snap}");
}

#[tokio::test]
async fn start_without_wait_returns_no_output_fields() {
    let server = Server::start();
    let api = server.api();
    let r = api.start_req(&json!({"command": "echo hi"})).await;
    r.expect_status(200);
    // The raw shape on purpose: the output fields are absent, not null.
    for field in ["output", "running", "exit_code"] {
        assert!(r.body.get(field).is_none(), "{field} in {}", r.text);
    }
    api.wait_exit(&r.json::<StartReply>().id).await;
}

#[tokio::test]
async fn start_with_wait_does_not_wait_for_a_background_process() {
    let server = Server::start();
    let m = Marker::new();
    let api = server.api();
    api.start_wait_expecting_background(
        json!({"command": format!("echo early; {}", m.sleep()), "background": true}),
    )
    .await;
}

#[tokio::test]
async fn start_with_wait_is_capped_and_outlives_the_request_timeout() {
    let server = Server::with_config("request_timeout_seconds = 1\nwait_cap_seconds = 2\n");
    let m = Marker::new();
    let api = server.api();
    let t0 = Instant::now();
    let r = api
        .start_wait_req(&json!({"command": format!("echo partial; {}", m.sleep())}))
        .await;
    let took = secs(t0);
    r.expect_status(200);
    let reply: StartWaitReply = r.json();
    assert!(reply.output.running, "{reply}");
    assert!(reply.output.output.contains("partial"), "{reply}");
    assert!(
        (1.9..5.0).contains(&took),
        "the wait must run to the 2 s cap, past the 1 s request timeout: {took:.3}s"
    );
    let id = reply.start.id;
    api.signal(&id, "kill").await.expect_status(200);
    api.wait_exit(&id).await;
}

#[tokio::test]
async fn client_disconnect_frees_the_waiter() {
    let server = Server::start();
    let m = Marker::new();
    let api = server.api();
    let id = api.start(&m.sleep()).await;
    assert_eq!(api.waiters().await, 0);

    let waiter_api = api.fresh();
    let wid = id.clone();
    let waiter = tokio::spawn(async move { waiter_api.output(&wid, true).await });
    let registered = eventually(GONE, || {
        let api = api.clone();
        async move { api.waiters().await == 1 }
    })
    .await;
    assert!(
        registered,
        "health.waiters never showed the blocked request"
    );

    waiter.abort();
    let _ = waiter.await;
    let freed = eventually(GONE, || {
        let api = api.clone();
        async move { api.waiters().await == 0 }
    })
    .await;
    assert!(
        freed,
        "waiter not released after the client disconnected: {}",
        api.health().await
    );
    // The process itself is untouched.
    assert!(api.output_ok(&id, false).await.running);
    api.signal(&id, "kill").await.expect_status(200);
}

#[tokio::test]
async fn two_concurrent_waiters_are_both_woken_by_kill() {
    let server = Server::start();
    let m = Marker::new();
    let api = server.api();
    let id = api.start(&m.sleep()).await;
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let a = api.fresh();
        let id = id.clone();
        tasks.push(tokio::spawn(async move { a.output(&id, true).await }));
    }
    let both = eventually(GONE, || {
        let api = api.clone();
        async move { api.waiters().await == 2 }
    })
    .await;
    assert!(both, "two waiters expected: {}", api.health().await);

    api.signal(&id, "kill").await.expect_status(200);
    for t in tasks {
        let r = tokio::time::timeout(GONE, t)
            .await
            .expect("waiter not woken by the exit")
            .unwrap();
        r.expect_status(200);
        let body: OutputSnapshot = r.json();
        assert!(!body.running, "{body}");
        assert_eq!(body.exit_code, Some(137), "{body}");
    }
    assert_eq!(api.waiters().await, 0);
}

// ------------------------------------------------------------------------------------------
// list
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn list_puts_running_first_then_newest_first() {
    let server = Server::start();
    let m = Marker::new();
    let api = server.api();
    let a = api.start("echo a").await;
    api.wait_exit(&a).await;
    let r1 = api.start(&m.sleep()).await;
    let c = api.start("echo c").await;
    api.wait_exit(&c).await;
    let r2 = api.start(&m.sleep()).await;
    let d = api.start("echo d").await;
    api.wait_exit(&d).await;

    assert_eq!(
        api.list_ids().await,
        vec![r2.clone(), r1.clone(), d, c, a],
        "running (newest first), then exited (newest first)"
    );
    let list = api.list().await;
    assert!(list[0].running);
    assert!(!list[2].running);
    assert!(list[2].exit_code.is_some());

    api.signal(&r1, "kill").await.expect_status(200);
    api.signal(&r2, "kill").await.expect_status(200);
}

#[tokio::test]
async fn list_is_capped_at_ten_newest() {
    let server = Server::start();
    let api = server.api();
    let mut ids = Vec::new();
    for i in 0..12 {
        let id = api.start(&format!("echo {i}")).await;
        api.wait_exit(&id).await;
        ids.push(id);
    }
    let list = api.list().await;
    assert_eq!(list.len(), 10, "list_cap defaults to 10");
    let got: Vec<&str> = list.iter().map(|p| p.id.as_str()).collect();
    let want: Vec<&str> = ids.iter().rev().take(10).map(String::as_str).collect();
    assert_eq!(got, want, "the ten newest, newest first");
    let starts: Vec<i64> = list.iter().map(|p| p.started_at_unix).collect();
    assert!(
        starts.windows(2).all(|w| w[0] >= w[1]),
        "started_at_unix non-increasing: {starts:?}"
    );
    // Capped entries are still tracked and addressable.
    api.output_ok(&ids[0], false).await;
}

#[tokio::test]
async fn list_cap_is_configurable() {
    let server = Server::with_config("list_cap = 3\n");
    let api = server.api();
    let mut last = String::new();
    for i in 0..5 {
        last = api.start(&format!("echo {i}")).await;
        api.wait_exit(&last).await;
    }
    let ids = api.list_ids().await;
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], last);
}

#[tokio::test]
async fn exited_processes_are_reaped_on_the_timer() {
    let server = Server::with_config("reap_age_seconds = 1\nreap_interval_seconds = 0.2\n");
    let m = Marker::new();
    let api = server.api();
    let running = api.start(&m.sleep()).await;
    let done = api.start("echo reap-me").await;
    let body = api.wait_exit(&done).await;
    assert_eq!(body.output, "reap-me\n");

    // Nobody calls /list: only the timer can reap.
    let t0 = Instant::now();
    let reaped = eventually(Duration::from_secs(6), || {
        let api = api.clone();
        let done = done.clone();
        async move { api.output(&done, false).await.status == 404 }
    })
    .await;
    assert!(
        reaped,
        "exited process was never reaped without a list call"
    );
    assert!(secs(t0) > 0.5, "reaped before reap_age");
    api.output(&done, false).await.error(404);

    // Running processes are never reaped.
    let snap = api.output_ok(&running, false).await;
    assert!(snap.running);
    assert_eq!(api.health().await.processes, 1);
    assert_eq!(api.list_ids().await, vec![running.clone()]);
    api.signal(&running, "kill").await.expect_status(200);
}

// ------------------------------------------------------------------------------------------
// timeout_seconds
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn timeout_seconds_terminates_the_group() {
    let server = Server::start();
    let m = Marker::new();
    let api = server.api();
    let t0 = Instant::now();
    let id = api
        .start_with(json!({
            "command": format!("{} & {}", m.sleep(), m.sleep()),
            "timeout_seconds": 1,
        }))
        .await;
    let body = api.wait_exit(&id).await;
    let took = secs(t0);
    assert!(!body.running);
    assert!(body.timed_out, "{body}");
    assert!(body.exit_code.is_some(), "{body}");
    assert!(
        (0.9..4.0).contains(&took),
        "timeout of 1 s, took {took:.2}s"
    );
    m.assert_gone(GONE, "after timeout").await;
    let list = api.list().await;
    assert!(list[0].timed_out, "{}", list[0]);
}

#[tokio::test]
async fn timeout_seconds_kills_a_group_that_ignores_sigterm() {
    let server = Server::with_config("shutdown_grace_seconds = 1\n");
    let m = Marker::new();
    let api = server.api();
    let id = api
        .start_with(json!({
            "command": format!("trap '' TERM; {}", m.sleep()),
            "timeout_seconds": 1,
        }))
        .await;
    let body = api.wait_exit(&id).await;
    assert!(body.timed_out, "{body}");
    assert_eq!(body.exit_code, Some(137), "needed SIGKILL: {body}");
    m.assert_gone(GONE, "after timeout").await;
}

#[tokio::test]
async fn timeout_seconds_accepts_fractions() {
    let server = Server::start();
    let m = Marker::new();
    let api = server.api();
    let t0 = Instant::now();
    let r = api
        .start_req(&json!({"command": m.sleep(), "timeout_seconds": 0.3}))
        .await;
    r.expect_status(200);
    let id = r.json::<StartReply>().id;
    let body = api.wait_exit(&id).await;
    assert!(body.timed_out, "{body}");
    assert!(secs(t0) < 2.5, "timeout of 0.3 s took {:.2}s", secs(t0));
    m.assert_gone(GONE, "after timeout").await;
}

#[tokio::test]
async fn timeout_not_reached_is_not_timed_out() {
    let server = Server::start();
    let api = server.api();
    let id = api
        .start_with(json!({"command": "echo quick", "timeout_seconds": 30}))
        .await;
    let body = api.wait_exit(&id).await;
    assert!(!body.timed_out, "{body}");
    assert_eq!(body.exit_code, Some(0));
}

// ------------------------------------------------------------------------------------------
// idempotency
// ------------------------------------------------------------------------------------------

async fn idempotency_case(by_header: bool) {
    let server = Server::start();
    let m = Marker::new();
    let dir = tempfile::tempdir().unwrap();
    let api = server.api().chat("idem-chat");
    let key = format!("key-{}", uuid::Uuid::new_v4());
    let cmd = format!("echo run >> count.txt; {}", m.sleep());
    let body = json!({"command": cmd, "workdir": dir.path()});
    let (body_k, api_k) = if by_header {
        (body.clone(), api.with_header("Idempotency-Key", &key))
    } else {
        let mut b = body.clone();
        b["idempotency_key"] = json!(key);
        (b, api.clone())
    };

    let r1 = api_k.start_req(&body_k).await;
    r1.expect_status(200);
    let first: StartReply = r1.json();
    let id = first.id.clone();
    assert_ne!(first.reused, Some(true), "{first}");
    let r2 = api_k.start_req(&body_k).await;
    r2.expect_status(200);
    let replay: StartReply = r2.json();
    assert_eq!(replay.id, id, "replay gives the same id");
    assert_eq!(replay.reused, Some(true), "{replay}");
    assert!(replay.started, "{replay}");
    assert_eq!(server.api().list().await.len(), 1, "only one process");
    assert_eq!(server.api().health().await.processes, 1);

    // Same key, different request: conflict.
    let mut other = body_k.clone();
    other["command"] = json!("echo different");
    api_k.start_req(&other).await.error(409);

    // Same key in another chat: independent.
    let other_chat = if by_header {
        server
            .api()
            .chat("idem-other")
            .with_header("Idempotency-Key", &key)
    } else {
        server.api().chat("idem-other")
    };
    let r3 = other_chat
        .start_req(&json!({"command": "echo other-chat", "idempotency_key": key}))
        .await;
    r3.expect_status(200);
    assert_ne!(
        r3.json::<StartReply>().id,
        id,
        "other chat gets its own process"
    );

    api.signal(&id, "kill").await.expect_status(200);
    api.wait_exit(&id).await;
    let runs = std::fs::read_to_string(dir.path().join("count.txt")).unwrap();
    assert_eq!(runs, "run\n", "the command ran exactly once");
}

#[tokio::test]
async fn idempotency_key_in_body() {
    idempotency_case(false).await;
}

#[tokio::test]
async fn idempotency_key_in_header() {
    idempotency_case(true).await;
}
