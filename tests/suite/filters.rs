//! Output filters through the real binary: secrets a command prints never reach an HTTP, MCP
//! or CLI client, `redactions` counts them, byte counts stay about the real output, a faulty
//! filter is named and withholds the output, and filters can be turned off.

use std::path::PathBuf;

use procwarden_tests::mcp::{call, stdio_session};
use procwarden_tests::*;

const AWS: &str = "AKIAIOSFODNN7EXAMPLE";
const GITHUB: &str = "ghp_0123456789abcdefghijABCDEFGHIJ012345";
const SHA: &str = "3f786850e387550fdab836ed7e6dc881de23001b";
const UUID: &str = "123e4567-e89b-12d3-a456-426614174000";

/// A command printing four secrets (an AWS key, a GitHub token, a PEM block, API_TOKEN=...)
/// next to a git SHA and a UUID that must pass untouched.
fn noisy_command() -> String {
    format!(
        "echo 'key {AWS}'; echo 'token {GITHUB}'; \
         printf -- '-----BEGIN RSA PRIVATE KEY-----\\nMIIEpAIBAAKCAQEA\\n-----END RSA PRIVATE KEY-----\\n'; \
         echo 'API_TOKEN=hunter2'; echo 'error: commit {SHA} id {UUID}'"
    )
}

fn assert_clean(output: &str) {
    for secret in [AWS, GITHUB, "MIIEpAIBAAKCAQEA", "hunter2"] {
        assert!(
            !output.contains(secret),
            "{secret} reached the client: {output}"
        );
    }
}

fn component(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is not built", path.display());
    path
}

#[tokio::test]
async fn secrets_never_reach_an_http_client_in_any_read_mode() {
    let server = Server::start();
    let api = server.api();
    let reply = api
        .start_reply(serde_json::json!({"command": noisy_command()}))
        .await;
    let id = reply.id.clone();
    let done = api.wait_exit(&id).await;
    assert_clean(&done.output);
    assert_eq!(done.redactions, Some(4), "{}", done.output);
    assert!(done.output.contains(SHA) && done.output.contains(UUID));
    // Byte counts describe the real output, not the masked text.
    assert!(done.covers.total_bytes > done.output.len() as u64 - 60);
    assert_ne!(done.covers.end as usize, done.output.len());
    for query in ["offset=0", "lines=1:5", "grep=.", "since=0", "view=errors"] {
        let resp = api
            .get(&format!("/api/v0/processes/{id}/output?{query}"))
            .await;
        resp.expect_status(200);
        let read: OutputSnapshot = resp.json();
        assert_clean(&read.output);
        assert!(read.redactions.is_some(), "{query}");
    }
    let started = api
        .start_wait_req(&serde_json::json!({"command": noisy_command()}))
        .await;
    started.expect_status(200);
    let started: serde_json::Value = started.json();
    assert_clean(started["output"].as_str().unwrap());
    assert_eq!(started["redactions"], 4, "{started}");
    let health: Health = api.get("/api/v0/health").await.json();
    let redact = health.filters.iter().find(|f| f.name == "redact").unwrap();
    assert!(redact.redactions >= 8, "{health:?}");
}

#[tokio::test]
async fn secrets_never_reach_an_mcp_or_cli_client() {
    let session = stdio_session(&[]).await;
    let reply = call(
        &session.client,
        "execute",
        serde_json::json!({"command": noisy_command()}),
    )
    .await;
    let text = reply.text.clone();
    assert_eq!(reply.json["redactions"], 4, "{text}");
    let report = reply.ok();
    assert_clean(report.output());
    assert!(report.output().contains(SHA));
    let reply = call(
        &session.client,
        "process_output",
        serde_json::json!({"process_id": report.process_id(), "lines": "1:3"}),
    )
    .await;
    // `command` echoes what the model itself sent; the output is what must be clean.
    assert_clean(reply.json["output"].as_str().unwrap());
    assert!(reply.json["redactions"].is_number(), "{}", reply.text);

    let server = Server::start();
    let o = cli(&["run", "--url", server.url(), "-c", &noisy_command()], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_clean(&o.stdout);
    assert!(o.stdout.contains("[REDACTED:aws-access-key]"), "{o:?}");
    assert!(o.stdout.contains(UUID), "{o:?}");
}

#[tokio::test]
async fn a_faulty_filter_is_named_and_withholds_the_output_and_the_agent_keeps_serving() {
    let path = component("faulty_filter");
    for (mode, words) in [("trap", "trapped"), ("spin", "CPU time")] {
        let server = Server::with_config(&format!(
            "[[filter]]\nname = \"broken\"\npath = {:?}\ncpu_budget_ms = 50\nsettings = {{ mode = {mode:?} }}\n",
            path.display().to_string()
        ));
        let api = server.api();
        let id = api.start(&format!("echo {AWS}")).await;
        let _ = api
            .get(&format!("/api/v0/processes/{id}/output?wait=true"))
            .await;
        let resp = api.get(&format!("/api/v0/processes/{id}/output")).await;
        let message = resp.error(503);
        assert!(message.contains("\"broken\""), "{mode}: {message}");
        assert!(message.contains(words), "{mode}: {message}");
        assert!(!message.contains(AWS), "{message}");
        // Still serving: health answers and names the failures.
        let health: Health = api.get("/api/v0/health").await.json();
        assert_eq!(health.status, "degraded");
        assert!(health.filters[0].failures >= 1, "{health:?}");
        server.assert_alive();
    }
}

#[tokio::test]
async fn filters_off_pass_output_as_written() {
    let server = Server::with_config("[filters]\nbuiltins = false\n");
    let api = server.api();
    let id = api.start(&format!("echo {AWS}")).await;
    let done = api.wait_exit(&id).await;
    assert_eq!(done.output, format!("{AWS}\n"));
    assert_eq!(done.redactions, None);
    let health: Health = api.get("/api/v0/health").await.json();
    assert!(health.filters.is_empty());
}
