//! Bearer-token auth and the non-loopback listen guard; config validation at startup.

use std::process::Stdio;
use std::time::Duration;

use procwarden_tests::*;

const TOKEN: &str = "s3cret-token-0123456789";

fn token_server() -> Server {
    Server::with_config(&format!("token = {TOKEN:?}\n"))
}

#[tokio::test]
async fn token_is_required_on_every_api_route() {
    let server = token_server();
    let anon = server.api();
    let wrong = server.api().token("wrong");
    let basic = server
        .api()
        .with_header("Authorization", &format!("Basic {TOKEN}"));
    let bare = server.api().with_header("Authorization", TOKEN);
    let good = server.api().token(TOKEN);

    let id = good.start("echo authed").await;
    good.wait_exit(&id).await;

    for api in [&anon, &wrong, &basic, &bare] {
        api.get("/api/v0/processes/list").await.error(401);
        api.start_req(&json!({"command": "echo nope"}))
            .await
            .error(401);
        api.output(&id, false).await.error(401);
        api.output(&id, true).await.error(401);
        api.signal(&id, "kill").await.error(401);
    }
    // Nothing got through.
    let list = good.list().await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(good.output_ok(&id, false).await.output, "authed\n");
    good.signal(&id, "kill").await.error(409);
}

#[tokio::test]
async fn health_requires_the_token_too() {
    let server = token_server();
    server.api().get("/api/v0/health").await.error(401);
    server
        .api()
        .token("nope")
        .get("/api/v0/health")
        .await
        .error(401);
    let h = server.api().token(TOKEN).health().await;
    assert_eq!(h.status, "ok");
}

#[tokio::test]
async fn token_with_chat_header_still_isolates() {
    let server = token_server();
    let a = server.api().token(TOKEN).chat("a");
    let b = server.api().token(TOKEN).chat("b");
    let id = a.start("echo x").await;
    a.wait_exit(&id).await;
    b.output(&id, false).await.error(404);
    assert!(b.list().await.is_empty());
}

fn run_serve(listen: &str, config: &str) -> (std::process::Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), config);
    let mut child = procwarden_command()
        .args(["serve", "--listen", listen, "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "`serve --listen {listen}` with config {config:?} kept running; stdout {:?} stderr {:?}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), dir)
}

fn assert_refused(out: &std::process::Output, what: &str) {
    assert!(!out.status.success(), "{what}: must exit non-zero: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: one stderr line expected: {stderr:?}"
    );
}

#[test]
fn non_loopback_listen_without_token_is_refused() {
    let (out, _dir) = run_serve("0.0.0.0:0", "");
    assert_refused(&out, "0.0.0.0 without token");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "must not listen: {out:?}"
    );
}

#[tokio::test]
async fn non_loopback_listen_with_token_is_allowed() {
    let server = Server::builder()
        .listen("0.0.0.0:0")
        .config(&format!("token = {TOKEN:?}\n"))
        .spawn();
    let api = Api::new(&format!("http://127.0.0.1:{}", server.port()));
    api.get("/api/v0/processes/list").await.error(401);
    assert_eq!(api.token(TOKEN).list().await.len(), 0);
}

#[test]
fn unknown_config_key_is_an_error() {
    let (out, _dir) = run_serve("127.0.0.1:0", "no_such_key = 1\n");
    assert!(!out.status.success(), "unknown key must fail: {out:?}");
}

#[test]
fn invalid_config_value_is_an_error() {
    let (out, _dir) = run_serve("127.0.0.1:0", "head_bytes = \"lots\"\n");
    assert!(!out.status.success(), "bad value must fail: {out:?}");
}

#[tokio::test]
async fn float_seconds_and_all_keys_are_accepted() {
    let server = Server::with_config(
        r#"listen = "127.0.0.1:7077"
head_bytes = 16384
tail_bytes = 16384
max_line_bytes = 2048
list_cap = 10
reap_age_seconds = 300.5
reap_interval_seconds = 30.25
wait_cap_seconds = 300.0
request_timeout_seconds = 20.0
max_body_bytes = 1048576
shutdown_grace_seconds = 5.0
"#,
    );
    // --listen overrides the config's listen.
    assert_ne!(server.port(), 7077);
    let api = server.api();
    let id = api.start("echo ok").await;
    assert_eq!(api.wait_exit(&id).await.output, "ok\n");
}
