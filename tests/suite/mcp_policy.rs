//! MCP tools through the policy chain: a trailing `&` handled by the `ampersand` sample plugin,
//! and a denial by the `deny` sample plugin coming back as a tool error with its reason.
//!
//! NEEDS THE POLICY CHAIN: these tests pass once the policy runtime with the sample plugins
//! (built into the binary, and as components under `target/plugins/wasm32-wasip2/release/`,
//! see scripts/build-plugins.sh) is merged. The MCP layer itself has no `&` handling on purpose:
//! the policy chain decides, and the tools report what it decided.
//!
//! Assumptions about the chain (from the design): with no config file the built-in sample
//! plugins, `ampersand` among them, are loaded; a `[[plugin]]` entry loads a component file
//! with its `[plugin.settings]`. The deny component is `$PROCWARDEN_DENY_WASM`, else
//! `<target>/plugins/wasm32-wasip2/release/deny.wasm`.

use std::path::PathBuf;
use std::time::Duration;

use procwarden_tests::mcp::*;

fn deny_component() -> PathBuf {
    if let Some(path) = std::env::var_os("PROCWARDEN_DENY_WASM") {
        return PathBuf::from(path);
    }
    // target/release -> target/plugins/wasm32-wasip2/release/deny.wasm
    let target = target_dir().parent().expect("target dir").to_path_buf();
    let path = target.join("plugins/wasm32-wasip2/release/deny.wasm");
    assert!(
        path.exists(),
        "deny component not found at {}: run scripts/build-plugins.sh or set PROCWARDEN_DENY_WASM",
        path.display()
    );
    path
}

#[tokio::test]
async fn trailing_ampersand_is_moved_to_the_background_by_the_plugin() {
    let session = stdio_session(&[]).await;
    // `sleep 30.<digits>`: `sleep 30 &` as a model writes it, made unique for /proc.
    let marker = Marker(format!(
        "30.{:06}",
        uuid::Uuid::new_v4().as_u128() % 1_000_000
    ));
    let reply = call(
        &session.client,
        "execute",
        json!({"command": format!("{} &", marker.sleep())}),
    )
    .await;
    // Promoted to the background: the call returns at once instead of waiting 60 s.
    assert!(
        reply.elapsed < Duration::from_secs(5),
        "took {:?}",
        reply.elapsed
    );
    let reply = reply.ok();
    assert_eq!(reply.background, Some(true), "{reply}");
    assert_eq!(reply.running, Some(true), "{reply}");
    assert!(reply.note().contains("run_in_background"), "{reply}");
    // What runs is the command without the `&`: tracked, not orphaned.
    assert_eq!(reply.command(), marker.sleep(), "{reply}");
    let id = reply.process_id().to_owned();
    assert!(eventually(Duration::from_secs(5), || marker.alive()).await);

    let list = call(&session.client, "process_list", json!({}))
        .await
        .ok_list();
    let entry = list
        .processes
        .iter()
        .find(|p| p.id == id)
        .unwrap_or_else(|| panic!("{id} not listed: {list:?}"));
    assert!(entry.running, "{entry}");

    // Still running a moment later (a shell `&` child would be an orphan nobody tracks).
    let reply = call(
        &session.client,
        "process_output",
        json!({"id": id, "wait_timeout_seconds": 1}),
    )
    .await
    .ok();
    assert_eq!(reply.running, Some(true));

    call(
        &session.client,
        "process_signal",
        json!({"id": id, "signal": "kill"}),
    )
    .await
    .ok();
    assert!(eventually(Duration::from_secs(5), || !marker.alive()).await);
}

#[tokio::test]
async fn trailing_ampersand_with_run_in_background_is_still_tracked() {
    let session = stdio_session(&[]).await;
    let marker = Marker::new();
    let reply = call(
        &session.client,
        "execute",
        json!({"command": format!("{} &", marker.sleep()), "run_in_background": true}),
    )
    .await
    .ok();
    // Without the plugin the shell would fork the sleep and exit at once, leaving it untracked.
    assert_eq!(reply.command(), marker.sleep(), "{reply}");
    let id = reply.process_id().to_owned();
    let reply = call(
        &session.client,
        "process_output",
        json!({"id": id, "wait_timeout_seconds": 1}),
    )
    .await
    .ok();
    assert_eq!(reply.running, Some(true), "{reply}");
    call(
        &session.client,
        "process_signal",
        json!({"id": id, "signal": "kill"}),
    )
    .await
    .ok();
    assert!(eventually(Duration::from_secs(5), || !marker.alive()).await);
}

#[tokio::test]
async fn double_ampersand_stays_in_the_foreground() {
    let session = stdio_session(&[]).await;
    let reply = call(
        &session.client,
        "execute",
        json!({"command": "true && echo both"}),
    )
    .await
    .ok();
    assert_eq!(reply.running, Some(false));
    assert_eq!(reply.output(), "both\n");
    assert!(reply.background.is_none(), "{reply}");
}

#[tokio::test]
async fn a_policy_denial_is_a_tool_error_with_the_plugins_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("procwarden.toml");
    std::fs::write(
        &config,
        format!(
            "[[plugin]]\npath = {:?}\n[plugin.settings]\npatterns = [\"forbidden-by-mcp-test\"]\nreason = \"This command is off limits in MCP tests.\"\n",
            deny_component().display().to_string()
        ),
    )
    .unwrap();
    let session = stdio_session(&["--config", config.to_str().unwrap()]).await;
    let text = call(
        &session.client,
        "execute",
        json!({"command": "echo forbidden-by-mcp-test"}),
    )
    .await
    .err();
    assert!(text.starts_with("Denied by policy plugin \""), "{text}");
    assert!(
        text.contains("This command is off limits in MCP tests."),
        "{text}"
    );
    // Nothing started.
    let list = call(&session.client, "process_list", json!({}))
        .await
        .ok_list();
    assert!(list.processes.is_empty(), "{list:?}");
    // Other commands still run.
    let reply = call(
        &session.client,
        "execute",
        json!({"command": "echo allowed"}),
    )
    .await
    .ok();
    assert_eq!(reply.output(), "allowed\n");
}
