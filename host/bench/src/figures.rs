//! The measurements, each paired with the baseline it is judged against.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::client::Connection;
use crate::stats::{Samples, median};
use crate::{BenchPlan, Row};
use procwarden::agent::Agent;
use procwarden::config::Config;
use procwarden_extensions::policy::{FrontEnd, PolicyChain, PolicyContext, StartRequest};
use procwarden_process::Containment;

/// Kills timed by the waiter figure (the other blocked waiters are released at shutdown).
const WAKE_SAMPLES: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    Latency,
    Throughput,
    Chain,
    Waiters,
    Output,
    Memory,
    Tool,
    Containment,
    Spool,
    Filter,
    Startup,
    Floor,
    List,
}

impl Figure {
    pub const ALL: [Figure; 13] = [
        Figure::Latency,
        Figure::Throughput,
        Figure::Chain,
        Figure::Waiters,
        Figure::Output,
        Figure::Memory,
        Figure::Tool,
        Figure::Containment,
        Figure::Spool,
        Figure::Filter,
        Figure::Startup,
        Figure::Floor,
        Figure::List,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Figure::Latency => "latency",
            Figure::Throughput => "throughput",
            Figure::Chain => "chain",
            Figure::Waiters => "waiters",
            Figure::Output => "output",
            Figure::Memory => "memory",
            Figure::Tool => "tool",
            Figure::Containment => "containment",
            Figure::Spool => "spool",
            Figure::Filter => "filter",
            Figure::Startup => "startup",
            Figure::Floor => "floor",
            Figure::List => "list",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

pub async fn measure(figure: Figure, plan: &BenchPlan) -> anyhow::Result<Vec<Row>> {
    match figure {
        Figure::Latency => latency(plan).await,
        Figure::Throughput => throughput(plan).await,
        Figure::Chain => chain(plan).await,
        Figure::Waiters => waiters(plan).await,
        Figure::Output => output(plan).await,
        Figure::Memory => memory(plan).await,
        Figure::Tool => tool(plan).await,
        Figure::Containment => containment(plan).await,
        Figure::Spool => spool(plan).await,
        Figure::Filter => crate::filter::filter(plan).await,
        Figure::Startup => crate::startup::startup(plan).await,
        Figure::Floor => crate::floor::floor(plan).await,
        Figure::List => list(plan).await,
    }
}

/// The spawn cost of `ProcessManager::start` (until `sh -c true` has exec'd) with each command
/// placed in its own cgroup by `clone3(CLONE_INTO_CGROUP)` (a cgroup made for it, and removed
/// when the record goes), against the process-group path without cgroups, alternating in the
/// same run.
async fn containment(plan: &BenchPlan) -> anyhow::Result<Vec<Row>> {
    use procwarden_process::{
        Containment, ManagerSettings, Phase, ProcessManager, Scope, StartRequest,
    };
    let manager = |containment| {
        ProcessManager::try_new(ManagerSettings {
            containment,
            reap_age: Duration::ZERO,
            ..ManagerSettings::default()
        })
    };
    let cgroup = match manager(Containment::Cgroup) {
        Ok(manager) => manager,
        Err(why) => {
            return Ok(vec![Row {
                figure: "spawn with cgroup placement".into(),
                ours: "skipped".into(),
                baseline: format!("no writable cgroup v2: {why}"),
                ratio: "-".into(),
                target: "reported".into(),
                pass: true,
            }]);
        }
    };
    let group = manager(Containment::Subreaper)?;
    let once = |manager: Arc<ProcessManager>| async move {
        let t = Instant::now();
        let request = StartRequest {
            command: "true".into(),
            ..StartRequest::default()
        };
        let process = manager.start(request, None)?;
        let elapsed = t.elapsed();
        process.wait_for(Phase::Finished).await;
        drop(process);
        manager.reap();
        let _ = manager.len() + manager.list(Scope::All, 0).len();
        anyhow::Ok(elapsed)
    };
    once(cgroup.clone()).await?;
    once(group.clone()).await?;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..plan.rounds {
        let mut a = Vec::with_capacity(plan.latency_samples);
        let mut b = Vec::with_capacity(plan.latency_samples);
        for _ in 0..plan.latency_samples {
            a.push(once(cgroup.clone()).await?);
            b.push(once(group.clone()).await?);
        }
        with.push(Samples::new(a).p50().as_secs_f64());
        without.push(Samples::new(b).p50().as_secs_f64());
    }
    cgroup.shutdown().await;
    group.shutdown().await;
    let (with, without) = (median(with), median(without));
    Ok(vec![Row {
        figure: "spawn of `true` into its own cgroup (a spare or mkdir, + clone3), p50".into(),
        ours: micros(Duration::from_secs_f64(with)),
        baseline: format!(
            "{} (process group only)",
            micros(Duration::from_secs_f64(without))
        ),
        ratio: format!("{:.2}×", with / without),
        target: "reported".into(),
        pass: true,
    }])
}

/// An agent served on a loopback port inside this process, with the sample plugins.
struct LocalAgent {
    url: String,
    addr: std::net::SocketAddr,
    agent: Arc<Agent>,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl LocalAgent {
    async fn start() -> anyhow::Result<Self> {
        Self::start_with(Containment::Auto).await
    }

    /// Subreaper containment is what an agent gets where no cgroup v2 is writable (no
    /// delegation, most containers); it makes this whole process a child subreaper.
    async fn start_with(containment: Containment) -> anyhow::Result<Self> {
        let config = Config {
            // The blocked-waiter figure opens a thousand requests at once, each on a
            // connection of its own, and lists them.
            list_cap: 10_000,
            max_connections: 4_096,
            containment,
            ..Config::default()
        };
        let agent = Agent::new(&config, procwarden::runtime::sample_chain()?);
        // The default output filters too, as `serve` loads them: every reply passes them.
        let filters = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || procwarden::agent::load_filters(&config)).await??
        };
        agent.set_filters(filters);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let url = format!("http://{addr}/api/v0/processes");
        let app = procwarden::http::router(agent.clone(), &config, axum::Router::new());
        // The listener `serve` runs, with its connection limits and timeouts.
        let limits = procwarden::http::listener::ListenerLimits::from_config(&config);
        let server = tokio::spawn(procwarden::http::listener::serve(
            listener,
            app,
            limits,
            std::future::pending(),
        ));
        Ok(Self {
            url,
            addr,
            agent,
            http: reqwest::Client::new(),
            server,
        })
    }

    async fn start_process(&self, command: &str) -> anyhow::Result<String> {
        start_over_http(&self.http, &self.url, command).await
    }

    async fn wait(&self, id: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/{id}/output?wait=true", self.url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// A client connection of the load generator.
    async fn connect(&self) -> anyhow::Result<Connection> {
        Connection::open(self.addr).await
    }
}

const PROCESSES: &str = "/api/v0/processes";

/// Start `command` and wait for it to exit, in one request (`POST start?wait=true`), as a
/// client running a foreground command does.
pub(crate) async fn run(conn: &mut Connection, command: &str) -> anyhow::Result<Value> {
    conn.post(
        &format!("{PROCESSES}/start?wait=true"),
        &json!({ "command": command }),
    )
    .await
}

/// The same in two requests: start, then `GET output?wait=true`.
async fn run_in_two_requests(conn: &mut Connection, command: &str) -> anyhow::Result<Value> {
    let started = conn
        .post(
            &format!("{PROCESSES}/start"),
            &json!({ "command": command }),
        )
        .await?;
    let id = started["id"].as_str().context("start reply without id")?;
    conn.get(&format!("{PROCESSES}/{id}/output?wait=true"))
        .await
}

impl LocalAgent {
    async fn stop(self) {
        self.agent.shutdown().await;
        self.server.abort();
    }
}

/// `POST {processes_url}/start` with `command`; returns the new process's ID.
async fn start_over_http(
    http: &reqwest::Client,
    processes_url: &str,
    command: &str,
) -> anyhow::Result<String> {
    let reply: Value = http
        .post(format!("{processes_url}/start"))
        .json(&json!({ "command": command }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(reply["id"]
        .as_str()
        .context("start reply without id")?
        .to_owned())
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

pub(crate) fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn sh_true() -> anyhow::Result<()> {
    let status = Command::new("sh").args(["-c", "true"]).status()?;
    anyhow::ensure!(status.success(), "sh -c true failed");
    Ok(())
}

/// start→exit of `true` over HTTP with the default plugins and filter, against spawn+wait
/// from Rust. Judged: every command new (`true # N`, so no plugin answers from memory), in one
/// request (`start?wait=true`). Reported: the same command over and over, and start then
/// `output?wait=true` as two requests.
async fn latency(plan: &BenchPlan) -> anyhow::Result<Vec<Row>> {
    let local = LocalAgent::start().await?;
    let mut conn = local.connect().await?;
    run(&mut conn, "true").await?; // warm the connection and the plugins
    run_in_two_requests(&mut conn, "true").await?;
    let subreaper = LocalAgent::start_with(Containment::Subreaper).await?;
    let mut subreaper_conn = subreaper.connect().await?;
    run(&mut subreaper_conn, "true").await?;
    let mut rounds = LatencyRounds::default();
    let mut n = 0u64;
    let mut new_command = || {
        n += 1;
        format!("true # {n}")
    };
    for _ in 0..plan.rounds {
        // Samples alternate with their baseline, so a machine that slows down for a moment
        // (common on these shared VMs) slows both sides of the ratio alike.
        let (mut new, mut same, mut two, mut direct) = (vec![], vec![], vec![], vec![]);
        let mut without_cgroup = vec![];
        let mut base = Vec::with_capacity(plan.latency_samples * 5);
        for _ in 0..plan.latency_samples {
            let t = Instant::now();
            run(&mut conn, &new_command()).await?;
            new.push(t.elapsed());
            base.push(spawn_and_wait_directly().await?);
            let t = Instant::now();
            run(&mut conn, "true").await?;
            same.push(t.elapsed());
            base.push(spawn_and_wait_directly().await?);
            let t = Instant::now();
            run_in_two_requests(&mut conn, &new_command()).await?;
            two.push(t.elapsed());
            base.push(spawn_and_wait_directly().await?);
            let t = Instant::now();
            run_without_http(&local.agent, &new_command()).await?;
            direct.push(t.elapsed());
            base.push(spawn_and_wait_directly().await?);
            let t = Instant::now();
            run(&mut subreaper_conn, &new_command()).await?;
            without_cgroup.push(t.elapsed());
            base.push(spawn_and_wait_directly().await?);
        }
        rounds.add(
            &Samples::new(new),
            &Samples::new(same),
            &Samples::new(two),
            &Samples::new(direct),
            &Samples::new(without_cgroup),
            &Samples::new(base),
        );
    }
    local.stop().await;
    subreaper.stop().await;
    Ok(rounds.rows())
}

/// The same start→exit through the agent's own calls, as a front end makes them, without
/// HTTP: what the request path costs beside what the process core and policy cost.
async fn run_without_http(agent: &Agent, command: &str) -> anyhow::Result<()> {
    let request = StartRequest {
        command: command.into(),
        ..StartRequest::default()
    };
    let started = agent.start(None, FrontEnd::Http, request, None).await?;
    agent.wait_output(&started.id, None, None).await?;
    Ok(())
}

/// `sh -c true` spawned and waited for from Rust, on a blocking thread: the floor.
pub(crate) async fn spawn_and_wait_directly() -> anyhow::Result<Duration> {
    tokio::task::spawn_blocking(|| {
        let t = Instant::now();
        sh_true().map(|()| t.elapsed())
    })
    .await?
}

/// Per-round percentiles of the latency figure; each reported value is the median over rounds.
#[derive(Default)]
struct LatencyRounds {
    new50: Vec<f64>,
    new99: Vec<f64>,
    same50: Vec<f64>,
    two50: Vec<f64>,
    direct50: Vec<f64>,
    subreaper50: Vec<f64>,
    base50: Vec<f64>,
    base99: Vec<f64>,
}

impl LatencyRounds {
    fn add(
        &mut self,
        new: &Samples,
        same: &Samples,
        two: &Samples,
        direct: &Samples,
        subreaper: &Samples,
        base: &Samples,
    ) {
        self.direct50.push(direct.p50().as_secs_f64());
        self.subreaper50.push(subreaper.p50().as_secs_f64());
        self.new50.push(new.p50().as_secs_f64());
        self.new99.push(new.p99().as_secs_f64());
        self.same50.push(same.p50().as_secs_f64());
        self.two50.push(two.p50().as_secs_f64());
        self.base50.push(base.p50().as_secs_f64());
        self.base99.push(base.p99().as_secs_f64());
    }

    fn rows(self) -> Vec<Row> {
        let ms = |s: f64| millis(Duration::from_secs_f64(s));
        let (b50, b99) = (median(self.base50), median(self.base99));
        let baseline = |b: f64| format!("{} (sh -c true)", ms(b));
        let (new50, new99) = (median(self.new50), median(self.new99));
        let (same50, two50) = (median(self.same50), median(self.two50));
        let direct50 = median(self.direct50);
        let subreaper50 = median(self.subreaper50);
        let reported = |figure: &str, ours: f64, base: f64| Row {
            figure: figure.into(),
            ours: ms(ours),
            baseline: baseline(base),
            ratio: format!("{:.2}×", ours / base),
            target: "reported".into(),
            pass: true,
        };
        vec![
            Row {
                figure: "start→exit over HTTP, default plugins and filter, every command new, p50"
                    .into(),
                ours: ms(new50),
                baseline: baseline(b50),
                ratio: format!("{:.2}×", new50 / b50),
                target: "≤ 1.3×".into(),
                pass: new50 / b50 <= 1.3,
            },
            reported("same, p99", new99, b99),
            reported(
                "same, the same command every time (remembered answers), p50",
                same50,
                b50,
            ),
            reported(
                "same, every command new, as two requests (start, then wait), p50",
                two50,
                b50,
            ),
            reported(
                "same, every command new, the agent called in process without HTTP, p50",
                direct50,
                b50,
            ),
            reported(
                "same over HTTP, every command new, subreaper containment (no writable cgroup v2), p50",
                subreaper50,
                b50,
            ),
        ]
    }
}

/// Commands per second with concurrent clients, against as many threads spawning directly.
async fn throughput(plan: &BenchPlan) -> anyhow::Result<Vec<Row>> {
    let local = LocalAgent::start().await?;
    run(&mut local.connect().await?, "true").await?;
    let subreaper = LocalAgent::start_with(Containment::Subreaper).await?;
    run(&mut subreaper.connect().await?, "true").await?;
    let window = Duration::from_secs_f64(plan.throughput_seconds);
    let (mut ours, mut distinct, mut without_cgroup, mut base) = (vec![], vec![], vec![], vec![]);
    // Each round's figures are divided by that round's baseline, measured right after the
    // judged figure: the speed of these shared VMs drifts from second to second, and a
    // ratio of figures measured side by side is what the target is about.
    let (mut ratios, mut distinct_ratios, mut subreaper_ratios) = (vec![], vec![], vec![]);
    for _ in 0..plan.rounds {
        let same = commands_per_second(local.addr, plan, Commands::Same).await?;
        let spawned = spawned_per_second(plan.concurrent_clients, window).await?;
        let new = commands_per_second(local.addr, plan, Commands::Distinct).await?;
        let new_without_cgroup =
            commands_per_second(subreaper.addr, plan, Commands::Distinct).await?;
        ours.push(same);
        distinct.push(new);
        without_cgroup.push(new_without_cgroup);
        base.push(spawned);
        ratios.push(same / spawned);
        distinct_ratios.push(new / spawned);
        subreaper_ratios.push(new_without_cgroup / spawned);
    }
    local.stop().await;
    subreaper.stop().await;
    let (ours, distinct, base) = (median(ours), median(distinct), median(base));
    let (ratio, distinct_ratio) = (median(ratios), median(distinct_ratios));
    let baseline = format!(
        "{base:.0}/s ({} threads, sh -c true)",
        plan.concurrent_clients
    );
    Ok(vec![
        Row {
            figure: format!(
                "commands/s, {} clients, every command new (no remembered answers)",
                plan.concurrent_clients
            ),
            ours: format!("{distinct:.0}/s"),
            baseline: baseline.clone(),
            ratio: format!("{distinct_ratio:.2}×"),
            target: "≥ 0.85×".into(),
            pass: distinct_ratio >= 0.85,
        },
        Row {
            figure: format!(
                "commands/s, {} clients, the same command every time (remembered answers)",
                plan.concurrent_clients
            ),
            ours: format!("{ours:.0}/s"),
            baseline: baseline.clone(),
            ratio: format!("{ratio:.2}×"),
            target: "reported".into(),
            pass: true,
        },
        Row {
            figure: format!(
                "commands/s, {} clients, every command new, subreaper containment (no writable cgroup v2)",
                plan.concurrent_clients
            ),
            ours: format!("{:.0}/s", median(without_cgroup)),
            baseline,
            ratio: format!("{:.2}×", median(subreaper_ratios)),
            target: "reported".into(),
            pass: true,
        },
    ])
}

/// The baseline of commands/s: `threads` threads each spawning `sh -c true` and waiting for
/// it, one after another, for `window`.
pub(crate) async fn spawned_per_second(threads: usize, window: Duration) -> anyhow::Result<f64> {
    let spawned = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + window;
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut done = 0u64;
                    while Instant::now() < deadline {
                        if sh_true().is_ok() {
                            done += 1;
                        }
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(0))
            .sum::<u64>()
    })
    .await?;
    Ok(spawned as f64 / window.as_secs_f64())
}

/// Which commands the clients of a throughput round run.
#[derive(Clone, Copy)]
pub(crate) enum Commands {
    /// `true` every time, as the figure is defined: after the first, each plugin answers
    /// from what it remembers.
    Same,
    /// `true # client-n`: the same work for `sh`, but a request no plugin has seen, so every
    /// plugin runs.
    Distinct,
}

/// Commands completed per second by `plan.concurrent_clients` clients of the server at
/// `addr`, each running one command at a time for `plan.throughput_seconds`.
pub(crate) async fn commands_per_second(
    addr: std::net::SocketAddr,
    plan: &BenchPlan,
    commands: Commands,
) -> anyhow::Result<f64> {
    static ROUND: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let round = ROUND.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let window = Duration::from_secs_f64(plan.throughput_seconds);
    let deadline = Instant::now() + window;
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..plan.concurrent_clients {
        let mut conn = Connection::open(addr).await?;
        clients.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                match commands {
                    Commands::Same => run(&mut conn, "true").await?,
                    Commands::Distinct => {
                        run(&mut conn, &format!("true # {round}-{client}-{done}")).await?
                    }
                };
                done += 1;
            }
            anyhow::Ok(done)
        });
    }
    let mut total = 0;
    while let Some(done) = clients.join_next().await {
        total += done??;
    }
    Ok(total as f64 / window.as_secs_f64())
}

/// Per-request cost of the four built-in plugins against an empty chain: judged on the
/// default (native) chain with every request new; the same four as components reported.
/// Cost of a chain per request, through `evaluate_async` from a task as the HTTP
/// path calls it (the synchronous `evaluate` would hand each call to the chain's worker
/// threads from here, which the server never does).
async fn chain(plan: &BenchPlan) -> anyhow::Result<Vec<Row>> {
    use procwarden_extensions::policy::{PluginSource, PolicyConfig};
    // The default chain: the four built-ins, run natively (what `serve` loads with no
    // configuration). The same four as WebAssembly components (`builtin:NAME.wasm`) are
    // reported beside it.
    let native = procwarden::runtime::sample_chain()?;
    let components =
        PolicyChain::load(&PolicyConfig::default(), &PluginSource::sample_components())?;
    let empty = PolicyChain::empty();
    let request = StartRequest {
        command: "sleep 30 &".into(),
        ..StartRequest::default()
    };
    let context = PolicyContext {
        chat_id: Some("bench".into()),
        agent_workdir: None,
        home: std::env::var("HOME").ok(),
        front_end: None,
    };
    // Latency per request, and the CPU of the whole process per request: that includes the
    // instances made ready for later calls on other threads, which the latency leaves out.
    // With `distinct`, every request is one the plugins have not seen (`sleep N &`), so
    // none is answered from what they remember.
    let mut seen = 0u64;
    let mut time =
        async |chain: &PolicyChain, distinct: bool| -> anyhow::Result<(Samples, Duration)> {
            let mut next = || {
                seen += 1;
                if distinct {
                    StartRequest {
                        command: format!("sleep {seen} &"),
                        ..request.clone()
                    }
                } else {
                    request.clone()
                }
            };
            let _ = chain.evaluate_async(next(), &context).await;
            let mut samples = Vec::with_capacity(plan.chain_samples);
            let cpu_before = process_cpu_time()?;
            for _ in 0..plan.chain_samples {
                let request = next();
                let t = Instant::now();
                let _ = chain.evaluate_async(request, &context).await;
                samples.push(t.elapsed());
            }
            let cpu = process_cpu_time()?.saturating_sub(cpu_before);
            Ok((Samples::new(samples), cpu / plan.chain_samples as u32))
        };
    /// Per round: p50, p99 and CPU per request of one chain.
    #[derive(Default)]
    struct Runs {
        p50: Vec<f64>,
        p99: Vec<f64>,
        cpu: Vec<f64>,
    }
    impl Runs {
        fn push(&mut self, (samples, cpu): (Samples, Duration)) {
            self.p50.push(samples.p50().as_secs_f64());
            self.p99.push(samples.p99().as_secs_f64());
            self.cpu.push(cpu.as_secs_f64());
        }
        /// (p50 added, p99), CPU added: medians over the rounds, against the empty chain.
        fn added(self, empty: &Runs) -> ((Duration, Duration), Duration) {
            let p50 = median(self.p50) - median(empty.p50.clone());
            let cpu = median(self.cpu) - median(empty.cpu.clone());
            let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
            ((secs(p50), secs(median(self.p99))), secs(cpu))
        }
    }
    let (mut native_new, mut wasm_new, mut wasm_seen, mut without) = (
        Runs::default(),
        Runs::default(),
        Runs::default(),
        Runs::default(),
    );
    for _ in 0..plan.rounds {
        native_new.push(time(&native, true).await?);
        wasm_new.push(time(&components, true).await?);
        wasm_seen.push(time(&components, false).await?);
        without.push(time(&empty, false).await?);
    }
    let empty_p50 = Duration::from_secs_f64(median(without.p50.clone()));
    let (latency, cpu) = native_new.added(&without);
    let mut rows = chain_rows(
        "policy chain of 4 built-ins (default, native), every request new",
        latency,
        empty_p50,
        cpu,
        Some((Duration::from_micros(20), Duration::from_micros(40))),
    );
    let (latency, cpu) = wasm_new.added(&without);
    rows.extend(chain_rows(
        "policy chain of the 4 built-ins as components (builtin:NAME.wasm), every request new",
        latency,
        empty_p50,
        cpu,
        None,
    ));
    let (latency, cpu) = wasm_seen.added(&without);
    rows.extend(chain_rows(
        "policy chain of the 4 built-ins as components (builtin:NAME.wasm), request remembered",
        latency,
        empty_p50,
        cpu,
        None,
    ));
    Ok(rows)
}

/// The rows of one chain measurement: the p50 time it adds with its p99, and the CPU it
/// costs per request; judged against `limits` (p50 added, CPU added) if given.
fn chain_rows(
    what: &str,
    (added, p99): (Duration, Duration),
    empty_p50: Duration,
    cpu_added: Duration,
    limits: Option<(Duration, Duration)>,
) -> Vec<Row> {
    vec![
        Row {
            figure: format!("{what}, per request (p50 added; p99)"),
            ours: format!("{} added (p99 {})", micros(added), micros(p99)),
            baseline: format!("{} (empty chain)", micros(empty_p50)),
            ratio: "—".into(),
            target: limits.map_or("reported".into(), |(l, _)| format!("≤ {} added", micros(l))),
            pass: limits.is_none_or(|(l, _)| added <= l),
        },
        Row {
            figure: format!("{what}, CPU per request (all threads)"),
            ours: format!("{} added", micros(cpu_added)),
            baseline: "empty chain".into(),
            ratio: "—".into(),
            target: limits.map_or("reported".into(), |(_, c)| format!("≤ {} added", micros(c))),
            pass: limits.is_none_or(|(_, c)| cpu_added <= c),
        },
    ]
}

/// CPU time used by this process so far, all threads together.
fn process_cpu_time() -> anyhow::Result<Duration> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF)?;
    let seconds = |t: nix::sys::time::TimeVal| {
        Duration::new(t.tv_sec().max(0) as u64, (t.tv_usec().max(0) as u32) * 1000)
    };
    Ok(seconds(usage.user_time()) + seconds(usage.system_time()))
}

/// Kill → reply of one blocked waiter while `plan.waiters` requests are blocked at once:
/// every process has one waiter; processes are killed one at a time and each kill is timed
/// until its waiter's reply arrives, so the figure is the wake-up path under load, not the
/// time to write a burst of replies.
async fn waiters(plan: &BenchPlan) -> anyhow::Result<Vec<Row>> {
    let local = Arc::new(LocalAgent::start().await?);
    let total = plan.waiters;
    let mut blocked = Vec::with_capacity(total);
    for _ in 0..total {
        let id = local.start_process("exec sleep 600").await?;
        let waiter = {
            let (local, id) = (local.clone(), id.clone());
            tokio::spawn(async move {
                let reply = local.wait(&id).await;
                (Instant::now(), reply)
            })
        };
        blocked.push((id, waiter));
    }
    let ready_by = Instant::now() + Duration::from_secs(30);
    while local.agent.waiters() < total {
        if Instant::now() > ready_by {
            bail!("only {} of {total} waiters blocked", local.agent.waiters());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let timed = total.min(WAKE_SAMPLES);
    let mut latencies = Vec::with_capacity(timed);
    let mut blocked = blocked.into_iter();
    for (id, waiter) in blocked.by_ref().take(timed) {
        let killed_at = Instant::now();
        local
            .agent
            .signal(&id, None, procwarden_process::GroupSignal::Kill)
            .await?;
        let (at, reply) = waiter.await?;
        anyhow::ensure!(reply?["running"] == Value::Bool(false), "waiter woke early");
        latencies.push(at - killed_at);
    }
    // The untimed waiters hold the agent too: end them, so the agent can be stopped and its
    // shutdown kills every process this figure started.
    for (_, waiter) in blocked {
        waiter.abort();
        let _ = waiter.await;
    }
    match Arc::try_unwrap(local) {
        Ok(local) => local.stop().await,
        Err(_) => bail!(
            "the waiters figure's agent is still shared; its processes would outlive the bench"
        ),
    }
    let samples = Samples::new(latencies);
    Ok(vec![Row {
        figure: format!("kill → reply of a blocked waiter, {total} blocked (p99; p50)"),
        ours: format!("{} ({} p50)", millis(samples.p99()), millis(samples.p50())),
        baseline: "—".into(),
        ratio: "—".into(),
        target: "p99 ≤ 5 ms".into(),
        pass: samples.p99() <= Duration::from_millis(5),
    }])
}

/// `GET /list` with commands running, in the default containment and in subreaper mode: a
/// model lists its processes often, and each running command's members are counted (in
/// subreaper mode from /proc, which grows with every process on the machine).
async fn list(plan: &BenchPlan) -> anyhow::Result<Vec<Row>> {
    const RUNNING: usize = 20;
    let mut rows = Vec::new();
    for (containment, name) in [
        (Containment::Auto, "default containment"),
        (Containment::Subreaper, "subreaper containment"),
    ] {
        let local = LocalAgent::start_with(containment).await?;
        for n in 0..RUNNING {
            local.start_process(&format!("sleep 600 # {n}")).await?;
        }
        let mut conn = local.connect().await?;
        let mut samples = Vec::with_capacity(plan.latency_samples);
        for _ in 0..plan.latency_samples {
            let t = Instant::now();
            conn.get(&format!("{PROCESSES}/list")).await?;
            samples.push(t.elapsed());
        }
        // Shutdown stops the sleeps.
        local.stop().await;
        let samples = Samples::new(samples);
        rows.push(Row {
            figure: format!("list of {RUNNING} running commands, {name} (p50; p99)"),
            ours: format!("{} ({} p99)", millis(samples.p50()), millis(samples.p99())),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "reported".into(),
            pass: true,
        });
    }
    Ok(rows)
}

/// Output throughput through the agent, against the same command piped to a plain reader.
async fn output(plan: &BenchPlan) -> anyhow::Result<Vec<Row>> {
    let local = LocalAgent::start().await?;
    let mut conn = local.connect().await?;
    let command = format!("head -c {} /dev/zero", plan.output_bytes);
    let (mut ours, mut base, mut ratios) = (vec![], vec![], vec![]);
    let mut spool_complete = true;
    for round in 0..plan.rounds {
        // Each round's two figures are taken side by side, in turns first, and judged as
        // their ratio: this VM's pipe speed drifts between rounds.
        let (mine, theirs) = if round % 2 == 0 {
            let mine = agent_output_rate(&mut conn, &command, plan, &mut spool_complete).await?;
            (mine, plain_reader_rate(&command, plan).await?)
        } else {
            let theirs = plain_reader_rate(&command, plan).await?;
            (
                agent_output_rate(&mut conn, &command, plan, &mut spool_complete).await?,
                theirs,
            )
        };
        ours.push(mine);
        base.push(theirs);
        ratios.push(mine / theirs);
    }
    local.stop().await;
    let (ours, base, ratio) = (median(ours), median(base), median(ratios));
    let mib = |b: f64| format!("{:.0} MiB/s", b / (1 << 20) as f64);
    Ok(vec![Row {
        figure: format!(
            "output throughput (spool on, {}), head -c {} MiB",
            if spool_complete {
                "spooled whole"
            } else {
                "spool stopped: disk too slow"
            },
            plan.output_bytes >> 20
        ),
        ours: mib(ours),
        baseline: format!("{} (pipe to a plain reader)", mib(base)),
        ratio: format!("{ratio:.2}×"),
        target: "≥ 0.7×".into(),
        pass: ratio >= 0.7,
    }])
}

/// Bytes per second the agent reads from `command`'s output, start to exit (one request).
async fn agent_output_rate(
    conn: &mut Connection,
    command: &str,
    plan: &BenchPlan,
    spool_complete: &mut bool,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let reply = run(conn, command).await?;
    let elapsed = t.elapsed();
    let seen = reply["truncated"]["original_bytes"].as_u64().unwrap_or(0);
    anyhow::ensure!(seen == plan.output_bytes, "agent saw {seen} bytes");
    *spool_complete &= reply["spool"]["complete"] == Value::Bool(true);
    Ok(plan.output_bytes as f64 / elapsed.as_secs_f64())
}

/// The same command's output read from a plain pipe by a thread that does nothing else.
async fn plain_reader_rate(command: &str, plan: &BenchPlan) -> anyhow::Result<f64> {
    let command = command.to_owned();
    let elapsed = tokio::task::spawn_blocking(move || -> anyhow::Result<Duration> {
        let t = Instant::now();
        let mut child = Command::new("sh")
            .args(["-c", &command])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut pipe = child.stdout.take().context("no stdout")?;
        let mut buf = vec![0u8; 64 * 1024];
        while pipe.read(&mut buf)? > 0 {}
        child.wait()?;
        Ok(t.elapsed())
    })
    .await??;
    Ok(plan.output_bytes as f64 / elapsed.as_secs_f64())
}

/// Resident memory of a real agent process holding many processes that printed a lot, with
/// the spool on (judged) and off (the baseline: the head+tail buffers alone).
async fn memory(plan: &BenchPlan) -> anyhow::Result<Vec<Row>> {
    let on = agent_rss(plan, None).await?;
    let config = std::env::temp_dir().join(format!(
        "procwarden-bench-nospool-{}.toml",
        std::process::id()
    ));
    std::fs::write(&config, "spool_max_bytes = 0\n")?;
    let off = agent_rss(plan, Some(&config)).await;
    let _ = std::fs::remove_file(&config);
    let off = off?;
    let budget = 128.0 * (plan.rss_processes as f64 / 1000.0);
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    Ok(vec![Row {
        figure: format!(
            "agent RSS (spool on), {} running processes × {} MB printed",
            plan.rss_processes,
            plan.rss_bytes_each / 1_000_000
        ),
        ours: format!("{} ({} added)", mb(on.loaded), mb(on.added())),
        baseline: format!("{} added with the spool off", mb(off.added())),
        ratio: "—".into(),
        target: format!("≤ {budget:.0} MB added"),
        pass: (on.added() as f64) <= budget * 1e6,
    }])
}

/// An agent's resident memory idle, and once it holds the bench's processes.
struct Rss {
    idle: u64,
    loaded: u64,
}

impl Rss {
    fn added(&self) -> u64 {
        self.loaded.saturating_sub(self.idle)
    }
}

/// Starts `procwarden serve` (with `config`, if any), loads it, and stops it.
async fn agent_rss(plan: &BenchPlan, config: Option<&std::path::Path>) -> anyhow::Result<Rss> {
    let mut command = Command::new(crate::agent_binary()?);
    command.args(["serve", "--listen", "127.0.0.1:0"]);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start an agent process")?;
    let mut first_line = String::new();
    BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut first_line)?;
    let base = first_line
        .trim()
        .rsplit(' ')
        .next()
        .context("agent did not print its address")?
        .to_owned();
    let pid = child.id();
    let result = measure_memory(plan, &base, pid).await;
    // SIGTERM: the agent kills every group it started before exiting.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    result
}

async fn measure_memory(plan: &BenchPlan, base: &str, pid: u32) -> anyhow::Result<Rss> {
    let http = reqwest::Client::new();
    let url = format!("{base}/api/v0/processes");
    let idle = rss_bytes(pid)?;
    let command = format!("head -c {} /dev/zero; exec sleep 600", plan.rss_bytes_each);
    let mut ids = Vec::with_capacity(plan.rss_processes);
    for _ in 0..plan.rss_processes {
        ids.push(start_over_http(&http, &url, &command).await?);
    }
    // Wait until every process has printed all of its output.
    let ready_by = Instant::now() + Duration::from_secs(120);
    for id in &ids {
        loop {
            let reply: Value = http
                .get(format!("{url}/{id}/output"))
                .send()
                .await?
                .json()
                .await?;
            if reply["truncated"]["original_bytes"].as_u64() == Some(plan.rss_bytes_each) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < ready_by,
                "outputs did not complete in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let loaded = settled_rss(pid).await?;
    Ok(Rss { idle, loaded })
}

/// Resident memory once the agent is idle again: the output has all been read, and the
/// spool writer hands its queue's memory back once its queue has been empty for 100 ms.
/// Read every 50 ms until it has not fallen for six reads (at most 2 s).
async fn settled_rss(pid: u32) -> anyhow::Result<u64> {
    let give_up = Instant::now() + Duration::from_secs(2);
    let mut lowest = rss_bytes(pid)?;
    let mut steady = 0;
    while steady < 6 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = rss_bytes(pid)?;
        if now < lowest {
            lowest = now;
            steady = 0;
        } else {
            steady += 1;
        }
    }
    Ok(lowest)
}

fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc status")?;
    Ok(kb * 1024)
}

/// A tool plugin's call: the built-in `serve` on a command that exits at once (instantiate,
/// `start` through the policy chain, `wait` until it exits: two host round trips), next to
/// the same start and wait made directly on the agent.
async fn tool(plan: &BenchPlan) -> anyhow::Result<Vec<Row>> {
    use procwarden_extensions::tool::{ToolSet, ToolSource, builtin};
    let serve = builtin::find("serve").context("no built-in serve")?;
    let tools = ToolSet::load(&[ToolSource::bytes("serve", serve)], &[])?;
    let agent = Agent::try_new(&Config::default(), PolicyChain::empty(), tools)?;
    let samples = plan.latency_samples.min(100);
    let (mut ours, mut base) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    let args = json!({"command": "exit 0", "ready_regex": "never"});
    for _ in 0..samples {
        let t = Instant::now();
        let out = agent.call_tool("serve", args.clone(), Some("bench")).await;
        ours.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(out.is_ok(), "serve failed: {out:?}");

        let t = Instant::now();
        let req = StartRequest {
            command: "exit 0".into(),
            background: true,
            ..Default::default()
        };
        let started = agent
            .start(
                Some("bench"),
                procwarden_extensions::policy::FrontEnd::Http,
                req,
                None,
            )
            .await?;
        agent
            .wait_output(&started.id, Some("bench"), Some(Duration::from_secs(5)))
            .await?;
        base.push(t.elapsed().as_secs_f64());
    }
    agent.shutdown().await;
    let (ours, base) = (median(ours), median(base));
    let ms = |s: f64| format!("{:.2} ms", s * 1e3);
    Ok(vec![Row {
        figure: "tool call (serve: start + wait, 2 host round trips)".into(),
        ours: ms(ours),
        baseline: format!("{} (the same start + wait on the agent)", ms(base)),
        ratio: format!("+{:.2} ms", (ours - base) * 1e3),
        target: "≤ +5 ms".into(),
        pass: ours - base <= 0.005,
    }])
}

/// A line of 64 bytes, as a build prints them.
const LOG_LINE: &str = "compiling crate foo v0.1.0 (/src/foo) with some more words.....";

/// The spool's reads and waits: a grep over a full 64 MiB spool, and how soon 100 waiters
/// on `until=regex:` answer after the matching line is written.
async fn spool(plan: &BenchPlan) -> anyhow::Result<Vec<Row>> {
    let local = Arc::new(LocalAgent::start().await?);
    let mut conn = local.connect().await?;
    let spool_bytes = 64u64 << 20;
    let reply = run(
        &mut conn,
        &format!("yes '{LOG_LINE}' | head -c {spool_bytes}; echo needle-7f3a"),
    )
    .await?;
    let id = reply["id"].as_str().context("no id")?.to_owned();
    let grep_path = format!("{PROCESSES}/{id}/output?grep=needle-7f3a");
    // The first read waits for the spool writer to finish; time the reads after it.
    let first = conn.get(&grep_path).await?;
    anyhow::ensure!(
        first["spool"]["complete"] == Value::Bool(true),
        "spool incomplete: {}",
        first["spool"]
    );
    let mut greps = Vec::new();
    for _ in 0..plan.rounds {
        let t = Instant::now();
        let found = conn.get(&grep_path).await?;
        greps.push(t.elapsed());
        anyhow::ensure!(found["grep"]["matches"] == json!(1), "needle not found");
    }
    let grep = Samples::new(greps).p50();

    let waiters = 100;
    let mut latencies = Vec::new();
    let dir = std::env::temp_dir().join(format!("procwarden-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for round in 0..plan.rounds {
        let fifo = dir.join(format!("fifo-{round}"));
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
        let id = local
            .start_process(&format!("exec cat {}", fifo.display()))
            .await?;
        let mut blocked = Vec::new();
        for _ in 0..waiters {
            // The load generator's own connections, opened before: each reply is read on
            // the waiter's task, so the figure carries little of the client's CPU.
            let mut conn = local.connect().await?;
            let path = format!("{PROCESSES}/{id}/output?wait=true&until=regex:READY");
            blocked.push(tokio::spawn(async move {
                let reply = conn.get_bytes(&path).await;
                let at = Instant::now();
                // Kept open until every waiter has its reply, as a kept-alive client would:
                // closing it here would put the close's work among the replies measured.
                (at, reply, conn)
            }));
        }
        let ready_by = Instant::now() + Duration::from_secs(30);
        while local.agent.waiters() < waiters {
            anyhow::ensure!(Instant::now() < ready_by, "waiters did not block");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // `perf record -D -1 --control fifo:CTL` with PROCWARDEN_BENCH_PERF_CTL=CTL samples only
        // from the line written to the last reply.
        let perf_ctl = std::env::var_os("PROCWARDEN_BENCH_PERF_CTL");
        if let Some(ctl) = &perf_ctl {
            use std::io::Write as _;
            std::fs::OpenOptions::new()
                .write(true)
                .open(ctl)?
                .write_all(b"enable\n")?;
        }
        let writer_fifo = fifo.clone();
        let written_at = tokio::task::spawn_blocking(move || -> anyhow::Result<Instant> {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new().write(true).open(&writer_fifo)?;
            let at = Instant::now();
            f.write_all(b"READY\n")?;
            Ok(at)
        })
        .await??;
        let mut replies = Vec::with_capacity(waiters);
        for waiter in blocked {
            replies.push(waiter.await?);
        }
        if let Some(ctl) = &perf_ctl {
            use std::io::Write as _;
            std::fs::OpenOptions::new()
                .write(true)
                .open(ctl)?
                .write_all(b"disable\n")?;
        }
        // Checked once every reply is in: parsing them is the client's own work, on the same
        // two cores, and would otherwise delay the agent's later replies.
        for (at, reply, _conn) in replies {
            let reply: Value = serde_json::from_slice(&reply?)?;
            anyhow::ensure!(
                reply["ended_by"] == json!("regex"),
                "waiter ended otherwise"
            );
            latencies.push(at.saturating_duration_since(written_at));
        }
        let _ = std::fs::remove_file(&fifo);
    }
    let _ = std::fs::remove_dir(&dir);
    if let Ok(local) = Arc::try_unwrap(local) {
        local.stop().await;
    }
    let wake = Samples::new(latencies);
    Ok(vec![
        Row {
            figure: "grep over a 64 MiB spool (p50)".into(),
            ours: millis(grep),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "≤ 250 ms".into(),
            pass: grep <= Duration::from_millis(250),
        },
        Row {
            figure: format!("line written → until=regex reply, {waiters} waiters (p99; p50)"),
            ours: format!("{} ({} p50)", millis(wake.p99()), millis(wake.p50())),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "p99 ≤ 5 ms".into(),
            pass: wake.p99() <= Duration::from_millis(5),
        },
    ])
}
