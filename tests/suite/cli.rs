//! The CLI client against a real server: run (foreground/background, exit codes, workdir, env,
//! timeout, re-waiting across the server cap), ps, output, kill, chat and token flags, error
//! convention (exit 2, one `procwarden:` line on stderr).

use std::time::Duration;

use procwarden_tests::*;

const GONE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn run_prints_output_and_exits_zero() {
    let server = Server::start();
    let o = cli(&["--url", server.url(), "run", "echo", "hi"], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.stdout, "hi\n", "{o:?}");
    // Words are joined with spaces and run by sh.
    let o = cli(&["--url", server.url(), "run", "echo a b; echo c"], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.stdout, "a b\nc\n", "{o:?}");
}

#[tokio::test]
async fn run_exits_with_the_commands_exit_code() {
    let server = Server::start();
    let o = cli(&["--url", server.url(), "run", "exit 3"], &[]).await;
    assert_eq!(o.code, Some(3), "{o:?}");
    let o = cli(
        &[
            "--url",
            server.url(),
            "run",
            "echo out; echo err >&2; exit 7",
        ],
        &[],
    )
    .await;
    assert_eq!(o.code, Some(7), "{o:?}");
    assert!(
        o.stdout.contains("out") && o.stdout.contains("err"),
        "{o:?}"
    );
}

#[tokio::test]
async fn url_from_environment() {
    let server = Server::start();
    let o = cli(
        &["run", "echo via-env"],
        &[("PROCWARDEN_URL", server.url())],
    )
    .await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.stdout, "via-env\n");
}

#[tokio::test]
async fn background_ps_output_kill() {
    let server = Server::start();
    let m = Marker::new();
    let url = server.url();
    let o = cli(
        &[
            "--url",
            url,
            "run",
            "--background",
            "echo started;",
            &m.sleep(),
        ],
        &[],
    )
    .await;
    assert_eq!(o.code, Some(0), "{o:?}");
    let id = o.stdout.trim().to_string();
    uuid::Uuid::parse_str(&id).unwrap_or_else(|_| panic!("expected an id on stdout: {o:?}"));
    assert!(m.wait_sleeps(1, GONE).await);
    let info = server.api().list().await;
    assert!(info[0].background, "{:?}", info);

    let ps = cli(&["--url", url, "ps"], &[]).await;
    assert_eq!(ps.code, Some(0), "{ps:?}");
    assert!(ps.stdout.contains(&id[..8]), "ps lists the id: {ps:?}");
    assert!(ps.stdout.contains("sleep"), "ps shows the command: {ps:?}");
    let header = ps.stdout.lines().next().unwrap_or_default();
    for col in ["ID", "STATE", "EXIT", "AGE", "COMMAND"] {
        assert!(header.contains(col), "ps header lacks {col}: {ps:?}");
    }

    let psj = cli(&["--url", url, "ps", "--json"], &[]).await;
    assert_eq!(psj.code, Some(0), "{psj:?}");
    // `--json` prints the API's reply as it came.
    let v: ListReply = serde_json::from_str(&psj.stdout).expect("ps --json is the list reply");
    assert_eq!(v.processes[0].id, id, "{v}");
    assert!(v.processes[0].running, "{v}");

    let o = cli(&["--url", url, "output", &id], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stdout.contains("started"), "{o:?}");

    let o = cli(&["--url", url, "kill", &id], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    m.assert_gone(GONE, "after `procwarden kill`").await;

    let o = cli(&["--url", url, "output", &id, "--wait", "--json"], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    let v: OutputSnapshot =
        serde_json::from_str(&o.stdout).expect("output --json is the output reply");
    assert!(!v.running, "{v}");
    assert_eq!(v.exit_code, Some(137), "default kill is SIGKILL: {v}");

    // Killing again: 409 -> client error convention.
    let o = cli(&["--url", url, "kill", &id], &[]).await;
    assert_cli_error(&o);
}

#[tokio::test]
async fn kill_terminate_flag_sends_sigterm() {
    let server = Server::start();
    let m = Marker::new();
    let id = server.api().start(&m.sleep()).await;
    let o = cli(&["--url", server.url(), "kill", &id, "--terminate"], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    let body = server.api().wait_exit(&id).await;
    assert_eq!(body.exit_code, Some(143), "{body}");
    m.assert_gone(GONE, "after terminate").await;
}

#[tokio::test]
async fn run_workdir_env_and_timeout_flags() {
    let server = Server::start();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let dir_s = std::fs::canonicalize(dir.path()).unwrap();
    let dir_s = dir_s.to_str().unwrap();
    let o = cli(
        &[
            "--url",
            url,
            "run",
            "--workdir",
            dir_s,
            "--env",
            "PW_A=one",
            "--env",
            "PW_B=two=2",
            "pwd -P; printenv PW_A; printenv PW_B",
        ],
        &[],
    )
    .await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.stdout, format!("{dir_s}\none\ntwo=2\n"), "{o:?}");

    let m = Marker::new();
    let t0 = std::time::Instant::now();
    let o = cli(&["--url", url, "run", "--timeout", "1", &m.sleep()], &[]).await;
    assert_ne!(o.code, Some(0), "timed-out command is a failure: {o:?}");
    assert!(secs(t0) < 10.0);
    m.assert_gone(GONE, "after --timeout").await;
    let list = server.api().list().await;
    assert!(list[0].timed_out, "{}", list[0]);
}

#[tokio::test]
async fn run_rewaits_across_the_server_cap() {
    let server = Server::with_config("wait_cap_seconds = 0.5\n");
    let o = cli(
        &[
            "--url",
            server.url(),
            "run",
            "sleep 1.3; echo finally; exit 4",
        ],
        &[],
    )
    .await;
    assert_eq!(o.code, Some(4), "{o:?}");
    assert_eq!(o.stdout, "finally\n", "{o:?}");
}

#[tokio::test]
async fn chat_flag_and_env_isolate() {
    let server = Server::start();
    let url = server.url();
    let o = cli(
        &[
            "--url",
            url,
            "--chat",
            "cli-a",
            "run",
            "echo $PROCWARDEN_CHAT_ID",
        ],
        &[],
    )
    .await;
    assert_eq!(o.stdout, "cli-a\n", "{o:?}");
    let o = cli(
        &["--url", url, "run", "--background", "echo in-b"],
        &[("PROCWARDEN_CHAT_ID", "cli-b")],
    )
    .await;
    assert_eq!(o.code, Some(0), "{o:?}");
    let b_id = o.stdout.trim().to_string();

    let ps_a = cli(&["--url", url, "--chat", "cli-a", "ps", "--json"], &[]).await;
    let v: ListReply = serde_json::from_str(&ps_a.stdout).expect("ps --json is the list reply");
    let ids: Vec<&str> = v.processes.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids.len(), 1, "{v}");
    assert!(!ids.contains(&b_id.as_str()), "{v}");

    let o = cli(&["--url", url, "--chat", "cli-a", "output", &b_id], &[]).await;
    assert_cli_error(&o);
    let o = cli(
        &["--url", url, "--chat", "cli-b", "output", &b_id, "--wait"],
        &[],
    )
    .await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stdout.contains("in-b"), "{o:?}");
}

#[tokio::test]
async fn token_flag_and_env() {
    let server = Server::with_config("token = \"cli-token-0123456789\"\n");
    let url = server.url();
    let o = cli(&["--url", url, "run", "echo x"], &[]).await;
    assert_cli_error(&o);
    assert!(
        server
            .api()
            .token("cli-token-0123456789")
            .list()
            .await
            .is_empty(),
        "nothing ran"
    );
    let o = cli(
        &[
            "--url",
            url,
            "--token",
            "cli-token-0123456789",
            "run",
            "echo x",
        ],
        &[],
    )
    .await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.stdout, "x\n");
    let o = cli(
        &["--url", url, "ps"],
        &[("PROCWARDEN_TOKEN", "cli-token-0123456789")],
    )
    .await;
    assert_eq!(o.code, Some(0), "{o:?}");
}

#[tokio::test]
async fn unreachable_agent_is_exit_2_with_one_line() {
    let url = unreachable_url();
    for args in [
        vec!["--url", url.as_str(), "run", "echo", "hi"],
        vec!["--url", url.as_str(), "ps"],
        vec![
            "--url",
            url.as_str(),
            "output",
            "00000000-0000-0000-0000-000000000000",
        ],
        vec![
            "--url",
            url.as_str(),
            "kill",
            "00000000-0000-0000-0000-000000000000",
        ],
    ] {
        let o = cli(&args, &[]).await;
        assert_cli_error(&o);
        assert!(o.stdout.is_empty(), "{o:?}");
    }
}

#[tokio::test]
async fn unknown_id_is_a_client_error() {
    let server = Server::start();
    let id = uuid::Uuid::new_v4().to_string();
    for args in [
        vec!["--url", server.url(), "output", id.as_str()],
        vec!["--url", server.url(), "kill", id.as_str()],
    ] {
        let o = cli(&args, &[]).await;
        assert_cli_error(&o);
    }
}

#[tokio::test]
async fn run_rejected_by_server_is_exit_2() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, "").unwrap();
    let o = cli(
        &[
            "--url",
            server.url(),
            "run",
            "--workdir",
            file.to_str().unwrap(),
            "echo",
            "x",
        ],
        &[],
    )
    .await;
    assert_cli_error(&o);
    assert!(o.stderr.contains("not a directory"), "{o:?}");
}
