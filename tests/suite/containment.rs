//! The orphan matrix: every way a command's descendant can leave its shell behind (pipelines,
//! `&`, `( … &)`, `setsid`, `setsid -f`, `nohup`, `disown`, `set -m`, a double fork, a daemon
//! that closes its fds, one that ignores SIGTERM) must leave zero survivors after the process's
//! `kill`, after its `terminate` (SIGKILL follows after the grace period), and after the
//! agent's SIGTERM and SIGINT. Run in both containment modes: `subreaper` is forced by the
//! config; `cgroup` skips, saying why, where no cgroup v2 is writable.
//!
//! Each case's descendant is a `sleep <marker>`; survivors are found by scanning /proc for the
//! marker, polled against a deadline.
//!
//! `PW_CONTAINMENT_BASELINE=1` (with `PROCWARDEN_BIN` naming an older binary) runs the matrix
//! without the `containment` key and without asserting, and only prints the survivor counts.

use std::time::Duration;

use nix::sys::signal::Signal;
use procwarden_tests::*;

/// How long a case may take to start its sleep, and its survivors to die.
const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Cgroup,
    Subreaper,
}

/// One case of the orphan matrix: its name, and its command given `sleep <marker>`.
type Case = (&'static str, fn(&str) -> String);

/// The orphan matrix.
fn cases() -> Vec<Case> {
    vec![
        ("pipeline", |s| format!("{s} | cat")),
        ("ampersand", |s| format!("{s} & exit 0")),
        ("subshell_ampersand", |s| format!("({s} &); exit 0")),
        ("setsid", |s| format!("setsid {s} & exit 0")),
        ("setsid_f", |s| format!("setsid -f {s}; exit 0")),
        ("nohup", |s| format!("nohup {s} >/dev/null 2>&1 & exit 0")),
        ("disown", |s| format!("bash -c '{s} & disown; exit 0'")),
        // bash: dash turns job control off without a terminal, bash still gives the job its
        // own process group.
        ("set_m", |s| format!("bash -c 'set -m; {s} & exit 0'")),
        ("double_fork", |s| {
            format!("sh -c 'sh -c \"{s} &\" &'; exit 0")
        }),
        ("daemon_closing_fds", |s| {
            format!("(exec </dev/null >/dev/null 2>&1; setsid {s} &) ; exit 0")
        }),
        ("ignores_sigterm", |s| {
            format!("setsid sh -c \"trap '' TERM; {s}; :\" & exit 0")
        }),
    ]
}

fn baseline() -> bool {
    std::env::var_os("PW_CONTAINMENT_BASELINE").is_some()
}

/// An agent in `mode`, or `None` (with the reason printed) where that mode cannot run here.
async fn agent(mode: Mode) -> Option<Server> {
    let config = if baseline() {
        "shutdown_grace_seconds = 1\n".to_owned()
    } else {
        let key = match mode {
            Mode::Cgroup => "auto",
            Mode::Subreaper => "subreaper",
        };
        format!("shutdown_grace_seconds = 1\ncontainment = \"{key}\"\n")
    };
    let server = Server::with_config(&config);
    if baseline() {
        return Some(server);
    }
    let health = server.api().health().await;
    match (mode, health.containment.as_str()) {
        (Mode::Cgroup, "cgroup") | (Mode::Subreaper, "subreaper") => Some(server),
        (Mode::Cgroup, other) => {
            skip(
                "the cgroup half of the orphan matrix",
                &format!("no writable cgroup v2 on this machine (the agent chose {other})"),
            );
            None
        }
        (mode, other) => panic!("asked for {mode:?}, the agent chose {other}"),
    }
}

/// Start every case and wait until each one's sleep runs. Returns (name, id, marker).
async fn start_all(api: &Api) -> Vec<(&'static str, String, Marker)> {
    let mut started = Vec::new();
    for (name, command) in cases() {
        let marker = Marker::new();
        let id = api.start(&command(&marker.sleep())).await;
        started.push((name, id, marker));
    }
    for (name, _, marker) in &started {
        assert!(
            marker.wait_sleeps(1, DEADLINE).await,
            "{name}: its sleep never started"
        );
    }
    started
}

/// Wait (up to the deadline) for each marker's processes to go; returns survivors per case.
async fn survivors(started: &[(&'static str, String, Marker)]) -> Vec<(&'static str, usize)> {
    eventually_sync(DEADLINE, || {
        started.iter().all(|(_, _, m)| m.live().is_empty())
    })
    .await;
    started
        .iter()
        .map(|(name, _, m)| (*name, m.live_sleeps().len()))
        .collect()
}

fn report(mode: Mode, action: &str, counts: &[(&'static str, usize)]) {
    let line: Vec<String> = counts.iter().map(|(n, c)| format!("{n}={c}")).collect();
    eprintln!(
        "SURVIVORS {}{mode:?} {action}: {}",
        if baseline() { "baseline " } else { "" },
        line.join(" ")
    );
    if !baseline() {
        assert!(
            counts.iter().all(|(_, c)| *c == 0),
            "{mode:?} {action}: survivors {counts:?}"
        );
    }
}

async fn signal_each(mode: Mode, signal: &str) {
    let Some(server) = agent(mode).await else {
        return;
    };
    let api = server.api();
    let started = start_all(&api).await;
    if !baseline() {
        // Every escape is counted while it runs (the shells have exited or wait on it).
        for (name, id, _) in &started {
            let counted = eventually(DEADLINE, || async {
                api.output_ok(id, false).await.members_alive >= 1
            })
            .await;
            assert!(counted, "{name}: its sleep is not counted in members_alive");
        }
        // A list counts them too (in subreaper mode from one walk of /proc for all). It
        // shows the newest up to its cap, all of them started here.
        let listed = api.list().await;
        assert!(!listed.is_empty());
        for info in &listed {
            assert!(
                info.members_alive >= 1,
                "{}: not counted by the list",
                info.command
            );
        }
    }
    for (name, id, _) in &started {
        let reply = api.signal(id, signal).await;
        if !baseline() {
            reply.expect_status(200);
        } else if reply.status != 200 {
            eprintln!("{name}: {signal} answered {}", reply.status);
        }
    }
    // `terminate` kills what ignores SIGTERM after the grace period (1 s here).
    let counts = survivors(&started).await;
    report(mode, signal, &counts);
    if !baseline() {
        // Nothing lives, so nothing is to be signalled.
        for (name, id, _) in &started {
            let reply = api.signal(id, "kill").await;
            assert_eq!(reply.status, 409, "{name}: a second signal");
            assert_eq!(api.output_ok(id, false).await.members_alive, 0, "{name}");
        }
    }
}

async fn stop_agent(mode: Mode, signal: Signal) {
    let Some(server) = agent(mode).await else {
        return;
    };
    let api = server.api();
    let started = start_all(&api).await;
    server.send_signal(signal);
    assert!(
        server.wait_exit(DEADLINE).is_some(),
        "the agent did not exit on {signal}"
    );
    let counts = survivors(&started).await;
    report(mode, &format!("agent_{signal}"), &counts);
}

#[tokio::test]
async fn cgroup_kill_leaves_no_survivor() {
    signal_each(Mode::Cgroup, "kill").await;
}

#[tokio::test]
async fn cgroup_terminate_leaves_no_survivor() {
    signal_each(Mode::Cgroup, "terminate").await;
}

#[tokio::test]
async fn cgroup_agent_sigterm_leaves_no_survivor() {
    stop_agent(Mode::Cgroup, Signal::SIGTERM).await;
}

#[tokio::test]
async fn cgroup_agent_sigint_leaves_no_survivor() {
    stop_agent(Mode::Cgroup, Signal::SIGINT).await;
}

#[tokio::test]
async fn subreaper_kill_leaves_no_survivor() {
    signal_each(Mode::Subreaper, "kill").await;
}

#[tokio::test]
async fn subreaper_terminate_leaves_no_survivor() {
    signal_each(Mode::Subreaper, "terminate").await;
}

#[tokio::test]
async fn subreaper_agent_sigterm_leaves_no_survivor() {
    stop_agent(Mode::Subreaper, Signal::SIGTERM).await;
}

#[tokio::test]
async fn subreaper_agent_sigint_leaves_no_survivor() {
    stop_agent(Mode::Subreaper, Signal::SIGINT).await;
}

#[tokio::test]
async fn health_names_the_containment_mode() {
    if baseline() {
        return;
    }
    let forced = Server::with_config("containment = \"subreaper\"\n");
    assert_eq!(forced.api().health().await.containment, "subreaper");
    let auto = Server::start();
    let mode = auto.api().health().await.containment;
    assert!(mode == "cgroup" || mode == "subreaper", "{mode}");
    // The agent may answer before the test has read its start-up log from the pipe.
    for (server, mode) in [(&forced, "subreaper"), (&auto, mode.as_str())] {
        assert!(
            server.logged(&format!("containment=\"{mode}\"")).await,
            "the start-up log names the mode {mode}: {}",
            server.stderr_text()
        );
    }
}

/// A free port for an agent that must keep its address across a restart.
fn fixed_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    format!("127.0.0.1:{port}")
}

#[tokio::test]
async fn after_a_sigkill_the_next_agent_on_the_address_kills_what_the_dead_one_left() {
    if baseline() {
        return;
    }
    // A fixed address: the agent names its cgroups after it, so the next one finds them.
    let listen = fixed_address();
    let first = Server::builder()
        .config("containment = \"auto\"\n")
        .listen(&listen)
        .spawn();
    if first.api().health().await.containment != "cgroup" {
        skip(
            "the cgroup-mode crash test",
            "no writable cgroup v2 on this machine; the subreaper-mode crash test covers \
             recovery from the state file",
        );
        return;
    }
    let m = Marker::new();
    first
        .api()
        .start(&format!("setsid {} & exit 0", m.sleep()))
        .await;
    assert!(m.wait_sleeps(1, DEADLINE).await, "the escape never started");
    first.send_signal(Signal::SIGKILL);
    assert!(first.wait_exit(DEADLINE).is_some());
    assert_eq!(m.live_sleeps().len(), 1, "a SIGKILLed agent stops nothing");

    let second = Server::builder()
        .config("containment = \"auto\"\n")
        .listen(&listen)
        .spawn();
    m.assert_gone(DEADLINE, "left by the killed agent").await;
    assert!(
        second
            .logged("killed the commands a previous agent left running")
            .await,
        "logged: {}",
        second.stderr_text()
    );
}

#[tokio::test]
async fn in_subreaper_mode_the_next_agent_kills_what_a_sigkilled_one_left_from_its_state_file() {
    if baseline() {
        return;
    }
    let state_dir = tempfile::tempdir().expect("a temporary directory");
    let config = format!(
        "containment = \"subreaper\"\nstate_dir = \"{}\"\n",
        state_dir.path().display()
    );
    let listen = fixed_address();
    let first = Server::builder().config(&config).listen(&listen).spawn();
    assert_eq!(first.api().health().await.containment, "subreaper");
    // Left the group, kept the marker: found by the marker.
    let escaped = Marker::new();
    first
        .api()
        .start(&format!("setsid {} & exit 0", escaped.sleep()))
        .await;
    // Cleared its environment but stayed in a group whose leader still runs: found through
    // the state file's (group, leader start time).
    let cleared = Marker::new();
    let leader = Marker::new();
    first
        .api()
        .start(&format!(
            "env -i {} & exec {}",
            cleared.sleep(),
            leader.sleep()
        ))
        .await;
    for (m, what) in [
        (&escaped, "escape"),
        (&cleared, "cleared"),
        (&leader, "leader"),
    ] {
        assert!(m.wait_sleeps(1, DEADLINE).await, "the {what} never started");
    }
    let state_file = std::fs::read_dir(state_dir.path())
        .expect("the state directory")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".groups"))
        .expect("a state file while commands run");
    first.send_signal(Signal::SIGKILL);
    assert!(first.wait_exit(DEADLINE).is_some());
    assert_eq!(
        escaped.live_sleeps().len() + cleared.live_sleeps().len() + leader.live_sleeps().len(),
        3,
        "a SIGKILLed agent stops nothing"
    );

    let second = Server::builder().config(&config).listen(&listen).spawn();
    second.api().health().await;
    escaped
        .assert_gone(DEADLINE, "escape left by the killed agent")
        .await;
    cleared
        .assert_gone(
            DEADLINE,
            "environment-cleared member left by the killed agent",
        )
        .await;
    leader
        .assert_gone(DEADLINE, "leader left by the killed agent")
        .await;
    assert!(
        second
            .logged("killed the commands a previous agent left running")
            .await,
        "logged: {}",
        second.stderr_text()
    );
    second.send_signal(Signal::SIGTERM);
    assert!(second.wait_exit(DEADLINE).is_some());
    assert!(
        !state_file.path().exists(),
        "a clean shutdown deletes the state file"
    );
}

#[tokio::test]
async fn an_agent_on_port_zero_names_its_cgroups_after_its_pid_not_the_port_it_was_given() {
    if baseline() {
        return;
    }
    let server = Server::with_config("containment = \"auto\"\n");
    if server.api().health().await.containment != "cgroup" {
        skip(
            "an_agent_on_port_zero_names_its_cgroups_after_its_pid",
            "no writable cgroup v2 on this machine",
        );
        return;
    }
    let api = server.api();
    let id = api.start("cat /proc/self/cgroup").await;
    let cgroup = api.wait_exit(&id).await.output;
    // No later agent asks for this ephemeral port, so a name after it would never be found
    // and cleaned up by one.
    assert!(
        cgroup.contains(&format!("procwarden-pid{}-", server.pid())),
        "{cgroup}"
    );
    assert!(!cgroup.contains("listen-"), "{cgroup}");
}
