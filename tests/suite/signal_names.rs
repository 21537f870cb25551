//! Signal names beyond terminate/kill, the same in the HTTP API, MCP and the CLI.

use std::time::Duration;

use procwarden_tests::mcp::{call, stdio_session};
use procwarden_tests::*;

const SOON: Duration = Duration::from_secs(10);

/// A command that reports `name` when it gets that signal and exits 3.
fn trapping(name: &str) -> String {
    format!("trap 'echo got-{name}; exit 3' {name}; echo ready; while :; do sleep 0.05; done")
}

#[tokio::test]
async fn the_http_api_takes_signal_names() {
    let server = Server::start();
    let api = server.api();
    for (sent, trapped) in [
        ("HUP", "HUP"),
        ("sigusr1", "USR1"),
        ("INT", "INT"),
        ("QUIT", "QUIT"),
        ("USR2", "USR2"),
    ] {
        let id = api
            .start_with(json!({"command": trapping(trapped), "background": true}))
            .await;
        assert!(
            eventually(SOON, || async {
                api.output_ok(&id, false).await.output.contains("ready")
            })
            .await
        );
        let reply: MessageReply = api.signal(&id, sent).await.expect_status(200).json();
        assert!(reply.message.contains(trapped), "{reply:?}");
        let done = api.wait_exit(&id).await;
        assert!(
            done.output.contains(&format!("got-{trapped}")),
            "{sent}: {done:?}"
        );
        assert_eq!(done.exit_code, Some(3));
    }
}

#[tokio::test]
async fn mcp_takes_signal_names() {
    let session = stdio_session(&[]).await;
    let started = call(
        &session.client,
        "execute",
        json!({"command": trapping("USR2"), "run_in_background": true}),
    )
    .await
    .ok();
    let id = started.process_id().to_owned();
    let ready = eventually(SOON, || async {
        call(
            &session.client,
            "process_output",
            json!({"id": id, "wait_timeout_seconds": 0}),
        )
        .await
        .text
        .contains("ready")
    })
    .await;
    assert!(ready);
    let reply = call(
        &session.client,
        "process_signal",
        json!({"id": id, "signal": "USR2"}),
    )
    .await;
    assert!(reply.text.contains("SIGUSR2"), "{}", reply.text);
    // SIGUSR2 and no other signal arrived: either the trap ran (exit 3), or, in the rare
    // interleaving where the shell reaps its `sleep` killed by the same signal first, the
    // shell ended with that child's 128 + 12. Any other signal gives a different code.
    let code = reply.json["exit_code"].as_i64();
    assert!(matches!(code, Some(3 | 140)), "{}", reply.text);
}
