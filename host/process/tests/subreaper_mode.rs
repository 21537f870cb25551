//! Subreaper containment (forced, so it is tested where cgroups work too): escapes that left
//! the process group are found by the marker in their environment, counted, and stopped; the
//! orphans re-parented to the agent are reaped without touching the pinned leaders.

// A test file: a failed set-up step should stop it loudly.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{background, eventually};
use procwarden_process::{
    Containment, ContainmentMode, GroupSignal, ManagerSettings, Phase, ProcessError,
    ProcessManager, Scope,
};

fn subreaper_manager() -> Arc<ProcessManager> {
    let manager = ProcessManager::try_new(ManagerSettings {
        kill_grace: Duration::from_millis(300),
        containment: Containment::Subreaper,
        ..ManagerSettings::default()
    })
    .unwrap();
    assert_eq!(manager.containment(), ContainmentMode::Subreaper);
    manager
}

/// Zombie children of this process (the test is the subreaper).
fn zombie_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let rest = &stat[stat.rfind(')').unwrap() + 1..];
                let f: Vec<&str> = rest.split_whitespace().collect();
                f[0] == "Z" && f[1] == me
            })
        })
        .collect()
}

const ESCAPES: &str = "setsid sleep 2001 & (sleep 2002 &) & (set -m; sleep 2003 &) ; \
                       (trap '' TERM; exec sleep 2004) & sleep 0.2; exit 0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escapes_are_found_by_their_marker_counted_killed_and_reaped() {
    let manager = subreaper_manager();
    let process = manager.start(background(ESCAPES), None).unwrap();
    assert!(process.cgroup().is_none());
    process.wait_for(Phase::Exited).await;
    assert!(
        eventually(Duration::from_secs(5), || process.members_alive() == 4),
        "four escapes, found {}",
        process.members_alive()
    );
    assert!(process.info().group_alive);
    manager
        .signal(process.id(), Scope::All, GroupSignal::Kill)
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || process
        .members_alive()
        == 0));
    let err = manager
        .signal(process.id(), Scope::All, GroupSignal::Kill)
        .unwrap_err();
    assert!(matches!(err, ProcessError::NotRunning(_)), "{err:?}");
    // Orphans re-parented to us are reaped; the leader is ours to reap, through its record.
    assert!(
        eventually(Duration::from_secs(5), || {
            manager.reap_orphans();
            zombie_children().is_empty()
        }),
        "zombies left: {:?}",
        zombie_children()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_then_shutdown_leaves_nothing_even_what_ignores_sigterm() {
    let manager = subreaper_manager();
    let process = manager.start(background(ESCAPES), None).unwrap();
    process.wait_for(Phase::Exited).await;
    assert!(eventually(Duration::from_secs(5), || process
        .members_alive()
        == 4));
    manager
        .signal(process.id(), Scope::All, GroupSignal::Terminate)
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || process.members_alive() == 1),
        "only the one ignoring SIGTERM: {}",
        process.members_alive()
    );
    manager.shutdown().await;
    assert_eq!(process.members_alive(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_exits_is_never_reaped_by_the_orphan_reaper() {
    let manager = subreaper_manager();
    let process = manager
        .start(
            background("exec >/dev/null 2>&1; sleep 1000 & exit 5"),
            None,
        )
        .unwrap();
    process.wait_for(Phase::Exited).await;
    for _ in 0..5 {
        manager.reap_orphans();
    }
    let pgid = process.identity.pgid;
    let stat = std::fs::read_to_string(format!("/proc/{pgid}/stat")).unwrap();
    assert!(stat.contains(") Z "), "still pinned: {stat}");
    assert_eq!(process.info().exit_code, Some(5));
    manager.shutdown().await;
}
