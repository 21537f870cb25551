//! cgroup v2 containment: each command starts in its own cgroup (placed by the clone itself),
//! every descendant is counted and stopped wherever it went, and the cgroup is removed when
//! the record is forgotten. Skips, saying why, where no cgroup v2 is writable.

// A test file: a failed set-up step should stop it loudly.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{background, eventually};
use procwarden_process::{
    Containment, ContainmentMode, GroupSignal, ManagerSettings, Phase, ProcessError,
    ProcessManager, Scope,
};

fn cgroup_manager(test: &str) -> Option<Arc<ProcessManager>> {
    match ProcessManager::try_new(ManagerSettings {
        kill_grace: Duration::from_millis(300),
        containment: Containment::Cgroup,
        instance: format!("test-{test}-{}", std::process::id()),
        ..ManagerSettings::default()
    }) {
        Ok(manager) => {
            assert_eq!(manager.containment(), ContainmentMode::Cgroup);
            Some(manager)
        }
        Err(why) => {
            eprintln!("SKIP: no writable cgroup v2 here ({why})");
            None
        }
    }
}

/// Escapes of every kind: a new session, a double fork, a job-control group, and one that
/// ignores SIGTERM. The shell exits at once.
const ESCAPES: &str = "setsid sleep 1001 & (sleep 1002 &) & (set -m; sleep 1003 &) ; \
                       (trap '' TERM; exec sleep 1004) & sleep 0.2; exit 0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_starts_in_its_own_cgroup_and_escapes_are_counted_and_killed() {
    let Some(manager) = cgroup_manager("kill") else {
        return;
    };
    let process = manager.start(background(ESCAPES), None).unwrap();
    let pid = process.identity.pgid;
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(own.contains(process.id()), "placed at spawn: {own}");
    let cgroup = process.cgroup().unwrap().path().to_owned();
    process.wait_for(Phase::Exited).await;
    assert!(
        eventually(Duration::from_secs(5), || process.members_alive() == 4),
        "four escapes: {:?}",
        process.cgroup().unwrap().members()
    );
    let info = process.info();
    assert!(info.group_alive && info.members_alive == 4, "{info:?}");
    manager
        .signal(process.id(), Scope::All, GroupSignal::Kill)
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || process
        .members_alive()
        == 0));
    assert!(!process.group_alive());
    let err = manager
        .signal(process.id(), Scope::All, GroupSignal::Kill)
        .unwrap_err();
    assert!(matches!(err, ProcessError::NotRunning(_)), "{err:?}");
    // Forgotten: the record goes, and its cgroup with it.
    process.wait_for(Phase::Finished).await;
    drop(process);
    let settings_age = manager.settings().reap_age;
    assert!(settings_age > Duration::ZERO);
    manager.shutdown().await;
    assert!(!cgroup.exists(), "cgroup removed at shutdown: {cgroup:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_reaches_every_member_then_kills_those_that_ignore_it() {
    let Some(manager) = cgroup_manager("term") else {
        return;
    };
    let process = manager.start(background(ESCAPES), None).unwrap();
    process.wait_for(Phase::Exited).await;
    assert!(eventually(Duration::from_secs(5), || process
        .members_alive()
        == 4));
    let signalled = Instant::now();
    manager
        .signal(process.id(), Scope::All, GroupSignal::Terminate)
        .unwrap();
    // SIGTERM ends all but the one that ignores it.
    assert!(
        eventually(Duration::from_secs(5), || process.members_alive() == 1),
        "{:?}",
        process.cgroup().unwrap().members()
    );
    // SIGKILL (cgroup.kill) follows after the grace period.
    assert!(eventually(Duration::from_secs(5), || process
        .members_alive()
        == 0));
    assert!(
        signalled.elapsed() >= Duration::from_millis(300),
        "grace kept"
    );
    let root = process
        .cgroup()
        .unwrap()
        .path()
        .parent()
        .unwrap()
        .to_owned();
    manager.shutdown().await;
    assert!(!root.exists(), "agent's cgroup directory removed: {root:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_agent_of_the_same_instance_kills_what_a_dead_one_left() {
    let Some(first) = cgroup_manager("crash") else {
        return;
    };
    let process = first
        .start(background("setsid sleep 1005 & exit 0"), None)
        .unwrap();
    process.wait_for(Phase::Exited).await;
    assert!(eventually(Duration::from_secs(5), || process
        .members_alive()
        == 1));
    let left = process.cgroup().unwrap().members()[0];
    // The first agent "dies": its table is never shut down.
    std::mem::forget(process);
    std::mem::forget(first);
    let second = cgroup_manager("crash").unwrap();
    assert!(
        std::fs::read_to_string(format!("/proc/{left}/stat")).map_or(true, |s| s.contains(") Z ")),
        "the leftover was killed at start"
    );
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_group_mode_uses_no_cgroup() {
    let manager = ProcessManager::try_new(ManagerSettings {
        containment: Containment::Subreaper,
        ..ManagerSettings::default()
    })
    .unwrap();
    assert_eq!(manager.containment(), ContainmentMode::Subreaper);
    let process = manager.start(background("exit 0"), None).unwrap();
    assert!(process.cgroup().is_none());
    process.wait_for(Phase::Finished).await;
}
