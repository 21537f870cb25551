//! The filter host against real components: the `redact` sample and a fixture that
//! misbehaves on purpose (`plugins/faulty/filter`).

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

#[tokio::test]
async fn redact_masks_secrets_counts_them_and_leaves_shas_alone() {
    let chain = load(&FilterSource::samples());
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
    let mut src = FilterSource::samples().remove(0);
    let names = toml::Value::Array(vec!["MY_*".into()]);
    src.settings.insert("names".into(), names);
    let chain = load(&[src]);
    let out = chain
        .apply("MY_THING=x API_TOKEN=y".into(), &ctx("a"))
        .await
        .unwrap();
    assert_eq!(out.text, "MY_THING=[REDACTED:secret] API_TOKEN=y");
}

#[tokio::test]
async fn filters_run_in_order_and_their_counts_add_up() {
    let chain = load(&[fixture("upper"), FilterSource::samples().remove(0)]);
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
    let chain = load(&[lenient, FilterSource::samples().remove(0)]);
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
        "path = \"builtin:redact\"\non_error = \"allow\"\ncpu_budget_ms = 5\nsettings = { names = [\"X\"] }",
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
