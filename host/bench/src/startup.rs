//! The startup figure: from spawning the real `procwarden serve` (default configuration) to
//! its first `200` from `/api/v0/health`, with an empty plugin cache (a fresh machine: every
//! start gets a new `XDG_CACHE_HOME`) against the same start with a warm cache, in the same
//! run.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::stats::median;
use crate::{BenchPlan, Row};

/// Target for the empty-cache median.
const TARGET: Duration = Duration::from_millis(150);
/// How often readiness is polled; a refused connection returns at once, so this bounds the
/// measurement error.
const POLL: Duration = Duration::from_millis(1);
/// A start that takes longer than this is an error, not a figure.
const GIVE_UP: Duration = Duration::from_secs(60);

pub async fn startup(plan: &BenchPlan) -> anyhow::Result<Vec<Row>> {
    tokio::task::spawn_blocking({
        let rounds = plan.rounds.max(3);
        move || measure(rounds)
    })
    .await?
}

fn measure(rounds: usize) -> anyhow::Result<Vec<Row>> {
    let binary = crate::agent_binary()?;
    let root =
        std::env::temp_dir().join(format!("procwarden-bench-startup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let result = (|| {
        // No configuration file: the default configuration, whatever the machine has.
        let config_home = root.join("config");
        std::fs::create_dir_all(&config_home)?;
        let warm_cache = root.join("warm");
        // Fill the warm cache once.
        start_once(&binary, &config_home, &warm_cache)?;
        let (mut cold, mut warm) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate, so a busy moment on the machine hits both.
            cold.push(start_once(
                &binary,
                &config_home,
                &root.join(format!("cold-{round}")),
            )?);
            warm.push(start_once(&binary, &config_home, &warm_cache)?);
        }
        Ok::<_, anyhow::Error>((cold, warm))
    })();
    let _ = std::fs::remove_dir_all(&root);
    let (cold, warm) = result?;
    let ms = |d: &[Duration]| d.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>();
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (cold, warm) = (ms(&cold), ms(&warm));
    let (cold_median, warm_median) = (median(cold.clone()), median(warm.clone()));
    let target_ms = TARGET.as_secs_f64() * 1e3;
    Ok(vec![Row {
        figure: format!(
            "`serve` start to first /api/v0/health 200, empty plugin cache (median of {rounds}, best)"
        ),
        ours: format!("{cold_median:.0} ms (best {:.0} ms)", best(&cold)),
        baseline: format!(
            "{warm_median:.0} ms (best {:.0} ms; warm cache)",
            best(&warm)
        ),
        ratio: format!("{:.2}×", cold_median / warm_median),
        target: format!("≤ {target_ms:.0} ms"),
        pass: cold_median <= target_ms,
    }])
}

/// One start of `binary serve` on a free port with `cache_home` as `XDG_CACHE_HOME`: the
/// time until `/api/v0/health` answers 200. The agent is stopped (SIGTERM) afterwards.
fn start_once(binary: &Path, config_home: &Path, cache_home: &Path) -> anyhow::Result<Duration> {
    let addr = free_port()?;
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(["serve", "--listen", &addr.to_string()])
        .env("XDG_CACHE_HOME", cache_home)
        .env("XDG_CONFIG_HOME", config_home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start an agent process")?;
    let ready = loop {
        if health_ok(addr) {
            break Ok(started.elapsed());
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(anyhow::anyhow!(
                "the agent exited before answering: {status}"
            ));
        }
        if started.elapsed() > GIVE_UP {
            break Err(anyhow::anyhow!(
                "the agent did not answer within {GIVE_UP:?}"
            ));
        }
        std::thread::sleep(POLL);
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX)),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    ready
}

/// A port nothing listens on at the moment (the agent binds it right after).
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?)
}

/// Whether `GET /api/v0/health` on `addr` answers 200 now.
fn health_ok(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /api/v0/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}
