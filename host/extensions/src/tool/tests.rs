//! Tool plugins end to end inside the extensions crate: the fixture and sample components
//! run against a [`ProcessHost`] backed by a real process manager (no policy chain: the
//! agent's host adds that, and its tests cover it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use serde_json::json;

use super::*;
use procwarden_process::{ManagerSettings, Phase, ProcessManager, Scope};

const FIXTURE: &[u8] = include_bytes!(env!("PROCWARDEN_FIXTURE_TOOL"));

struct ManagerHost(Arc<ProcessManager>);

fn not_found(e: procwarden_process::ProcessError) -> ProcessError {
    match e {
        procwarden_process::ProcessError::NotFound(_) => ProcessError::NotFound(e.to_string()),
        procwarden_process::ProcessError::NotRunning(_) => ProcessError::NotRunning(e.to_string()),
        other => ProcessError::Internal(other.to_string()),
    }
}

impl ProcessHost for ManagerHost {
    fn start(
        &self,
        scope: &CallScope,
        request: procwarden_process::StartRequest,
    ) -> futures::future::BoxFuture<'static, Result<String, ProcessError>> {
        let started = self
            .0
            .start(request, scope.chat.clone())
            .map(|p| p.id().to_owned())
            .map_err(not_found);
        async move { started }.boxed()
    }

    fn signal(
        &self,
        scope: &CallScope,
        id: &str,
        signal: ProcessSignal,
    ) -> BoxFuture<'static, Result<(), ProcessError>> {
        let signalled = self
            .0
            .signal(id, Scope::from_chat(scope.chat.as_deref()), signal.into())
            .map_err(not_found);
        async move { signalled }.boxed()
    }

    fn output(
        &self,
        scope: &CallScope,
        id: &str,
    ) -> BoxFuture<'static, Result<ProcessOutput, ProcessError>> {
        let output = self
            .0
            .get(id, Scope::from_chat(scope.chat.as_deref()))
            .map(|p| p.snapshot().into())
            .map_err(not_found);
        async move { output }.boxed()
    }

    fn wait(
        &self,
        scope: &CallScope,
        id: &str,
        limit: Duration,
    ) -> futures::future::BoxFuture<'static, Result<ProcessOutput, ProcessError>> {
        let p = self.0.get(id, Scope::from_chat(scope.chat.as_deref()));
        async move {
            let p = p.map_err(not_found)?;
            let _ = tokio::time::timeout(limit, p.wait_for(Phase::Exited)).await;
            Ok(p.snapshot().into())
        }
        .boxed()
    }

    fn list(&self, scope: &CallScope) -> futures::future::BoxFuture<'static, Vec<ProcessInfo>> {
        let list = self.0.list(Scope::from_chat(scope.chat.as_deref()), 100);
        async move { list.into_iter().map(Into::into).collect() }.boxed()
    }
}

fn manager() -> Arc<ProcessManager> {
    ProcessManager::new(ManagerSettings::default())
}

fn fixture(cpu_ms: u64, timeout_s: u32) -> ToolSet {
    let mut src = ToolSource::bytes("faulty", FIXTURE);
    src.cpu_budget_ms = cpu_ms;
    src.timeout_seconds = timeout_s;
    src.max_memory_bytes = 32 << 20;
    ToolSet::load(&[src], &["process_start"]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_tool_starts_a_process_and_reads_its_output_through_wit() {
    let tools = fixture(2_000, 30);
    assert!(tools.failures().is_empty(), "{:?}", tools.failures());
    let m = manager();
    let host: Arc<dyn ProcessHost> = Arc::new(ManagerHost(m.clone()));
    let out = tools
        .invoke(
            host,
            "echo",
            json!({"command": "echo from-the-tool; exit 3"}),
            Some("c1"),
            None,
        )
        .await
        .unwrap();
    let ToolOutput::Json(v) = out else {
        panic!("{out:?}")
    };
    assert_eq!(v["output"], "from-the-tool\n");
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["listed"], true, "list() shows the chat's process");
    // The process is tracked in the calling chat, and only there.
    let id = v["id"].as_str().unwrap();
    assert!(m.get(id, Scope::Chat("c1")).is_ok());
    assert!(m.get(id, Scope::Chat("other")).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_in_the_host_costs_no_cpu_budget() {
    // 50 ms of CPU, but the tool waits 1.5 s for its process: host time is not guest time.
    let tools = fixture(50, 30);
    let host: Arc<dyn ProcessHost> = Arc::new(ManagerHost(manager()));
    let start = Instant::now();
    let out = tools
        .invoke(
            host,
            "wait_long",
            json!({"command": "sleep 1.5; echo done"}),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(out, ToolOutput::Text("done\n".into()));
    assert!(start.elapsed() >= Duration::from_millis(1400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_tools_fail_naming_the_tool_and_the_set_keeps_serving() {
    let tools = fixture(200, 5);
    let m = manager();
    let host: Arc<dyn ProcessHost> = Arc::new(ManagerHost(m.clone()));
    let call = |name: &'static str| {
        let host = host.clone();
        let tools = &tools;
        async move { tools.invoke(host, name, json!({}), Some("c"), None).await }
    };
    let e = call("trap").await.unwrap_err().to_string();
    assert!(e.starts_with("Tool plugin \"trap\" trapped"), "{e}");
    assert!(e.contains("deliberate panic"), "{e}");
    let e = call("spin").await.unwrap_err().to_string();
    assert!(
        e.contains("\"spin\" used more than its 200 ms of CPU time"),
        "{e}"
    );
    let e = call("hog").await.unwrap_err().to_string();
    assert!(e.contains("\"hog\" ran out of memory"), "{e}");
    let e = call("bad_json").await.unwrap_err().to_string();
    assert!(e.contains("returned JSON that does not parse"), "{e}");

    // A tool that started a process and then trapped: the process stays tracked, killable.
    let e = tools
        .invoke(
            host.clone(),
            "start_then_trap",
            json!({"command": "sleep 600"}),
            Some("c"),
            None,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"start_then_trap\" trapped"), "{e}");
    let listed = m.list(Scope::Chat("c"), 10);
    let sleeper = listed
        .iter()
        .find(|p| p.command == "sleep 600")
        .expect("tracked");
    assert!(sleeper.running);
    m.signal(
        &sleeper.id,
        Scope::Chat("c"),
        procwarden_process::GroupSignal::Kill,
    )
    .unwrap();

    // Still serving.
    let out = tools
        .invoke(host, "echo", json!({"command": "echo ok"}), None, None)
        .await
        .unwrap();
    assert!(matches!(out, ToolOutput::Json(v) if v["output"] == "ok\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_time_limit_stops_a_tool_that_waits_too_long() {
    let tools = fixture(200, 1);
    let host: Arc<dyn ProcessHost> = Arc::new(ManagerHost(manager()));
    let start = Instant::now();
    // `wait` is cut at the call's deadline, so the tool gets the output back in time.
    let out = tools
        .invoke(
            host,
            "wait_long",
            json!({"command": "sleep 30"}),
            None,
            None,
        )
        .await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    match out {
        Ok(ToolOutput::Text(t)) => assert_eq!(t, ""),
        Err(e) => assert!(e.to_string().contains("real-time limit"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_are_checked_by_name_before_the_tool_runs() {
    let tools = fixture(200, 5);
    let host: Arc<dyn ProcessHost> = Arc::new(ManagerHost(manager()));
    let e = tools
        .invoke(
            host.clone(),
            "echo",
            json!({"command": "x", "shell": "bash"}),
            None,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Unknown argument \"shell\" for tool \"echo\"; it takes: command."
    );
    let e = tools
        .invoke(host, "nope", json!({}), None, None)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("Unknown tool \"nope\". Tools: echo,"),
        "{e}"
    );
}

#[test]
fn broken_components_are_contained_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.wasm");
    std::fs::write(&corrupt, b"\0asm\x0d\0\x01\0garbage").unwrap();
    let policy = ToolSource::bytes(
        "wrong",
        include_bytes!(env!("PROCWARDEN_PLUGIN_DENY")).as_slice(),
    );
    let tools = ToolSet::load(
        &[
            ToolSource::file(&corrupt),
            policy,
            ToolSource::bytes("faulty", FIXTURE),
        ],
        &[],
    )
    .unwrap();
    let failures = tools.failures();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!(failures[0].component, "corrupt");
    assert!(
        failures[0]
            .error
            .contains("not a valid WebAssembly component"),
        "{failures:?}"
    );
    assert_eq!(failures[1].component, "wrong");
    assert!(
        failures[1]
            .error
            .contains("imports something tool plugins are not granted")
            || failures[1]
                .error
                .contains("does not implement the tool plugin world"),
        "{failures:?}"
    );
    assert!(tools.contains("echo"));
}

#[test]
fn duplicate_and_reserved_names_are_refused() {
    let tools = ToolSet::load(
        &[
            ToolSource::bytes("a", FIXTURE),
            ToolSource::bytes("b", FIXTURE),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(tools.failures().len(), 1, "{:?}", tools.failures());
    assert_eq!(tools.failures()[0].component, "b");
    assert!(
        tools.failures()[0]
            .error
            .contains("\"echo\" is already taken"),
        "{:?}",
        tools.failures()
    );
    let tools = ToolSet::load(&[ToolSource::bytes("a", FIXTURE)], &["trap"]).unwrap();
    assert!(
        tools.failures()[0]
            .error
            .contains("\"trap\" is already taken"),
        "{:?}",
        tools.failures()
    );
    assert!(!tools.contains("echo"));
}

#[test]
fn builtin_samples_load() {
    let srcs: Vec<ToolSource> = builtin::SAMPLES
        .iter()
        .map(|(n, b)| ToolSource::bytes(*n, *b))
        .collect();
    let tools = ToolSet::load(&srcs, &[]).unwrap();
    assert!(tools.failures().is_empty(), "{:?}", tools.failures());
    let names: Vec<String> = tools.specs().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["serve", "test_summary"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_returns_once_the_output_matches() {
    let tools = ToolSet::load(
        &[ToolSource::bytes("serve", builtin::find("serve").unwrap())],
        &[],
    )
    .unwrap();
    let m = manager();
    let host: Arc<dyn ProcessHost> = Arc::new(ManagerHost(m.clone()));
    let out = tools
        .invoke(
            host.clone(),
            "serve",
            json!({"command": "echo booting; sleep 0.3; echo 'listening on 4000'; sleep 600", "ready_regex": "listening on \\d+"}),
            Some("s"),
            None,
        )
        .await
        .unwrap();
    let ToolOutput::Json(v) = out else { panic!() };
    assert_eq!(v["status"], "ready", "{v}");
    assert_eq!(v["matched_line"], "listening on 4000");
    let id = v["id"].as_str().unwrap();
    assert!(m.get(id, Scope::Chat("s")).unwrap().snapshot().running);
    m.signal(id, Scope::All, procwarden_process::GroupSignal::Kill)
        .unwrap();

    let out = tools
        .invoke(
            host,
            "serve",
            json!({"command": "echo oops; exit 2", "ready_regex": "never"}),
            None,
            None,
        )
        .await
        .unwrap();
    let ToolOutput::Json(v) = out else { panic!() };
    assert_eq!(v["status"], "exited", "{v}");
    assert_eq!(v["exit_code"], 2);
    assert_eq!(v["output_tail"], "oops");
}
