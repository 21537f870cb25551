//! Signals: kill/terminate reach the whole process group (pipelines, `&` jobs, children left behind
//! by an exited shell), exit codes 137/143, validation (400), unknown id (404), gone group (409).
//! Reference acceptance items 26-30, 34 plus the group-kill gaps the reference never tested.

use std::time::{Duration, Instant};

use procwarden_tests::*;

const GONE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn kill_reaches_every_member_of_a_pipeline() {
    let server = Server::start();
    let m = Marker::new();
    let api = server.api();
    let id = api.start(&format!("{} | {}", m.sleep(), m.sleep())).await;
    assert!(m.wait_sleeps(2, GONE).await, "pipeline did not start");

    let r = api.signal(&id, "kill").await;
    r.expect_status(200);
    r.message();
    let body = api.wait_exit(&id).await;
    assert!(!body.running);
    assert_eq!(body.exit_code, Some(137), "{body}");
    m.assert_gone(GONE, "pipeline after kill").await;
}

#[tokio::test]
async fn terminate_reaches_background_jobs_of_the_shell() {
    let server = Server::start();
    let m = Marker::new();
    let api = server.api();
    let id = api
        .start(&format!("{} & {} & wait", m.sleep(), m.sleep()))
        .await;
    assert!(m.wait_sleeps(2, GONE).await, "jobs did not start");

    let sent = api.signal(&id, "terminate").await;
    sent.expect_status(200);
    let reply: MessageReply = sent.json();
    assert_eq!(
        reply.message,
        format!("Signal \"terminate\" sent to process \"{id}\".")
    );
    let body = api.wait_exit(&id).await;
    assert_eq!(body.exit_code, Some(143), "{body}");
    m.assert_gone(GONE, "background jobs after terminate").await;
}

#[tokio::test]
async fn kill_reports_137_and_terminate_143() {
    let server = Server::start();
    let (m1, m2) = (Marker::new(), Marker::new());
    let api = server.api();
    let k = api.start(&m1.sleep()).await;
    let t = api.start(&m2.sleep()).await;
    assert!(api.output_ok(&k, false).await.running);
    assert!(api.output_ok(&t, false).await.running);

    api.signal(&k, "kill").await.expect_status(200);
    api.signal(&t, "terminate").await.expect_status(200);
    let kb = api.wait_exit(&k).await;
    let tb = api.wait_exit(&t).await;
    assert_eq!(kb.exit_code, Some(137), "{kb}");
    assert_eq!(tb.exit_code, Some(143), "{tb}");
    assert!(!kb.timed_out, "{kb}");
    m1.assert_gone(GONE, "after kill").await;
    m2.assert_gone(GONE, "after terminate").await;

    let list = api.list().await;
    for p in &list {
        assert!(!p.running, "{p}");
        assert!(p.exit_code.is_some(), "{p}");
    }
}

#[tokio::test]
async fn terminate_sends_sigterm_not_sigkill() {
    let server = Server::with_config("wait_cap_seconds = 1\n");
    let m = Marker::new();
    let api = server.api();
    let id = api.start(&format!("trap '' TERM; {}", m.sleep())).await;
    assert!(m.wait_sleeps(1, GONE).await);
    api.signal(&id, "terminate").await.expect_status(200);
    // The group ignores SIGTERM: a capped wait comes back still running.
    let body = api.output_ok(&id, true).await;
    assert!(body.running, "SIGTERM is ignored here: {body}");
    assert_eq!(m.live_sleeps().len(), 1);

    api.signal(&id, "kill").await.expect_status(200);
    let body = api.wait_exit(&id).await;
    assert_eq!(body.exit_code, Some(137), "{body}");
    m.assert_gone(GONE, "after kill").await;
}

#[tokio::test]
async fn signal_validation_is_400_and_does_not_signal() {
    let server = Server::start();
    let m = Marker::new();
    let api = server.api();
    let id = api.start(&m.sleep()).await;
    assert!(m.wait_sleeps(1, GONE).await);
    let path = format!("/api/v0/processes/{id}/signal");

    let msg = api.signal(&id, "").await.error(400);
    assert!(msg.contains("Signal is required"), "{msg}");
    let msg = api.post(&path, &json!({})).await.error(400);
    assert!(msg.contains("Signal is required"), "{msg}");

    let msg = api.signal(&id, "SIGFOO").await.error(400);
    assert!(
        msg.starts_with(
            r#"Unsupported signal "SIGFOO". Use "terminate" (TERM), "kill" (KILL), "INT""#
        ),
        "{msg}"
    );
    for other in ["interrupt", "9", "stop", "WINCH"] {
        let msg = api.signal(&id, other).await.error(400);
        assert!(msg.contains("Unsupported signal"), "{other}: {msg}");
    }

    let r = api.post_raw(&path, "{not json").await;
    let msg = r.error(400);
    assert!(msg.contains("valid JSON"), "{msg}");
    api.post(&path, &json!({"signal": 9})).await.error(400);

    let snap = api.output_ok(&id, false).await;
    assert!(snap.running, "rejected signals must not land: {snap}");
    assert_eq!(m.live_sleeps().len(), 1);

    api.signal(&id, "kill").await.expect_status(200);
    api.wait_exit(&id).await;
}

#[tokio::test]
async fn signal_to_unknown_id_is_404() {
    let server = Server::start();
    let api = server.api();
    let id = uuid::Uuid::new_v4().to_string();
    for sig in ["kill", "terminate"] {
        let msg = api.signal(&id, sig).await.error(404);
        assert_eq!(msg, format!("Process \"{id}\" not found."));
    }
}

#[tokio::test]
async fn signal_to_exited_process_is_409() {
    let server = Server::start();
    let api = server.api();
    let id = api.start("echo bye").await;
    api.wait_exit(&id).await;
    for sig in ["kill", "terminate"] {
        let msg = api.signal(&id, sig).await.error(409);
        assert_eq!(msg, format!("Process \"{id}\" is not running."));
    }
}

#[tokio::test]
async fn signal_after_kill_is_409() {
    let server = Server::start();
    let m = Marker::new();
    let api = server.api();
    let id = api.start(&m.sleep()).await;
    api.signal(&id, "kill").await.expect_status(200);
    api.wait_exit(&id).await;
    m.assert_gone(GONE, "after kill").await;
    api.signal(&id, "kill").await.error(409);
}

#[tokio::test]
async fn shell_exit_with_lingering_child_reports_exit_and_can_still_be_signalled() {
    let server = Server::start();
    let m = Marker::new();
    let api = server.api();
    let t0 = Instant::now();
    let id = api.start(&format!("{} & echo hi", m.sleep())).await;
    let body = api.wait_exit(&id).await;
    let took = secs(t0);
    assert!(!body.running, "{body}");
    assert_eq!(
        body.exit_code,
        Some(0),
        "the shell's real code, not -1: {body}"
    );
    assert!(body.group_alive, "{body}");
    assert_eq!(body.output, "hi\n");
    assert!(
        took < 2.0,
        "exit must be reported promptly, took {took:.2}s"
    );
    assert!(m.wait_sleeps(1, GONE).await, "the `&` child lives on");

    let list = api.list().await;
    let info = list.iter().find(|p| p.id == id).unwrap();
    assert!(!info.running, "{info}");
    assert!(info.group_alive, "{info}");
    assert_eq!(info.exit_code, Some(0), "{info}");

    let r = api.signal(&id, "kill").await;
    r.expect_status(200);
    m.assert_gone(GONE, "lingering child after kill").await;

    let ok = eventually(GONE, || {
        let api = api.clone();
        let id = id.clone();
        async move { !api.output_ok(&id, false).await.group_alive }
    })
    .await;
    assert!(ok, "group_alive stays true after the group died");
    let body = api.output_ok(&id, false).await;
    assert_eq!(body.exit_code, Some(0), "the shell's code is kept: {body}");
    api.signal(&id, "kill").await.error(409);
}

#[tokio::test]
async fn shell_exit_code_is_kept_while_child_holds_the_pipe() {
    let server = Server::start();
    let m = Marker::new();
    let api = server.api();
    let id = api.start(&format!("{} & exit 5", m.sleep())).await;
    let body = api.wait_exit(&id).await;
    assert_eq!(body.exit_code, Some(5), "{body}");
    assert!(body.group_alive, "{body}");
    assert!(m.wait_sleeps(1, GONE).await);
    api.signal(&id, "terminate").await.expect_status(200);
    m.assert_gone(GONE, "after terminate").await;
}
