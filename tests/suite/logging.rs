//! Logs: JSON on request, a mistaken filter said rather than silent, one line per exit, and
//! audit records that lead to the process a request started.

use std::time::Duration;

use procwarden_tests::*;

const SOON: Duration = Duration::from_secs(10);

#[tokio::test]
async fn json_logs_carry_the_exit_of_each_process() {
    let server = Server::builder()
        .env("PROCWARDEN_LOG_FORMAT", "json")
        .spawn();
    let api = server.api();
    let id = api.start("printf 12345; exit 7").await;
    assert_eq!(api.wait_exit(&id).await.exit_code, Some(7));
    let exited = || {
        server
            .stderr_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["fields"]["message"] == "process exited")
    };
    assert!(eventually_sync(SOON, || exited().is_some()).await);
    let line = exited().unwrap();
    assert_eq!(line["fields"]["id"], id.as_str(), "{line}");
    assert_eq!(line["fields"]["exit_code"], 7, "{line}");
    assert_eq!(line["fields"]["output_bytes"], 5, "{line}");
    assert!(line["fields"]["seconds"].as_f64().is_some(), "{line}");
    // Every line is JSON: nothing else is mixed into stderr.
    for l in server.stderr_text().lines() {
        assert!(serde_json::from_str::<serde_json::Value>(l).is_ok(), "{l}");
    }
    // stdout holds only the listening line.
    assert!(server.stdout_rest().is_empty(), "{}", server.stdout_rest());
}

#[tokio::test]
async fn a_format_given_as_the_filter_is_reported_not_silent() {
    let server = Server::builder().env("PROCWARDEN_LOG", "json").spawn();
    // Logging still works, at the default level ("serving" follows the listening line).
    assert!(eventually_sync(SOON, || server.stderr_text().contains("serving")).await);
    let log = server.stderr_text();
    assert!(log.contains("PROCWARDEN_LOG_FORMAT=json"), "{log}");
}

#[tokio::test]
async fn audit_records_end_with_the_process_started() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let server = Server::with_config(&format!("[policy]\naudit_file = {audit:?}\n"));
    let api = server.api().pw_chat("audited-chat");
    let id = api.start("echo audited").await;
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = records.last().unwrap();
    assert_eq!(last["decision"], "started", "{records:?}");
    assert_eq!(last["process_id"], id.as_str());
    assert_eq!(last["chat_id"], "audited-chat");
    assert_eq!(last["command"], "echo audited");
}
