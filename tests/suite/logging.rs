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

/// Starts a backgrounded command carrying a secret and a long one whose secret lies past the
/// logged prefix, and returns the agent's log once both exits are logged.
async fn log_of_secret_commands(server: &Server) -> String {
    let api = server.api();
    let short = api.start("echo short-secret-4d1f &").await;
    let long = format!("true {} long-secret-9b2e", "x".repeat(300));
    let long = api.start(&long).await;
    for id in [&short, &long] {
        api.wait_exit(id).await;
        assert!(
            eventually_sync(SOON, || server
                .stderr_text()
                .lines()
                .any(|l| l.contains("process exited") && l.contains(id.as_str())))
            .await,
            "no exit line for {id}: {}",
            server.stderr_text()
        );
    }
    server.stderr_text()
}

#[tokio::test]
async fn commands_stay_out_of_the_default_log() {
    let server = Server::builder().env("PROCWARDEN_LOG", "info").spawn();
    let log = log_of_secret_commands(&server).await;
    // Neither the agent nor the `ampersand` built-in (which rewrote the first) logs a command.
    assert!(!log.contains("short-secret-4d1f"), "{log}");
    assert!(!log.contains("long-secret-9b2e"), "{log}");
    assert!(!log.contains("xxxxxxxx"), "{log}");
}

#[tokio::test]
async fn at_debug_commands_are_cut_to_their_first_200_bytes_and_a_hash() {
    let server = Server::builder().env("PROCWARDEN_LOG", "debug").spawn();
    let log = log_of_secret_commands(&server).await;
    let command_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("process command"))
        .collect();
    assert!(
        command_lines
            .iter()
            .any(|l| l.contains("short-secret-4d1f")),
        "a short command is logged whole at DEBUG: {log}"
    );
    let long_line = command_lines
        .iter()
        .find(|l| l.contains("xxxxxxxx"))
        .unwrap_or_else(|| panic!("no DEBUG line for the long command: {log}"));
    assert!(long_line.contains("[322 bytes, hash "), "{long_line}");
    assert!(!log.contains("long-secret-9b2e"), "{log}");
}
