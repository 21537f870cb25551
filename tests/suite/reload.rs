//! Reloading the configuration while processes run: SIGHUP, `POST /api/v0/reload` and
//! `procwarden reload`; a file that does not load is refused and the running one kept; an
//! agent refuses to start on a plugin that cannot load (unless its `on_error` is `allow`).

use std::time::Duration;

use nix::sys::signal::Signal;
use procwarden_tests::*;

const SOON: Duration = Duration::from_secs(20);

/// The built-in `deny` plugin refusing commands that contain `word`.
fn denying(word: &str) -> String {
    format!("[[plugin]]\npath = \"builtin:deny\"\nsettings = {{ patterns = [{word:?}] }}\n")
}

async fn reload(api: &Api) -> Resp {
    api.post("/api/v0/reload", &json!({})).await
}

#[tokio::test]
async fn reload_applies_the_new_chain_and_keeps_processes() {
    let server = Server::with_config(&denying("first-forbidden"));
    let api = server.api();
    let m = Marker::new();
    let id = api
        .start_with(json!({"command": m.sleep(), "background": true}))
        .await;
    api.start_req(&json!({"command": "echo first-forbidden"}))
        .await
        .error(403);

    std::fs::write(server.config_path(), denying("second-forbidden")).unwrap();
    let reply: ReloadReply = reload(&api).await.expect_status(200).json();
    assert_eq!(
        reply.plugins,
        ["ampersand", "env", "workdir", "deny"],
        "{reply:?}"
    );
    assert!(reply.restart_needed.is_empty(), "{reply:?}");
    assert!(reply.message.contains("deny"), "{reply:?}");

    // The new chain decides; the old one no longer does.
    let ok = api.start("echo first-forbidden").await;
    assert_eq!(api.wait_exit(&ok).await.output, "first-forbidden\n");
    api.start_req(&json!({"command": "echo second-forbidden"}))
        .await
        .error(403);
    // The process started before the reload still runs, and is still listed and reachable.
    assert_eq!(m.live_sleeps().len(), 1);
    assert!(api.list_ids().await.contains(&id));
    assert!(api.output_ok(&id, false).await.running);
    assert_eq!(api.health().await.reloads, 1);

    // A key only a restart applies is named, not silently ignored.
    std::fs::write(
        server.config_path(),
        format!("head_bytes = 100\n{}", denying("second-forbidden")),
    )
    .unwrap();
    let reply: ReloadReply = reload(&api).await.expect_status(200).json();
    assert_eq!(reply.restart_needed, ["head_bytes"], "{reply:?}");
    api.signal(&id, "kill").await.expect_status(200);
}

#[tokio::test]
async fn sighup_reloads_instead_of_stopping() {
    let server = Server::with_config(&denying("first-forbidden"));
    let api = server.api();
    let m = Marker::new();
    let id = api
        .start_with(json!({"command": m.sleep(), "background": true}))
        .await;

    std::fs::write(server.config_path(), denying("second-forbidden")).unwrap();
    server.send_signal(Signal::SIGHUP);
    assert!(
        eventually(SOON, || async { api.health().await.reloads == 1 }).await,
        "no reload after SIGHUP: {}",
        server.stderr_text()
    );
    server.assert_alive();
    api.start_req(&json!({"command": "echo second-forbidden"}))
        .await
        .error(403);
    assert!(api.output_ok(&id, false).await.running);
    assert_eq!(m.live_sleeps().len(), 1);
    assert!(server.logged("configuration reloaded").await);
}

#[tokio::test]
async fn a_broken_file_is_refused_and_the_old_configuration_kept() {
    let server = Server::with_config(&denying("first-forbidden"));
    let api = server.api();
    let dir = tempfile::tempdir().unwrap();
    for (broken, says) in [
        ("this is = not [toml".to_owned(), "invalid config file"),
        ("wait_cap = 3\n".to_owned(), "unknown field"),
        (
            format!(
                "[[plugin]]\npath = {:?}\n",
                dir.path().join("absent.wasm").display().to_string()
            ),
            "cannot be loaded",
        ),
    ] {
        std::fs::write(server.config_path(), &broken).unwrap();
        let message = reload(&api).await.error(422);
        assert!(message.contains("running configuration kept"), "{message}");
        assert!(message.contains(says), "{broken}: {message}");
        // Still the old chain.
        api.start_req(&json!({"command": "echo first-forbidden"}))
            .await
            .error(403);
    }
    assert_eq!(api.health().await.reloads, 0);
    assert!(server.logged("reload refused").await);

    // The CLI says why and exits 2.
    let o = cli(&["reload", "--url", server.url()], &[]).await;
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(o.stderr.contains("running configuration kept"), "{o:?}");

    // A broken file sent by SIGHUP does not stop the agent either.
    server.send_signal(Signal::SIGHUP);
    assert!(
        eventually(SOON, || async {
            server.stderr_text().matches("reload refused").count() >= 5
        })
        .await
    );
    server.assert_alive();

    std::fs::write(server.config_path(), denying("second-forbidden")).unwrap();
    let o = cli(&["reload", "--url", server.url()], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stdout.contains("deny"), "{o:?}");
}

#[tokio::test]
async fn reload_is_behind_the_token() {
    let token = "reload-token-0123456789";
    let server = Server::with_config(&format!("token = {token:?}\n"));
    reload(&server.api()).await.error(401);
    let reply: ReloadReply = reload(&server.api().token(token))
        .await
        .expect_status(200)
        .json();
    assert_eq!(reply.plugins, ["ampersand", "env", "workdir", "deny"]);
}

/// `serve` with `config`; returns its exit code and stderr when it exits on its own.
fn serve_expecting_refusal(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), config);
    let out = procwarden_command()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_plugin_that_cannot_load_stops_the_agent_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.wasm").display().to_string();
    let (code, stderr) = serve_expecting_refusal(&format!("[[plugin]]\npath = {absent:?}\n"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("\"absent\""), "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
    assert!(stderr.contains("on_error = \"allow\""), "{stderr}");

    // With on_error = "allow" the operator chose to run without it: the agent starts, says
    // it is degraded, and health names the plugin and why.
    let server = Server::with_config(&format!(
        "[[plugin]]\npath = {absent:?}\non_error = \"allow\"\n[[plugin]]\npath = \"builtin:deny\"\n"
    ));
    let health = server.api().health().await;
    assert_eq!(health.status, "degraded", "{health:?}");
    let names: Vec<&str> = health.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["ampersand", "env", "workdir", "absent", "deny"]);
    assert!(!health.plugins[3].loaded);
    assert!(
        health.plugins[3]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("cannot read")),
        "{health:?}"
    );
    assert!(health.plugins[4].loaded);
    let id = server.api().start("echo passes").await;
    assert_eq!(server.api().wait_exit(&id).await.output, "passes\n");
    assert!(server.logged("absent (not loaded").await);
}

#[tokio::test]
async fn health_counts_each_plugins_decisions() {
    let server = Server::start();
    let api = server.api();
    api.start_req(&json!({"command": "rm -rf ~"}))
        .await
        .error(403);
    let health = api.health().await;
    assert_eq!(health.status, "ok");
    let names: Vec<&str> = health.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["ampersand", "env", "workdir", "deny"]);
    let deny = &health.plugins[3];
    assert_eq!((deny.calls, deny.denied, deny.failures), (1, 1, 0));
    // The start-up log names the chain in force.
    assert!(
        server.logged("chain=ampersand, env, workdir, deny").await,
        "{}",
        server.stderr_text()
    );
}

#[tokio::test]
async fn a_configured_plugin_keeps_the_built_ins_unless_turned_off() {
    // One operator plugin (here a built-in under another name) does not drop `deny`.
    let server = Server::with_config("[[plugin]]\npath = \"builtin:npm-ci\"\n");
    server
        .api()
        .start_req(&json!({"command": "rm -rf /"}))
        .await
        .error(403);
    let names: Vec<String> = server
        .api()
        .health()
        .await
        .plugins
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["ampersand", "env", "workdir", "npm-ci", "deny"]);
    assert!(
        server
            .logged("chain=ampersand, env, workdir, npm-ci, deny")
            .await,
        "{}",
        server.stderr_text()
    );

    // `builtins = false`: only what the file lists.
    let server = Server::with_config(
        "[policy]\nbuiltins = false\n[[plugin]]\npath = \"builtin:ampersand\"\n",
    );
    let names: Vec<String> = server
        .api()
        .health()
        .await
        .plugins
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["ampersand"]);

    // A setting a built-in does not read stops the agent from starting, naming it.
    let (code, stderr) = serve_expecting_refusal(
        "[[plugin]]\npath = \"builtin:deny\"\nsettings = { pattern = [\"git push\"] }\n",
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("`pattern`"), "{stderr}");
    assert!(stderr.contains("patterns"), "{stderr}");
}

#[tokio::test]
async fn every_key_a_reload_does_not_apply_is_named() {
    let server = Server::with_config(&denying("first-forbidden"));
    let api = server.api();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    // Keys a reload applies (list_cap, wait_cap_seconds, max_processes, the chain) next to
    // ones only a restart applies: the process table's containment, state and spool, and
    // the tool plugins.
    let new = format!(
        "list_cap = 5\nwait_cap_seconds = 30\nmax_processes = 50\n\
         containment = \"subreaper\"\nstate_dir = {:?}\nspool_dir = {:?}\n\
         spool_max_bytes = 1000000\nspool_total_bytes = 2000000\n\
         [[tool]]\npath = \"builtin:serve\"\n{}",
        path("state"),
        path("spool"),
        denying("second-forbidden")
    );
    std::fs::write(server.config_path(), new).unwrap();
    let reply: ReloadReply = reload(&api).await.expect_status(200).json();
    assert_eq!(
        reply.restart_needed,
        [
            "containment",
            "state_dir",
            "spool_dir",
            "spool_max_bytes",
            "spool_total_bytes",
            "tool"
        ],
        "{reply:?}"
    );
    // The rest is in force.
    api.start_req(&json!({"command": "echo second-forbidden"}))
        .await
        .error(403);
    assert!(
        server
            .logged("changed keys take effect only when the agent is restarted")
            .await
    );
}

#[tokio::test]
async fn a_file_whose_tools_do_not_load_is_refused() {
    let server = Server::with_config(&denying("first-forbidden"));
    let api = server.api();
    let dir = tempfile::tempdir().unwrap();
    let not_a_component = dir.path().join("not_a_component.wasm");
    std::fs::write(&not_a_component, "not wasm").unwrap();
    for tool in [dir.path().join("absent.wasm"), not_a_component] {
        let broken = format!(
            "[[tool]]\npath = {:?}\n{}",
            tool.display().to_string(),
            denying("second-forbidden")
        );
        std::fs::write(server.config_path(), &broken).unwrap();
        let message = reload(&api).await.error(422);
        assert!(message.contains("running configuration kept"), "{message}");
        assert!(
            message.contains("tool plugin") && message.contains("cannot be loaded"),
            "{message}"
        );
        // Still the old chain.
        api.start_req(&json!({"command": "echo first-forbidden"}))
            .await
            .error(403);
        let ok = api.start("echo second-forbidden").await;
        assert_eq!(api.wait_exit(&ok).await.output, "second-forbidden\n");
    }
    assert_eq!(api.health().await.reloads, 0);
}

#[tokio::test]
async fn a_plugin_file_that_is_not_a_component_stops_the_agent_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, "not a WebAssembly component").unwrap();
    let broken = broken.display().to_string();

    let (code, stderr) = serve_expecting_refusal(&format!("[[plugin]]\npath = {broken:?}\n"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("\"broken\""), "{stderr}");
    assert!(stderr.contains("cannot be loaded"), "{stderr}");
    assert!(stderr.contains("on_error = \"allow\""), "{stderr}");

    // on_error = "allow": the agent starts without it, degraded, and says why.
    let allowed = format!("[[plugin]]\npath = {broken:?}\non_error = \"allow\"\n");
    let server = Server::with_config(&allowed);
    let health = server.api().health().await;
    assert_eq!(health.status, "degraded", "{health:?}");
    let plugin = health.plugins.iter().find(|p| p.name == "broken").unwrap();
    assert!(!plugin.loaded, "{health:?}");
    let id = server.api().start("echo passes").await;
    assert_eq!(server.api().wait_exit(&id).await.output, "passes\n");

    // `plugin check --config` calls it broken (4), whatever its on_error made of the request.
    let denying_file = write_config(dir.path(), &format!("[[plugin]]\npath = {broken:?}\n"));
    let o = cli(
        &[
            "plugin",
            "check",
            "--config",
            denying_file.to_str().unwrap(),
            "--",
            "ls",
        ],
        &[],
    )
    .await;
    assert_eq!(o.code, Some(4), "{o:?}");
    assert!(o.stdout.contains("FAILED"), "{o:?}");
    let allowing_file = write_config(dir.path(), &allowed);
    let o = cli(
        &[
            "plugin",
            "check",
            "--config",
            allowing_file.to_str().unwrap(),
            "--",
            "ls",
        ],
        &[],
    )
    .await;
    assert_eq!(o.code, Some(4), "{o:?}");
    assert!(o.stdout.contains("result: allowed"), "{o:?}");
}
