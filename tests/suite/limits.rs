//! Live-process limits: a start over `max_processes` or `max_processes_per_chat` gets 429
//! naming which, other chats are not held back by one chat's limit, and a process counts
//! until its output is complete.

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

    // Another chat is not held back by the first one's limit, only by the agent's.
    b.start_with(sleeper()).await;
    let refused = b.start_req(&sleeper()).await;
    refused.expect_status(429);
    let message: ErrorBody = refused.json();
    assert!(message.message.contains("the agent"), "{message:?}");

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
