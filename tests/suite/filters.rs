//! Output filters through the real binary: secrets a command prints never reach an HTTP, MCP
//! or CLI client, `redactions` counts them, byte counts stay about the real output, a faulty
//! filter is named and withholds the output (or, with `on_error = "allow"`, is skipped), tool
//! results are filtered and counted too, and filters can be turned off.

use std::path::PathBuf;
use std::time::Duration;

use procwarden_tests::mcp::{HttpServer, call, stdio_session};
use procwarden_tests::*;
use rmcp::model::CallToolRequestParams;

const AWS: &str = "AKIAIOSFODNN7EXAMPLE";
const GITHUB: &str = "ghp_0123456789abcdefghijABCDEFGHIJ012345";
const SHA: &str = "3f786850e387550fdab836ed7e6dc881de23001b";
const UUID: &str = "123e4567-e89b-12d3-a456-426614174000";
/// A base64 test fixture with the letters and padding the filter looks at (`A`, `J`, `=`).
const BASE64: &str = "QUtJQUlPU0ZPRE5ON0VYQU1QTEVfSldUX3Rlc3RfZml4dHVyZQ==";
/// The built-in `serve` tool, for tool results.
const SERVE: &str = "[[tool]]\npath = \"builtin:serve\"\n";

/// A command printing four secrets (an AWS key, a GitHub token, a PEM block, API_TOKEN=...)
/// next to a git SHA, a UUID and a base64 fixture that must pass untouched.
fn noisy_command() -> String {
    format!(
        "echo 'key {AWS}'; echo 'token {GITHUB}'; \
         printf -- '-----BEGIN RSA PRIVATE KEY-----\\nMIIEpAIBAAKCAQEA\\n-----END RSA PRIVATE KEY-----\\n'; \
         echo 'API_TOKEN=hunter2'; echo 'error: commit {SHA} id {UUID}'; echo 'fixture {BASE64}'"
    )
}

/// Output and false positives: every secret gone, the SHA, UUID and base64 fixture intact.
fn assert_masked(output: &str) {
    assert_clean(output);
    for kept in [SHA, UUID, BASE64] {
        assert!(output.contains(kept), "{kept} was changed: {output}");
    }
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
    assert_masked(&done.output);
    assert_eq!(done.redactions, Some(4), "{}", done.output);
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
    assert_masked(report.output());
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
    assert_masked(&o.stdout);
    assert!(o.stdout.contains("[REDACTED:aws-access-key]"), "{o:?}");
}

/// `serve` on a command that prints a token and exits: its result carries the output tail.
fn serve_args() -> serde_json::Value {
    serde_json::json!({
        "command": format!("echo 'token {GITHUB} at {SHA}'; exit 4"),
        "ready_regex": "never",
    })
}

/// The tail `serve` returned: the token masked, the SHA kept.
fn assert_tail_masked(result: &serde_json::Value) {
    assert_eq!(result["status"], "exited", "{result}");
    let tail = result["output_tail"].as_str().expect("output_tail");
    assert_eq!(tail, format!("token [REDACTED:github-token] at {SHA}"));
}

#[tokio::test]
async fn tool_results_are_filtered_and_counted_over_http_mcp_and_the_cli() {
    let server = Server::with_config(SERVE);
    let resp = server
        .api()
        .post("/api/v0/tools/serve", &serve_args())
        .await;
    let reply: ToolCallReply = resp.expect_status(200).json();
    assert_tail_masked(reply.json.as_ref().expect("a JSON result"));
    assert_eq!(reply.redactions, Some(1), "{reply:?}");

    let out = procwarden_command()
        .args(["tool", "serve", "--url", server.url(), "--json"])
        .arg(serve_args().to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_tail_masked(&printed);

    let mcp = HttpServer::start_with_config(Some(SERVE));
    let client = mcp.session(&[]).await;
    let serde_json::Value::Object(args) = serve_args() else {
        unreachable!()
    };
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        client.call_tool(CallToolRequestParams::new("serve").with_arguments(args)),
    )
    .await
    .expect("serve timed out")
    .expect("serve call");
    assert_ne!(result.is_error, Some(true), "{result:?}");
    assert_tail_masked(result.structured_content.as_ref().expect("structured"));
    for block in &result.content {
        if let Some(text) = block.as_text() {
            assert!(!text.text.contains(GITHUB), "{}", text.text);
        }
    }
    let meta = result.meta.as_ref().expect("_meta with redactions");
    assert_eq!(meta.0["redactions"], 1, "{meta:?}");
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
    // A tool's result is withheld too, the tool and the filter named; the tool still serves.
    let server = Server::with_config(&format!(
        "{SERVE}\n[[filter]]\nname = \"broken\"\npath = {:?}\nsettings = {{ mode = \"trap\" }}\n",
        path.display().to_string()
    ));
    let api = server.api();
    for _ in 0..2 {
        let message = api
            .post("/api/v0/tools/serve", &serve_args())
            .await
            .error(503);
        assert!(message.contains("\"serve\""), "{message}");
        assert!(message.contains("\"broken\""), "{message}");
        assert!(!message.contains(GITHUB), "{message}");
    }
    server.assert_alive();
}

#[tokio::test]
async fn a_faulty_filter_with_on_error_allow_is_skipped_and_redact_still_runs() {
    let server = Server::with_config(&format!(
        "[[filter]]\nname = \"broken\"\npath = {:?}\non_error = \"allow\"\nsettings = {{ mode = \"trap\" }}\n",
        component("faulty_filter").display().to_string()
    ));
    let api = server.api();
    let id = api.start(&format!("echo {AWS}")).await;
    let done = api.wait_exit(&id).await;
    assert_eq!(done.output, "[REDACTED:aws-access-key]\n");
    assert_eq!(done.redactions, Some(1));
    let health: Health = api.get("/api/v0/health").await.json();
    let names: Vec<_> = health.filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["broken", "redact"]);
    assert!(health.filters[0].failures >= 1, "{health:?}");
    assert_eq!(health.status, "degraded");
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

#[tokio::test]
async fn config_check_loads_the_filters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("procwarden.toml");
    std::fs::write(&path, "[[filter]]\npath = \"gone.wasm\"\n").unwrap();
    let o = cli(&["config", "check", path.to_str().unwrap()], &[]).await;
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(
        o.stdout.contains("output filter \"gone\"") && o.stdout.contains("cannot be loaded"),
        "{o:?}"
    );
    std::fs::write(
        &path,
        "[[filter]]\npath = \"builtin:redact\"\nsettings = { names = [\"DATABASE_URL\"] }\n",
    )
    .unwrap();
    let o = cli(&["config", "check", path.to_str().unwrap()], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
}
