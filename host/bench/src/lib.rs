//! `procwarden bench`: every performance figure measured next to its baseline in the same run.
//!
//! Absolute times on a shared 2-core machine are noise; ratios against a baseline taken
//! moments earlier on the same machine are not. Each figure is the median of several rounds.

mod client;
mod figures;
mod filter;
mod floor;
mod startup;
mod stats;

use std::fmt::Write as _;

pub use figures::Figure;

/// The `procwarden` binary to measure as a separate process: `PROCWARDEN_BIN`, else the one
/// cargo built beside this bench (`cargo build --release --workspace` builds both).
pub fn agent_binary() -> anyhow::Result<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("PROCWARDEN_BIN") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe()?;
    let sibling = exe.with_file_name("procwarden");
    anyhow::ensure!(
        sibling.is_file(),
        "no procwarden binary at {}; build it (cargo build --release -p procwarden) or set PROCWARDEN_BIN",
        sibling.display()
    );
    Ok(sibling)
}

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub struct BenchPlan {
    /// Rounds per figure; the reported value is the median over rounds.
    pub rounds: usize,
    /// Start→exit samples per round.
    pub latency_samples: usize,
    /// Seconds each throughput round runs.
    pub throughput_seconds: f64,
    pub concurrent_clients: usize,
    pub chain_samples: usize,
    pub waiters: usize,
    pub output_bytes: u64,
    pub rss_processes: usize,
    pub rss_bytes_each: u64,
}

impl BenchPlan {
    pub fn full() -> Self {
        Self {
            rounds: 5,
            latency_samples: 300,
            throughput_seconds: 3.0,
            concurrent_clients: 8,
            chain_samples: 5000,
            waiters: 1000,
            output_bytes: 1 << 30,
            rss_processes: 1000,
            rss_bytes_each: 10_000_000,
        }
    }

    /// Under a minute: fewer rounds and samples, smaller outputs, the same figures.
    pub fn quick() -> Self {
        Self {
            rounds: 3,
            latency_samples: 100,
            throughput_seconds: 1.0,
            chain_samples: 1000,
            output_bytes: 256 << 20,
            rss_processes: 200,
            ..Self::full()
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub figure: String,
    pub ours: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    pub pass: bool,
}

/// Measure the chosen figures (all when `only` is empty) and return the table rows.
pub async fn run(plan: &BenchPlan, only: &[Figure]) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for figure in Figure::ALL {
        if !only.is_empty() && !only.contains(&figure) {
            continue;
        }
        eprintln!("measuring: {}", figure.name());
        rows.extend(figures::measure(figure, plan).await?);
    }
    Ok(rows)
}

/// The table as text, columns aligned.
pub fn render(rows: &[Row]) -> String {
    let headers = [
        "figure",
        "procwarden",
        "baseline",
        "ratio",
        "target",
        "pass",
    ];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.figure.clone(),
                r.ours.clone(),
                r.baseline.clone(),
                r.ratio.clone(),
                r.target.clone(),
                if r.pass { "PASS" } else { "FAIL" }.to_owned(),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "| {} |", parts.join(" | "));
    };
    line(&mut out, &headers.map(str::to_owned));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
    for row in &cells {
        line(&mut out, row);
    }
    out
}
