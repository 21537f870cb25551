//! The output filter figure: what the default `redact` filter (native, host code) adds to a
//! read of a 32 KiB output, against the same read with filters off, alternating in the same
//! run; reported beside it, the same read through `redact`'s component build
//! (`builtin:redact.wasm`, sandboxed), and what one call of each costs on 3 bytes.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::stats::Samples;
use crate::{BenchPlan, Row};
use procwarden::agent::{Agent, OutputOptions, load_filters};
use procwarden::config::Config;
use procwarden_extensions::filter::{FilterChain, FilterContext, FilterSource};
use procwarden_extensions::policy::{FrontEnd, PolicyChain, StartRequest};
use procwarden_extensions::tool::ToolSet;

/// The output read: the default view holds all of it (16 KiB head + 16 KiB tail).
const OUTPUT_BYTES: usize = 32 << 10;
/// The gap between two pairs of reads, left untimed. A model reads seconds apart; the gap
/// lets the filter create its next fresh instance off the read's path, as it does in use.
const GAP: Duration = Duration::from_millis(20);

/// 32 KiB that looks like a build and test log: paths, versions, git SHAs, UUIDs, base64,
/// `NAME=value` lines that are not secrets, and one secret (a GitHub token) to mask.
fn build_log() -> String {
    let mut text = String::with_capacity(OUTPUT_BYTES + 256);
    let mut n = 0u64;
    while text.len() < OUTPUT_BYTES {
        n += 1;
        let sha = format!("{:016x}{:016x}{:08x}", n * 0x9e37_79b9, n ^ 0x5bd1_e995, n);
        let _ = match n % 8 {
            0 => writeln!(
                text,
                "   Compiling crate-{n} v0.{n}.1 (/src/workspace/crate-{n})"
            ),
            1 => writeln!(text, "test tests::case_{n} ... ok"),
            2 => writeln!(text, "commit {sha} Merge branch 'feature-{n}'"),
            3 => writeln!(
                text,
                "request {:08x}-4e2b-4c1d-9f3a-{:012x} done in {n} ms",
                n * 7,
                n * 13
            ),
            4 => writeln!(
                text,
                "fixture: aGVsbG8gd29ybGQgZml4dHVyZSBudW1iZXIg{n:04}AA=="
            ),
            5 => writeln!(text, "RUST_LOG=info CARGO_TERM_COLOR=always BUILD_ID={n}"),
            6 => writeln!(text, "warning: unused variable `x{n}` at src/lib.rs:{n}:9"),
            _ => writeln!(
                text,
                "    Finished `release` profile [optimized] target(s) in {n}.02s"
            ),
        };
        if n == 200 {
            text.push_str("GITHUB_TOKEN=ghp_0123456789abcdefghijklmnopqrstuvwxyzAB\n");
        }
    }
    text.truncate(OUTPUT_BYTES);
    text
}

/// Reads of a 32 KiB output on the agent, as the HTTP and MCP front ends make them: through
/// the default filter chain (the built-in `redact`, native), with filters off, and through
/// `redact`'s component (`builtin:redact.wasm`), in turn.
pub async fn filter(plan: &BenchPlan) -> anyhow::Result<Vec<Row>> {
    let config = Config::default();
    let (filters, component) = tokio::task::spawn_blocking(move || {
        let filters = load_filters(&Config::default())?;
        let wasm = FilterSource::builtin("redact.wasm")
            .ok_or_else(|| anyhow::anyhow!("no built-in redact.wasm"))?;
        anyhow::Ok((filters, FilterChain::load(&[wasm], None, u64::MAX)?))
    })
    .await??;
    let runs = |chain: &FilterChain| {
        chain
            .health()
            .into_iter()
            .map(|h| format!("{}:{}", h.name, h.runs))
            .collect::<Vec<_>>()
    };
    anyhow::ensure!(
        runs(&filters) == ["redact:native"],
        "the default filters are {:?}, not [\"redact:native\"]",
        runs(&filters)
    );
    anyhow::ensure!(
        runs(&component) == ["redact:component"],
        "builtin:redact.wasm loaded as {:?}",
        runs(&component)
    );
    let agent = Agent::try_new(&config, PolicyChain::empty(), ToolSet::default())?;
    let dir = std::env::temp_dir().join(format!("procwarden-bench-filter-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("build.log");
    std::fs::write(&log, build_log())?;
    let request = StartRequest {
        command: format!("cat '{}'", log.display()),
        ..Default::default()
    };
    let started = agent
        .start(Some("bench"), FrontEnd::Http, request, None)
        .await?;
    let id = started.id;
    let chat = Some("bench");
    agent
        .wait_output(&id, chat, Some(Duration::from_secs(30)))
        .await?;
    let options = OutputOptions::default();

    let samples = plan.latency_samples.max(50);
    let new = || Vec::with_capacity(samples);
    let (mut on, mut off, mut wasm) = (new(), new(), new());
    // Each filter on a 3-byte text: what a call costs whatever the output's size.
    let (mut tiny, mut tiny_wasm) = (new(), new());
    let ctx = FilterContext {
        chat_id: chat.map(str::to_owned),
        command: None,
        front_end: "http".into(),
    };
    let mut redactions = None;
    for _ in 0..samples {
        agent.set_filters(FilterChain::default());
        let t = Instant::now();
        let read = agent.read_output(&id, chat, &options, None).await?;
        let read = agent.filter_snapshot(read, chat, "http").await?;
        off.push(t.elapsed());
        anyhow::ensure!(
            read.output.len() == OUTPUT_BYTES,
            "read {} bytes",
            read.output.len()
        );

        agent.set_filters(filters.clone());
        let t = Instant::now();
        let read = agent.read_output(&id, chat, &options, None).await?;
        let read = agent.filter_snapshot(read, chat, "http").await?;
        on.push(t.elapsed());
        anyhow::ensure!(
            !read.output.contains("ghp_0123"),
            "the token reached the reply"
        );
        redactions = read.redactions;
        tokio::time::sleep(GAP).await;

        agent.set_filters(component.clone());
        let t = Instant::now();
        let read = agent.read_output(&id, chat, &options, None).await?;
        let read = agent.filter_snapshot(read, chat, "http").await?;
        wasm.push(t.elapsed());
        anyhow::ensure!(
            read.redactions == redactions,
            "the component counted {:?}, the native filter {redactions:?}",
            read.redactions
        );
        tokio::time::sleep(GAP).await;

        for (chain, times) in [(&filters, &mut tiny), (&component, &mut tiny_wasm)] {
            let t = Instant::now();
            let small = chain.apply("ok\n".to_owned(), &ctx).await?;
            times.push(t.elapsed());
            anyhow::ensure!(small.text == "ok\n", "the filter changed {:?}", small.text);
            tokio::time::sleep(GAP).await;
        }
    }
    agent.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(
        redactions.is_some_and(|n| n >= 1),
        "redactions {redactions:?}: the token was not counted"
    );

    let (on, off, wasm) = (Samples::new(on), Samples::new(off), Samples::new(wasm));
    let (tiny, tiny_wasm) = (Samples::new(tiny), Samples::new(tiny_wasm));
    let added = on.p50().saturating_sub(off.p50());
    let added_wasm = wasm.p50().saturating_sub(off.p50());
    let us = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
    Ok(vec![
        Row {
            figure: "32 KiB output read through the default filter (redact, native; p50, p99)"
                .into(),
            ours: format!("{} ({} p99)", us(on.p50()), us(on.p99())),
            baseline: format!(
                "{} ({} p99; the same read, filters off)",
                us(off.p50()),
                us(off.p99())
            ),
            ratio: format!("+{}", us(added)),
            target: "≤ +30 µs".into(),
            pass: added <= Duration::from_micros(30),
        },
        Row {
            figure: "32 KiB output read through redact's component (builtin:redact.wasm; p50, p99)"
                .into(),
            ours: format!("{} ({} p99)", us(wasm.p50()), us(wasm.p99())),
            baseline: format!("{} (the same read, filters off)", us(off.p50())),
            ratio: format!("+{}", us(added_wasm)),
            target: "— (reported: the sandboxed build, not the default)".into(),
            pass: true,
        },
        Row {
            figure: "a call of the default filter (native) on 3 bytes (p50, p99)".into(),
            ours: format!("{} ({} p99)", us(tiny.p50()), us(tiny.p99())),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "— (the part of the first row that is per call)".into(),
            pass: true,
        },
        Row {
            figure: "a call of redact's component (builtin:redact.wasm) on 3 bytes (p50, p99)"
                .into(),
            ours: format!("{} ({} p99)", us(tiny_wasm.p50()), us(tiny_wasm.p99())),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "— (reported: the part of the second row that is per call)".into(),
            pass: true,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_32_kib_with_one_secret() {
        let log = build_log();
        assert_eq!(log.len(), OUTPUT_BYTES);
        assert_eq!(log.matches("ghp_").count(), 1);
    }

    /// The bench compares like with like: the native filter and the component give the same
    /// text and count on its log, whole and line by line (each line alone, so at the edges
    /// of the text).
    #[tokio::test]
    async fn native_and_component_redact_agree_on_the_log() -> anyhow::Result<()> {
        let load = |name: &str| {
            let src = FilterSource::builtin(name).ok_or_else(|| anyhow::anyhow!("no {name}"))?;
            FilterChain::load(&[src], None, u64::MAX)
        };
        let (native, component) = (load("redact")?, load("redact.wasm")?);
        let ctx = FilterContext {
            chat_id: None,
            command: None,
            front_end: "http".into(),
        };
        let log = build_log();
        // Lines one by one (the first 48, each kind many times): fewer calls than the
        // component's instance slots, and a yield after each lets spent instances go.
        let lines = log.lines().take(48).map(str::to_owned);
        for text in std::iter::once(log.clone()).chain(lines) {
            let a = native.apply(text.clone(), &ctx).await?;
            let b = component.apply(text.clone(), &ctx).await?;
            assert_eq!(a, b, "{text}");
            tokio::task::yield_now().await;
        }
        let whole = native.apply(log, &ctx).await?;
        assert_eq!(whole.redactions, 1);
        assert!(whole.text.contains("GITHUB_TOKEN=[REDACTED:secret]"));
        Ok(())
    }
}
