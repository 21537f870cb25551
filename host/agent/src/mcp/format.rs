//! Tool results as a model reads them: one compact JSON object per result, status fields first
//! and the output last, with a plain-words `note` whenever the state needs explaining (still
//! running, truncated, children left behind). Errors are plain sentences.

use std::time::Duration;

use rmcp::model::{CallToolResult, ContentBlock};
use serde::Serialize;

use crate::agent::AgentError;
use procwarden_process::{
    Covers, GrepCount, InputWritten, LineSpan, OutputSnapshot, ProcessError, ProcessInfo,
    TerminalSize, Truncation,
};

/// One result of `execute`, `process_output` or `process_signal`. Fields that do not apply,
/// or are not known yet, are left out: a running process has no `exit_code` and no `success`
/// (the reference reported `exit_code: 0` for running processes, which models misread).
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Exited with code 0; only ever set for a process that has exited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    /// A background start: the process was started (it says nothing of how it will end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Processes of the command still running, those that left its group included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members_alive: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub background: Option<bool>,
    /// While it runs with a stdin pipe or terminal: whether a member is blocked reading it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for_input: Option<bool>,
    /// The agent stopped the process at a time limit (set by policy); not the tool's wait.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<TruncationFacts>,
    /// Which condition ended a wait (`exit`, `regex`, `quiet`, `port`, `output`, `timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<&'static str>,
    /// Which bytes of the whole output `output` is drawn from; `covers.end` is the cursor to
    /// pass as `since` to read on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub covers: Option<Covers>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<LineSpan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grep: Option<GrepCount>,
    /// How many changes the agent's output filters made to `output` (secrets masked); byte
    /// counts and `covers` describe the real output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redactions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Last, so every status field is read before a long blob of output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// The truncation facts a model can act on.
#[derive(Debug, Serialize)]
pub struct TruncationFacts {
    pub original_bytes: u64,
    pub omitted_bytes: u64,
}

/// Which question a snapshot answers; it decides the wording of the note.
#[derive(Debug, Clone, Copy)]
pub enum Situation {
    /// `execute` in the foreground, after waiting `waited` for the command.
    Execute { waited: Duration },
    /// `process_output` after waiting up to `waited` (zero: a snapshot).
    Output { waited: Duration },
    /// `process_signal`, after giving the process `waited` to exit.
    Signal { waited: Duration },
}

impl Report {
    /// Describe a process from a snapshot of it.
    pub fn from_snapshot(id: &str, snapshot: OutputSnapshot, situation: Situation) -> Self {
        let mut notes = Vec::new();
        let met = snapshot
            .ended_by
            .filter(|e| matches!(*e, "regex" | "quiet" | "port" | "output"));
        if snapshot.running && snapshot.waiting_for_input {
            notes.push(
                "It is waiting for input (blocked reading its stdin): answer with process_input \
                 (end a line answer with \"\\n\"), or stop it with process_signal."
                    .to_owned(),
            );
        } else if let Some(condition) = met.filter(|_| snapshot.running) {
            notes.push(format!(
                "The wait ended on its until condition ({condition}); the process keeps \
                 running. Use process_output with since = covers.end to read on, or \
                 process_signal to stop it."
            ));
        } else if snapshot.running {
            notes.push(match situation {
                Situation::Execute { waited } => format!(
                    "Still running after {}; it keeps running. Use process_output with this \
                     process_id to wait for it (set wait_timeout_seconds), or process_signal to \
                     stop it.",
                    seconds(waited)
                ),
                Situation::Output { waited } if waited.is_zero() => {
                    "Still running; this is the output so far.".to_owned()
                }
                Situation::Output { waited } => format!(
                    "Still running after waiting {}; this is the output so far. Call \
                     process_output again to keep waiting, or process_signal to stop it.",
                    seconds(waited)
                ),
                Situation::Signal { waited } => format!(
                    "Still running {} after the signal. If it ignores terminate, send kill.",
                    seconds(waited)
                ),
            });
        } else if snapshot.group_alive {
            notes.push(format!(
                "The shell exited, but {} process(es) it started are still running; \
                 process_signal with this process_id stops them.",
                snapshot.members_alive
            ));
        }
        if snapshot.timed_out {
            notes.push("The agent stopped this process at its time limit.".to_owned());
        }
        // A stop request reports state, not output, so truncation is not worth a sentence.
        if let Some(t) = &snapshot.truncated
            && !matches!(situation, Situation::Signal { .. })
        {
            notes.push(truncation_note(t));
        }
        if let Some(g) = &snapshot.grep
            && g.omitted > 0
        {
            notes.push(format!(
                "{} matching lines not shown; narrow the pattern or read a part with lines.",
                g.omitted
            ));
        }
        if let Some(spool) = snapshot.spool.as_ref().filter(|s| !s.complete) {
            notes.push(format!(
                "The saved copy of the output is incomplete ({}); reads past its first {} bytes \
                 only see the kept beginning and end.",
                spool.reason.as_deref().unwrap_or("stopped"),
                spool.spooled_bytes
            ));
        }
        Self {
            ended_by: snapshot.ended_by,
            covers: Some(snapshot.covers),
            lines: snapshot.lines,
            grep: snapshot.grep,
            redactions: snapshot.redactions,
            success: snapshot.exit_code.map(|code| code == 0),
            process_id: Some(id.to_owned()),
            running: Some(snapshot.running),
            exit_code: snapshot.exit_code,
            members_alive: Some(snapshot.members_alive),
            // Only said of a running process; an exited one reads nothing.
            waiting_for_input: snapshot.running.then_some(snapshot.waiting_for_input),
            timed_out: snapshot.timed_out,
            truncated: snapshot.truncated.as_ref().map(|t| TruncationFacts {
                original_bytes: t.original_bytes,
                omitted_bytes: t.omitted_bytes,
            }),
            note: join_notes(notes),
            output: Some(snapshot.output),
            command: Some(snapshot.command),
            ..Self::default()
        }
    }

    /// Add a sentence to the note, before the ones already there.
    pub fn prepend_note(&mut self, sentence: String) {
        self.note = Some(match self.note.take() {
            Some(rest) => format!("{sentence} {rest}"),
            None => sentence,
        });
    }

    pub fn into_result(self) -> CallToolResult {
        json_result(&self)
    }
}

fn truncation_note(t: &Truncation) -> String {
    format!(
        "Output truncated: {} of {} bytes omitted (the beginning and the end are kept; the gap \
         is marked in the output, and over-long lines are cut).",
        t.omitted_bytes, t.original_bytes
    )
}

fn join_notes(notes: Vec<String>) -> Option<String> {
    (!notes.is_empty()).then(|| notes.join(" "))
}

/// "60 s", "1.5 s": whole seconds without decimals, others to a tenth.
pub fn seconds(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{secs:.0} s")
    } else {
        format!("{secs:.1} s")
    }
}

/// The reply of `process_input`.
#[derive(Debug, Serialize)]
pub struct InputReport {
    pub success: bool,
    pub process_id: String,
    /// Bytes of data written.
    pub written: usize,
    /// Whether its input is now at end-of-file.
    pub eof: bool,
    /// Output from here on is the process's reply: pass it as since to process_output.
    pub since: u64,
    pub note: String,
}

impl InputReport {
    pub fn new(id: &str, written: InputWritten, asked: usize, since: u64) -> Self {
        let mut note = format!(
            "Read the reply with process_output (since={since}, with a wait_timeout_seconds)."
        );
        if written.written < asked {
            note = format!(
                "Only {} of {asked} bytes were written: the process stopped reading. {note}",
                written.written
            );
        }
        Self {
            success: written.written == asked,
            process_id: id.to_owned(),
            written: written.written,
            eof: written.eof,
            since,
            note,
        }
    }

    /// Say that the terminal took a new size first.
    pub fn resized(mut self, size: Option<TerminalSize>) -> Self {
        if let Some(size) = size {
            self.note = format!(
                "The terminal is now {} rows by {} columns (the process got SIGWINCH). {}",
                size.rows, size.cols, self.note
            );
        }
        self
    }

    pub fn into_result(self) -> CallToolResult {
        json_result(&self)
    }
}

/// The reply of `process_list`.
#[derive(Debug, Serialize)]
pub struct ListReport {
    pub processes: Vec<ProcessInfo>,
    /// Every process of the session, listed or not (more than listed when the list is cut).
    pub total: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl ListReport {
    pub fn new(processes: Vec<ProcessInfo>, total: usize) -> Self {
        let note = if processes.is_empty() {
            Some("No processes in this session.".to_owned())
        } else if total > processes.len() {
            Some(format!(
                "Showing {} of {total}: running processes first, then the most recent; older \
                 ones are not listed.",
                processes.len()
            ))
        } else {
            None
        };
        Self {
            processes,
            total,
            note,
        }
    }

    pub fn into_result(self) -> CallToolResult {
        json_result(&self)
    }
}

fn json_result<T: Serialize>(value: &T) -> CallToolResult {
    match serde_json::to_string(value) {
        Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
        Err(err) => tool_error(format!("Failed to encode the result: {err}")),
    }
}

/// A failure the model should read and adapt to: a tool result with `isError`, not a protocol
/// error (clients show protocol errors to nobody).
pub fn tool_error(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

/// An agent error in words for a model: what went wrong and what to do instead.
/// The agent's own sentence, plus what a model can do about it where that is not obvious.
pub fn agent_error(err: &AgentError) -> CallToolResult {
    let hint = match err {
        AgentError::Process(ProcessError::NotFound(_)) => Some(
            "It may have been forgotten a few minutes after it exited, or the ID is wrong; \
             process_list shows this session's processes.",
        ),
        AgentError::Process(ProcessError::NotRunning(_)) => Some(
            "It and every process it started have exited; process_output shows its final \
             output and exit code.",
        ),
        _ => None,
    };
    tool_error(match hint {
        Some(hint) => format!("{err} {hint}"),
        None => err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(running: bool, exit_code: Option<i32>) -> OutputSnapshot {
        OutputSnapshot {
            output: "hello\n".into(),
            truncated: None,
            running,
            group_alive: running,
            members_alive: usize::from(running),
            exit_code,
            timed_out: false,
            command: "echo hello".into(),
            covers: procwarden_process::Covers::whole(6),
            spool: None,
            lines: None,
            grep: None,
            ended_by: None,
            redactions: None,
            waiting_for_input: false,
        }
    }

    fn text(result: &CallToolResult) -> serde_json::Value {
        let text = &result.content[0].as_text().unwrap().text;
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn running_process_has_no_exit_code_or_success() {
        let report = Report::from_snapshot(
            "p1",
            snapshot(true, None),
            Situation::Execute {
                waited: Duration::from_secs(60),
            },
        );
        let json = text(&report.into_result());
        assert_eq!(json["running"], true);
        assert!(json.get("exit_code").is_none());
        assert!(json.get("success").is_none());
        let note = json["note"].as_str().unwrap();
        assert!(
            note.contains("Still running after 60 s; it keeps running"),
            "{note}"
        );
        assert!(note.contains("process_output"), "{note}");
    }

    #[test]
    fn truncation_is_stated_in_words() {
        let mut snap = snapshot(false, Some(0));
        snap.truncated = Some(Truncation {
            original_bytes: 100_000,
            retained_bytes: 32_000,
            omitted_bytes: 68_000,
            strategy: "head_tail",
        });
        let report = Report::from_snapshot(
            "p1",
            snap,
            Situation::Output {
                waited: Duration::ZERO,
            },
        );
        let json = text(&report.into_result());
        assert_eq!(json["success"], true);
        assert_eq!(json["truncated"]["omitted_bytes"], 68_000);
        assert!(
            json["note"]
                .as_str()
                .unwrap()
                .contains("68000 of 100000 bytes omitted")
        );
    }

    #[test]
    fn seconds_read_naturally() {
        assert_eq!(seconds(Duration::from_secs(60)), "60 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
    }
}
