//! cgroup v2 containment: each command starts in its own cgroup (placed by the clone itself),
//! every descendant is counted and stopped wherever it went, and the cgroup is handed back
//! once its last member is gone (or when the record is forgotten). Skips, saying why, where no cgroup v2 is writable.

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
            common::skip(test, &format!("no writable cgroup v2 here ({why})"));
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
    let cgroup = process.cgroup().unwrap().path().to_owned();
    let name = cgroup.file_name().unwrap().to_str().unwrap();
    assert!(
        own.contains(&format!("/{name}\n")),
        "placed at spawn: {own}"
    );
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

/// A command whose last member is gone hands its cgroup to the next command at once (no
/// cgroup made or removed per start), and from then on its record neither sees nor
/// signals what runs there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cgroup_goes_to_the_next_command_once_empty_and_the_old_record_lets_go_of_it() {
    let Some(manager) = cgroup_manager("handback") else {
        return;
    };
    let first = manager.start(background("exit 0"), None).unwrap();
    let path = first.cgroup().unwrap().path().to_owned();
    first.wait_for(Phase::Finished).await;
    assert!(
        eventually(Duration::from_secs(5), || !first.group_alive()),
        "the first command's group never went"
    );
    let second = manager.start(background("exec sleep 1006"), None).unwrap();
    assert_eq!(
        second.cgroup().unwrap().path(),
        path,
        "the empty cgroup was not handed to the next command"
    );
    assert!(eventually(Duration::from_secs(5), || second
        .members_alive()
        == 1));
    // The first record is done with it: no members, no signal.
    assert_eq!(first.members_alive(), 0);
    assert!(first.cgroup().unwrap().members().is_empty());
    assert!(!first.cgroup().unwrap().populated());
    assert_eq!(
        first
            .cgroup()
            .unwrap()
            .signal_members(libc::SIGKILL)
            .unwrap(),
        0
    );
    assert!(!first.cgroup().unwrap().kill().unwrap());
    let err = manager
        .signal(first.id(), Scope::All, GroupSignal::Kill)
        .unwrap_err();
    assert!(matches!(err, ProcessError::NotRunning(_)), "{err:?}");
    drop(first);
    assert!(
        second.group_alive() && second.members_alive() == 1,
        "the second command was touched"
    );
    manager
        .signal(second.id(), Scope::All, GroupSignal::Kill)
        .unwrap();
    second.wait_for(Phase::Finished).await;
    manager.shutdown().await;
}

/// The command after one that was killed (`cgroup.kill`) or terminated lives until it is
/// signalled itself: a killed cgroup is not reused (some kernels would kill every command
/// cloned into it), a terminated one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cgroup_handed_back_after_a_kill_does_not_kill_the_next_command() {
    let Some(manager) = cgroup_manager("afterkill") else {
        return;
    };
    for signal in [GroupSignal::Kill, GroupSignal::Terminate] {
        let first = manager.start(background("exec sleep 1007"), None).unwrap();
        manager.signal(first.id(), Scope::All, signal).unwrap();
        first.wait_for(Phase::Finished).await;
        assert!(eventually(Duration::from_secs(5), || !first.group_alive()));
        let next = manager.start(background("exec sleep 1008"), None).unwrap();
        // After SIGTERM the emptied cgroup is reused; after cgroup.kill it is not.
        let reused = next.cgroup().unwrap().path() == first.cgroup().unwrap().path();
        assert_eq!(reused, signal == GroupSignal::Terminate, "{signal:?}");
        let died =
            tokio::time::timeout(Duration::from_millis(500), next.wait_for(Phase::Exited)).await;
        assert!(
            died.is_err(),
            "after {signal:?}, the next command in the cgroup died: {:?}",
            next.info()
        );
        manager
            .signal(next.id(), Scope::All, GroupSignal::Kill)
            .unwrap();
        next.wait_for(Phase::Finished).await;
        assert!(eventually(Duration::from_secs(5), || !next.group_alive()));
    }
    manager.shutdown().await;
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

/// Directories under the root other than the kernel's own files.
fn cgroups_in(root: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn an_empty_cgroup_is_kept_as_a_spare_and_renamed_for_the_next_command() {
    let root = match procwarden_process::cgroup::CgroupRoot::open(&format!(
        "test-spares-{}",
        std::process::id()
    )) {
        Ok(root) => root,
        Err(why) => {
            common::skip(
                "an_empty_cgroup_is_kept_as_a_spare_and_renamed_for_the_next_command",
                &format!("no writable cgroup v2 here ({why})"),
            );
            return;
        }
    };
    let first = root.create().unwrap();
    let name = cgroups_in(root.path());
    assert_eq!(name.len(), 1);
    drop(first);
    assert_eq!(cgroups_in(root.path()), name, "kept as a spare");
    let second = root.create().unwrap();
    assert_eq!(cgroups_in(root.path()), name, "the spare was reused");

    // One with a process in it is not kept: a new command gets a new cgroup.
    let mut sleeper = std::process::Command::new("sleep")
        .arg("100")
        .spawn()
        .unwrap();
    std::fs::write(second.path().join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    let busy = second.path().to_owned();
    drop(second);
    let fresh = root.create().unwrap();
    assert_ne!(
        fresh.path(),
        busy,
        "a populated cgroup was handed out again"
    );
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || std::fs::remove_dir(&busy)
            .is_ok()),
        "the emptied cgroup could not be removed"
    );
    drop(fresh);

    let dir = root.path().to_owned();
    root.remove();
    assert!(
        !dir.exists(),
        "spares are removed with the root: {:?}",
        cgroups_in(&dir)
    );
}
