//! Tests of the policy runtime against real components: the sample plugins and the faulty
//! fixtures built from `plugins/` by `host/extensions/build.rs`, which passes their paths in
//! `PROCWARDEN_PLUGIN_*` and `PROCWARDEN_FIXTURE_*`.
//!
//! `PROCWARDEN_TEST_PLUGIN_DIR` (at test run time) makes the tests load every component
//! from that directory instead, e.g. to try other builds.

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use super::*;

mod native;
mod versions;

/// The component `name` (`faulty-trap` is the file `faulty_trap.wasm`).
fn wasm(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("PROCWARDEN_TEST_PLUGIN_DIR") {
        let file = PathBuf::from(dir).join(format!("{}.wasm", name.replace('-', "_")));
        assert!(
            file.is_file(),
            "test component {} not found",
            file.display()
        );
        return file;
    }
    PathBuf::from(match name {
        "ampersand" => env!("PROCWARDEN_PLUGIN_AMPERSAND"),
        "env" => env!("PROCWARDEN_PLUGIN_ENV"),
        "workdir" => env!("PROCWARDEN_PLUGIN_WORKDIR"),
        "deny" => env!("PROCWARDEN_PLUGIN_DENY"),
        "npm-ci" => env!("PROCWARDEN_PLUGIN_NPM_CI"),
        "faulty-trap" => env!("PROCWARDEN_FIXTURE_TRAP"),
        "faulty-spin" => env!("PROCWARDEN_FIXTURE_SPIN"),
        "faulty-hog" => env!("PROCWARDEN_FIXTURE_HOG"),
        "faulty-wrong-world" => env!("PROCWARDEN_FIXTURE_WRONG_WORLD"),
        "faulty-sleep" => env!("PROCWARDEN_FIXTURE_SLEEP"),
        "faulty-filesystem" => env!("PROCWARDEN_FIXTURE_FILESYSTEM"),
        "faulty-questions" => env!("PROCWARDEN_FIXTURE_QUESTIONS"),
        "faulty-counter" => env!("PROCWARDEN_FIXTURE_COUNTER"),
        _ => panic!("unknown test component {name}"),
    })
}

fn source(name: &str) -> PluginSource {
    PluginSource {
        name: Some(name.to_owned()),
        ..PluginSource::file(wasm(name))
    }
}

fn settings(text: &str) -> toml::Table {
    toml::from_str(text).unwrap()
}

/// A cache shared by the tests of this process, so each component is compiled once.
static SHARED_CACHE: LazyLock<tempfile::TempDir> = LazyLock::new(|| tempfile::tempdir().unwrap());

fn config() -> PolicyConfig {
    PolicyConfig {
        cache_dir: Some(SHARED_CACHE.path().to_owned()),
        ..PolicyConfig::default()
    }
}

fn chain(sources: &[PluginSource]) -> PolicyChain {
    PolicyChain::load(&config(), sources).unwrap()
}

fn req(command: &str) -> StartRequest {
    StartRequest {
        command: command.to_owned(),
        ..Default::default()
    }
}

fn ctx() -> PolicyContext {
    PolicyContext {
        chat_id: Some("chat-1".into()),
        agent_workdir: Some(std::env::temp_dir().display().to_string()),
        home: std::env::var("HOME").ok(),
        ..Default::default()
    }
}

/// The error of a configuration that cannot load, or of the plugins that could not be loaded
/// (those stay in the chain and deny every request, naming themselves and the cause).
fn load_err(sources: &[PluginSource]) -> String {
    let e = match PolicyChain::load(&config(), sources) {
        Err(err) => format!("{err:#}"),
        Ok(chain) => {
            let errors: Vec<String> = chain
                .plugins()
                .into_iter()
                .filter_map(|p| p.load_error)
                .collect();
            assert!(!errors.is_empty(), "expected a plugin that failed to load");
            let denial = chain
                .evaluate(req("ls"), &ctx())
                .expect_err("a broken plugin denies");
            assert!(denial.reason.contains("could not be loaded"), "{denial:?}");
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains(&format!("\"{}\"", denial.plugin)))
            );
            errors.join("; ")
        }
    };
    println!("load error: {e}");
    e
}

#[test]
fn a_plugin_that_cannot_load_is_contained_by_its_on_error() {
    let broken = PluginSource::bytes("broken", b"not wasm".to_vec());
    let c = chain(&[
        source("ampersand"),
        broken.clone().with_on_error(OnError::Allow),
    ]);
    assert_eq!(c.evaluate(req("a &"), &ctx()).unwrap().command, "a");
    let c = chain(&[source("ampersand"), broken]);
    let denial = c.evaluate(req("a &"), &ctx()).unwrap_err();
    assert_eq!(denial.plugin, "broken");
    assert!(denial.reason.contains("could not be loaded"), "{denial:?}");
}

#[test]
fn empty_chain_allows_unchanged() {
    let r = req("ls &");
    assert_eq!(
        PolicyChain::empty().evaluate(r.clone(), &ctx()),
        Ok(r.clone())
    );
    let loaded = PolicyChain::load(&config(), &[]).unwrap();
    assert!(loaded.is_empty());
    assert_eq!(loaded.evaluate(r.clone(), &ctx()), Ok(r));
}

#[test]
fn samples_rewrite_in_order() {
    let c = chain(&[
        source("ampersand"),
        source("env").with_settings(settings(
            "defaults = false\n[vars]\nCI = true\nPAGER = \"cat\"",
        )),
        source("workdir"),
    ]);
    let out = c.evaluate(req("sleep 5 &"), &ctx()).unwrap();
    assert_eq!(out.command, "sleep 5");
    assert!(out.background);
    assert!(
        out.env.contains(&("CI".into(), "true".into())),
        "{:?}",
        out.env
    );
    assert!(
        out.env.contains(&("PAGER".into(), "cat".into())),
        "{:?}",
        out.env
    );
    assert_eq!(out.workdir, ctx().agent_workdir);

    // Order matters: `deny` sees the command as `ampersand` left it.
    let deny =
        || source("deny").with_settings(settings("defaults = false\npatterns = ['re:^sleep 5$']"));
    let before = chain(&[deny(), source("ampersand")]);
    assert!(before.evaluate(req("sleep 5 &"), &ctx()).is_ok());
    let after = chain(&[source("ampersand"), deny()]);
    let denial = after.evaluate(req("sleep 5 &"), &ctx()).unwrap_err();
    assert_eq!(denial.plugin, "deny");
}

#[test]
fn built_in_samples_make_the_default_chain() {
    let c = chain(&PluginSource::samples());
    let names: Vec<_> = c.plugins().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["ampersand", "env", "workdir", "deny"]);
    let out = c.evaluate(req("sleep 5 &"), &ctx()).unwrap();
    assert_eq!(out.command, "sleep 5");
    assert!(out.background);
    assert!(
        out.env.contains(&("PAGER".into(), "cat".into())),
        "{:?}",
        out.env
    );
    assert_eq!(out.workdir, ctx().agent_workdir);
    assert_eq!(
        c.evaluate(req("rm -rf /"), &ctx()).unwrap_err().plugin,
        "deny"
    );
}

#[test]
fn workdir_refuses_a_missing_directory_via_is_dir() {
    let c = chain(&[source("workdir")]);
    let mut r = req("ls");
    r.workdir = Some("/definitely/not/here".into());
    let denial = c.evaluate(r, &ctx()).unwrap_err();
    assert_eq!(denial.plugin, "workdir");
    assert!(
        denial.reason.contains("/definitely/not/here"),
        "{}",
        denial.reason
    );
}

#[test]
fn deny_stops_the_chain() {
    let c = chain(&[
        source("deny").with_settings(settings(
            "patterns = ['git push --force']\nreason = 'push to a branch'",
        )),
        source("faulty-trap"),
    ]);
    let denial = c
        .evaluate(req("git push --force origin main"), &ctx())
        .unwrap_err();
    assert_eq!(denial.plugin, "deny");
    assert!(
        denial.reason.contains("push to a branch"),
        "{}",
        denial.reason
    );
    let health = c.health();
    assert_eq!(health[0].denied, 1);
    assert_eq!(health[1].calls, 0, "the plugin after a denial must not run");
    // Built-in rules are on by default.
    assert!(c.evaluate(req("rm -rf /"), &ctx()).is_err());
}

#[test]
fn trap_is_an_error_naming_the_plugin_and_the_chain_keeps_working() {
    let c = chain(&[source("faulty-trap"), source("env")]);
    for _ in 0..3 {
        let denial = c.evaluate(req("ls"), &ctx()).unwrap_err();
        println!("{denial}");
        assert_eq!(denial.plugin, "faulty-trap");
        assert!(denial.reason.starts_with("trapped"), "{}", denial.reason);
        // The guest's panic message (its stderr) is part of the error.
        assert!(
            denial.reason.contains("deliberate panic"),
            "{}",
            denial.reason
        );
    }
    let h = &c.health()[0];
    assert_eq!((h.calls, h.failures, h.consecutive_failures), (3, 3, 3));
    assert!(h.last_failure.as_deref().unwrap().contains("trapped"));
}

#[test]
fn on_error_allow_lets_the_request_through_unchanged() {
    let c = chain(&[
        source("faulty-trap").with_on_error(OnError::Allow),
        source("faulty-spin")
            .with_on_error(OnError::Allow)
            .with_timeout_ms(5),
        source("faulty-hog")
            .with_on_error(OnError::Allow)
            .with_max_memory_bytes(32 << 20),
        source("ampersand"),
    ]);
    for _ in 0..2 {
        let out = c.evaluate(req("make &"), &ctx()).unwrap();
        assert_eq!(out.command, "make");
        assert!(out.background);
    }
    let h = c.health();
    assert_eq!(
        h.iter().map(|h| h.failures).collect::<Vec<_>>(),
        [2, 2, 2, 0]
    );
    assert_eq!(h[3].allowed, 2);
}

#[test]
fn spin_times_out_near_its_deadline() {
    let c = chain(&[source("faulty-spin").with_timeout_ms(20), source("env")]);
    for _ in 0..2 {
        let start = Instant::now();
        let denial = c.evaluate(req("ls"), &ctx()).unwrap_err();
        let took = start.elapsed();
        println!("{denial}");
        println!("faulty-spin with a 20 ms budget stopped after {took:?}");
        assert_eq!(denial.plugin, "faulty-spin");
        assert!(
            denial.reason.contains("took longer than 20 ms"),
            "{}",
            denial.reason
        );
        assert!(
            took >= Duration::from_millis(20),
            "stopped too early: {took:?}"
        );
        assert!(
            took < Duration::from_millis(1000),
            "stopped too late: {took:?}"
        );
    }
    // The default budget applies without `timeout_ms`.
    let c = chain(&[source("faulty-spin")]);
    let denial = c.evaluate(req("ls"), &ctx()).unwrap_err();
    assert!(
        denial.reason.contains("took longer than 10 ms"),
        "{}",
        denial.reason
    );
}

#[test]
fn hog_runs_out_of_memory() {
    // Filling 48 MiB takes longer than the default 10 ms CPU budget on a busy machine.
    let c = chain(&[source("faulty-hog")
        .with_max_memory_bytes(48 << 20)
        .with_timeout_ms(5000)]);
    for _ in 0..2 {
        let start = Instant::now();
        let denial = c.evaluate(req("ls"), &ctx()).unwrap_err();
        println!("{denial}");
        println!("faulty-hog with 48 MiB stopped after {:?}", start.elapsed());
        assert_eq!(denial.plugin, "faulty-hog");
        assert!(
            denial.reason.contains("out of memory") && denial.reason.contains("limit of 48 MiB"),
            "{}",
            denial.reason
        );
    }
}

#[test]
fn wrong_world_fails_to_load_naming_plugin_and_path() {
    let path = wasm("faulty-wrong-world");
    let e = load_err(&[source("env"), source("faulty-wrong-world")]);
    assert!(e.contains("policy plugin \"faulty-wrong-world\""), "{e}");
    assert!(e.contains(&path.display().to_string()), "{e}");
    // Every version's export, as its bindings name it.
    assert!(e.contains("procwarden:policy/policy@0.1.0"), "{e}");
    assert!(e.contains("procwarden:policy/policy@0.2.0"), "{e}");
}

#[test]
fn corrupt_or_missing_bytes_fail_to_load() {
    let e = load_err(&[PluginSource::bytes("junk", b"this is not wasm".to_vec())]);
    assert!(
        e.contains("policy plugin \"junk\" (<built-in junk>)"),
        "{e}"
    );
    assert!(e.contains("magic"), "{e}");

    let good = std::fs::read(wasm("env")).unwrap();
    let truncated = good[..good.len() / 2].to_vec();
    let e = load_err(&[PluginSource::bytes("half", truncated)]);
    assert!(e.contains("policy plugin \"half\""), "{e}");
    assert!(e.contains("not a valid WebAssembly component"), "{e}");

    let mut flipped = good.clone();
    let mid = flipped.len() / 3;
    for b in &mut flipped[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let e = load_err(&[PluginSource::bytes("flipped", flipped)]);
    assert!(e.contains("policy plugin \"flipped\""), "{e}");

    let core = b"\0asm\x01\0\0\0".to_vec();
    let e = load_err(&[PluginSource::bytes("core", core)]);
    assert!(e.contains("core WebAssembly module"), "{e}");

    let e = load_err(&[PluginSource::file("/no/such/plugin.wasm")]);
    assert!(
        e.contains("policy plugin \"plugin\" (/no/such/plugin.wasm)"),
        "{e}"
    );
    assert!(e.contains("cannot read"), "{e}");
}

#[test]
fn invalid_limits_and_duplicate_names_fail_to_load() {
    let e = load_err(&[source("env"), source("env")]);
    assert!(e.contains("two policy plugins are named \"env\""), "{e}");
    let e = load_err(&[source("env").with_timeout_ms(0)]);
    assert!(
        e.contains("policy plugin \"env\"") && e.contains("timeout_ms"),
        "{e}"
    );
    let e = load_err(&[source("env").with_max_memory_bytes(1)]);
    assert!(e.contains("max_memory_bytes"), "{e}");
}

#[test]
fn bytes_sources_work_like_files() {
    let bytes = std::fs::read(wasm("ampersand")).unwrap();
    let c = chain(&[PluginSource::bytes("ampersand", bytes)]);
    let info = &c.plugins()[0];
    assert_eq!(info.name, "ampersand");
    assert_eq!(info.origin, "<built-in ampersand>");
    assert_eq!(c.evaluate(req("a &"), &ctx()).unwrap().command, "a");
}

#[test]
fn cache_second_load_is_a_hit_and_faster() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = PolicyConfig {
        cache_dir: Some(dir.path().to_owned()),
        ..PolicyConfig::default()
    };
    let names = ["ampersand", "env", "workdir", "deny"];
    let sources: Vec<_> = names.iter().map(|n| source(n)).collect();
    let cold = PolicyChain::load(&cfg, &sources).unwrap();
    let warm = PolicyChain::load(&cfg, &sources).unwrap();
    for (c, w) in cold.plugins().iter().zip(warm.plugins()) {
        println!(
            "{:<10} {:>7} bytes: cold {:>8} µs ({}), cached {:>6} µs ({})",
            c.name,
            c.load.component_bytes,
            c.load.micros,
            c.load.cache,
            w.load.micros,
            w.load.cache
        );
        assert_eq!(c.load.cache, CacheStatus::Miss);
        assert_eq!(w.load.cache, CacheStatus::Hit);
        assert!(
            w.load.micros < c.load.micros,
            "{} cache hit not faster",
            c.name
        );
    }
    assert_eq!(warm.cache_dir(), Some(dir.path().join("plugins").as_path()));
    assert!(warm.evaluate(req("x &"), &ctx()).unwrap().background);

    // A damaged entry is discarded and rebuilt.
    let entries: Vec<_> = std::fs::read_dir(dir.path().join("plugins"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), names.len());
    for (i, e) in entries.iter().enumerate() {
        let mut bytes = std::fs::read(e).unwrap();
        if i == 0 {
            bytes.truncate(7);
        } else {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x01;
        }
        std::fs::write(e, bytes).unwrap();
    }
    let again = PolicyChain::load(&cfg, &sources).unwrap();
    assert!(
        again
            .plugins()
            .iter()
            .all(|p| p.load.cache == CacheStatus::Miss)
    );
    assert!(again.evaluate(req("x &"), &ctx()).unwrap().background);
    let third = PolicyChain::load(&cfg, &sources).unwrap();
    assert!(
        third
            .plugins()
            .iter()
            .all(|p| p.load.cache == CacheStatus::Hit)
    );

    // Caching off.
    let off = PolicyConfig {
        cache: false,
        ..cfg
    };
    let c = PolicyChain::load(&off, &sources[..1]).unwrap();
    assert_eq!(c.plugins()[0].load.cache, CacheStatus::Off);
    assert_eq!(c.cache_dir(), None);
}

#[test]
fn explain_reports_each_step() {
    let c = chain(&[
        source("ampersand"),
        source("faulty-trap").with_on_error(OnError::Allow),
        source("deny").with_settings(settings("patterns = ['make']")),
        source("env"),
    ]);
    let ex = c.explain(req("make &"), &ctx());
    let outcomes: Vec<_> = ex
        .steps
        .iter()
        .map(|s| (s.plugin.as_str(), &s.outcome))
        .collect();
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert!(
        matches!(outcomes[0], ("ampersand", StepOutcome::Allowed { request }) if request.command == "make")
    );
    assert!(matches!(
        outcomes[1],
        (
            "faulty-trap",
            StepOutcome::Failed {
                on_error: OnError::Allow,
                ..
            }
        )
    ));
    assert!(matches!(outcomes[2], ("deny", StepOutcome::Denied { .. })));
    assert_eq!(ex.result.unwrap_err().plugin, "deny");
    // Dry runs are not counted.
    assert!(c.health().iter().all(|h| h.calls == 0));
    let json = serde_json::to_value(&ex.steps[1]).unwrap();
    assert_eq!(json["outcome"]["decision"], "failed");
}

#[test]
fn an_observer_sees_every_counted_call_and_no_dry_run() {
    use std::sync::{Arc, Mutex};
    let c = chain(&[
        source("ampersand"),
        source("faulty-trap").with_on_error(OnError::Allow),
        source("deny").with_settings(settings("patterns = ['make']")),
    ]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    assert!(c.observe(Arc::new(move |call: &PluginCall<'_>| {
        sink.lock()
            .unwrap()
            .push((call.plugin.to_owned(), call.outcome));
    })));
    assert!(
        !c.observe(Arc::new(|_: &PluginCall<'_>| {})),
        "a chain takes one observer"
    );
    let _ = c.explain(req("make &"), &ctx());
    assert!(seen.lock().unwrap().is_empty(), "dry runs are not observed");
    assert!(c.evaluate(req("make &"), &ctx()).is_err());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            ("ampersand".to_owned(), CallOutcome::Allowed),
            ("faulty-trap".to_owned(), CallOutcome::Failed),
            ("deny".to_owned(), CallOutcome::Denied),
        ]
    );
}

#[test]
fn audit_file_gets_one_line_per_decision() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let cfg = PolicyConfig {
        audit_file: Some(audit.clone()),
        ..config()
    };
    let c = PolicyChain::load(
        &cfg,
        &[
            source("ampersand"),
            source("faulty-trap").with_on_error(OnError::Allow),
            source("deny").with_settings(settings("patterns = ['forbidden']")),
        ],
    )
    .unwrap();
    c.evaluate(req("sleep 1 &"), &ctx()).unwrap();
    c.evaluate(req("forbidden"), &ctx()).unwrap_err();
    // A tool plugin's start is recorded with the tool's name.
    let from_tool = PolicyContext {
        front_end: Some(FrontEnd::Tool("serve".into())),
        ..ctx()
    };
    c.evaluate(req("sleep 2"), &from_tool).unwrap();
    let mut lines: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l["plugin"].as_str().unwrap(),
                l["decision"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary[..6],
        [
            ("ampersand", "allow"),
            ("faulty-trap", "error"),
            ("deny", "allow"),
            ("ampersand", "allow"),
            ("faulty-trap", "error"),
            ("deny", "deny"),
        ]
    );
    let tool_lines = lines.split_off(6);
    assert_eq!(tool_lines.len(), 3);
    assert!(
        tool_lines.iter().all(|l| l["front_end"] == "tool:serve"),
        "{tool_lines:?}"
    );
    assert_eq!(lines[0]["command_before"], "sleep 1 &");
    assert_eq!(lines[0]["command_after"], "sleep 1");
    assert_eq!(
        lines[0]["changed"],
        serde_json::json!(["command", "background"])
    );
    assert_eq!(lines[0]["chat_id"], "chat-1");
    assert_eq!(lines[1]["on_error"], "allow");
    assert!(lines[5]["reason"].as_str().unwrap().contains("forbidden"));
}

#[test]
fn works_from_inside_tokio_runtimes() {
    // The trap fixture writes its panic message to stderr; WASI's synchronous streams would
    // panic on a thread that drives async tasks, so this checks the worker hand-off.
    let c = chain(&[
        source("faulty-trap").with_on_error(OnError::Allow),
        source("ampersand"),
    ]);
    let current = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    current.block_on(async {
        assert!(c.evaluate(req("a &"), &ctx()).unwrap().background);
        assert!(
            c.evaluate_async(req("b &"), &ctx())
                .await
                .unwrap()
                .background
        );
        assert_eq!(c.explain(req("c &"), &ctx()).steps.len(), 2);
    });
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    multi.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(
                    async move { c.evaluate_async(req(&format!("job{i} &")), &ctx()).await },
                )
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().unwrap().command, format!("job{i}"));
        }
    });
    assert_eq!(c.health()[1].allowed, 10);
}

#[test]
fn concurrent_plain_threads() {
    let c = chain(&[
        source("ampersand"),
        source("env"),
        source("faulty-trap").with_on_error(OnError::Allow),
    ]);
    std::thread::scope(|s| {
        for t in 0..4 {
            let c = &c;
            s.spawn(move || {
                for i in 0..25 {
                    let out = c.evaluate(req(&format!("t{t} {i} &")), &ctx()).unwrap();
                    assert_eq!(out.command, format!("t{t} {i}"));
                }
            });
        }
    });
    let h = c.health();
    assert_eq!((h[0].calls, h[2].failures), (100, 100));
}

/// Per-request cost of the four sample plugins against an empty chain. Not a timed
/// assertion; run with `cargo test --release -p procwarden --lib policy::tests::bench -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_chain_cost() {
    fn percentiles(mut v: Vec<u64>) -> (u64, u64, u64) {
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        (at(0.5), at(0.99), v[v.len() - 1])
    }
    fn run(c: &PolicyChain, n: usize) -> Vec<u64> {
        let ctx = ctx();
        (0..n)
            .map(|i| {
                let r = req(&format!("cargo build --release {i} &"));
                let start = Instant::now();
                let _ = std::hint::black_box(c.evaluate(r, &ctx));
                start.elapsed().as_micros() as u64
            })
            .collect()
    }
    fn vm() -> String {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .filter(|l| l.starts_with("VmSize") || l.starts_with("VmRSS"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(", ")
    }
    println!("before loading: {}", vm());
    let n = 2000;
    let empty = PolicyChain::empty();
    let samples = chain(&[
        source("ampersand"),
        source("env"),
        source("workdir"),
        source("deny"),
    ]);
    let one = chain(&[source("ampersand")]);
    println!("two chains loaded (5 plugins): {}", vm());
    run(&samples, 200); // warm up the instance pool
    run(&one, 200);
    for (label, c) in [
        ("empty chain", &empty),
        ("1 plugin (ampersand)", &one),
        ("4 sample plugins", &samples),
    ] {
        let (p50, p99, max) = percentiles(run(c, n));
        println!("{label:<22} n={n}: p50 {p50} µs, p99 {p99} µs, max {max} µs");
    }
    for h in samples.health() {
        println!(
            "  {:<10} mean {} µs/call (incl. instantiation), max {} µs",
            h.name,
            h.total_micros / h.calls.max(1),
            h.max_micros
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let lat: Vec<u64> = rt.block_on(async {
        let ctx = ctx();
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            let start = Instant::now();
            let _ = samples.evaluate_async(req(&format!("x {i} &")), &ctx).await;
            v.push(start.elapsed().as_micros() as u64);
        }
        v
    });
    let (p50, p99, max) = percentiles(lat);
    println!(
        "4 plugins, evaluate_async from a Tokio task: p50 {p50} µs, p99 {p99} µs, max {max} µs"
    );
}

/// `faulty-sleep` (mode `sleep`: `std::thread::sleep` for an hour; `sleep-loop`: 1 ms sleeps
/// forever) waits inside the host, where epoch interruption does not reach. The bounded
/// clock cuts the sleep at the call's real-time limit (10 × the CPU budget).
#[test]
fn sleeping_plugins_are_stopped_at_the_real_time_limit() {
    let sleep = source("faulty-sleep");
    for (mode, budget_ms) in [("sleep", 10), ("sleep-loop", 10), ("sleep-loop", 60)] {
        let c = chain(&[sleep
            .clone()
            .with_settings(settings(&format!("mode = '{mode}'")))
            .with_timeout_ms(budget_ms)]);
        let cap = Duration::from_millis(budget_ms * 10);
        for _ in 0..2 {
            let start = Instant::now();
            let denial = c.evaluate(req("ls"), &ctx()).unwrap_err();
            let took = start.elapsed();
            println!("{mode} ({budget_ms} ms): {took:?}: {denial}");
            let expect = format!("took longer than {} ms in real time", budget_ms * 10);
            assert!(denial.reason.contains(&expect), "{}", denial.reason);
            assert!(took >= cap, "{took:?}");
            assert!(took < cap + Duration::from_millis(500), "{took:?}");
        }
    }
}

/// `faulty-sleep` in mode `probe` tries environment variables and arguments, and denies with
/// what it found. (Files and sockets are not granted at all: see `versions.rs`.)
#[test]
fn wasi_grants_nothing() {
    let c = chain(&[source("faulty-sleep").with_settings(settings("mode = 'probe'"))]);
    let found = c.evaluate(req("ls"), &ctx()).unwrap_err().reason;
    println!("probe found: {found}");
    assert_eq!(found, "clock+sleep ok (true)");
}

/// Instances are created ahead of their call, but every call still gets one nobody has
/// called: `faulty-sleep` in mode `count` counts its calls in a static.
#[test]
fn every_call_runs_in_an_instance_nobody_called_before() {
    let c = chain(&[source("faulty-sleep").with_settings(settings("mode = 'count'"))]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for round in 0..4 {
            // A different request each time: an answer to a request seen before would be
            // remembered instead of run.
            let command = format!("ls {round}");
            let denial = c.evaluate_async(req(&command), &ctx()).await.unwrap_err();
            assert_eq!(denial.reason, "call 1 of this instance", "round {round}");
            // After the first call, the next instance is made ready off the request's path.
            let start = Instant::now();
            while c.ready_instances() == 0 {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "no ready instance"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    // The synchronous path (the chain's own runtime) uses and refills them the same way.
    for round in 0..3 {
        let denial = c
            .evaluate(req(&format!("ls -l {round}")), &ctx())
            .unwrap_err();
        assert_eq!(denial.reason, "call 1 of this instance");
    }
    assert_eq!(c.health()[0].remembered, 0);
}

// ---- Remembered answers (policy/memo.rs) ----

/// A chain whose plugins remember up to `answers` answers each.
fn remembering(answers: usize, sources: &[PluginSource]) -> anyhow::Result<PolicyChain> {
    let cfg = PolicyConfig {
        remembered_answers: answers,
        ..config()
    };
    PolicyChain::load(&cfg, sources)
}

fn remembered(c: &PolicyChain) -> Vec<u64> {
    c.health().iter().map(|h| h.remembered).collect()
}

#[test]
fn an_answer_given_before_is_remembered_not_run_again() {
    let c = chain(&[source("ampersand"), source("deny")]);
    let first = c.evaluate(req("sleep 30 &"), &ctx()).unwrap();
    assert_eq!(remembered(&c), [0, 0]);
    let second = c.evaluate(req("sleep 30 &"), &ctx()).unwrap();
    assert_eq!(second, first);
    assert!(second.background && second.command == "sleep 30");
    assert_eq!(remembered(&c), [1, 1]);
    // A denial is remembered the same way.
    let denial = c.evaluate(req("rm -rf /"), &ctx()).unwrap_err();
    assert_eq!(c.evaluate(req("rm -rf /"), &ctx()).unwrap_err(), denial);
    assert_eq!(remembered(&c), [2, 2]);
    let h = &c.health()[1];
    assert_eq!((h.calls, h.allowed, h.denied), (4, 2, 2));
}

#[test]
fn an_answer_is_remembered_per_request_and_context() {
    let c = chain(&[source("ampersand")]);
    c.evaluate(req("ls"), &ctx()).unwrap();
    c.evaluate(req("ls -a"), &ctx()).unwrap();
    let other_chat = PolicyContext {
        chat_id: Some("chat-2".into()),
        ..ctx()
    };
    c.evaluate(req("ls"), &other_chat).unwrap();
    let mut background = req("ls");
    background.background = true;
    c.evaluate(background, &ctx()).unwrap();
    assert_eq!(remembered(&c), [0]);
    c.evaluate(req("ls"), &other_chat).unwrap();
    assert_eq!(remembered(&c), [1]);
}

#[test]
fn a_remembered_answer_is_dropped_when_a_directory_it_checked_changes() {
    let c = chain(&[source("workdir")]);
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().join("project");
    std::fs::create_dir(&workdir).unwrap();
    let mut r = req("ls");
    r.workdir = Some(workdir.display().to_string());
    assert!(c.evaluate(r.clone(), &ctx()).is_ok());
    assert!(c.evaluate(r.clone(), &ctx()).is_ok());
    assert_eq!(remembered(&c), [1]);
    // The plugin asked `is-dir`; the answer changed, so the plugin runs again and refuses.
    std::fs::remove_dir(&workdir).unwrap();
    let denial = c.evaluate(r.clone(), &ctx()).unwrap_err();
    assert_eq!(denial.plugin, "workdir");
    assert_eq!(remembered(&c), [1]);
    // And the refusal is remembered while the directory stays missing.
    assert_eq!(c.evaluate(r.clone(), &ctx()).unwrap_err(), denial);
    assert_eq!(remembered(&c), [2]);
    std::fs::create_dir(&workdir).unwrap();
    assert!(c.evaluate(r, &ctx()).is_ok());
    assert_eq!(remembered(&c), [2]);
}

#[test]
fn an_answer_that_read_a_clock_or_random_numbers_is_not_remembered() {
    for mode in ["wall-clock", "random"] {
        let c =
            chain(&[source("faulty-sleep").with_settings(settings(&format!("mode = '{mode}'")))]);
        let first = c.evaluate(req("ls"), &ctx()).unwrap_err().reason;
        let second = c.evaluate(req("ls"), &ctx()).unwrap_err().reason;
        assert!(!first.starts_with("no random"), "{first}");
        assert_ne!(
            first, second,
            "{mode}: the second answer was not computed afresh"
        );
        assert_eq!(remembered(&c), [0], "{mode}");
    }
    // A sleep reads the monotonic clock.
    let c = chain(&[source("faulty-sleep").with_settings(settings("mode = 'probe'"))]);
    c.evaluate(req("ls"), &ctx()).unwrap_err();
    c.evaluate(req("ls"), &ctx()).unwrap_err();
    assert_eq!(remembered(&c), [0]);
}

#[test]
fn failures_are_not_remembered() {
    let c = chain(&[source("faulty-trap")]);
    for _ in 0..2 {
        assert_eq!(
            c.evaluate(req("ls"), &ctx()).unwrap_err().plugin,
            "faulty-trap"
        );
    }
    let h = &c.health()[0];
    assert_eq!((h.failures, h.remembered), (2, 0));
}

#[test]
fn remembering_can_be_turned_off() {
    let c = remembering(0, &[source("ampersand")]).unwrap();
    for _ in 0..3 {
        c.evaluate(req("ls"), &ctx()).unwrap();
    }
    assert_eq!(remembered(&c), [0]);
    let e = remembering(2_000_000, &[source("ampersand")]).unwrap_err();
    assert!(
        format!("{e:#}").contains("policy.remembered_answers"),
        "{e:#}"
    );
}

#[test]
fn dry_runs_neither_use_nor_fill_the_remembered_answers() {
    let c = chain(&[source("ampersand")]);
    c.explain(req("ls"), &ctx());
    c.evaluate(req("ls"), &ctx()).unwrap();
    assert_eq!(remembered(&c), [0], "a dry run filled the memo");
    let steps = c.explain(req("ls"), &ctx()).steps;
    assert_eq!(steps.len(), 1);
    assert_eq!(remembered(&c), [0]);
}

#[test]
fn a_large_request_is_run_every_time_not_remembered() {
    let c = chain(&[source("ampersand")]);
    let long = format!("echo {}", "x".repeat(8 << 10));
    for _ in 0..2 {
        c.evaluate(req(&long), &ctx()).unwrap();
    }
    assert_eq!(remembered(&c), [0]);
}

#[test]
fn remembered_answers_are_bounded() {
    let c = remembering(2, &[source("ampersand")]).unwrap();
    for command in ["a", "b", "c", "a"] {
        c.evaluate(req(command), &ctx()).unwrap();
    }
    // "a" was forgotten when "c" came in.
    assert_eq!(remembered(&c), [0]);
    c.evaluate(req("c"), &ctx()).unwrap();
    assert_eq!(remembered(&c), [1]);
}

/// Log output written on this thread while `f` runs.
fn logs_of(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        // DEBUG: the `ampersand` sample's note is a DEBUG line.
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
}

#[test]
fn a_remembered_answer_logs_what_the_plugin_logged() {
    let c = chain(&[source("ampersand")]);
    // On this thread, so the subscriber sees the plugin's log lines.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let run = || {
        logs_of(|| {
            rt.block_on(c.evaluate_async(req("sleep 30 &"), &ctx()))
                .unwrap();
        })
    };
    let (first, second) = (run(), run());
    assert_eq!(remembered(&c), [1]);
    for logs in [&first, &second] {
        assert!(
            logs.contains("stripped a trailing `&`") && logs.contains("ampersand"),
            "{logs}"
        );
    }
}

/// State a call writes into its instance (the fixture's static counter) is never seen by the
/// next call: every call runs in an instance nobody has called before, whether it was made
/// ready ahead of time or created in the call.
#[test]
fn every_call_sees_a_fresh_instance() {
    let c = chain(&[source("faulty-counter")]);
    for i in 0..20 {
        // A different command each time, so no answer is remembered and the plugin runs.
        let out = c.evaluate(req(&format!("true {i}")), &ctx()).unwrap();
        assert_eq!(out.command, format!("true {i} # call 1"));
    }
    let health = c.health();
    assert_eq!(health[0].calls, 20);
    assert_eq!(health[0].remembered, 0, "{health:?}");
}
