//! Live-process limits: a start over `max_processes` or `max_processes_per_chat` gets 429
//! naming which, other chats are not held back by one chat's limit, and a process counts
//! while any member of it lives, a detached daemon whose shell exited included.

use procwarden_tests::*;

fn sleeper() -> serde_json::Value {
    json!({"command": "sleep 100", "background": true})
}

#[tokio::test]
async fn starts_over_the_agent_or_chat_limit_get_429_until_a_process_ends() {
    let server = Server::with_config("max_processes = 3\nmax_processes_per_chat = 2\n");
    let api = server.api();
    let a = api.chat("limits-a");
    let b = api.chat("limits-b");
    let first = a.start_with(sleeper()).await;
    a.start_with(sleeper()).await;

    let refused = a.start_req(&sleeper()).await;
    refused.expect_status(429);
    let message: ErrorBody = refused.json();
    assert!(message.message.contains("this chat"), "{message:?}");
    assert!(
        message.message.contains("has 2 live, and the limit is 2"),
        "{message:?}"
    );

    // Another chat is not held back by the first one's limit, only by the agent's.
    b.start_with(sleeper()).await;
    let refused = b.start_req(&sleeper()).await;
    refused.expect_status(429);
    let message: ErrorBody = refused.json();
    assert!(message.message.contains("the agent"), "{message:?}");
    assert!(
        message.message.contains("has 3 live, and the limit is 3"),
        "{message:?}"
    );

    // Once a process has ended (its output complete), it no longer counts.
    a.signal(&first, "kill").await.expect_status(200);
    a.wait_exit(&first).await;
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            a.start_req(&sleeper()).await.status == 200
        })
        .await,
        "a start still refused after a process of the chat ended"
    );
}

/// A command that detaches a daemon and exits at once: its output is complete at once, but
/// the daemon is a member of the command all the same.
fn detached_daemon() -> serde_json::Value {
    json!({"command": "setsid -f sleep 300 </dev/null >/dev/null 2>&1"})
}

async fn detached_daemons_count_against_the_limit(containment: &str) {
    let server = Server::with_config(&format!(
        "containment = \"{containment}\"\nmax_processes_per_chat = 2\n"
    ));
    if containment == "auto" && server.api().health().await.containment != "cgroup" {
        skip(
            "detached_daemons_count_against_the_limit_in_cgroup_mode",
            "no writable cgroup v2 on this machine",
        );
        return;
    }
    let chat = server.api().chat("limits-daemons");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let reply = chat.start_wait_req(&detached_daemon()).await;
        reply.expect_status(200);
        let id = reply.json::<serde_json::Value>()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let exited = chat.wait_exit(&id).await;
        assert_eq!(exited.exit_code, Some(0), "{exited:?}");
        assert_eq!(exited.members_alive, 1, "the daemon runs on: {exited:?}");
        ids.push(id);
    }
    // Both shells have exited and their output is complete, but their daemons run.
    let refused = chat.start_req(&detached_daemon()).await;
    refused.expect_status(429);
    let message: ErrorBody = refused.json();
    assert!(
        message
            .message
            .contains("this chat has 2 live, and the limit is 2"),
        "{message:?}"
    );

    // Once one daemon is gone, its place is free again without anyone having looked at it
    // (the kill is asynchronous: a start may still meet the limit for a moment).
    chat.signal(&ids[0], "kill").await.expect_status(200);
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            chat.start_req(&json!({"command": "true"})).await.status == 200
        })
        .await,
        "a start still refused after a daemon of the chat was killed"
    );
    for id in &ids {
        chat.signal(id, "kill").await;
    }
}

#[tokio::test]
async fn detached_daemons_count_against_the_limit_in_cgroup_mode() {
    detached_daemons_count_against_the_limit("auto").await;
}

#[tokio::test]
async fn detached_daemons_count_against_the_limit_in_subreaper_mode() {
    detached_daemons_count_against_the_limit("subreaper").await;
}

/// How many processes the agent keeps, by the `procwarden_processes` gauges (reading them
/// forgets nothing, unlike a list).
async fn tracked(api: &Api) -> f64 {
    let reply = api.get("/metrics").await;
    reply.expect_status(200);
    reply
        .text
        .lines()
        .filter(|l| l.starts_with("procwarden_processes{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn past_the_cap_the_oldest_finished_processes_are_forgotten_without_waiting_for_the_reaper() {
    const CAP: usize = 16;
    let server = Server::with_config(&format!(
        "max_exited_processes = {CAP}\nreap_interval_seconds = 3600\n"
    ));
    let api = server.api();
    let mut ids = Vec::new();
    for _ in 0..80 {
        let id = api.start("true").await;
        api.wait_exit(&id).await;
        ids.push(id);
    }
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            tracked(&api).await <= CAP as f64
        })
        .await,
        "{} processes kept with a cap of {CAP}",
        tracked(&api).await
    );
    api.output(&ids[0], false).await.expect_status(404);
    api.output(ids.last().unwrap(), false)
        .await
        .expect_status(200);
}
