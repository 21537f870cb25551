//! An exit hook runs as the shell's exit is recorded, before anyone waiting for the exit
//! wakes, and at once when it is registered after the exit.

// A test file: a failed set-up step should stop it loudly.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::background;
use procwarden_process::{ExitHook, ManagerSettings, Phase, ProcessManager};

/// What a hook saw: the exit code and the output, recorded by the hook itself.
type Seen = Arc<Mutex<Vec<(Option<i32>, String)>>>;

fn recording(seen: &Seen) -> ExitHook {
    let seen = seen.clone();
    ExitHook::new(move |process| {
        let snapshot = process.snapshot();
        seen.lock()
            .unwrap()
            .push((snapshot.exit_code, snapshot.output));
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_has_run_with_the_final_output_when_a_waiter_sees_the_exit() {
    let manager = ProcessManager::new(ManagerSettings::default());
    let seen = Seen::default();
    // Many starts, so a hook that ran after the waiters woke would be caught in the act.
    for round in 0..50 {
        let process = manager
            .start(background(&format!("printf 'round {round}'; exit 3")), None)
            .unwrap();
        process.on_exit(recording(&seen));
        process.wait_for(Phase::Exited).await;
        let last = seen.lock().unwrap().last().cloned();
        assert_eq!(last, Some((Some(3), format!("round {round}"))));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_registered_after_the_exit_runs_at_once() {
    let manager = ProcessManager::new(ManagerSettings::default());
    let process = manager.start(background("exit 7"), None).unwrap();
    process.wait_for(Phase::Exited).await;
    let seen = Seen::default();
    process.on_exit(recording(&seen));
    assert_eq!(seen.lock().unwrap().clone(), vec![(Some(7), String::new())]);
}
