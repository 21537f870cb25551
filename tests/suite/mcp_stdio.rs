//! MCP over stdio: rmcp's client spawns `procwarden mcp` and calls its tools.

use std::time::Duration;

use procwarden_tests::mcp::*;

#[tokio::test]
async fn lists_four_tools_described_for_a_model() {
    let session = stdio_session(&[]).await;
    let tools = session.client.list_all_tools().await.expect("tools/list");
    let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "execute",
            "process_input",
            "process_list",
            "process_output",
            "process_signal"
        ]
    );
    for tool in &tools {
        let description = tool.description.as_deref().unwrap_or_default();
        assert!(
            description.len() > 80,
            "{} has too thin a description: {description:?}",
            tool.name
        );
        // Every argument carries a description a model can read.
        if let Some(properties) = tool
            .input_schema
            .get("properties")
            .and_then(|p| p.as_object())
        {
            for (arg, schema) in properties {
                let text = schema["description"].as_str().unwrap_or_default();
                assert!(!text.is_empty(), "{}.{arg} has no description", tool.name);
            }
        }
    }
    let execute = tools.iter().find(|t| t.name == "execute").unwrap();
    let description = execute.description.as_deref().unwrap();
    assert!(description.contains("run_in_background"), "{description}");
    assert!(
        description.contains("Never background with shell `&`"),
        "{description}"
    );
    assert!(description.contains("NOT killed"), "{description}");
    let properties = execute.input_schema["properties"].as_object().unwrap();
    for arg in [
        "command",
        "workdir",
        "env",
        "run_in_background",
        "timeout_seconds",
    ] {
        assert!(properties.contains_key(arg), "execute lacks {arg}");
    }
    assert_eq!(execute.input_schema["required"], json!(["command"]));
    let background = properties["run_in_background"]["description"]
        .as_str()
        .unwrap();
    assert!(background.contains("dev servers"), "{background}");
    assert!(background.contains("Never use shell `&`"), "{background}");

    let output = tools.iter().find(|t| t.name == "process_output").unwrap();
    let properties = output.input_schema["properties"].as_object().unwrap();
    assert!(properties.contains_key("id") && properties.contains_key("wait_timeout_seconds"));
    let signal = tools.iter().find(|t| t.name == "process_signal").unwrap();
    assert_eq!(
        signal.input_schema["properties"]["signal"]["enum"],
        json!(["terminate", "kill", "INT", "HUP", "QUIT", "USR1", "USR2"])
    );
}

#[tokio::test]
async fn annotations_mark_process_signal_not_idempotent_and_reads_read_only() {
    let session = stdio_session(&[]).await;
    let tools = session.client.list_all_tools().await.expect("tools/list");
    // The annotations as they came over the wire (camelCase hints).
    let annotations = |name: &str| {
        let tool = tools.iter().find(|t| t.name == name).expect(name);
        serde_json::to_value(tool).unwrap()["annotations"].clone()
    };
    // Signalling a process that has since exited fails: a retry is not harmless.
    let signal = annotations("process_signal");
    assert_eq!(signal["idempotentHint"], json!(false), "{signal}");
    assert_eq!(signal["readOnlyHint"], json!(false), "{signal}");
    assert_eq!(signal["destructiveHint"], json!(true), "{signal}");
    for reader in ["process_output", "process_list"] {
        let hints = annotations(reader);
        assert_eq!(hints["readOnlyHint"], json!(true), "{reader}: {hints}");
    }
}

#[tokio::test]
async fn foreground_execute_returns_output_and_exit_code() {
    let session = stdio_session(&[]).await;
    let reply = call(
        &session.client,
        "execute",
        json!({"command": "echo out; echo err >&2; exit 3"}),
    )
    .await
    .ok();
    assert_eq!(reply.success, Some(false));
    assert_eq!(reply.exit_code, Some(3));
    assert_eq!(reply.running, Some(false));
    assert_eq!(reply.output(), "out\nerr\n");
    assert!(reply.process_id.is_some(), "{reply}");

    let reply = call(
        &session.client,
        "execute",
        json!({"command": "pwd; echo \"$GREETING\"", "workdir": "/tmp", "env": {"GREETING": "hi there"}}),
    )
    .await
    .ok();
    assert_eq!(reply.success, Some(true));
    assert_eq!(reply.exit_code, Some(0));
    assert_eq!(reply.output(), "/tmp\nhi there\n");
}

#[tokio::test]
async fn background_execute_returns_at_once_and_process_list_shows_it() {
    let session = stdio_session(&[]).await;
    let marker = Marker::new();
    let reply = call(
        &session.client,
        "execute",
        json!({"command": marker.sleep(), "run_in_background": true}),
    )
    .await;
    assert!(
        reply.elapsed < Duration::from_secs(3),
        "took {:?}",
        reply.elapsed
    );
    let reply = reply.ok();
    let id = reply.process_id().to_owned();
    assert_eq!(reply.running, Some(true));
    assert_eq!(reply.background, Some(true));
    // A running process has no exit code yet; the reference reported 0, which misleads.
    assert!(reply.exit_code.is_none(), "{reply}");
    assert!(reply.note().contains("process_output"));
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
    assert_eq!(entry.command, marker.sleep());

    let reply = call(
        &session.client,
        "process_signal",
        json!({"id": id, "signal": "kill"}),
    )
    .await
    .ok();
    // `success` means exited 0; a killed process did not succeed.
    assert_eq!(reply.success, Some(false));
    assert_eq!(reply.running, Some(false));
    assert_eq!(reply.exit_code, Some(137));
    assert!(eventually(Duration::from_secs(5), || !marker.alive()).await);
}

#[tokio::test]
async fn foreground_timeout_hands_over_a_running_process() {
    let session = stdio_session(&[]).await;
    let reply = call(
        &session.client,
        "execute",
        json!({"command": "echo started; sleep 2; echo done", "wait_seconds": 1}),
    )
    .await;
    assert!(
        reply.elapsed >= Duration::from_millis(900) && reply.elapsed < Duration::from_secs(3),
        "took {:?}",
        reply.elapsed
    );
    let reply = reply.ok();
    assert_eq!(reply.running, Some(true));
    assert!(reply.exit_code.is_none(), "{reply}");
    assert!(reply.success.is_none(), "{reply}");
    let note = reply.note();
    assert!(
        note.contains("Still running after 1 s; it keeps running"),
        "{note}"
    );
    assert!(note.contains("process_output"), "{note}");
    assert_eq!(reply.output(), "started\n");
    let id = reply.process_id();

    // Not killed: waiting on it yields the final output.
    let reply = call(
        &session.client,
        "process_output",
        json!({"id": id, "wait_timeout_seconds": 10}),
    )
    .await;
    assert!(
        reply.elapsed < Duration::from_secs(5),
        "took {:?}",
        reply.elapsed
    );
    let reply = reply.ok();
    assert_eq!(reply.running, Some(false));
    assert_eq!(reply.exit_code, Some(0));
    assert_eq!(reply.success, Some(true));
    assert_eq!(reply.output(), "started\ndone\n");
    assert_eq!(reply.command(), "echo started; sleep 2; echo done");
}

#[tokio::test]
async fn process_output_blocks_until_exit_or_returns_a_snapshot() {
    let session = stdio_session(&[]).await;
    let id = start_background(&session.client, "echo first; sleep 1.5; echo second").await;

    // wait 0: a snapshot right now.
    let reply = call(
        &session.client,
        "process_output",
        json!({"id": id, "wait_timeout_seconds": 0}),
    )
    .await;
    // A generous bound for a loaded machine; a blocking wait would take the process's 1.5 s.
    assert!(
        reply.elapsed < Duration::from_millis(1200),
        "took {:?}",
        reply.elapsed
    );
    let reply = reply.ok();
    assert_eq!(reply.running, Some(true));
    assert!(reply.exit_code.is_none());

    // Default wait (10 s): returns as soon as the process exits, with all of its output.
    let reply = call(&session.client, "process_output", json!({"process_id": id})).await;
    assert!(
        reply.elapsed < Duration::from_secs(5),
        "took {:?}",
        reply.elapsed
    );
    let reply = reply.ok();
    assert_eq!(reply.running, Some(false));
    assert_eq!(reply.exit_code, Some(0));
    assert_eq!(reply.output(), "first\nsecond\n");

    // A wait shorter than the process: the output so far, still running, said plainly.
    let marker = Marker::new();
    let id = start_background(
        &session.client,
        &format!("echo partial; {}", marker.sleep()),
    )
    .await;
    let reply = call(
        &session.client,
        "process_output",
        json!({"id": id, "wait_timeout_seconds": 0.5}),
    )
    .await;
    assert!(
        reply.elapsed >= Duration::from_millis(450) && reply.elapsed < Duration::from_secs(3),
        "took {:?}",
        reply.elapsed
    );
    let reply = reply.ok();
    assert_eq!(reply.running, Some(true));
    assert_eq!(reply.output(), "partial\n");
    assert!(reply.note().contains("Still running after waiting 0.5 s"));
    call(
        &session.client,
        "process_signal",
        json!({"id": id, "signal": "kill"}),
    )
    .await
    .ok();
}

#[tokio::test]
async fn waits_continue_across_the_agent_wait_cap() {
    // A one-second server wait cap: the tool must keep waiting past it, as many times as its
    // own timeout allows (the reference gave up at the cap).
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("procwarden.toml");
    std::fs::write(&config, "wait_cap_seconds = 1.0\n").unwrap();
    let session = stdio_session(&["--config", config.to_str().unwrap()]).await;
    let reply = call(
        &session.client,
        "execute",
        json!({"command": "sleep 2.5; echo late", "wait_seconds": 20}),
    )
    .await
    .ok();
    assert_eq!(reply.running, Some(false), "{reply}");
    assert_eq!(reply.output(), "late\n");

    let id = start_background(&session.client, "sleep 2.5; echo later").await;
    let reply = call(
        &session.client,
        "process_output",
        json!({"id": id, "wait_timeout_seconds": 20}),
    )
    .await
    .ok();
    assert_eq!(reply.running, Some(false), "{reply}");
    assert_eq!(reply.output(), "later\n");
}

#[tokio::test]
async fn signal_stops_the_whole_process_group() {
    let session = stdio_session(&[]).await;
    let (a, b) = (Marker::new(), Marker::new());
    // The shell forks one sleeper into the background and waits on another: both are in the
    // process group, neither is the shell.
    let id = start_background(
        &session.client,
        &format!("{} & {}; wait", a.sleep(), b.sleep()),
    )
    .await;
    assert!(eventually(Duration::from_secs(5), || a.alive() && b.alive()).await);
    let reply = call(
        &session.client,
        "process_signal",
        json!({"id": id, "signal": "terminate"}),
    )
    .await
    .ok();
    assert!(
        reply
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("SIGTERM"),
        "{reply}"
    );
    assert_eq!(reply.running, Some(false), "{reply}");
    assert!(eventually(Duration::from_secs(5), || !a.alive() && !b.alive()).await);

    // Signalling it again: nothing is left to signal, and the model is told so.
    let text = call(
        &session.client,
        "process_signal",
        json!({"id": id, "signal": "kill"}),
    )
    .await
    .err();
    assert!(text.contains("is not running"), "{text}");
}

#[tokio::test]
async fn invalid_calls_are_tool_errors_a_model_can_read() {
    let session = stdio_session(&[]).await;
    // (tool, arguments, what the error text must name)
    let cases = [
        (
            "execute",
            json!({"command": "  "}),
            vec!["command is required"],
        ),
        (
            "execute",
            json!({"command": "true", "timeout_seconds": 0}),
            vec!["timeout_seconds"],
        ),
        (
            "execute",
            json!({"command": "true", "timeout_seconds": -5}),
            vec!["timeout_seconds"],
        ),
        // The reference's argument name: refused by name, so the model can correct itself.
        (
            "execute",
            json!({"command": "true", "timeout": "10s"}),
            vec!["Unknown argument `timeout`"],
        ),
        (
            "execute",
            json!({"command": "true", "workdir": "/no/such/dir"}),
            vec!["not a directory"],
        ),
        (
            "process_output",
            json!({"id": "no-such-process"}),
            vec!["not found"],
        ),
        (
            "process_output",
            json!({"id": "x", "wait_timeout_seconds": -1}),
            vec!["wait_timeout_seconds"],
        ),
        (
            "process_signal",
            json!({"id": "x", "signal": "SIGWINCH"}),
            vec!["terminate", "kill"],
        ),
        (
            "process_signal",
            json!({"id": "no-such", "signal": "kill"}),
            vec!["not found"],
        ),
    ];
    for (tool, args, expected) in cases {
        let text = call(&session.client, tool, args.clone()).await.err();
        for needle in expected {
            assert!(text.contains(needle), "{tool} {args}: {text}");
        }
    }
}

#[tokio::test]
async fn long_output_keeps_head_and_tail_and_says_what_was_omitted() {
    let session = stdio_session(&[]).await;
    // 200,000 bytes: far over the 16 KiB head + 16 KiB tail.
    let reply = call(
        &session.client,
        "execute",
        json!({"command": "echo FIRST; head -c 200000 /dev/zero | tr '\\0' x; echo; echo LAST"}),
    )
    .await
    .ok();
    let output = reply.output();
    assert!(output.starts_with("FIRST\n"), "{}", &output[..40]);
    assert!(
        output.ends_with("LAST\n"),
        "{}",
        &output[output.len() - 40..]
    );
    let omitted = reply.truncated.as_ref().expect("truncated").omitted_bytes;
    assert!(omitted > 150_000, "{omitted}");
    let note = reply.note();
    assert!(note.contains(&format!("{omitted} of ")), "{note}");
    assert!(
        output.len() < 40_000,
        "{} bytes reached the model",
        output.len()
    );
}

#[tokio::test]
async fn chat_flag_names_the_sessions_chat() {
    let session = stdio_session_env(&[], &[("PROCWARDEN_CHAT_ID", "chat-from-env")]).await;
    let reply = call(
        &session.client,
        "execute",
        json!({"command": "echo \"$PROCWARDEN_CHAT_ID\""}),
    )
    .await
    .ok();
    assert_eq!(reply.output(), "chat-from-env\n");

    // Without one, each server process is a chat of its own, still passed to children.
    let session = stdio_session(&[]).await;
    let reply = call(
        &session.client,
        "execute",
        json!({"command": "echo \"$PROCWARDEN_CHAT_ID\""}),
    )
    .await
    .ok();
    let chat = reply.output().trim();
    assert_eq!(chat.len(), 36, "{chat:?}");
}

#[tokio::test]
async fn closing_stdin_stops_the_sessions_processes() {
    let session = stdio_session(&[]).await;
    let marker = Marker::new();
    start_background(&session.client, &marker.sleep()).await;
    assert!(eventually(Duration::from_secs(5), || marker.alive()).await);
    let pid = session.server_pid;
    // Closes the child's stdin and waits for it to exit.
    session.client.cancel().await.expect("close the session");
    assert!(
        eventually(Duration::from_secs(10), || !pid_alive(pid)).await,
        "procwarden mcp did not exit on EOF"
    );
    assert!(!marker.alive(), "the session's process outlived it");
}

#[tokio::test]
async fn sigterm_stops_the_sessions_processes() {
    let session = stdio_session(&[]).await;
    let marker = Marker::new();
    start_background(&session.client, &marker.sleep()).await;
    assert!(eventually(Duration::from_secs(5), || marker.alive()).await);
    let pid = session.server_pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || !pid_alive(pid)).await,
        "procwarden mcp did not exit on SIGTERM"
    );
    assert!(!marker.alive(), "the session's process outlived it");
}
