//! Stdin pipes and pseudo-terminals, in both containment modes (cgroup where one is writable;
//! subreaper always): writes reach the command, end-of-file ends its read, a member blocked
//! reading is seen from /proc, and writes are refused without a pipe, after end-of-file and
//! after exit.

// A test file: a failed set-up step should stop it loudly.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use procwarden_process::{
    Containment, EndedBy, InputError, InputMode, ManagerSettings, Phase, Process, ProcessError,
    ProcessManager, StartRequest, TerminalSize, Until,
};

const WRITE_LIMIT: Duration = Duration::from_secs(5);

/// A manager per containment mode that works here: subreaper always, cgroup where writable
/// (saying so when it is skipped).
fn managers(test: &str) -> Vec<Arc<ProcessManager>> {
    let settings = |containment| ManagerSettings {
        kill_grace: Duration::from_millis(300),
        containment,
        instance: format!("test-stdin-{test}-{}", std::process::id()),
        ..ManagerSettings::default()
    };
    let mut all = vec![ProcessManager::try_new(settings(Containment::Subreaper)).unwrap()];
    match ProcessManager::try_new(settings(Containment::Cgroup)) {
        Ok(manager) => all.push(manager),
        Err(why) => common::skip(
            &format!("{test} (cgroup mode)"),
            &format!("no writable cgroup v2 here ({why})"),
        ),
    }
    all
}

fn request(command: &str) -> StartRequest {
    StartRequest {
        command: command.into(),
        background: true,
        ..StartRequest::default()
    }
}

async fn waiting(process: &Arc<Process>) -> bool {
    let process = process.clone();
    tokio::task::spawn_blocking(move || process.waiting_for_input())
        .await
        .unwrap()
}

/// Until the process blocks reading its stdin (bounded; /proc raises no event to wait on).
async fn until_waiting(process: &Arc<Process>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if waiting(process).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

async fn finished_output(process: &Arc<Process>) -> String {
    tokio::time::timeout(Duration::from_secs(10), process.wait_for(Phase::Finished))
        .await
        .expect("the command finishes");
    process.snapshot().output
}

fn refusal(err: ProcessError) -> InputError {
    match err {
        ProcessError::Input { error, .. } => error,
        other => panic!("not an input refusal: {other:?}"),
    }
}

#[tokio::test]
async fn a_prompt_on_a_pipe_is_seen_waiting_and_answered() {
    for manager in managers("prompt") {
        let mode = manager.containment().name();
        let process = manager
            .start_with_input(
                request("printf 'name? '; read -r name; echo \"hello $name\""),
                None,
                InputMode::Pipe,
            )
            .unwrap();
        assert_eq!(process.stdin_name(), "pipe");
        // A wait ends once the command blocks reading: nothing happens until it is answered.
        let ended = process
            .wait_until(&Until::Exit, Duration::from_secs(10))
            .await;
        assert_eq!(ended, EndedBy::Input, "{mode}");
        assert!(until_waiting(&process).await, "{mode}: the read is seen");
        let wrote = process
            .write_input(b"world\n", false, WRITE_LIMIT)
            .await
            .unwrap();
        assert_eq!((wrote.written, wrote.eof), (6, false), "{mode}");
        assert_eq!(
            finished_output(&process).await,
            "name? hello world\n",
            "{mode}"
        );
        assert!(!waiting(&process).await, "{mode}: not after the answer");
        let late = process.write_input(b"x", false, WRITE_LIMIT).await;
        assert!(
            matches!(refusal(late.unwrap_err()), InputError::Exited),
            "{mode}"
        );
    }
}

#[tokio::test]
async fn a_sleeping_command_with_a_pipe_is_not_waiting_for_input() {
    for manager in managers("sleeper") {
        let process = manager
            .start_with_input(request("exec sleep 1000"), None, InputMode::Pipe)
            .unwrap();
        // Give it a moment to be asleep in nanosleep, then check it is not mistaken.
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            assert!(!waiting(&process).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ended = process
            .wait_until(&Until::Exit, Duration::from_millis(300))
            .await;
        assert_eq!(
            ended,
            EndedBy::Timeout,
            "a sleeper does not end a wait as input"
        );
        let _ = process.signal_group(nix::sys::signal::Signal::SIGKILL);
        process.wait_for(Phase::Finished).await;
    }
}

#[tokio::test]
async fn eof_ends_the_read_and_later_writes_are_refused() {
    for manager in managers("eof") {
        let mode = manager.containment().name();
        let process = manager
            .start_with_input(request("wc -c; exec sleep 1000"), None, InputMode::Pipe)
            .unwrap();
        let wrote = process
            .write_input(b"abc", true, WRITE_LIMIT)
            .await
            .unwrap();
        assert_eq!((wrote.written, wrote.eof), (3, true), "{mode}");
        let mut progress = process.subscribe_output();
        tokio::time::timeout(Duration::from_secs(10), progress.wait_for(|len| *len > 0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(process.snapshot().output.trim(), "3", "{mode}");
        let again = process.write_input(b"more", false, WRITE_LIMIT).await;
        assert!(
            matches!(refusal(again.unwrap_err()), InputError::AfterEof),
            "{mode}"
        );
        let _ = process.signal_group(nix::sys::signal::Signal::SIGKILL);
        process.wait_for(Phase::Finished).await;
    }
}

#[tokio::test]
async fn the_default_stdin_is_dev_null_and_takes_no_writes() {
    for manager in managers("null") {
        let process = manager.start(request("cat; echo done"), None).unwrap();
        assert_eq!(process.stdin_name(), "null");
        assert_eq!(finished_output(&process).await, "done\n");
        let manager_process = manager.start(request("exec sleep 1000"), None).unwrap();
        let refused = manager_process.write_input(b"x", false, WRITE_LIMIT).await;
        assert!(matches!(refusal(refused.unwrap_err()), InputError::NoStdin));
        assert!(!waiting(&manager_process).await);
        let _ = manager_process.signal_group(nix::sys::signal::Signal::SIGKILL);
        manager_process.wait_for(Phase::Finished).await;
    }
}

#[tokio::test]
async fn a_terminal_is_stdin_stdout_and_controlling_terminal_of_the_given_size() {
    for manager in managers("tty") {
        let mode = manager.containment().name();
        let process = manager
            .start_with_input(
                request(
                    "[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-tty; stty size; \
                     [ \"$(ps -o tty= -p $$)\" != '?' ] && echo controlling",
                ),
                None,
                InputMode::Terminal(TerminalSize {
                    rows: 30,
                    cols: 100,
                }),
            )
            .unwrap();
        assert_eq!(process.stdin_name(), "tty");
        // Output through a terminal ends lines with CR LF; the master's EIO ends the read.
        let output = finished_output(&process).await;
        assert_eq!(output, "all-tty\r\n30 100\r\ncontrolling\r\n", "{mode}");
        assert_eq!(process.snapshot().exit_code, Some(0), "{mode}");
    }
}

#[tokio::test]
async fn a_read_on_a_terminal_is_seen_answered_and_ended_by_eof() {
    for manager in managers("tty-read") {
        let mode = manager.containment().name();
        let process = manager
            .start_with_input(
                request("read -r x; echo \"[$x]\"; cat; echo end"),
                None,
                InputMode::Terminal(TerminalSize::default()),
            )
            .unwrap();
        assert!(until_waiting(&process).await, "{mode}: the read is seen");
        process
            .write_input(b"hi\n", false, WRITE_LIMIT)
            .await
            .unwrap();
        // A partial line then end-of-file: cat gets the line, then end-of-file.
        let wrote = process
            .write_input(b"abc", true, WRITE_LIMIT)
            .await
            .unwrap();
        assert!(wrote.eof, "{mode}");
        let output = finished_output(&process).await;
        assert!(output.contains("[hi]\r\n"), "{mode}: {output:?}");
        // The terminal echoes input as it arrives, so only cat's own copy has a known place.
        assert!(output.ends_with("abcend\r\n"), "{mode}: {output:?}");
        assert_eq!(
            output.matches("abc").count(),
            2,
            "{mode}: echo and cat: {output:?}"
        );
    }
}

#[tokio::test]
async fn a_write_while_another_holds_the_input_is_refused_as_busy() {
    for manager in managers("busy") {
        let mode = manager.containment().name();
        let process = manager
            .start_with_input(request("exec sleep 1000"), None, InputMode::Pipe)
            .unwrap();
        // More than a pipe holds, to a command that never reads: the write holds the input
        // until its limit.
        let big = vec![b'x'; 512 * 1024];
        let holder = process.write_input(&big, false, Duration::from_secs(30));
        let refused = async {
            // The holder is polled first (join! polls in order), so it has the input now.
            let started = Instant::now();
            let err = process
                .write_input(b"y", false, WRITE_LIMIT)
                .await
                .unwrap_err();
            let waited = started.elapsed();
            let _ = process.signal_group(nix::sys::signal::Signal::SIGKILL);
            (err, waited)
        };
        let (held, (err, waited)) = tokio::join!(holder, refused);
        assert!(
            matches!(refusal(err), InputError::Busy),
            "{mode}: refused as busy"
        );
        assert!(
            waited >= procwarden_process::INPUT_LOCK_WAIT && waited < WRITE_LIMIT,
            "{mode}: waited {waited:?} for the input"
        );
        // The reader is gone: the held write ends as closed, not as an internal failure.
        assert!(
            !matches!(held.map_err(refusal), Err(InputError::Write(_))),
            "{mode}"
        );
    }
}

#[tokio::test]
async fn a_terminal_is_resized_and_its_foreground_group_gets_sigwinch() {
    for manager in managers("resize") {
        let mode = manager.containment().name();
        let process = manager
            .start_with_input(
                request(
                    "bash -c 'trap \"stty size\" WINCH; sleep 1000 & echo ready; \
                     while :; do wait; done'",
                ),
                None,
                InputMode::Terminal(TerminalSize::default()),
            )
            .unwrap();
        let ready = Until::Regex {
            regex: regex_of("ready"),
            from: 0,
        };
        assert_eq!(
            process.wait_until(&ready, Duration::from_secs(10)).await,
            EndedBy::Regex,
            "{mode}"
        );
        process
            .resize_terminal(TerminalSize { rows: 33, cols: 77 })
            .unwrap();
        let resized = Until::Regex {
            regex: regex_of("33 77"),
            from: 0,
        };
        assert_eq!(
            process.wait_until(&resized, Duration::from_secs(10)).await,
            EndedBy::Regex,
            "{mode}: {:?}",
            process.snapshot().output
        );
        let _ = process.signal_group(nix::sys::signal::Signal::SIGKILL);
        finished_output(&process).await;
        let after = process
            .resize_terminal(TerminalSize::default())
            .unwrap_err();
        assert!(
            matches!(resize_refusal(after), InputError::Exited),
            "{mode}"
        );

        let pipe = manager
            .start_with_input(request("exec sleep 1000"), None, InputMode::Pipe)
            .unwrap();
        let err = pipe.resize_terminal(TerminalSize::default()).unwrap_err();
        assert!(
            matches!(resize_refusal(err), InputError::NoTerminal),
            "{mode}"
        );
        let _ = pipe.signal_group(nix::sys::signal::Signal::SIGKILL);
    }
}

fn regex_of(pattern: &str) -> regex::bytes::Regex {
    regex::bytes::Regex::new(pattern).unwrap()
}

fn resize_refusal(err: ProcessError) -> InputError {
    match err {
        ProcessError::Resize { error, .. } => error,
        other => panic!("not a resize refusal: {other:?}"),
    }
}
