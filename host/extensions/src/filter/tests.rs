//! The filter host against real components (the `redact` sample's component build and a
//! fixture that misbehaves on purpose, `plugins/faulty/filter`) and against native built-ins.

use super::*;
use crate::policy::OnError;

const FIXTURE: &[u8] = include_bytes!(env!("PROCWARDEN_FIXTURE_FILTER"));
/// A policy plugin: a component of another world.
const WRONG_WORLD: &[u8] = include_bytes!(env!("PROCWARDEN_PLUGIN_DENY"));

fn ctx(chat: &str) -> FilterContext {
    FilterContext {
        chat_id: Some(chat.into()),
        command: Some("echo".into()),
        front_end: "http".into(),
    }
}

fn fixture(mode: &str) -> FilterSource {
    let mut src = FilterSource::bytes(format!("faulty-{mode}"), FIXTURE);
    src.settings.insert("mode".into(), mode.into());
    src.cpu_budget_ms = 50;
    src.max_memory_bytes = 8 << 20;
    src
}

fn load(sources: &[FilterSource]) -> FilterChain {
    FilterChain::load(sources, None, u64::MAX).unwrap()
}

/// `redact`'s component build (`builtin:redact.wasm`).
fn redact_component() -> FilterSource {
    FilterSource::builtin("redact.wasm").unwrap()
}

/// `redact` running natively (`builtin:redact`, the default).
fn redact_native() -> FilterSource {
    FilterSource::builtin("redact").unwrap()
}

#[tokio::test]
async fn redact_masks_secrets_counts_them_and_leaves_shas_alone() {
    for src in [redact_native(), redact_component()] {
        redact_on(src).await;
    }
}

async fn redact_on(src: FilterSource) {
    let chain = load(&[src]);
    assert_eq!(chain.names(), ["redact"]);
    let text = "key AKIAIOSFODNN7EXAMPLE\nAPI_TOKEN=hunter2\ncommit 3f786850e387550fdab836ed7e6dc881de23001b\n\
                id 123e4567-e89b-12d3-a456-426614174000\n";
    let out = chain.apply(text.into(), &ctx("a")).await.unwrap();
    assert_eq!(
        out.text,
        "key [REDACTED:aws-access-key]\nAPI_TOKEN=[REDACTED:secret]\ncommit 3f786850e387550fdab836ed7e6dc881de23001b\n\
         id 123e4567-e89b-12d3-a456-426614174000\n"
    );
    assert_eq!(out.redactions, 2);
    let clean = "nothing to see\n".repeat(100);
    let out = chain.apply(clean.clone(), &ctx("a")).await.unwrap();
    assert_eq!((out.text, out.redactions), (clean, 0));
    let health = chain.health();
    assert_eq!((health[0].calls, health[0].redactions), (2, 2));
}

#[tokio::test]
async fn settings_replace_the_name_list() {
    for mut src in [redact_native(), redact_component()] {
        let names = toml::Value::Array(vec!["MY_*".into()]);
        src.settings.insert("names".into(), names);
        let chain = load(&[src]);
        let out = chain
            .apply("MY_THING=x API_TOKEN=y".into(), &ctx("a"))
            .await
            .unwrap();
        assert_eq!(out.text, "MY_THING=[REDACTED:secret] API_TOKEN=y");
    }
}

/// Texts of the `redact` crate's own tests, and texts that must pass untouched.
fn corpus() -> Vec<String> {
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    let mut texts: Vec<String> = [
        "key AKIAIOSFODNN7EXAMPLE and ghp_0123456789abcdefghijABCDEFGHIJ012345 end",
        "glpat-abcdefghij0123456789 xoxb-1234567890-abcdefghij",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "before\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nabc\n-----END RSA PRIVATE KEY-----\nafter",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        "-----BEGIN EC PRIVATE KEY-----\nno end line",
        "GITHUB_TOKEN=abc123 PATH=/usr/bin DB_PASSWORD='p w' export API_KEY=\"k\"",
        "MY_THING=x OTHER_TOKEN=y",
        "commit 3f786850e387550fdab836ed7e6dc881de23001b",
        "id 123e4567-e89b-12d3-a456-426614174000",
        "fixture: dGhpcyBpcyBhIHRlc3QgZml4dHVyZSBmb3IgYmFzZTY0IGRlY29kaW5n==",
        "blob QUtJQUlPU0ZPRE5ON0VYQU1QTEVBS0lBSU9TRk9ETk43RVhBTVBMRQ==",
        "xAKIAIOSFODNN7EXAMPLE is inside a word",
        "eyJhbGciOiJIUzI1NiJ9 alone is not a token",
        "token: none, TOKEN_COUNT=5 is a count, password field",
        "AKIAIOSFODNN7EXAMPL",
        "AKIAIOSFODNN7EXAMPLEX",
        "ghp_short",
        "my_ghp_0123456789abcdefghijABCDEFGHIJ012345",
        "glpat-short",
        "xoxq-1234567890-abcdefghij",
        "API_TOKEN=",
        "API_TOKEN=\"unterminated\nnext line",
        "ünïcödé AKIAIOSFODNN7EXAMPLE ✓ SECRET=ключ",
        "",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    texts.push(format!("Authorization: Bearer {jwt}\n"));
    texts.push(format!(
        "AKIAIOSFODNN7EXAMPLE\n{jwt} ASIAIOSFODNN7EXAMPLE,AIzaSyA-abcdefghijklmnopqrstuvwxyz01234 \
         gho_0123456789abcdefghijABCDEFGHIJ012345 xoxp-1234567890-abcdefghij API_TOKEN=v \
         glpat-abcdefghij0123456789"
    ));
    // A 32 KiB test log with a token in the middle.
    let line = "test tests::passes_42 ... ok (3f786850e387550fdab836ed7e6dc881de23001b)\n";
    let mut log = line.repeat(16 * 1024 / line.len());
    log.push_str("GITHUB_TOKEN=ghp_0123456789abcdefghijklmnopqrstuvwxyzAB\n");
    log.push_str(&line.repeat(16 * 1024 / line.len()));
    texts.push(log);
    texts
}

#[tokio::test]
async fn native_and_component_redact_give_identical_answers() {
    let names = toml::Value::Array(vec!["MY_*".into(), "*_PASSWORD".into()]);
    for settings in [None, Some(names)] {
        let [mut native, mut component] = [redact_native(), redact_component()];
        if let Some(names) = &settings {
            native.settings.insert("names".into(), names.clone());
            component.settings.insert("names".into(), names.clone());
        }
        let (native, component) = (load(&[native]), load(&[component]));
        let mut masked = 0;
        for text in corpus() {
            let a = native.apply(text.clone(), &ctx("a")).await.unwrap();
            let b = component.apply(text.clone(), &ctx("a")).await.unwrap();
            assert_eq!(a, b, "{settings:?}: {text}");
            masked += a.redactions;
        }
        assert!(masked >= 15, "the corpus masked only {masked}");
        let (a, b) = (native.health(), component.health());
        assert_eq!((a[0].calls, a[0].redactions), (b[0].calls, b[0].redactions));
        assert_eq!(
            (a[0].runs.as_str(), b[0].runs.as_str()),
            ("native", "component")
        );
    }
}

#[test]
fn the_default_chain_runs_redact_natively_and_wasm_names_its_component() {
    let default = FilterSource::chain(&[], &FiltersConfig::default(), None).unwrap();
    assert_eq!(default.len(), 1);
    assert_eq!(default[0].runs(), "native");
    let chain = load(&default);
    let health = chain.health();
    assert_eq!(
        (
            health[0].name.as_str(),
            health[0].origin.as_str(),
            health[0].runs.as_str()
        ),
        ("redact", "<built-in filter redact>", "native")
    );
    // `builtin:redact.wasm` is the embedded component; it stands for redact, so the native
    // one is not added after it, whatever it is called.
    for entry in [
        "path = \"builtin:redact.wasm\"",
        "path = \"builtin:redact.wasm\"\nname = \"sandboxed\"",
    ] {
        let cfg: FilterConfig = toml::from_str(entry).unwrap();
        let sources = FilterSource::chain(&[cfg], &FiltersConfig::default(), None).unwrap();
        assert_eq!(sources.len(), 1, "{entry}");
        assert_eq!(sources[0].runs(), "component");
        assert_eq!(sources[0].origin(), "<built-in filter redact.wasm>");
        let health = load(&sources).health();
        assert_eq!(health[0].runs, "component");
    }
    let unknown: FilterConfig = toml::from_str("path = \"builtin:nope.wasm\"").unwrap();
    let err = format!(
        "{:#}",
        FilterSource::chain(&[unknown], &FiltersConfig::default(), None).unwrap_err()
    );
    assert!(err.contains("built in: redact, redact.wasm"), "{err}");
}

/// A native filter that panics on text holding `boom`, and upper-cases other text.
struct Panics;

impl native::NativeFilter for Panics {
    fn on_output(&self, text: &str, _ctx: &FilterContext) -> Option<(String, u32)> {
        assert!(!text.contains("boom"), "it went boom");
        Some((text.to_uppercase(), 1))
    }
}

fn panics(
    _: &std::collections::BTreeMap<String, String>,
) -> std::sync::Arc<dyn native::NativeFilter> {
    std::sync::Arc::new(Panics)
}

#[tokio::test]
async fn a_native_filter_that_panics_is_named_like_a_trap_and_the_chain_keeps_serving() {
    let chain = load(&[FilterSource::native("panicky", panics), redact_native()]);
    for _ in 0..2 {
        let err = chain
            .apply("boom AKIAIOSFODNN7EXAMPLE".into(), &ctx("a"))
            .await
            .unwrap_err();
        assert_eq!(err.filter, "panicky");
        let text = err.to_string();
        assert!(text.contains("panicked: it went boom"), "{text}");
        assert!(text.contains("withheld"), "{text}");
        assert!(!text.contains("AKIA"), "{text}");
    }
    let out = chain.apply("fine".into(), &ctx("a")).await.unwrap();
    assert_eq!((out.text.as_str(), out.redactions), ("FINE", 1));
    let health = chain.health();
    assert_eq!((health[0].calls, health[0].failures), (3, 2));
    assert_eq!(health[0].consecutive_failures, 0);
    assert!(
        health[0]
            .last_failure
            .as_deref()
            .is_some_and(|f| f.contains("boom"))
    );
    // on_error = allow: the text passes without its changes, redact still runs.
    let mut lenient = FilterSource::native("panicky", panics);
    lenient.on_error = OnError::Allow;
    let chain = load(&[lenient, redact_native()]);
    let out = chain
        .apply("boom AKIAIOSFODNN7EXAMPLE".into(), &ctx("a"))
        .await
        .unwrap();
    assert_eq!(out.text, "boom [REDACTED:aws-access-key]");
    assert_eq!(out.redactions, 1);
}

#[tokio::test]
async fn filters_run_in_order_and_their_counts_add_up() {
    let chain = load(&[fixture("upper"), redact_component()]);
    let out = chain
        .apply(
            "token: ghp_0123456789abcdefghijabcdefghij012345".into(),
            &ctx("a"),
        )
        .await
        .unwrap();
    // Upper-cased first (GHP_ is no GitHub prefix), so redact finds nothing.
    assert_eq!(out.text, "TOKEN: GHP_0123456789ABCDEFGHIJABCDEFGHIJ012345");
    assert_eq!(out.redactions, 1);
}

#[tokio::test]
async fn faulty_filters_are_named_and_withhold_the_output_and_the_chain_keeps_serving() {
    for (mode, words) in [
        ("trap", "trapped"),
        ("spin", "ms of CPU time"),
        ("hog", "ran out of memory"),
    ] {
        let chain = load(&[fixture(mode)]);
        for _ in 0..2 {
            let err = chain
                .apply("AKIAIOSFODNN7EXAMPLE".into(), &ctx("a"))
                .await
                .unwrap_err();
            assert_eq!(err.filter, format!("faulty-{mode}"));
            let text = err.to_string();
            assert!(text.contains(words), "{mode}: {text}");
            assert!(text.contains("withheld"), "{text}");
            assert!(!text.contains("AKIA"), "{text}");
        }
        let health = chain.health();
        assert_eq!(health[0].failures, 2, "{mode}");
        assert_eq!(health[0].consecutive_failures, 2, "{mode}");
    }
    // on_error = allow: the text passes without that filter's changes, the next still runs.
    let mut lenient = fixture("trap");
    lenient.on_error = OnError::Allow;
    let chain = load(&[lenient, redact_component()]);
    let out = chain
        .apply("AKIAIOSFODNN7EXAMPLE".into(), &ctx("a"))
        .await
        .unwrap();
    assert_eq!(out.text, "[REDACTED:aws-access-key]");
}

#[test]
fn a_component_of_another_world_is_refused_naming_it() {
    let src = FilterSource::bytes("policy-plugin", WRONG_WORLD);
    let err = format!(
        "{:#}",
        FilterChain::load(std::slice::from_ref(&src), None, u64::MAX)
            .err()
            .unwrap()
    );
    assert!(err.contains("\"policy-plugin\""), "{err}");
    assert!(err.contains("cannot be loaded"), "{err}");
    assert!(err.contains("procwarden:policy/host"), "{err}");
    let garbage = FilterSource::bytes("garbage", &b"not wasm"[..]);
    let err = format!(
        "{:#}",
        FilterChain::load(&[garbage], None, u64::MAX).err().unwrap()
    );
    assert!(err.contains("not a WebAssembly component"), "{err}");
    // With on_error = allow the agent runs without it.
    let mut lenient = src;
    lenient.on_error = OnError::Allow;
    assert!(load(&[lenient]).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_state_survives_from_one_call_or_chat_to_the_next() {
    let chain = load(&[fixture("remember")]);
    for i in 0..20 {
        let chat = if i % 2 == 0 { "a" } else { "b" };
        let out = chain
            .apply(format!("secret of chat {chat} #{i}"), &ctx(chat))
            .await
            .unwrap();
        assert_eq!(out.text, "fresh", "call {i} saw an earlier call's text");
    }
    let calls = (0..16).map(|i| {
        let chain = chain.clone();
        async move { chain.apply(format!("text {i}"), &ctx("c")).await }
    });
    for out in futures::future::join_all(calls).await {
        assert_eq!(out.unwrap().text, "fresh");
    }
}

#[test]
fn config_mirrors_builtins_and_resolves_paths() {
    let none = FilterSource::chain(&[], &FiltersConfig::default(), None).unwrap();
    assert_eq!(none.len(), 1);
    assert_eq!(none[0].name, "redact");
    let off = FilterSource::chain(&[], &FiltersConfig { builtins: false }, None).unwrap();
    assert!(off.is_empty());
    let cfg: FilterConfig = toml::from_str(
        "path = \"builtin:redact.wasm\"\non_error = \"allow\"\ncpu_budget_ms = 5\nsettings = { names = [\"X\"] }",
    )
    .unwrap();
    let named = FilterSource::chain(
        &[cfg, toml::from_str("path = \"mine.wasm\"").unwrap()],
        &FiltersConfig::default(),
        Some(std::path::Path::new("/etc/pw")),
    )
    .unwrap();
    assert_eq!(named.len(), 2, "redact is named, so not added again");
    assert_eq!(named[0].on_error, OnError::Allow);
    assert_eq!(named[0].cpu_budget_ms, 5);
    assert_eq!(named[1].origin(), "/etc/pw/mine.wasm");
    assert!(toml::from_str::<FilterConfig>("path = \"x\"\nonerror = \"allow\"").is_err());
    let unknown: FilterConfig = toml::from_str("path = \"builtin:nope\"").unwrap();
    assert!(FilterSource::chain(&[unknown], &FiltersConfig::default(), None).is_err());
}

#[test]
fn the_redact_sample_imports_no_wasi() {
    // One core module per call instead of eighteen: the filter runs on every read.
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::new(&engine, builtin::SAMPLES[0].1).unwrap();
    let imports: Vec<String> = component
        .component_type()
        .imports(&engine)
        .map(|(import, _)| import.to_owned())
        .collect();
    assert!(
        imports.iter().all(|i| !i.starts_with("wasi:")),
        "redact imports {imports:?}"
    );
    assert!(!imports.is_empty(), "redact imports nothing at all");
}
