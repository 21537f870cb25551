//! MCP and CLI answers a model or a script cannot misread: MCP's `wait_seconds` (how long to
//! wait) apart from `timeout_seconds` (kill after, as in HTTP and the CLI), `success` only for
//! "exited 0" and `started` for a background start, `process_output` with `wait: false`,
//! `process_list`'s `total`, argument errors as sentences; `procwarden mcp` in the client's
//! directory; `plugin check`'s exit codes; `config check` of `[[tool]]`; the CLI seen by
//! plugins as front end `cli`.

use std::path::PathBuf;
use std::time::Duration;

use procwarden_tests::mcp::{
    Client, HttpServer, call, eventually, start_background, stdio_session, stdio_session_in,
};
use procwarden_tests::*;

/// A Rust component built by `scripts/build-plugins.sh` / `host/build.rs`.
fn component(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is not built", path.display());
    path
}

/// Both transports: a stdio session and an HTTP session (the server is kept alive with it).
async fn both_transports() -> Vec<(&'static str, Client, Option<HttpServer>)> {
    let stdio = stdio_session(&[]).await;
    let server = HttpServer::start();
    let http = server.session(&[]).await;
    vec![("stdio", stdio.client, None), ("http", http, Some(server))]
}

#[tokio::test]
async fn timeout_seconds_kills_and_wait_seconds_only_waits() {
    for (transport, client, _server) in both_transports().await {
        // A kill deadline: the call waits it out and reports how it ended.
        let reply = call(
            &client,
            "execute",
            json!({"command": "echo begun; sleep 30", "timeout_seconds": 1}),
        )
        .await;
        assert!(
            reply.elapsed < Duration::from_secs(12),
            "{transport}: took {:?}",
            reply.elapsed
        );
        let reply = reply.ok();
        assert_eq!(reply.running, Some(false), "{transport}: {reply}");
        assert!(reply.timed_out, "{transport}: {reply}");
        assert_eq!(reply.success, Some(false), "{transport}: {reply}");
        assert_eq!(reply.output(), "begun\n", "{transport}");

        // Only a wait: still running afterwards, and not killed.
        let reply = call(
            &client,
            "execute",
            json!({"command": "sleep 1.5; echo finished", "wait_seconds": 0.3}),
        )
        .await
        .ok();
        assert_eq!(reply.running, Some(true), "{transport}: {reply}");
        assert!(reply.success.is_none(), "{transport}: {reply}");
        let id = reply.process_id().to_owned();
        let reply = call(
            &client,
            "process_output",
            json!({"id": id, "wait_seconds": 10}),
        )
        .await
        .ok();
        assert_eq!(reply.exit_code, Some(0), "{transport}: {reply}");
        assert_eq!(reply.success, Some(true), "{transport}: {reply}");
        assert_eq!(reply.output(), "finished\n", "{transport}");
    }
}

#[tokio::test]
async fn a_background_start_says_started_not_success() {
    for (transport, client, _server) in both_transports().await {
        let reply = call(
            &client,
            "execute",
            json!({"command": "exit 3", "run_in_background": true}),
        )
        .await
        .ok();
        assert_eq!(reply.started, Some(true), "{transport}: {reply}");
        assert!(reply.success.is_none(), "{transport}: {reply}");
        let id = reply.process_id().to_owned();
        let reply = call(&client, "process_output", json!({"id": id}))
            .await
            .ok();
        assert_eq!(reply.exit_code, Some(3), "{transport}: {reply}");
        assert_eq!(reply.success, Some(false), "{transport}: {reply}");
        assert!(reply.started.is_none(), "{transport}: {reply}");
    }
}

#[tokio::test]
async fn process_output_with_wait_false_peeks_at_once() {
    for (transport, client, _server) in both_transports().await {
        let marker = procwarden_tests::mcp::Marker::new();
        let id = start_background(&client, &format!("echo peek; {}", marker.sleep())).await;
        assert!(eventually(Duration::from_secs(5), || marker.alive()).await);
        // Without `wait: false` this would block for the default 10 s.
        let reply = call(&client, "process_output", json!({"id": id, "wait": false})).await;
        assert!(
            reply.elapsed < Duration::from_secs(3),
            "{transport}: took {:?}",
            reply.elapsed
        );
        let reply = reply.ok();
        assert_eq!(reply.running, Some(true), "{transport}: {reply}");
        assert_eq!(reply.output(), "peek\n", "{transport}");
        // A peek with a wait is a contradiction, said as such.
        let text = call(
            &client,
            "process_output",
            json!({"id": id, "wait": false, "wait_timeout_seconds": 5}),
        )
        .await
        .err();
        assert!(text.contains("wait=false"), "{transport}: {text}");
        call(
            &client,
            "process_signal",
            json!({"id": id, "signal": "kill"}),
        )
        .await
        .ok();
    }
}

#[tokio::test]
async fn process_list_reports_the_total_past_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "list_cap = 2\n");
    let session = stdio_session(&["--config", config.to_str().unwrap()]).await;
    let client = &session.client;
    for _ in 0..3 {
        call(client, "execute", json!({"command": "true"}))
            .await
            .ok();
    }
    let list = call(client, "process_list", json!({})).await.ok_list();
    assert_eq!(list.processes.len(), 2, "{list:?}");
    assert_eq!(list.total, 3, "{list:?}");
    let note = list.note.unwrap_or_default();
    assert!(note.contains("Showing 2 of 3"), "{note}");

    let session = stdio_session(&[]).await;
    call(&session.client, "execute", json!({"command": "true"}))
        .await
        .ok();
    let list = call(&session.client, "process_list", json!({}))
        .await
        .ok_list();
    assert_eq!((list.processes.len(), list.total), (1, 1), "{list:?}");
    assert!(list.note.is_none(), "{list:?}");
}

#[tokio::test]
async fn argument_errors_read_as_sentences() {
    for (transport, client, _server) in both_transports().await {
        let cases = [
            (
                "execute",
                json!({"command": "true", "timeout_seconds": "ten"}),
                "`timeout_seconds` must be a number of seconds, got \"ten\".",
            ),
            (
                "execute",
                json!({"command": "true", "wait_seconds": [1]}),
                "`wait_seconds` must be a number of seconds, got [1].",
            ),
            (
                "execute",
                json!({"command": "true", "run_in_background": "yes"}),
                "`run_in_background` must be true or false, got \"yes\".",
            ),
            (
                "execute",
                json!({"command": 5}),
                "`command` must be a string, got 5.",
            ),
            ("execute", json!({}), "`command` is required."),
            (
                "process_output",
                json!({"id": "x", "wait": "no"}),
                "`wait` must be true or false, got \"no\".",
            ),
        ];
        for (tool, args, expected) in cases {
            let text = call(&client, tool, args.clone()).await.err();
            assert_eq!(text, expected, "{transport} {tool} {args}");
        }
        let text = call(&client, "execute", json!({"command": "true", "timeout": 5}))
            .await
            .err();
        assert!(
            text.starts_with("Unknown argument `timeout`; this tool takes `")
                && text.contains("`command`, "),
            "{transport}: {text}"
        );
        assert!(!text.contains("invalid type"), "{transport}: {text}");
    }
}

#[tokio::test]
async fn mcp_over_stdio_runs_commands_in_the_clients_directory() {
    let project = tempfile::tempdir().unwrap();
    let project_dir = project.path().canonicalize().unwrap();
    let session = stdio_session_in(&project_dir, &[]).await;
    let reply = call(&session.client, "execute", json!({"command": "pwd"}))
        .await
        .ok();
    assert_eq!(reply.output().trim(), project_dir.to_str().unwrap());

    // --workdir, relative to where the client started us, wins.
    std::fs::create_dir(project_dir.join("sub")).unwrap();
    let session = stdio_session_in(&project_dir, &["--workdir", "sub"]).await;
    let reply = call(&session.client, "execute", json!({"command": "pwd"}))
        .await
        .ok();
    assert_eq!(
        reply.output().trim(),
        project_dir.join("sub").to_str().unwrap()
    );

    // A config file's workdir is kept over the client's directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let elsewhere_dir = elsewhere.path().canonicalize().unwrap();
    let config = write_config(
        project.path(),
        &format!("workdir = {:?}\n", elsewhere_dir.display().to_string()),
    );
    let session = stdio_session_in(&project_dir, &["--config", config.to_str().unwrap()]).await;
    let reply = call(&session.client, "execute", json!({"command": "pwd"}))
        .await
        .ok();
    assert_eq!(reply.output().trim(), elsewhere_dir.to_str().unwrap());
}

#[tokio::test]
async fn mcp_workdir_flag_must_be_a_directory() {
    let out = procwarden_command()
        .args(["mcp", "--workdir", "/no/such/dir"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--workdir /no/such/dir is not a directory"),
        "{stderr}"
    );
}

#[tokio::test]
async fn plugin_check_tells_denied_from_broken() {
    let deny = component("deny");
    let trap = component("faulty_trap");
    let not_a_component = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_a_component.path(), "not wasm").unwrap();
    let check = |plugin: PathBuf, command: &'static str| async move {
        let settings = r#"patterns = ["sudo"]"#;
        let path = plugin.to_str().unwrap();
        let mut args = vec!["plugin", "check", path];
        if plugin.ends_with("deny.wasm") {
            args.extend(["--settings", settings]);
        }
        args.extend(["--", command]);
        cli(&args, &[]).await
    };
    let o = check(deny.clone(), "ls").await;
    assert_eq!(o.code, Some(0), "allowed: {o:?}");
    let o = check(deny, "sudo ls").await;
    assert_eq!(o.code, Some(1), "denied: {o:?}");
    // Broken (whatever on_error made of the request): 4.
    let o = check(trap, "ls").await;
    assert_eq!(o.code, Some(4), "trapped: {o:?}");
    let o = check(not_a_component.path().to_owned(), "ls").await;
    assert_eq!(o.code, Some(4), "cannot load: {o:?}");
}

#[tokio::test]
async fn config_check_validates_tool_entries() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[[tool]]\npath = \"builtin:serve\"\n").unwrap();
    let o = cli(&["config", "check", good.to_str().unwrap()], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");

    let missing = dir.path().join("missing.toml");
    std::fs::write(&missing, "[[tool]]\npath = \"no-such-tool.wasm\"\n").unwrap();
    let o = cli(&["config", "check", missing.to_str().unwrap()], &[]).await;
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(
        o.stdout.contains("tool plugin no-such-tool") && o.stdout.contains("cannot be loaded"),
        "{o:?}"
    );

    // A policy plugin is not a tool plugin.
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        format!(
            "[[tool]]\npath = {:?}\n",
            component("deny").display().to_string()
        ),
    )
    .unwrap();
    let o = cli(&["config", "check", wrong.to_str().unwrap()], &[]).await;
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stdout.contains("tool plugin deny"), "{o:?}");

    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[[tool]]\npath = \"builtin:serve\"\ntimeout = 5\n").unwrap();
    let o = cli(&["config", "check", typo.to_str().unwrap()], &[]).await;
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stdout.contains("timeout"), "{o:?}");
}

#[tokio::test]
async fn plugins_see_the_cli_as_front_end_cli() {
    let toml = format!(
        "[[plugin]]\npath = {:?}\n",
        component("faulty_questions").display().to_string()
    );
    let server = Server::with_config(&toml);
    // The fixture denies `front-end` with the front end it was told.
    let o = cli(&["run", "--url", server.url(), "--", "front-end"], &[]).await;
    assert_eq!(o.code, Some(3), "{o:?}");
    assert!(o.stderr.contains(": cli"), "{o:?}");
    let message = server
        .api()
        .start_req(&json!({"command": "front-end"}))
        .await
        .error(403);
    assert!(message.ends_with(": http"), "{message}");
}
