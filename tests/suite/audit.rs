//! The policy audit file under concurrent requests: every record of one start request, the
//! `started` record that names its process included, carries the same `request_id`, so the
//! interleaved lines of requests running at once can be told apart.

use std::collections::BTreeMap;

use procwarden_tests::*;
use serde_json::Value;
use tokio::task::JoinSet;

/// The default chain, as every allowed request passes it.
const CHAIN: [&str; 4] = ["ampersand", "env", "workdir", "deny"];

fn audit_records(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The records grouped by `request_id`, each group in file order. Panics on a record
/// without one.
fn by_request(records: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for record in records {
        let id = record["request_id"]
            .as_str()
            .unwrap_or_else(|| panic!("a record without request_id: {record}"));
        groups
            .entry(id.to_owned())
            .or_default()
            .push(record.clone());
    }
    groups
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_records_are_joined_by_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let server = Server::with_config(&format!("[policy]\naudit_file = {audit:?}\n"));

    // Two requests at once (a few pairs, so their lines interleave), each in a chat of its
    // own, and one denied request beside them.
    let mut set = JoinSet::new();
    for i in 0..8 {
        let api = server.api().pw_chat(&format!("chat-{i}"));
        set.spawn(async move {
            let command = format!("echo request-{i}");
            let id = api.start(&command).await;
            (command, id)
        });
    }
    server
        .api()
        .start_req(&json!({"command": "rm -rf ~"}))
        .await
        .error(403);
    let mut started = BTreeMap::new();
    while let Some(done) = set.join_next().await {
        let (command, id) = done.unwrap();
        started.insert(command, id);
    }

    let groups = by_request(&audit_records(&audit));
    assert_eq!(groups.len(), 9, "one request_id per request: {groups:#?}");
    for (request_id, records) in &groups {
        let command = records[0]["command_before"].as_str().unwrap();
        let Some(process_id) = started.get(command) else {
            // The denied request: its plugins up to `deny`, and no process.
            let decisions: Vec<&Value> = records.iter().map(|r| &r["decision"]).collect();
            assert_eq!(
                decisions.last().unwrap().as_str(),
                Some("deny"),
                "{records:#?}"
            );
            assert!(
                records.iter().all(|r| r["decision"] != "started"),
                "{records:#?}"
            );
            continue;
        };
        // Each plugin once, in chain order, all about this request, then its process.
        let plugins: Vec<&str> = records
            .iter()
            .filter_map(|r| r["plugin"].as_str())
            .collect();
        assert_eq!(plugins, CHAIN, "{request_id}: {records:#?}");
        let chat = records[0]["chat_id"].clone();
        assert_eq!(
            chat,
            command.replace("echo request-", "chat-"),
            "{records:#?}"
        );
        assert!(records.iter().all(|r| r["chat_id"] == chat), "{records:#?}");
        assert!(
            records[..CHAIN.len()]
                .iter()
                .all(|r| r["command_before"] == command),
            "{records:#?}"
        );
        let last = records.last().unwrap();
        assert_eq!(last["decision"], "started", "{records:#?}");
        assert_eq!(last["process_id"], process_id.as_str(), "{records:#?}");
        assert_eq!(last["command"], command, "{records:#?}");
    }
}
