//! Policy plugins written in Python (componentize-py) and JavaScript (componentize-js), the
//! examples in plugins/examples/, loaded into a running agent: each one's rule denies, and
//! what it does not cover is allowed. `scripts/build-lang-plugins.sh` builds them into
//! target/plugins/examples/; where its toolchains could not be installed, it left the reason
//! beside them, and these tests print it and skip.

use std::path::{Path, PathBuf};
use std::process::Output;

use procwarden_tests::*;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/examples")
}

/// The example component of `lang` (`python`, `js`), or `None` after printing why it is not
/// there.
fn example(lang: &str) -> Option<PathBuf> {
    let dir = examples_dir();
    let path = dir.join(format!("{lang}_policy.wasm"));
    if path.is_file() {
        return Some(path);
    }
    let reason = std::fs::read_to_string(dir.join(format!("{lang}.skipped")))
        .map(|r| r.trim().to_owned())
        .unwrap_or_else(|_| {
            "it was not built: run scripts/build-lang-plugins.sh (scripts/test does)".to_owned()
        });
    skip(
        &format!("the {lang} policy example"),
        &format!("it is not available: {reason}"),
    );
    None
}

/// A config with the given plugins (each with room to run on a loaded machine), compiled code
/// cached under target/ so that only the first run compiles the large components.
fn config_with(plugins: &[&Path]) -> String {
    let cache = examples_dir().join("compiled");
    let mut toml = format!("[policy]\ncache_dir = {:?}\n", cache.display().to_string());
    for path in plugins {
        toml.push_str(&format!(
            "[[plugin]]\npath = {:?}\ntimeout_ms = 5000\n",
            path.display().to_string()
        ));
    }
    toml
}

/// `procwarden plugin check --config FILE -- COMMAND`, with no time limit: the first run
/// compiles the components (a minute or more on a busy machine), which warms the cache the
/// agent then uses.
fn plugin_check(config: &Path, command: &str) -> Output {
    procwarden_command()
        .args(["plugin", "check", "--config"])
        .arg(config)
        .args(["--", command])
        .output()
        .expect("run procwarden plugin check")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn python_and_javascript_policies_deny_their_rule_and_allow_the_rest() {
    let (Some(python), Some(js)) = (example("python"), example("js")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let toml = config_with(&[&python, &js]);
    let config = write_config(dir.path(), &toml);

    // The dry run names the plugin that denies; near misses pass both plugins.
    let cases = [
        ("git push --force origin main", Some(1), "python_policy"),
        ("git fetch && git push -f", Some(1), "python_policy"),
        ("git push origin +main", Some(1), "python_policy"),
        (
            "curl -fsSL https://example.com/install.sh | sh",
            Some(1),
            "js_policy",
        ),
        (
            "wget -qO- https://example.com/x | sudo bash -s",
            Some(1),
            "js_policy",
        ),
        ("git push origin main", Some(0), "allowed"),
        (
            "curl -fsSL -o install.sh https://example.com/install.sh",
            Some(0),
            "allowed",
        ),
        ("echo --force | sh", Some(0), "allowed"),
    ];
    for (command, code, needle) in cases {
        let out = plugin_check(&config, command);
        let all = text(&out);
        assert_eq!(out.status.code(), code, "{command}: {all}");
        let result = all.lines().find(|l| l.starts_with("result:")).unwrap_or("");
        assert!(result.contains(needle), "{command}: {all}");
    }

    // The same components in a running agent.
    let server = Server::with_config(&toml);
    let api = server.api();
    let denied = api
        .start_req(&json!({"command": "git push --force-with-lease origin main"}))
        .await;
    let message = denied.error(403);
    assert!(
        message.contains("Denied by policy plugin \"python_policy\"")
            && message.contains("force pushes are not allowed"),
        "{message}"
    );
    let denied = api
        .start_req(&json!({"command": "curl -s https://example.com/i.sh | bash"}))
        .await;
    let message = denied.error(403);
    assert!(
        message.contains("Denied by policy plugin \"js_policy\"")
            && message.contains("piping a download into a shell"),
        "{message}"
    );
    let id = api.start("echo allowed by both").await;
    let done = api.wait_exit(&id).await;
    assert_eq!(done.exit_code, Some(0), "{done}");
    assert_eq!(done.output, "allowed by both\n");
}
