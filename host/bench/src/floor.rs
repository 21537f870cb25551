//! The floor under the start→exit and commands/s targets: the smallest HTTP service that
//! runs a command, measured with the same client and baseline as the agent. An axum route
//! that parses `{"command"}`, runs `sh -c` with `tokio::process` (output piped, as the agent
//! keeps it) and answers `{exit_code, output}`: no policy, no record, no cgroup, no filter.
//! What the agent adds over this is what procwarden itself costs; what this adds over
//! `sh -c true` is what any HTTP front end costs on the machine.

use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::post;
use serde_json::{Value, json};

use crate::client::Connection;
use crate::figures::{
    Commands, commands_per_second, millis, run, spawn_and_wait_directly, spawned_per_second,
};
use crate::stats::{Samples, median};
use crate::{BenchPlan, Row};

/// The minimal server, on a loopback port of this process.
struct FloorServer {
    addr: std::net::SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl FloorServer {
    async fn start() -> anyhow::Result<Self> {
        let app = axum::Router::new().route("/api/v0/processes/start", post(run_command));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, server })
    }

    async fn connect(&self) -> anyhow::Result<Connection> {
        Connection::open(self.addr).await
    }
}

impl Drop for FloorServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn run_command(Json(body): Json<Value>) -> Json<Value> {
    let command = body["command"].as_str().unwrap_or("true").to_owned();
    let output = tokio::process::Command::new("sh")
        .args(["-c", &command])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await;
    Json(match output {
        Ok(out) => json!({
            "exit_code": out.status.code(),
            "output": String::from_utf8_lossy(&out.stdout),
        }),
        Err(err) => json!({ "exit_code": null, "output": err.to_string() }),
    })
}

/// start→exit p50 and 8-client commands/s of the minimal server, each against the agent's
/// baseline (`sh -c true` from Rust) measured alongside, as the agent's own rows are.
pub async fn floor(plan: &BenchPlan) -> anyhow::Result<Vec<Row>> {
    let server = FloorServer::start().await?;
    let mut conn = server.connect().await?;
    run(&mut conn, "true").await?;
    let (mut latency_ratios, mut ours50, mut base50) = (vec![], vec![], vec![]);
    let mut n = 0u64;
    for _ in 0..plan.rounds {
        let (mut ours, mut base) = (vec![], vec![]);
        for _ in 0..plan.latency_samples {
            n += 1;
            let t = Instant::now();
            run(&mut conn, &format!("true # {n}")).await?;
            ours.push(t.elapsed());
            base.push(spawn_and_wait_directly().await?);
        }
        let (o, b) = (Samples::new(ours).p50(), Samples::new(base).p50());
        latency_ratios.push(o.as_secs_f64() / b.as_secs_f64());
        ours50.push(o.as_secs_f64());
        base50.push(b.as_secs_f64());
    }
    let (mut rates, mut base_rates, mut rate_ratios) = (vec![], vec![], vec![]);
    let window = Duration::from_secs_f64(plan.throughput_seconds);
    for _ in 0..plan.rounds {
        let rate = commands_per_second(server.addr, plan, Commands::Distinct).await?;
        let base = spawned_per_second(plan.concurrent_clients, window).await?;
        rates.push(rate);
        base_rates.push(base);
        rate_ratios.push(rate / base);
    }
    let ms = |s: f64| millis(Duration::from_secs_f64(s));
    Ok(vec![
        Row {
            figure: "floor: a minimal HTTP server running sh -c (axum, tokio::process), start→exit, every command new, p50".into(),
            ours: ms(median(ours50)),
            baseline: format!("{} (sh -c true)", ms(median(base50))),
            ratio: format!("{:.2}×", median(latency_ratios)),
            target: "reported".into(),
            pass: true,
        },
        Row {
            figure: format!(
                "floor: the same server, commands/s, {} clients, every command new",
                plan.concurrent_clients
            ),
            ours: format!("{:.0}/s", median(rates)),
            baseline: format!(
                "{:.0}/s ({} threads, sh -c true)",
                median(base_rates),
                plan.concurrent_clients
            ),
            ratio: format!("{:.2}×", median(rate_ratios)),
            target: "reported".into(),
            pass: true,
        },
    ])
}
