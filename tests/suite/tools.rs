//! Tool plugins through the agent: the built-in `serve` and `test_summary` over MCP, HTTP
//! and the CLI, and faulty tools contained (the fixture component `faulty_tool.wasm`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use procwarden_tests::api::{ErrorBody, ListReply, ToolCallReply, ToolsReply};
use procwarden_tests::mcp::{HttpServer, call, target_dir};
use procwarden_tests::{Server, json, procwarden_command};

const SAMPLES: &str = "[[tool]]\npath = \"builtin:serve\"\n\n[[tool]]\npath = \"builtin:test_summary\"\ntimeout_seconds = 300\n";
const LONG: Duration = Duration::from_secs(300);

fn fixture() -> PathBuf {
    let target = target_dir().parent().expect("target dir").to_path_buf();
    let path = target.join("plugins/wasm32-wasip2/release/faulty_tool.wasm");
    assert!(
        path.exists(),
        "{} missing: run scripts/build-plugins.sh",
        path.display()
    );
    path
}

#[tokio::test]
async fn mcp_lists_the_tool_plugins_with_their_schemas_and_calls_serve() {
    let server = HttpServer::start_with_config(Some(SAMPLES));
    let client = server.session(&[]).await;
    let tools = client.list_all_tools().await.expect("tools/list");
    let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "execute",
            "process_input",
            "process_list",
            "process_output",
            "process_signal",
            "serve",
            "test_summary"
        ]
    );
    let serve = tools.iter().find(|t| t.name == "serve").unwrap();
    assert!(serve.input_schema["properties"]["ready_regex"].is_object());
    assert_eq!(serve.input_schema["required"], json!(["command"]));

    let reply = call(
        &client,
        "serve",
        json!({"command": "echo starting; sleep 0.2; echo 'Listening on http://127.0.0.1:9'; sleep 600", "ready_regex": "Listening on"}),
    )
    .await;
    assert!(!reply.is_error, "{}", reply.text);
    let reply = reply.json;
    assert_eq!(reply["status"], "ready", "{reply}");
    assert_eq!(reply["matched_line"], "Listening on http://127.0.0.1:9");
    let id = reply["id"].as_str().unwrap().to_owned();
    // The process is the session's: process_list shows it, process_signal stops it.
    let listed = call(&client, "process_list", json!({})).await.text;
    assert!(listed.contains(&id), "{listed}");
    let stopped = call(
        &client,
        "process_signal",
        json!({"id": id, "signal": "kill"}),
    )
    .await;
    assert!(!stopped.is_error, "{}", stopped.text);

    // Unknown arguments are refused by name, before the tool runs.
    let err = call(&client, "serve", json!({"command": "true", "port": 1}))
        .await
        .err();
    assert_eq!(
        err,
        "Unknown argument \"port\" for tool \"serve\"; it takes: command, ready_port, ready_regex, timeout_seconds, workdir."
    );
}

#[tokio::test]
async fn mcp_calls_test_summary_on_a_real_node_test_run() {
    if Command::new("node").arg("--version").output().is_err() {
        procwarden_tests::skip(
            "mcp_calls_test_summary_on_a_real_node_test_run",
            "node is not installed",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("math.test.js"),
        "const test = require('node:test');\nconst assert = require('node:assert');\n\
         for (let i = 0; i < 30; i++) test(`passes ${i}`, () => assert.ok(true));\n\
         test('adds wrong', () => assert.strictEqual(1 + 1, 3));\n",
    )
    .unwrap();
    let server = HttpServer::start_with_config(Some(SAMPLES));
    let client = server.session(&[]).await;
    let reply = call(
        &client,
        "test_summary",
        json!({"command": "node --test", "workdir": dir.path().to_str().unwrap()}),
    )
    .await;
    assert!(!reply.is_error, "{}", reply.text);
    let text = reply.text;
    assert!(text.contains("FAILED (exit code 1)"), "{text}");
    assert!(text.contains("adds wrong"), "{text}");
    assert!(text.contains("fail 1"), "{text}");
    assert!(
        !text.contains("passes 17"),
        "passing tests are elided: {text}"
    );
    assert!(text.contains("lines elided"), "{text}");
}

#[tokio::test]
async fn http_lists_and_calls_tools_and_test_summary_reads_cargo_test() {
    let server = Server::with_config(SAMPLES);
    let api = server.api().chat("tools-http");
    let tools: ToolsReply = api.get("/api/v0/tools").await.expect_status(200).json();
    let names: Vec<_> = tools.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["serve", "test_summary"]);

    // A real `cargo test` of a crate with one failing test among many passing ones.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        "[package]\nname = \"sample\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[workspace]\n",
    )
    .unwrap();
    let mut lib = String::from("#[cfg(test)]\nmod tests {\n");
    for i in 0..25 {
        lib.push_str(&format!(
            "    #[test]\n    fn passes_{i}() {{ assert_eq!(1, 1); }}\n"
        ));
    }
    lib.push_str("    #[test]\n    fn breaks() { assert_eq!(2 + 2, 5, \"arithmetic\"); }\n}\n");
    std::fs::write(dir.path().join("src/lib.rs"), lib).unwrap();
    let target = dir.path().join("target");
    let resp = api
        .try_send(
            "POST",
            "/api/v0/tools/test_summary",
            Some(
                serde_json::to_vec(&json!({
                    "command": format!("CARGO_TARGET_DIR={} cargo test --offline 2>&1", target.display()),
                    "workdir": dir.path().to_str().unwrap(),
                }))
                .unwrap(),
            ),
            LONG,
        )
        .await
        .unwrap();
    resp.expect_status(200);
    let reply: ToolCallReply = resp.json();
    let text = reply.text.expect("text result");
    assert!(text.contains("FAILED (exit code 101)"), "{text}");
    assert!(text.contains("---- tests::breaks stdout ----"), "{text}");
    assert!(text.contains("arithmetic"), "{text}");
    assert!(
        text.contains("test result: FAILED. 25 passed; 1 failed"),
        "{text}"
    );
    assert!(
        !text.contains("tests::passes_7 ... ok"),
        "passing tests are elided: {text}"
    );

    // Unknown tool: 404 naming what there is; bad arguments: 400 naming the argument.
    let err: ErrorBody = api
        .post("/api/v0/tools/nope", &json!({}))
        .await
        .expect_status(404)
        .json();
    assert_eq!(
        err.message,
        "Unknown tool \"nope\". Tools: serve, test_summary."
    );
    let err: ErrorBody = api
        .post("/api/v0/tools/test_summary", &json!({"cmd": "x"}))
        .await
        .expect_status(400)
        .json();
    assert!(
        err.message.starts_with("Unknown argument \"cmd\""),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn test_summary_reads_pytest_when_available() {
    let available = Command::new("python3")
        .args(["-m", "pytest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        procwarden_tests::skip(
            "the pytest test_summary test",
            "`python3 -m pytest` is not available on this machine",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut tests = String::new();
    for i in 0..20 {
        tests.push_str(&format!("def test_ok_{i}():\n    assert True\n\n"));
    }
    tests.push_str("def test_broken():\n    assert 1 + 1 == 3, 'arithmetic'\n");
    std::fs::write(dir.path().join("test_sample.py"), tests).unwrap();
    let server = Server::with_config(SAMPLES);
    let resp = server
        .api()
        .try_send(
            "POST",
            "/api/v0/tools/test_summary",
            Some(
                serde_json::to_vec(&json!({"command": "python3 -m pytest -v -p no:cacheprovider", "workdir": dir.path().to_str().unwrap()}))
                    .unwrap(),
            ),
            LONG,
        )
        .await
        .unwrap();
    let reply: ToolCallReply = resp.expect_status(200).json();
    let text = reply.text.unwrap();
    assert!(text.contains("test_broken"), "{text}");
    assert!(text.contains("arithmetic"), "{text}");
    assert!(text.contains("1 failed, 20 passed"), "{text}");
    assert!(!text.contains("test_ok_7 PASSED"), "{text}");
}

#[tokio::test]
async fn cli_calls_a_tool() {
    let server = Server::with_config(SAMPLES);
    let out = procwarden_command()
        .args(["tool", "serve", "--url", server.url(), "--json"])
        .arg(r#"{"command": "echo ready now; exit 4", "ready_regex": "never"}"#)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["status"], "exited");
    assert_eq!(reply["exit_code"], 4);
    assert_eq!(reply["output_tail"], "ready now");
}

#[tokio::test]
async fn faulty_tools_are_contained_and_named_and_their_processes_stay_killable() {
    let toml = format!(
        "[[tool]]\nname = \"faulty\"\npath = \"{}\"\ncpu_budget_ms = 200\ntimeout_seconds = 10\nmax_memory_bytes = 33554432\n\n\
         [[tool]]\nname = \"corrupt\"\npath = \"/nonexistent/corrupt.wasm\"\n",
        fixture().display()
    );
    let server = Server::with_config(&toml);
    let api = server.api().chat("faulty");
    for (tool, expect) in [
        ("trap", "Tool plugin \"trap\" trapped"),
        (
            "spin",
            "Tool plugin \"spin\" used more than its 200 ms of CPU time",
        ),
        ("hog", "Tool plugin \"hog\" ran out of memory"),
        ("corrupt", "Tool plugin \"corrupt\" could not be loaded"),
    ] {
        let err: ErrorBody = api
            .post(&format!("/api/v0/tools/{tool}"), &json!({}))
            .await
            .expect_status(503)
            .json();
        assert!(err.message.starts_with(expect), "{tool}: {}", err.message);
    }
    let err: ErrorBody = api
        .post(
            "/api/v0/tools/start_then_trap",
            &json!({"command": "sleep 600"}),
        )
        .await
        .expect_status(503)
        .json();
    assert!(
        err.message.contains("\"start_then_trap\" trapped"),
        "{}",
        err.message
    );
    let list: ListReply = api
        .get("/api/v0/processes/list")
        .await
        .expect_status(200)
        .json();
    let sleeper = list
        .processes
        .iter()
        .find(|p| p.command == "sleep 600" && p.running)
        .expect("the tool's process is tracked in the caller's chat");
    api.post(
        &format!("/api/v0/processes/{}/signal", sleeper.id),
        &json!({"signal": "kill"}),
    )
    .await
    .expect_status(200);
    // The agent still serves, tools included.
    let reply: ToolCallReply = api
        .post("/api/v0/tools/echo", &json!({"command": "echo still here"}))
        .await
        .expect_status(200)
        .json();
    assert_eq!(reply.json.unwrap()["output"], "still here\n");
    server.assert_alive();
}
