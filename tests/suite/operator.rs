//! What an operator relies on: `serve` honouring its token, sessionless MCP requests kept out of
//! other chats, typo'd start fields refused, the CLI's exit codes, quoting, ID prefixes, `ps`
//! options, `stop`, signal names, `config check` and completions.

use std::time::Duration;

use procwarden_tests::mcp::{HttpServer, call, start_background};
use procwarden_tests::*;

const GONE: Duration = Duration::from_secs(10);
const TOKEN: &str = "env-token-0123456789";

fn example_config() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/procwarden.example.toml")
}

// --- serve --token / PROCWARDEN_TOKEN ---------------------------------------------------------

#[tokio::test]
async fn serve_takes_its_token_from_the_environment() {
    let server = Server::builder().env("PROCWARDEN_TOKEN", TOKEN).spawn();
    server.api().get("/api/v0/processes/list").await.error(401);
    server
        .api()
        .start_req(&json!({"command": "echo nope"}))
        .await
        .error(401);
    server.api().get("/mcp").await.error(401);
    let good = server.api().token(TOKEN);
    let id = good.start("echo yes").await;
    assert_eq!(good.wait_exit(&id).await.output, "yes\n");
    // The CLI reads the same variable.
    let o = cli(
        &["ps", "-q", "--url", server.url()],
        &[("PROCWARDEN_TOKEN", TOKEN)],
    )
    .await;
    assert_eq!(o.stdout.trim(), id, "{o:?}");
}

#[tokio::test]
async fn serve_token_flag_overrides_the_config() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "token = \"from-the-config-file\"\n");
    let mut child = procwarden_command()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--config",
        ])
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("procwarden listening on ")
        .unwrap();
    let api = Api::new(url);
    api.get("/api/v0/health").await.error(401);
    api.token("from-the-config-file")
        .get("/api/v0/health")
        .await
        .error(401);
    assert_eq!(api.token(TOKEN).health().await.status, "ok");
    child.kill().unwrap();
    child.wait().unwrap();

    // An empty token is a mistake, not "no token".
    let out = procwarden_command()
        .args(["serve", "--listen", "127.0.0.1:0", "--token", ""])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("token must not be blank"));

    // A short one is as weak from the command line as from the file.
    let out = procwarden_command()
        .args(["serve", "--listen", "127.0.0.1:0", "--token", "short-token"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--token (or PROCWARDEN_TOKEN)"), "{stderr}");
    assert!(stderr.contains("at least 16 bytes"), "{stderr}");
}

// --- MCP over HTTP without a session or chat ----------------------------------------------------

#[tokio::test]
async fn sessionless_mcp_request_without_a_chat_is_refused() {
    let server = HttpServer::start();
    let owner = server
        .stateless_client(&[("Procwarden-Chat-Id", "owner-chat")])
        .await;
    let id = start_background(&owner, "sleep 30").await;

    // A raw stateless JSON-RPC call, as a client on a protocol revision without sessions
    // sends it: no Mcp-Session-Id, no chat header.
    let http = reqwest::Client::new();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "process_list", "arguments": {}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}}});
    let reply = http
        .post(server.mcp_url())
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2026-07-28")
        .header("Mcp-Method", "tools/call")
        .header("Mcp-Name", "process_list")
        .json(&body)
        .send()
        .await
        .unwrap();
    let text = reply.text().await.unwrap();
    assert!(!text.contains(&id), "another chat's process leaked: {text}");
    assert!(text.contains("Procwarden-Chat-Id"), "{text}");

    // The SDK's stateless client without a chat header gets the same sentence for every tool.
    let anonymous = server.stateless_client(&[]).await;
    let err = call(&anonymous, "process_list", json!({})).await.err();
    assert!(err.contains("Procwarden-Chat-Id"), "{err}");
    let err = call(&anonymous, "process_output", json!({"id": id}))
        .await
        .err();
    assert!(err.contains("Procwarden-Chat-Id"), "{err}");
    let err = call(&anonymous, "execute", json!({"command": "echo hi"}))
        .await
        .err();
    assert!(err.contains("Procwarden-Chat-Id"), "{err}");
    call(
        &owner,
        "process_signal",
        json!({"id": id, "signal": "kill"}),
    )
    .await
    .ok();
}

// --- unknown fields of a start body -------------------------------------------------------------

#[tokio::test]
async fn typod_start_fields_are_refused_by_name() {
    let server = Server::start();
    for field in ["backgroud", "timeout_second"] {
        let body = server
            .api()
            .start_req(&json!({"command": "echo hi", field: true}))
            .await
            .error_body(400);
        assert!(
            body.message.starts_with(&format!(
                "Unknown field \"{field}\" in the start request; known fields: command,"
            )),
            "{body:?}"
        );
    }
    assert!(server.api().list().await.is_empty(), "nothing was started");
}

#[tokio::test]
async fn lenient_start_body_ignores_unknown_fields() {
    let server = Server::with_config("lenient_start_body = true\n");
    let reply = server
        .api()
        .start_reply(json!({"command": "echo lenient", "backgroud": true}))
        .await;
    assert!(!reply.background);
    assert_eq!(server.api().wait_exit(&reply.id).await.output, "lenient\n");
}

// --- CLI ---------------------------------------------------------------------------------------

#[tokio::test]
async fn run_quotes_each_word_and_c_takes_a_shell_line() {
    let server = Server::start();
    let url = server.url();
    let o = cli(
        &["run", "--url", url, "--", "echo", "a    b", "$HOME", "it's"],
        &[],
    )
    .await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.stdout, "a    b $HOME it's\n", "{o:?}");
    let o = cli(&["run", "--url", url, "printf", "%s|", "x y", "-n"], &[]).await;
    assert_eq!(o.stdout, "x y|-n|", "{o:?}");
    let o = cli(&["run", "--url", url, "-c", "echo a; exit 6"], &[]).await;
    assert_eq!((o.code, o.stdout.as_str()), (Some(6), "a\n"), "{o:?}");
}

#[tokio::test]
async fn a_policy_denial_exits_3_and_client_errors_2() {
    let server = Server::start();
    let o = cli(&["run", "--url", server.url(), "-c", "rm -rf /"], &[]).await;
    assert_eq!(o.code, Some(3), "{o:?}");
    assert!(
        o.stderr.contains("Denied by policy plugin \"deny\""),
        "{o:?}"
    );
    let o = cli(&["run", "--url", &unreachable_url(), "true"], &[]).await;
    assert_cli_error(&o);
}

#[tokio::test]
async fn run_timeout_exits_124_and_output_wait_exits_with_the_code() {
    let server = Server::start();
    let url = server.url();
    let m = Marker::new();
    let o = cli(
        &["run", "--url", url, "--timeout", "1", "-c", &m.sleep()],
        &[],
    )
    .await;
    assert_eq!(o.code, Some(124), "{o:?}");
    m.assert_gone(GONE, "after --timeout").await;

    let o = cli(
        &[
            "run",
            "--url",
            url,
            "--background",
            "-c",
            "sleep 0.3; exit 5",
        ],
        &[],
    )
    .await;
    let id = o.stdout.trim().to_owned();
    let o = cli(&["output", "--url", url, "--wait", &id], &[]).await;
    assert_eq!(o.code, Some(5), "{o:?}");
    // Without --wait, reading output succeeds whatever the code.
    let o = cli(&["output", "--url", url, &id], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
}

#[tokio::test]
async fn ps_shows_short_ids_that_work_as_prefixes() {
    let server = Server::start();
    let url = server.url();
    let m = Marker::new();
    let running = server
        .api()
        .start_with(json!({"command": m.sleep(), "background": true}))
        .await;
    let done = server.api().start("echo done").await;
    server.api().wait_exit(&done).await;

    let o = cli(&["ps", "--url", url], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(
        o.stdout.contains(&running[..12]) && !o.stdout.contains(&running),
        "{o:?}"
    );
    let o = cli(&["ps", "--url", url, "-q"], &[]).await;
    let mut ids: Vec<&str> = o.stdout.lines().collect();
    ids.sort_unstable();
    let mut expected = vec![running.as_str(), done.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected, "{o:?}");
    let o = cli(&["ps", "--url", url, "-q", "--running"], &[]).await;
    assert_eq!(o.stdout, format!("{running}\n"), "{o:?}");

    let o = cli(&["output", "--url", url, &done[..8]], &[]).await;
    assert_eq!(o.stdout, "done\n", "{o:?}");
    let o = cli(&["output", "--url", url, "zzzz"], &[]).await;
    assert_cli_error(&o);
    assert!(o.stderr.contains("no process ID starts with"), "{o:?}");
    let o = cli(&["kill", "--url", url, "-s", "TERM", &running[..8]], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stdout.contains("terminate"), "{o:?}");
    m.assert_gone(GONE, "after kill -s TERM").await;
}

#[tokio::test]
async fn ps_cuts_long_commands_with_an_ellipsis_unless_all() {
    let server = Server::start();
    let url = server.url();
    let long = format!("echo {}", "y".repeat(100));
    let id = server.api().start(&long).await;
    server.api().wait_exit(&id).await;
    let o = cli(&["ps", "--url", url], &[]).await;
    assert!(o.stdout.contains('…') && !o.stdout.contains(&long), "{o:?}");
    let o = cli(&["ps", "--url", url, "-a"], &[]).await;
    assert!(o.stdout.contains(&long), "{o:?}");
}

#[tokio::test]
async fn stop_terminates_then_kills_what_ignores_term() {
    let server = Server::start();
    let url = server.url();
    let polite = Marker::new();
    let id = server
        .api()
        .start_with(json!({"command": polite.sleep(), "background": true}))
        .await;
    let o = cli(&["stop", "--url", url, &id], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stdout.contains("stopped"), "{o:?}");
    polite.assert_gone(GONE, "after stop").await;

    let stubborn = Marker::new();
    let id = server
        .api()
        .start_with(json!({
            "command": format!("trap '' TERM; {} & wait; wait", stubborn.sleep()),
            "background": true
        }))
        .await;
    assert!(stubborn.wait_sleeps(1, GONE).await);
    let o = cli(&["stop", "--url", url, "--grace", "1", &id], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stdout.contains("was killed"), "{o:?}");
    stubborn.assert_gone(GONE, "after stop's kill").await;

    // Stopping what has stopped already succeeds, as `docker stop` does.
    let o = cli(&["stop", "--url", url, &id], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stdout.contains("already stopped"), "{o:?}");
}

#[tokio::test]
async fn signal_names_reach_the_process_and_unknown_ones_are_usage_errors() {
    let server = Server::start();
    let m = Marker::new();
    let id = server
        .api()
        .start_with(json!({"command": m.sleep(), "background": true}))
        .await;
    let o = cli(
        &["kill", "--url", server.url(), "--signal", "sigint", &id],
        &[],
    )
    .await;
    // The CLI and the API take the same names.
    assert_eq!(o.code, Some(0), "{o:?}");
    m.assert_gone(GONE, "after SIGINT").await;
    let o = cli(
        &["kill", "--url", server.url(), "--signal", "WINCH", &id],
        &[],
    )
    .await;
    assert_eq!(o.code, Some(2), "unknown names are usage errors: {o:?}");
}

#[tokio::test]
async fn client_flags_belong_to_client_subcommands() {
    for args in [
        vec!["serve", "--url", "http://127.0.0.1:1"],
        vec!["mcp", "--url", "http://127.0.0.1:1"],
        vec!["--url", "http://127.0.0.1:1", "ps"],
    ] {
        let o = cli(&args, &[]).await;
        assert_eq!(o.code, Some(2), "{args:?}: {o:?}");
        assert!(o.stderr.contains("unexpected argument"), "{o:?}");
    }
}

#[tokio::test]
async fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let o = cli(&["completions", shell], &[]).await;
        assert_eq!(o.code, Some(0), "{o:?}");
        assert!(
            o.stdout.contains("procwarden") && o.stdout.contains("stop"),
            "{o:?}"
        );
    }
}

// --- config check -------------------------------------------------------------------------------

#[tokio::test]
async fn config_check_accepts_the_shipped_example() {
    let path = example_config();
    let o = cli(&["config", "check", path.to_str().unwrap()], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stdout.trim_end().ends_with(": valid"), "{o:?}");
}

#[tokio::test]
async fn config_check_refuses_an_open_listener_without_a_token_as_serve_does() {
    let dir = tempfile::tempdir().unwrap();
    // Port 0: were it not refused, `serve` below would listen rather than hang on a bind.
    let open = write_config(dir.path(), "listen = \"0.0.0.0:0\"\n");
    let path = open.to_str().unwrap();
    let ways = [
        "`token` in the config file",
        "serve --token",
        "PROCWARDEN_TOKEN",
    ];

    let o = cli(&["config", "check", path], &[]).await;
    assert_eq!(o.code, Some(1), "{o:?}");
    assert_eq!(o.stdout.lines().count(), 1, "{o:?}");
    assert!(o.stdout.contains("0.0.0.0:0"), "{o:?}");
    for way in ways {
        assert!(o.stdout.contains(way), "{way}: {o:?}");
    }
    // `serve` refuses the same file with the same three ways out.
    let o = cli(&["serve", "--config", path], &[]).await;
    assert_cli_error(&o);
    for way in ways {
        assert!(o.stderr.contains(way), "{way}: {o:?}");
    }

    // A token from the environment `serve` would read counts, and must be one.
    let o = cli(&["config", "check", path], &[("PROCWARDEN_TOKEN", TOKEN)]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    let o = cli(&["config", "check", path], &[("PROCWARDEN_TOKEN", "short")]).await;
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(
        o.stdout.contains("PROCWARDEN_TOKEN: token must be"),
        "{o:?}"
    );
    // So does one in the file.
    let with_token = write_config(
        dir.path(),
        &format!("listen = \"0.0.0.0:0\"\ntoken = {TOKEN:?}\n"),
    );
    let o = cli(&["config", "check", with_token.to_str().unwrap()], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
}

#[tokio::test]
async fn config_check_reports_each_problem_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let typo = write_config(dir.path(), "listen = \"127.0.0.1:7077\"\nwait_cap = 3\n");
    let o = cli(&["config", "check", typo.to_str().unwrap()], &[]).await;
    assert_eq!(o.code, Some(1), "{o:?}");
    assert_eq!(o.stdout.lines().count(), 1, "{o:?}");
    assert!(
        o.stdout
            .contains("line 2, column 1: unknown field `wait_cap`"),
        "{o:?}"
    );

    let missing = write_config(
        dir.path(),
        "[[plugin]]\npath = \"gone.wasm\"\n[[plugin]]\npath = \"also_gone.wasm\"\n",
    );
    let o = cli(&["config", "check", missing.to_str().unwrap()], &[]).await;
    assert_eq!(o.code, Some(1), "{o:?}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{o:?}");
    assert!(
        lines[0].contains("plugin gone") && lines[1].contains("plugin also_gone"),
        "{o:?}"
    );
}
