//! The CLI client against a real server: run (foreground/background, exit codes, workdir, env,
//! timeout, re-waiting across the server cap), ps, output, kill, chat and token flags, error
//! convention (exit 2, one `procwarden:` line on stderr).

use std::time::Duration;

use procwarden_tests::*;

const GONE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn run_prints_output_and_exits_zero() {
    let server = Server::start();
    let o = cli(&["run", "--url", server.url(), "echo", "hi"], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.stdout, "hi\n", "{o:?}");
    // -c passes a shell line as written.
    let o = cli(
        &["run", "--url", server.url(), "-c", "echo a b; echo c"],
        &[],
    )
    .await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.stdout, "a b\nc\n", "{o:?}");
}

#[tokio::test]
async fn run_exits_with_the_commands_exit_code() {
    let server = Server::start();
    let o = cli(&["run", "--url", server.url(), "-c", "exit 3"], &[]).await;
    assert_eq!(o.code, Some(3), "{o:?}");
    let o = cli(
        &[
            "run",
            "--url",
            server.url(),
            "-c",
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
        &["run", "-c", "echo via-env"],
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
            "run",
            "--url",
            url,
            "--background",
            "-c",
            &format!("echo started; {}", m.sleep()),
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

    let ps = cli(&["ps", "--url", url], &[]).await;
    assert_eq!(ps.code, Some(0), "{ps:?}");
    assert!(ps.stdout.contains(&id[..8]), "ps lists the id: {ps:?}");
    assert!(ps.stdout.contains("sleep"), "ps shows the command: {ps:?}");
    let header = ps.stdout.lines().next().unwrap_or_default();
    for col in ["ID", "STATE", "EXIT", "AGE", "COMMAND"] {
        assert!(header.contains(col), "ps header lacks {col}: {ps:?}");
    }

    let psj = cli(&["ps", "--url", url, "--json"], &[]).await;
    assert_eq!(psj.code, Some(0), "{psj:?}");
    // `--json` prints the API's reply as it came.
    let v: ListReply = serde_json::from_str(&psj.stdout).expect("ps --json is the list reply");
    assert_eq!(v.processes[0].id, id, "{v}");
    assert!(v.processes[0].running, "{v}");

    let o = cli(&["output", "--url", url, &id], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stdout.contains("started"), "{o:?}");

    let o = cli(&["kill", "--url", url, &id], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    m.assert_gone(GONE, "after `procwarden kill`").await;

    let o = cli(&["output", "--url", url, &id, "--wait", "--json"], &[]).await;
    assert_eq!(
        o.code,
        Some(137),
        "output --wait exits with the process's code: {o:?}"
    );
    let v: OutputSnapshot =
        serde_json::from_str(&o.stdout).expect("output --json is the output reply");
    assert!(!v.running, "{v}");
    assert_eq!(v.exit_code, Some(137), "default kill is SIGKILL: {v}");

    // Killing again: 409 -> client error convention.
    let o = cli(&["kill", "--url", url, &id], &[]).await;
    assert_cli_error(&o);
}

#[tokio::test]
async fn kill_terminate_flag_sends_sigterm() {
    let server = Server::start();
    let m = Marker::new();
    let id = server.api().start(&m.sleep()).await;
    let o = cli(&["kill", "--url", server.url(), &id, "--terminate"], &[]).await;
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
            "run",
            "--url",
            url,
            "--workdir",
            dir_s,
            "--env",
            "PW_A=one",
            "--env",
            "PW_B=two=2",
            "-c",
            "pwd -P; printenv PW_A; printenv PW_B",
        ],
        &[],
    )
    .await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.stdout, format!("{dir_s}\none\ntwo=2\n"), "{o:?}");

    let m = Marker::new();
    let t0 = std::time::Instant::now();
    let o = cli(
        &["run", "--url", url, "--timeout", "1", "-c", &m.sleep()],
        &[],
    )
    .await;
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
            "run",
            "--url",
            server.url(),
            "-c",
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
            "run",
            "--url",
            url,
            "--chat",
            "cli-a",
            "-c",
            "echo $PROCWARDEN_CHAT_ID",
        ],
        &[],
    )
    .await;
    assert_eq!(o.stdout, "cli-a\n", "{o:?}");
    let o = cli(
        &["run", "--url", url, "--background", "-c", "echo in-b"],
        &[("PROCWARDEN_CHAT_ID", "cli-b")],
    )
    .await;
    assert_eq!(o.code, Some(0), "{o:?}");
    let b_id = o.stdout.trim().to_string();

    let ps_a = cli(&["ps", "--url", url, "--chat", "cli-a", "--json"], &[]).await;
    let v: ListReply = serde_json::from_str(&ps_a.stdout).expect("ps --json is the list reply");
    let ids: Vec<&str> = v.processes.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids.len(), 1, "{v}");
    assert!(!ids.contains(&b_id.as_str()), "{v}");

    let o = cli(&["output", "--url", url, "--chat", "cli-a", &b_id], &[]).await;
    assert_cli_error(&o);
    let o = cli(
        &["output", "--url", url, "--chat", "cli-b", &b_id, "--wait"],
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
    let o = cli(&["run", "--url", url, "-c", "echo x"], &[]).await;
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
            "run",
            "--url",
            url,
            "--token",
            "cli-token-0123456789",
            "-c",
            "echo x",
        ],
        &[],
    )
    .await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.stdout, "x\n");
    let o = cli(
        &["ps", "--url", url],
        &[("PROCWARDEN_TOKEN", "cli-token-0123456789")],
    )
    .await;
    assert_eq!(o.code, Some(0), "{o:?}");
}

#[tokio::test]
async fn unreachable_agent_is_exit_2_with_one_line() {
    let url = unreachable_url();
    for args in [
        vec!["run", "--url", url.as_str(), "echo", "hi"],
        vec!["ps", "--url", url.as_str()],
        vec![
            "output",
            "--url",
            url.as_str(),
            "00000000-0000-0000-0000-000000000000",
        ],
        vec![
            "kill",
            "--url",
            url.as_str(),
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
        vec!["output", "--url", server.url(), id.as_str()],
        vec!["kill", "--url", server.url(), id.as_str()],
    ] {
        let o = cli(&args, &[]).await;
        assert_cli_error(&o);
    }
}

#[tokio::test]
async fn run_denied_by_the_workdir_plugin_is_exit_3() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, "").unwrap();
    let o = cli(
        &[
            "run",
            "--url",
            server.url(),
            "--workdir",
            file.to_str().unwrap(),
            "echo",
            "x",
        ],
        &[],
    )
    .await;
    assert_eq!(o.code, Some(3), "a policy denial exits 3: {o:?}");
    assert!(o.stderr.contains("not a directory"), "{o:?}");
}
