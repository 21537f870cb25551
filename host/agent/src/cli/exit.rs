//! Exit codes of the CLI, in the conventions of the tools people know.

use std::process::ExitCode;

use procwarden::client::Refused;

/// A check found problems (`plugin check`: denied; `config check`: invalid).
pub const CHECK_FAILED: u8 = 1;
/// The CLI could not do what was asked: bad arguments (clap uses 2 too), agent unreachable,
/// the agent refused the request for any reason but policy.
pub const CLIENT_ERROR: u8 = 2;
/// The agent's policy denied the command (HTTP 403).
pub const DENIED: u8 = 3;
/// `run --timeout`: the agent killed the command at its deadline, as `timeout(1)` exits.
pub const TIMED_OUT: u8 = 124;
/// `plugin check`: a plugin is broken (it could not be loaded, trapped, ran out of its
/// budget or answered wrongly), whatever its `on_error` made of the request. Told apart from
/// a denial so a script can say "fix the plugin" rather than "the rule works".
pub const PLUGIN_BROKEN: u8 = 4;
/// Interrupted with Ctrl-C (128 + SIGINT), as shells report it.
pub const INTERRUPTED: u8 = 130;

/// The exit code for a failure: DENIED for a policy denial, else CLIENT_ERROR.
pub fn for_error(err: &anyhow::Error) -> u8 {
    match err.downcast_ref::<Refused>() {
        Some(refused) if refused.status == 403 => DENIED,
        _ => CLIENT_ERROR,
    }
}

/// A command's exit status as ours: its code when it fits in a byte, else 1.
pub fn of_command(code: Option<i64>) -> ExitCode {
    ExitCode::from(code.and_then(|c| u8::try_from(c).ok()).unwrap_or(1))
}
