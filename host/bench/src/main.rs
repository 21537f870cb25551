//! `procwarden-bench`: every performance figure next to its baseline, as a table.
//! Run it with `cargo run --release -p procwarden-bench -- [--quick] [--only FIGURES]`.

use std::process::ExitCode;

use clap::Parser;
use procwarden_bench::{BenchPlan, Figure};

#[derive(Parser)]
#[command(
    name = "procwarden-bench",
    version,
    about = "Measure procwarden's performance figures next to their baselines and print a table"
)]
struct Cli {
    /// A shorter run (under a minute) with fewer rounds and smaller loads.
    #[arg(long)]
    quick: bool,
    /// Only these figures (latency, throughput, chain, waiters, output, memory, tool, containment, spool, filter, startup, floor, list).
    #[arg(long, value_delimiter = ',', value_parser = parse_figure)]
    only: Vec<Figure>,
}

fn parse_figure(name: &str) -> Result<Figure, String> {
    Figure::parse(name).ok_or_else(|| format!("unknown figure {name:?}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let plan = if cli.quick {
        BenchPlan::quick()
    } else {
        BenchPlan::full()
    };
    match procwarden_bench::run(&plan, &cli.only).await {
        Ok(rows) => {
            print!("{}", procwarden_bench::render(&rows));
            if rows.iter().all(|r| r.pass) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => {
            eprintln!("procwarden-bench: {err:#}");
            ExitCode::from(2)
        }
    }
}
