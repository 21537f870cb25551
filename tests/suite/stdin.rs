//! Stdin through the server: `stdin: "pipe"` and `tty: true` at start, `POST /{id}/input`,
//! `waiting_for_input` on output and list, the 409s, chat isolation, both containment modes;
//! MCP `execute` with a pipe answered by `process_input`, and the MCP read options.

use std::time::Duration;

use procwarden_tests::mcp::{self as m, call};
use procwarden_tests::*;
use serde_json::Value;

/// The server in each containment mode: the machine's default (cgroup where writable) and
/// forced subreaper.
fn servers() -> Vec<(String, Server)> {
    let default = Server::start();
    let subreaper = Server::with_config("containment = \"subreaper\"\n");
    vec![("default".into(), default), ("subreaper".into(), subreaper)]
}

async fn input(api: &Api, id: &str, body: Value) -> Resp {
    api.post(&format!("/api/v0/processes/{id}/input"), &body)
        .await
}

/// A prompt that reads a line from a pipe (bash prints `read -p` prompts only on terminals).
const PROMPT: &str = "bash -c 'read -r -p \"name? \" name; echo \"hello $name\"'";

#[tokio::test]
async fn a_read_prompt_is_seen_waiting_then_answered_through_input_in_both_modes() {
    for (mode, server) in servers() {
        let api = server.api();
        let resp = api
            .start_wait_req(&json!({"command": PROMPT, "stdin": "pipe"}))
            .await;
        resp.expect_status(200);
        // The wait ends because the command blocks reading: it cannot go on by itself.
        let reply: StartWaitReply = resp.json();
        let id = reply.start.id.clone();
        assert_eq!(
            reply.output.ended_by.as_deref(),
            Some("input"),
            "{mode}: {reply}"
        );
        assert!(reply.output.running, "{mode}: {reply}");
        assert!(reply.output.waiting_for_input, "{mode}: {reply}");
        let listed = api.list().await;
        let entry = listed.iter().find(|p| p.id == id).expect("listed");
        assert_eq!(entry.stdin, "pipe", "{mode}");
        assert!(entry.waiting_for_input, "{mode}: {entry}");

        let resp = input(&api, &id, json!({"data": "world\n"})).await;
        resp.expect_status(200);
        let wrote: InputReply = resp.json();
        assert_eq!(
            wrote,
            InputReply {
                written: 6,
                eof: false
            },
            "{mode}"
        );
        let done = api.wait_exit(&id).await;
        assert_eq!(done.output, "hello world\n", "{mode}: {done}");
        assert!(!done.waiting_for_input, "{mode}: {done}");
        assert_eq!(done.exit_code, Some(0), "{mode}");
        let listed = api.list().await;
        let entry = listed.iter().find(|p| p.id == id).expect("listed");
        assert!(!entry.waiting_for_input, "{mode}: {entry}");
        // Exited: its input is closed.
        let late = input(&api, &id, json!({"data": "again\n"})).await;
        assert!(
            late.error(409).contains("has exited"),
            "{mode}: {}",
            late.text
        );
    }
}

#[tokio::test]
async fn the_default_stdin_still_gets_eof_at_once() {
    let server = Server::start();
    let api = server.api();
    let resp = api
        .start_wait_req(&json!({"command": "cat; echo done"}))
        .await;
    resp.expect_status(200);
    let reply: StartWaitReply = resp.json();
    assert_eq!(reply.output.exit_code, Some(0), "{reply}");
    assert_eq!(reply.output.output, "done\n");
    assert!(!reply.output.waiting_for_input);
    let entry = api
        .list()
        .await
        .into_iter()
        .find(|p| p.id == reply.start.id);
    assert_eq!(entry.expect("listed").stdin, "null");
}

#[tokio::test]
async fn eof_ends_the_input_and_input_is_refused_where_it_cannot_go() {
    for (mode, server) in servers() {
        let api = server.api();
        // No stdin pipe: refused with a clear message.
        let plain = api.start("exec sleep 1000").await;
        let refused = input(&api, &plain, json!({"data": "x"})).await;
        assert!(
            refused.error(409).contains("without a stdin pipe"),
            "{mode}: {}",
            refused.text
        );
        api.signal(&plain, "kill").await.expect_status(200);

        // eof: the reader sees end-of-file; the shell then sleeps, so it is still running.
        let id = api
            .start_with(json!({"command": "wc -c; exec sleep 1000", "stdin": "pipe"}))
            .await;
        let resp = input(&api, &id, json!({"data": "abc", "eof": true})).await;
        resp.expect_status(200);
        assert_eq!(
            resp.json::<InputReply>(),
            InputReply {
                written: 3,
                eof: true
            }
        );
        let counted = api
            .get(&format!(
                "/api/v0/processes/{id}/output?wait=true&until=regex:3"
            ))
            .await;
        counted.expect_status(200);
        let counted: OutputSnapshot = counted.json();
        assert_eq!(counted.output.trim(), "3", "{mode}: {counted}");
        let after = input(&api, &id, json!({"data": "more"})).await;
        assert!(
            after.error(409).contains("end-of-file"),
            "{mode}: {}",
            after.text
        );
        api.signal(&id, "kill").await.expect_status(200);
        api.wait_exit(&id).await;

        // Unknown process, malformed body.
        input(&api, "no-such-id", json!({"data": "x"}))
            .await
            .expect_status(404);
        let bad = input(&api, &id, json!({"data": "x", "extra": 1})).await;
        bad.expect_status(400);
    }
}

#[tokio::test]
async fn bad_stdin_options_are_refused_before_anything_starts() {
    let server = Server::start();
    let api = server.api();
    for (body, words) in [
        (json!({"command": "true", "stdin": "file"}), "Invalid stdin"),
        (json!({"command": "true", "rows": 10}), "need tty true"),
        (
            json!({"command": "true", "tty": true, "stdin": "null"}),
            "tty",
        ),
        (
            json!({"command": "true", "tty": true, "cols": 0}),
            "cols must be",
        ),
    ] {
        let resp = api.start_req(&body).await;
        assert!(resp.error(400).contains(words), "{body}: {}", resp.text);
    }
    assert!(api.list().await.is_empty(), "nothing started");
}

#[tokio::test]
async fn another_chat_cannot_write_to_a_process_or_see_it_waiting() {
    let server = Server::start();
    let alice = server.api().chat("alice");
    let bob = server.api().chat("bob");
    let id = alice
        .start_with(json!({"command": "read -r line; echo \"got $line\"", "stdin": "pipe"}))
        .await;
    input(&bob, &id, json!({"data": "intruder\n"}))
        .await
        .expect_status(404);
    assert!(bob.list().await.is_empty());
    input(&alice, &id, json!({"data": "mine\n"}))
        .await
        .expect_status(200);
    assert_eq!(alice.wait_exit(&id).await.output, "got mine\n");
}

/// Whether `python3` runs under the agent (it is not on every machine).
async fn agent_has_python(api: &Api) -> bool {
    let resp = api
        .start_wait_req(&json!({"command": "python3 -c 'print(1)'"}))
        .await;
    resp.expect_status(200);
    resp.json::<StartWaitReply>().output.exit_code == Some(0)
}

#[tokio::test]
async fn a_tty_is_a_terminal_of_the_given_size_and_shows_prompts() {
    for (mode, server) in servers() {
        let api = server.api();
        let resp = api
            .start_wait_req(&json!({
                "command": "stty size; [ -t 0 ] && [ -t 1 ] && echo terminal",
                "tty": true, "rows": 40, "cols": 120,
            }))
            .await;
        resp.expect_status(200);
        let reply: StartWaitReply = resp.json();
        assert_eq!(
            reply.output.output, "40 120\r\nterminal\r\n",
            "{mode}: {reply}"
        );
        let entry = api
            .list()
            .await
            .into_iter()
            .find(|p| p.id == reply.start.id);
        assert_eq!(entry.expect("listed").stdin, "tty");

        // On a terminal bash shows its read -p prompt, and the answer is echoed.
        let resp = api
            .start_wait_req(&json!({"command": PROMPT, "tty": true}))
            .await;
        let reply: StartWaitReply = resp.json();
        assert_eq!(
            reply.output.ended_by.as_deref(),
            Some("input"),
            "{mode}: {reply}"
        );
        assert_eq!(reply.output.output, "name? ", "{mode}: {reply}");
        input(&api, &reply.start.id, json!({"data": "tty\n"}))
            .await
            .expect_status(200);
        let done = api.wait_exit(&reply.start.id).await;
        assert_eq!(done.output, "name? tty\r\nhello tty\r\n", "{mode}: {done}");

        if !agent_has_python(&api).await {
            skip(
                &format!("python3 isatty check ({mode})"),
                "no python3 on the agent's PATH",
            );
            continue;
        }
        let resp = api
            .start_wait_req(&json!({
                "command": "python3 -c 'import sys; print(sys.stdin.isatty())'",
                "tty": true,
            }))
            .await;
        let reply: StartWaitReply = resp.json();
        assert_eq!(reply.output.output, "True\r\n", "{mode}: {reply}");
        let resp = api
            .start_wait_req(&json!({
                "command": "python3 -c 'import sys; print(sys.stdin.isatty())'",
            }))
            .await;
        let reply: StartWaitReply = resp.json();
        assert_eq!(
            reply.output.output, "False\n",
            "{mode}: without tty: {reply}"
        );
    }
}

#[tokio::test]
async fn mcp_execute_with_a_pipe_returns_at_the_prompt_and_process_input_answers_it() {
    let session = m::stdio_session(&[]).await;
    let client = &session.client;
    let started = call(
        client,
        "execute",
        json!({"command": PROMPT, "stdin": "pipe", "timeout_seconds": 30}),
    )
    .await;
    assert!(!started.is_error, "{}", started.text);
    let json = &started.json;
    assert!(
        started.elapsed < Duration::from_secs(20),
        "returned at the prompt, not at the timeout"
    );
    assert_eq!(json["ended_by"], "input", "{}", started.text);
    assert_eq!(json["waiting_for_input"], true, "{}", started.text);
    assert!(
        json["note"]
            .as_str()
            .unwrap_or_default()
            .contains("process_input"),
        "{}",
        started.text
    );
    let id = json["process_id"].as_str().expect("process_id").to_owned();

    let answered = call(
        client,
        "process_input",
        json!({"id": id, "data": "model\n"}),
    )
    .await;
    assert!(!answered.is_error, "{}", answered.text);
    assert_eq!(answered.json["written"], 6, "{}", answered.text);
    let since = answered.json["since"].as_u64().expect("since");
    let reply = call(
        client,
        "process_output",
        json!({"id": id, "since": since, "wait_timeout_seconds": 10}),
    )
    .await;
    assert!(
        reply.json["output"]
            .as_str()
            .unwrap_or_default()
            .contains("hello model"),
        "{}",
        reply.text
    );

    // Without a pipe, and with nothing to write, the tool says what to do.
    let plain = m::start_background(client, "sleep 1000").await;
    let refused = call(client, "process_input", json!({"id": plain, "data": "x"}))
        .await
        .err();
    assert!(refused.contains("without a stdin pipe"), "{refused}");
    let empty = call(client, "process_input", json!({"id": plain}))
        .await
        .err();
    assert!(empty.contains("Nothing to write"), "{empty}");
    call(
        client,
        "process_signal",
        json!({"id": plain, "signal": "kill"}),
    )
    .await;
}

#[tokio::test]
async fn mcp_process_output_reads_by_offset_lines_grep_and_cursor() {
    let session = m::stdio_session(&[]).await;
    let client = &session.client;
    let reply = call(
        client,
        "execute",
        json!({"command": "for i in 1 2 3 4 5 6 7 8 9 10; do echo line$i; done; echo 'error: boom'; echo tail"}),
    )
    .await;
    assert!(!reply.is_error, "{}", reply.text);
    let id = reply.json["process_id"]
        .as_str()
        .expect("process_id")
        .to_owned();
    let read = |args: Value| {
        let mut args = args;
        args["id"] = json!(id);
        args["wait_timeout_seconds"] = json!(0);
        async move {
            let reply = call(client, "process_output", args).await;
            assert!(!reply.is_error, "{}", reply.text);
            reply.json
        }
    };
    // Bytes: "line1\n" is 6 bytes; offset 6, limit 6 is "line2\n".
    let bytes = read(json!({"offset": 6, "limit": 6})).await;
    assert_eq!(bytes["output"], "line2\n", "{bytes}");
    assert_eq!(bytes["covers"]["start"], 6, "{bytes}");
    assert_eq!(bytes["covers"]["end"], 12, "{bytes}");
    // Lines, negative from the end.
    let lines = read(json!({"lines": "-2:"})).await;
    assert_eq!(lines["output"], "error: boom\ntail\n", "{lines}");
    assert_eq!(lines["lines"]["first"], 11, "{lines}");
    // grep with context: numbered lines around the match.
    let grep = read(json!({"grep": "error", "context": 1})).await;
    let text = grep["output"].as_str().unwrap_or_default();
    assert!(text.contains("11:error: boom"), "{grep}");
    assert!(text.contains("line10") && text.contains("tail"), "{grep}");
    assert_eq!(grep["grep"]["matches"], 1, "{grep}");
    // A cursor: only what came after it.
    let total = grep["covers"]["total_bytes"].as_u64().expect("total");
    let since = read(json!({"since": total - 5})).await;
    assert_eq!(since["output"], "tail\n", "{since}");
    assert_eq!(since["covers"]["end"], total, "{since}");
}

#[tokio::test]
async fn cli_run_i_forwards_its_stdin_and_ends_it_at_eof() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start();
    let mut cmd = tokio::process::Command::from(procwarden_command());
    cmd.args([
        "run",
        "-i",
        "--url",
        server.url(),
        "-c",
        "read -r a; read -r b; echo \"$a+$b\"; wc -l; exit 3",
    ])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn procwarden run -i");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all("x\nÿ\nl1\nl2\n".as_bytes()).await.unwrap();
    // End-of-file here is end-of-file for the command: wc counts and exits.
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("run -i finishes once its stdin ends")
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "x+ÿ\n2\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3));
}
