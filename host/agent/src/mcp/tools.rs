//! What a model sees of the tools: argument types, their JSON schemas, and every description.
//!
//! The words here steer models away from the mistakes the reference's users saw: backgrounding
//! with shell `&`, reading a foreground timeout as a failure, and polling in tight loops.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use procwarden_process::GroupSignal;

/// How long a foreground `execute` waits when the model names no timeout.
pub const DEFAULT_EXECUTE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `process_output` waits for an exit when the model names no wait.
pub const DEFAULT_OUTPUT_WAIT: Duration = Duration::from_secs(10);
/// Longest wait a model may ask for: long enough for any build, short enough that a typo of
/// extra zeros is reported instead of hanging a session for weeks.
pub const MAX_WAIT_SECONDS: f64 = 24.0 * 60.0 * 60.0;

pub const EXECUTE_DESCRIPTION: &str = "\
Run a shell command (`sh -c`) in the workspace and return its output and exit code.
Foreground (the default) waits up to wait_seconds (default 60) for the command to finish. \
A command still running then is NOT killed: it keeps running, and the result gives its \
process_id; follow it with process_output or stop it with process_signal. Give builds and test \
suites a generous wait_seconds rather than backgrounding them when you need their result. \
timeout_seconds is different: the agent kills the command after that many seconds.
Background (run_in_background=true) returns a process_id at once (`started: true`). Use it for \
dev servers, file watchers and other processes that keep running, or for long work you will \
check on later. Never background with shell `&` (or nohup, setsid, disown): set \
run_in_background instead.
success is true only when the command exited with code 0. stdout and stderr are merged. Long \
output keeps its beginning and end, and the result states how many bytes were omitted from the \
middle. Commands run with stdin closed by default, so they cannot prompt: pass non-interactive \
flags (e.g. `-y`, `--no-pager`). Only when a command must be answered, set stdin=\"pipe\" (or \
tty=true for programs that need a terminal): the wait then also ends when it blocks reading \
(waiting_for_input: true), and process_input answers it.";

pub const PROCESS_OUTPUT_DESCRIPTION: &str = "\
Read a tracked process's output by its process_id, waiting for it to exit first.
Blocks until the process exits or wait_timeout_seconds pass (default 10), then returns the \
output so far, whether it is still running, and its exit code once it has exited. To peek \
without waiting, pass wait=false. Reading never stops the process. To wait for a long job, \
pass a wait that covers the time it needs instead of calling again and again.
The whole output is kept, not only its beginning and end: after a long log was cut, use grep \
(with context) to find an error, lines to read a part (`-100:` for the last 100 lines), or \
view=errors for error lines first. To follow a running process, pass since = covers.end of \
the previous result. until ends a wait on a regex, a quiet spell or a listening port.";

pub const PROCESS_INPUT_DESCRIPTION: &str = "\
Write to the stdin of a process started with stdin=\"pipe\" or tty=true, e.g. to answer a prompt.
Send the answer with its newline (\"yes\\n\"). eof=true ends the input after data (on a terminal: \
Ctrl-D). On a terminal, \"\\u0003\" is Ctrl-C. A result or process_list showing \
waiting_for_input: true means the process is blocked reading and needs this (or process_signal). \
Read the reply with process_output, passing since = the cursor this result gives. Bytes that are \
not text (NUL, binary data) go in data_base64 instead of data. rows and cols (both) resize the \
terminal of a tty=true process; it gets SIGWINCH and redraws.";

pub const PROCESS_LIST_DESCRIPTION: &str = "\
List the tracked processes of this session: running ones first, then the most recent.
Shows each process's id (the process_id the other tools take), command, whether it is running, \
its exit code once it has exited, and waiting_for_input: true when it is blocked reading its \
stdin; total counts them all when the list is cut. Exited processes are forgotten a few minutes \
after they exit.";

pub const PROCESS_SIGNAL_DESCRIPTION: &str = "\
Stop a tracked process together with everything it started (its whole process group).
signal `terminate` (SIGTERM) asks it to exit cleanly; `kill` (SIGKILL) forces it. The result \
says whether it has exited; use process_output to read its final output.";

/// Guidance for the whole server, shown by clients that surface server instructions.
pub const SERVER_INSTRUCTIONS: &str = "\
procwarden runs shell commands in this workspace. Use `execute` for commands; set \
run_in_background=true for servers and watchers (never shell `&`). Processes are tracked by \
process_id: read them with process_output, list them with process_list, stop them with \
process_signal. A process started with stdin=\"pipe\" or tty=true that shows \
waiting_for_input: true is blocked on a prompt: answer it with process_input. Each session sees \
only its own processes.";

// Descriptions are given as single-line strings rather than doc comments: doc comments keep
// their line breaks, which only add noise to what the model reads. Optional arguments are
// plain types in the schema (no `null`, no `default: null`), which every client's schema
// dialect accepts; a missing or null value means the default. (`skip_serializing_if` is what
// keeps schemars from writing `"default": null`; these types are never serialized.)
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteArgs {
    #[schemars(
        description = "The shell command, run with `sh -c` in its own process group. Do not end \
                       it with `&` to background it: set run_in_background instead."
    )]
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "String",
        description = "Working directory. Relative paths are resolved against the default \
                       directory (the agent's configured workspace directory, else $HOME)."
    )]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "BTreeMap<String, String>",
        description = "Extra environment variables for this command, added on top of the \
                       agent's environment."
    )]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "bool",
        description = "Return at once with a process_id instead of waiting (default false). Use \
                       for dev servers, file watchers and other long-lived processes, or to keep \
                       working while a long job runs. If you need the result before continuing, \
                       prefer the foreground with a longer wait_seconds. Never use shell `&`: \
                       set this instead."
    )]
    pub run_in_background: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "f64",
        range(max = 86400),
        extend("exclusiveMinimum" = 0),
        description = "Foreground only: seconds to wait for the command to finish (default 60, \
                       or timeout_seconds when that is given; up to 86400). If it is still \
                       running then it is not killed; the result gives its process_id so you can \
                       keep waiting with process_output. Set it generously for builds and test \
                       suites."
    )]
    pub wait_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "f64",
        range(max = 86400),
        extend("exclusiveMinimum" = 0),
        description = "Kill the command (its whole process group) after this many seconds, \
                       background or not (default: no limit). The result then says \
                       timed_out. Without wait_seconds a foreground call waits this long. This \
                       is not how long to wait: that is wait_seconds."
    )]
    pub timeout_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "String",
        description = "Foreground only: return before exit when this happens (default `exit`). \
                       `regex:PATTERN` when a line of output matches (e.g. `regex:Listening on`), \
                       `quiet:SECONDS` after that long without output, `port:N` once the command \
                       listens on TCP port N. Use with dev servers: start in the foreground with \
                       until and a timeout, and it keeps running once ready. The result's \
                       ended_by says which condition (or `timeout`, or `exit`) ended the wait."
    )]
    pub until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "String",
        description = "`pipe` keeps stdin open to answer prompts with process_input. Only for \
                       commands that must be answered: by default stdin is closed (reads get \
                       end-of-file), so nothing can hang on a prompt."
    )]
    pub stdin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "bool",
        description = "Run on a pseudo-terminal (default false), for programs that behave \
                       differently or refuse to run without one. Implies a stdin pipe. Output \
                       then has terminal line endings (CR LF) and echoes what you write."
    )]
    pub tty: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u16", description = "With tty: terminal rows (default 24).")]
    pub rows: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u16", description = "With tty: terminal columns (default 80).")]
    pub cols: Option<u16>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessInputArgs {
    #[serde(alias = "process_id")]
    #[schemars(
        description = "The process_id of a process started with stdin=\"pipe\" or tty=true."
    )]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "String",
        description = "Text to write, exactly as given: end a line answer with \"\\n\"."
    )]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "String",
        description = "Bytes to write, base64-encoded (standard, padded), instead of data: \
                       for input that is not text or holds NUL bytes."
    )]
    pub data_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "bool",
        description = "End the input after data (default false): the process reads \
                       end-of-file. Nothing more can be written afterwards."
    )]
    pub eof: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "u16",
        description = "With cols, resize the terminal (tty=true only) to this many rows, \
                       before writing data."
    )]
    pub rows: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u16", description = "With rows: the terminal's new columns.")]
    pub cols: Option<u16>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessOutputArgs {
    // Models that learned the reference's tools call it `process_id`; accept both.
    #[serde(alias = "process_id")]
    #[schemars(
        description = "The process_id returned by execute (a background start, or a foreground \
                       command still running at its timeout) or shown by process_list."
    )]
    pub id: String,
    #[serde(
        default,
        alias = "wait_seconds",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(
        with = "f64",
        range(min = 0, max = 86400),
        description = "Seconds to wait for the process to exit before answering (default 10, up \
                       to 86400); 0 returns the current output at once (as wait=false does). The \
                       call returns as soon as the process exits."
    )]
    pub wait_timeout_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "bool",
        description = "false: do not wait at all, return the output so far at once (a peek). \
                       Default true: wait as wait_timeout_seconds says."
    )]
    pub wait: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "String",
        description = "End the wait early on a condition instead of exit: `regex:PATTERN` (a \
                       line of output matches), `quiet:SECONDS` (no output for that long), \
                       `port:N` (the process listens on TCP port N), or `exit` (the default)."
    )]
    pub until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "String",
        description = "Search the whole output (not only the kept beginning and end) for lines \
                       matching this regular expression; they come back numbered (`N:line`). \
                       Use it to find the error in a long build or test log, e.g. \
                       `error|FAILED|panicked`."
    )]
    pub grep: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "u32",
        description = "With grep: lines of context around each match (0 to 20, default 0)."
    )]
    pub context: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "String",
        description = "Lines A:B of the whole output, numbered from 1; negative numbers count \
                       from the end (`-50:` is the last 50 lines, `100:200` a middle part). Use \
                       it to read around a line number grep gave."
    )]
    pub lines: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "u64",
        description = "Read on from this cursor: a byte offset in the whole output, as given by \
                       covers.end of your previous result. Only output after it is returned, and \
                       with a wait, the call returns as soon as new output arrives. Use it to \
                       follow a running process without rereading."
    )]
    pub since: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "u64",
        description = "Read raw bytes from this offset in the whole output (with limit)."
    )]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "u64",
        description = "With offset or since: most bytes to return (default 65536, at most 1048576)."
    )]
    pub limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        with = "String",
        description = "`errors`: when the output is too long, show the lines that look like \
                       errors (error, FAILED, panicked, Traceback, ...) with a little context \
                       first, then the beginning and end. A good first read of a failed build."
    )]
    pub view: Option<String>,
}

impl ProcessOutputArgs {
    /// The read and wait arguments as name/value pairs for the agent's one parser.
    pub fn option_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        let mut put = |name: &'static str, value: Option<String>| {
            if let Some(value) = value {
                pairs.push((name, value));
            }
        };
        put("until", self.until.clone());
        put("grep", self.grep.clone());
        put("context", self.context.map(|n| n.to_string()));
        put("lines", self.lines.clone());
        put("since", self.since.map(|n| n.to_string()));
        put("offset", self.offset.map(|n| n.to_string()));
        put("limit", self.limit.map(|n| n.to_string()));
        put("view", self.view.clone());
        pairs
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessSignalArgs {
    #[serde(alias = "process_id")]
    #[schemars(
        description = "The process_id of the process to stop, from execute or process_list."
    )]
    pub id: String,
    #[schemars(
        description = "`terminate` sends SIGTERM (a request to exit cleanly); `kill` sends \
                       SIGKILL (cannot be caught or ignored); `INT`, `HUP`, `QUIT`, `USR1` and \
                       `USR2` send those signals. Every signal goes to the whole process group."
    )]
    pub signal: SignalName,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
// Inline, so the model sees the choices right at the argument instead of behind a `$ref`.
#[schemars(inline)]
pub enum SignalName {
    #[serde(alias = "TERM", alias = "SIGTERM")]
    Terminate,
    #[serde(alias = "KILL", alias = "SIGKILL")]
    Kill,
    #[serde(rename = "INT", alias = "SIGINT", alias = "int")]
    Int,
    #[serde(rename = "HUP", alias = "SIGHUP", alias = "hup")]
    Hup,
    #[serde(rename = "QUIT", alias = "SIGQUIT", alias = "quit")]
    Quit,
    #[serde(rename = "USR1", alias = "SIGUSR1", alias = "usr1")]
    Usr1,
    #[serde(rename = "USR2", alias = "SIGUSR2", alias = "usr2")]
    Usr2,
}

impl From<SignalName> for GroupSignal {
    fn from(name: SignalName) -> Self {
        match name {
            SignalName::Terminate => GroupSignal::Terminate,
            SignalName::Kill => GroupSignal::Kill,
            SignalName::Int => GroupSignal::Interrupt,
            SignalName::Hup => GroupSignal::Hangup,
            SignalName::Quit => GroupSignal::Quit,
            SignalName::Usr1 => GroupSignal::User1,
            SignalName::Usr2 => GroupSignal::User2,
        }
    }
}

/// A model-supplied number of seconds, checked: `None` means the default. Errors are worded
/// for the model, naming the argument.
pub fn seconds_arg(
    name: &str,
    value: Option<f64>,
    default: Duration,
    allow_zero: bool,
) -> Result<Duration, String> {
    let Some(value) = value else {
        return Ok(default);
    };
    let low_ok = if allow_zero {
        value >= 0.0
    } else {
        value > 0.0
    };
    if !value.is_finite() || !low_ok || value > MAX_WAIT_SECONDS {
        let low = if allow_zero {
            "0 or more"
        } else {
            "more than 0"
        };
        return Err(format!(
            "{name} must be a number of seconds, {low} and at most {MAX_WAIT_SECONDS}; got {value}."
        ));
    }
    Ok(Duration::from_secs_f64(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_checked() {
        let d = DEFAULT_OUTPUT_WAIT;
        assert_eq!(seconds_arg("w", None, d, true), Ok(d));
        assert_eq!(seconds_arg("w", Some(0.0), d, true), Ok(Duration::ZERO));
        assert!(seconds_arg("t", Some(0.0), d, false).is_err());
        assert!(seconds_arg("t", Some(-1.0), d, false).is_err());
        assert!(seconds_arg("t", Some(f64::NAN), d, false).is_err());
        assert!(seconds_arg("t", Some(1e9), d, false).is_err());
        assert_eq!(
            seconds_arg("t", Some(1.5), d, false),
            Ok(Duration::from_millis(1500))
        );
    }

    #[test]
    fn schemas_describe_every_argument() {
        for schema in [
            rmcp::handler::server::common::schema_for_input::<ExecuteArgs>(),
            rmcp::handler::server::common::schema_for_input::<ProcessOutputArgs>(),
            rmcp::handler::server::common::schema_for_input::<ProcessSignalArgs>(),
        ] {
            let schema = schema.unwrap();
            let properties = schema["properties"].as_object().unwrap();
            for (name, property) in properties {
                assert!(
                    property.get("description").is_some(),
                    "argument {name} has no description: {property}"
                );
            }
        }
    }

    #[test]
    fn optional_arguments_are_plain_and_not_required() {
        let execute = rmcp::handler::server::common::schema_for_input::<ExecuteArgs>().unwrap();
        assert_eq!(execute["required"], serde_json::json!(["command"]));
        let output =
            rmcp::handler::server::common::schema_for_input::<ProcessOutputArgs>().unwrap();
        assert_eq!(output["required"], serde_json::json!(["id"]));
        for schema in [execute, output] {
            let text = serde_json::to_string(&*schema).unwrap();
            assert!(!text.contains("null"), "{text}");
            assert!(!text.contains("\\n"), "line break in a description: {text}");
        }
    }

    #[test]
    fn wrong_argument_names_are_refused() {
        let err = serde_json::from_value::<ExecuteArgs>(serde_json::json!({
            "command": "make", "timeout": "10m"
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `timeout`"), "{err}");
        let ok: ProcessOutputArgs =
            serde_json::from_value(serde_json::json!({"process_id": "abc"})).unwrap();
        assert_eq!(ok.id, "abc");
    }
}

/// The arguments of a tool that acts on one process.
pub trait OneProcess {
    /// The process ID as the model gave it.
    fn process_id(&self) -> &str;
}

macro_rules! one_process {
    ($($args:ty),*) => {
        $(impl OneProcess for $args {
            fn process_id(&self) -> &str {
                &self.id
            }
        })*
    };
}

one_process!(ProcessOutputArgs, ProcessInputArgs, ProcessSignalArgs);
