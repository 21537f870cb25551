//! Policy plugins over HTTP, with the real components: the built-in samples (ampersand, env,
//! workdir, deny) as `serve` loads them with no configuration, configured samples, and
//! deliberately faulty components that must be contained (the server keeps answering and the
//! error names the plugin).

use std::path::PathBuf;
use std::time::Duration;

use procwarden_tests::*;

const GONE: Duration = Duration::from_secs(5);

/// A component built by `scripts/build-plugins.sh` / `host/build.rs` (`target/plugins`).
fn component(name: &str) -> PathBuf {
    let dir = std::env::var_os("PROCWARDEN_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/plugins/wasm32-wasip2/release")
        });
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is not built", path.display());
    path
}

/// A config whose chain is one faulty component, then the ampersand sample.
fn faulty_chain(path: &std::path::Path, on_error: &str) -> String {
    format!(
        "[[plugin]]\npath = {:?}\non_error = {on_error:?}\n{}\n[[plugin]]\npath = \"builtin:ampersand\"\n",
        path.display().to_string(),
        // Room for the memory hog to reach its memory bound before its CPU budget runs out.
        if path.ends_with("faulty_hog.wasm") {
            "timeout_ms = 2000\n"
        } else {
            ""
        },
    )
}

#[tokio::test]
async fn trailing_ampersand_becomes_a_tracked_background_process_whose_group_dies() {
    let server = Server::start();
    let api = server.api();
    let m = Marker::new();
    let r = api
        .start_req(&json!({ "command": format!("{} &  ", m.sleep()) }))
        .await;
    r.expect_status(200);
    let reply: StartReply = r.json();
    assert!(reply.background, "{reply}");
    let id = reply.id;
    assert!(m.wait_sleeps(1, GONE).await, "the sleep did not start");

    // The shell itself runs the sleep (no `&` left), so the process is tracked as running.
    let info = api.list().await.into_iter().find(|p| p.id == id).unwrap();
    assert_eq!(info.command, m.sleep(), "{info}");
    assert!(info.background);
    assert!(info.running);
    let snapshot = api.output_ok(&id, false).await;
    assert!(snapshot.running, "{snapshot}");

    api.signal(&id, "kill").await.expect_status(200);
    m.assert_gone(GONE, "background sleep after kill").await;
    assert_eq!(api.wait_exit(&id).await.exit_code, Some(137));
}

/// `start?wait=true` waits for foreground commands only: one a plugin moved to the
/// background comes back at once, running.
#[tokio::test]
async fn start_with_wait_returns_at_once_for_a_command_a_plugin_moved_to_the_background() {
    let server = Server::start();
    let api = server.api();
    let m = Marker::new();
    api.start_wait_expecting_background(json!({ "command": format!("{} &", m.sleep()) }))
        .await;
}

#[tokio::test]
async fn ampersands_that_are_not_trailing_are_left_alone() {
    let server = Server::start();
    let api = server.api();
    for command in [
        "echo a && echo b",
        "echo 'x &'",
        "echo x \\&",
        "echo y 2>&1",
    ] {
        let r = api.start_req(&json!({ "command": command })).await;
        r.expect_status(200);
        let reply: StartReply = r.json();
        assert!(!reply.background, "{command}: {reply}");
        let id = reply.id;
        let info = api.list().await.into_iter().find(|p| p.id == id).unwrap();
        assert_eq!(info.command, command);
    }
}

#[tokio::test]
async fn env_sample_adds_agent_defaults_without_overriding_the_request() {
    let server = Server::start();
    let api = server.api();
    let id = api.start("echo \"$PAGER $GIT_PAGER $TERM\"").await;
    assert_eq!(api.wait_exit(&id).await.output, "cat cat dumb\n");
    let id = api
        .start_with(json!({ "command": "echo $PAGER", "env": { "PAGER": "less" } }))
        .await;
    assert_eq!(api.wait_exit(&id).await.output, "less\n");
}

#[tokio::test]
async fn env_sample_takes_variables_from_its_settings() {
    let server = Server::with_config(
        "[[plugin]]\npath = \"builtin:env\"\n[plugin.settings.vars]\nPROJECT_MODE = \"agent\"\n",
    );
    let api = server.api();
    let id = api.start("echo \"$PROJECT_MODE $PAGER\"").await;
    assert_eq!(api.wait_exit(&id).await.output, "agent cat\n");
}

#[tokio::test]
async fn workdir_sample_uses_the_agent_dir_and_refuses_a_missing_request_dir() {
    let agent_dir = tempfile::tempdir().unwrap();
    let server = Server::with_config(&format!("workdir = {:?}\n", agent_dir.path()));
    let api = server.api();
    let id = api.start("pwd").await;
    assert_eq!(
        api.wait_exit(&id).await.output.trim_end(),
        agent_dir.path().canonicalize().unwrap().to_str().unwrap()
    );

    let missing = agent_dir.path().join("missing");
    let r = api
        .start_req(&json!({ "command": "pwd", "workdir": missing }))
        .await;
    let message = r.error(403);
    assert!(message.contains("policy plugin \"workdir\""), "{message}");
    assert!(message.contains("missing"), "{message}");
}

#[tokio::test]
async fn a_remembered_answer_does_not_outlive_the_directory_it_checked() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    let server = Server::start();
    let api = server.api();
    let body = json!({ "command": "pwd", "workdir": project });
    for _ in 0..2 {
        let id = api.start_with(body.clone()).await;
        assert_eq!(
            api.wait_exit(&id).await.output.trim_end(),
            project.canonicalize().unwrap().to_str().unwrap()
        );
    }
    // The same request again, now that the directory is gone: refused, not the earlier
    // answer.
    std::fs::remove_dir(&project).unwrap();
    let message = api.start_req(&body).await.error(403);
    assert!(message.contains("policy plugin \"workdir\""), "{message}");
    std::fs::create_dir(&project).unwrap();
    api.start_with(body).await;
}

#[tokio::test]
async fn deny_sample_refuses_with_403_and_a_reason_the_model_can_act_on() {
    let server = Server::start();
    let api = server.api();
    let message = api
        .start_req(&json!({ "command": "rm -rf /" }))
        .await
        .error(403);
    assert!(
        message.contains("Denied by policy plugin \"deny\""),
        "{message}"
    );
    assert!(message.contains("instead"), "{message}");
    // Deleting a named directory is fine.
    let dir = tempfile::tempdir().unwrap();
    let id = api
        .start(&format!("rm -rf {}/sub && echo ok", dir.path().display()))
        .await;
    assert_eq!(api.wait_exit(&id).await.output, "ok\n");
    assert!(
        api.list().await.len() == 1,
        "the denied start created no process"
    );
}

#[tokio::test]
async fn deny_sample_takes_patterns_from_its_settings() {
    let server = Server::with_config(
        "[[plugin]]\npath = \"builtin:deny\"\n[plugin.settings]\npatterns = [\"git push\"]\n",
    );
    let api = server.api();
    let message = api
        .start_req(&json!({ "command": "git push origin main" }))
        .await
        .error(403);
    assert!(message.contains("git push"), "{message}");
    api.start("git --version >/dev/null 2>&1; echo fine").await;
}

#[tokio::test]
async fn runtime_faults_are_contained_and_name_the_plugin() {
    for (fixture, symptom) in [
        ("faulty_trap", "trapped"),
        ("faulty_spin", "took longer than"),
        ("faulty_hog", "out of memory"),
    ] {
        let server = Server::with_config(&faulty_chain(&component(fixture), "deny"));
        let api = server.api();
        for _ in 0..3 {
            // A plugin that fails is the agent's fault, not the client's: 503, worded as a
            // failure that names the plugin once, never as a denial.
            let message = api
                .start_req(&json!({ "command": "echo hi" }))
                .await
                .error(503);
            assert!(
                message.starts_with(&format!("Policy plugin \"{fixture}\" failed (")),
                "{message}"
            );
            assert_eq!(message.matches("olicy plugin").count(), 1, "{message}");
            assert!(!message.contains("Denied"), "{message}");
            assert!(message.contains(symptom), "{fixture}: {message}");
        }
        // Still serving everything else.
        assert!(api.list().await.is_empty());
        // Health tells that the plugin keeps failing.
        let health = api.health().await;
        assert_eq!(health.status, "degraded", "{health:?}");
        let faulty = health.plugins.iter().find(|p| p.name == fixture).unwrap();
        assert_eq!(faulty.consecutive_failures, 3, "{health:?}");
        server.assert_alive();

        // Fail-open when the operator says so: the rest of the chain still runs.
        let server = Server::with_config(&faulty_chain(&component(fixture), "allow"));
        let api = server.api();
        let r = api.start_req(&json!({ "command": "sleep 0 &" })).await;
        r.expect_status(200);
        assert!(
            r.json::<StartReply>().background,
            "ampersand ran after {fixture}"
        );
    }
}

#[tokio::test]
async fn components_that_cannot_load_stop_the_agent_and_name_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.wasm");
    std::fs::write(&corrupt, b"\0asm\x0d\0\x01\0 definitely not a component").unwrap();
    for (path, name, symptom) in [
        (
            component("faulty_wrong_world"),
            "faulty_wrong_world",
            "procwarden:policy/policy",
        ),
        (corrupt, "corrupt", "not a valid WebAssembly component"),
        (dir.path().join("absent.wasm"), "absent", "cannot read"),
    ] {
        // The agent refuses to start rather than refuse every request later.
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &faulty_chain(&path, "deny"));
        let out = procwarden_command()
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&format!("\"{name}\"")), "{stderr}");
        assert!(stderr.contains("cannot be loaded"), "{stderr}");
        assert!(stderr.contains(symptom), "{name}: {stderr}");
    }
}

/// The records of an audit file, one per line.
fn audit_records(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn every_decision_is_audited_with_the_plugin_name() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    // The component builds: their answers are remembered (native built-ins' are not).
    let components: String = ["ampersand", "env", "workdir", "deny"]
        .iter()
        .map(|name| format!("[[plugin]]\npath = \"builtin:{name}.wasm\"\n"))
        .collect();
    let server = Server::with_config(&format!("[policy]\naudit_file = {audit:?}\n{components}"));
    let api = server.api();
    api.start("sleep 0 &").await;
    api.start_req(&json!({ "command": "rm -rf ~" }))
        .await
        .error(403);
    // Each allowed request's records end with the process it started.
    let lines: Vec<serde_json::Value> = audit_records(&audit)
        .into_iter()
        .filter(|l| l["decision"] != "started")
        .collect();
    let plugins: Vec<&str> = lines
        .iter()
        .map(|l| l["plugin"].as_str().unwrap())
        .collect();
    assert_eq!(
        plugins,
        [
            "ampersand",
            "env",
            "workdir",
            "deny",
            "ampersand",
            "env",
            "workdir",
            "deny"
        ]
    );
    assert_eq!(lines[0]["command_after"], "sleep 0");
    assert_eq!(lines[7]["decision"], "deny");
    assert!(lines.iter().all(|l| l.get("remembered").is_none()));

    // The same requests again are answered from what each plugin remembers, and the audit
    // file says so.
    api.start("sleep 0 &").await;
    api.start_req(&json!({ "command": "rm -rf ~" }))
        .await
        .error(403);
    let again = audit_records(&audit)
        .into_iter()
        .filter(|l| l["decision"] != "started")
        .collect::<Vec<_>>()
        .split_off(8);
    assert_eq!(again.len(), 8);
    assert!(again.iter().all(|l| l["remembered"] == true), "{again:?}");
    assert_eq!(again[0]["command_after"], "sleep 0");
    assert_eq!(again[7]["decision"], "deny");
}

#[tokio::test]
async fn compiled_plugins_are_cached_across_restarts() {
    let cache = tempfile::tempdir().unwrap();
    // The default chain runs natively: name a component build to have something compiled.
    let config = format!(
        "[policy]\ncache_dir = {:?}\n[[plugin]]\npath = \"builtin:deny.wasm\"\n",
        cache.path()
    );
    let first = Server::with_config(&config);
    first.api().list().await;
    assert!(first.logged("cache=miss").await, "{}", first.stderr_text());
    drop(first);
    let second = Server::with_config(&config);
    second.api().list().await;
    let hit = second.logged("cache=hit").await;
    let log = second.stderr_text();
    assert!(hit && !log.contains("cache=miss"), "{log}");
}
