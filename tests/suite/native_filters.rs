//! The built-in `redact` runs natively by default; `builtin:redact.wasm` runs its component
//! build, which masks the same output the same way. Limits given to the native built-in are
//! accepted (they apply to components only).

use procwarden_tests::*;

/// Secrets of several kinds next to text that must pass untouched.
const COMMAND: &str = "echo 'key AKIAIOSFODNN7EXAMPLE token ghp_0123456789abcdefghijABCDEFGHIJ012345'; \
     echo 'DB_PASSWORD=\"p w\" PATH=/usr/bin commit 3f786850e387550fdab836ed7e6dc881de23001b'; \
     echo 'Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U'; \
     echo 'id 123e4567-e89b-12d3-a456-426614174000 fixture QUtJQUlPU0ZPRE5ON0VYQU1QTEU=='";

/// The masked output and count of `COMMAND` on `server`, and its one filter's health.
async fn run(server: &Server) -> (String, Option<u32>, FilterState) {
    let api = server.api();
    let reply = api
        .start_reply(serde_json::json!({"command": COMMAND}))
        .await;
    let done = api.wait_exit(&reply.id).await;
    let health: Health = api.get("/api/v0/health").await.json();
    assert_eq!(health.filters.len(), 1, "{health:?}");
    (done.output, done.redactions, health.filters[0].clone())
}

#[tokio::test]
async fn the_default_redact_runs_natively_and_its_component_answers_the_same() {
    let native = Server::start();
    let (text, count, health) = run(&native).await;
    assert_eq!(
        (
            health.name.as_str(),
            health.origin.as_str(),
            health.runs.as_str()
        ),
        ("redact", "<built-in filter redact>", "native")
    );
    assert_eq!(count, Some(4), "{text}");
    assert_eq!(health.redactions, 4);
    for kept in [
        "PATH=/usr/bin",
        "3f786850e387550fdab836ed7e6dc881de23001b",
        "123e4567-e89b-12d3-a456-426614174000",
        "QUtJQUlPU0ZPRE5ON0VYQU1QTEU==",
    ] {
        assert!(text.contains(kept), "{kept} was changed: {text}");
    }

    let component = Server::with_config("[[filter]]\npath = \"builtin:redact.wasm\"\n");
    let (wasm_text, wasm_count, health) = run(&component).await;
    assert_eq!(
        (
            health.name.as_str(),
            health.origin.as_str(),
            health.runs.as_str()
        ),
        ("redact", "<built-in filter redact.wasm>", "component")
    );
    assert_eq!((wasm_text, wasm_count), (text, count));
}

#[tokio::test]
async fn limits_given_to_the_native_redact_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("procwarden.toml");
    std::fs::write(
        &path,
        "[[filter]]\npath = \"builtin:redact\"\ncpu_budget_ms = 1\nmax_memory_bytes = 65536\n",
    )
    .unwrap();
    let o = cli(&["config", "check", path.to_str().unwrap()], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    let server = Server::with_config(
        "[[filter]]\npath = \"builtin:redact\"\ncpu_budget_ms = 1\nmax_memory_bytes = 65536\n",
    );
    let (_, count, health) = run(&server).await;
    assert_eq!((count, health.runs.as_str()), (Some(4), "native"));
}
