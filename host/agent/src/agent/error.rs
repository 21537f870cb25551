//! The agent's one error vocabulary. Each error's `Display` is the sentence every front end
//! shows (HTTP `message`, MCP tool error, CLI line); [`ErrorKind`] is what front ends map to
//! their own codes (HTTP status, CLI exit code).

use procwarden_extensions::filter::FilterError;
use procwarden_extensions::policy::{Denial, DenialCause};
use procwarden_process::{InputError, ProcessError};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("Command is required.")]
    EmptyCommand,
    /// `field` names what carried the NUL byte: "Command", "Workdir", "Environment variable X".
    #[error("{field} must not contain NUL bytes.")]
    NulByte { field: String },
    #[error(
        "Invalid environment variable name {name:?}: it must be non-empty and contain no '=' or NUL."
    )]
    InvalidEnvName { name: String },
    #[error("timeout_seconds must be at least 1.")]
    ZeroTimeout,
    #[error(
        "Workdir \"{workdir}\" is not a directory. Pass an existing directory, or omit workdir to use the default."
    )]
    NotADirectory { workdir: String },
    #[error("Idempotency key \"{key}\" was already used for a different request.")]
    IdempotencyConflict { key: String },
    #[error(
        "Too many processes: {scope} has {live} live, and the limit is {limit}. Stop or wait for one (process_signal / the signal endpoint) before starting another."
    )]
    TooManyProcesses {
        scope: String,
        live: usize,
        limit: usize,
    },
    #[error("{0}")]
    Denied(Denial),
    /// An output filter failed and its `on_error` is `deny`: the output is not sent.
    #[error("{0}")]
    OutputWithheld(FilterError),
    #[error(transparent)]
    Process(#[from] ProcessError),
}

/// What kind of failure an [`AgentError`] is, for front ends to map to their own codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or names something that cannot work.
    Invalid,
    /// Part of the request is longer than the kernel can pass to a command.
    TooLarge,
    /// A policy plugin refused the request.
    Denied,
    /// No such process (or not the caller's).
    NotFound,
    /// The request conflicts with the current state (no live member, reused key).
    Conflict,
    /// A limit on live processes is reached; retry once one has ended.
    TooMany,
    /// The agent cannot serve it right now (shutting down, a policy plugin failed).
    Unavailable,
    /// The agent's own fault.
    Internal,
}

impl AgentError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::EmptyCommand
            | Self::NulByte { .. }
            | Self::InvalidEnvName { .. }
            | Self::ZeroTimeout
            | Self::NotADirectory { .. } => ErrorKind::Invalid,
            Self::IdempotencyConflict { .. } => ErrorKind::Conflict,
            Self::TooManyProcesses { .. } => ErrorKind::TooMany,
            Self::OutputWithheld(_) => ErrorKind::Unavailable,
            Self::Denied(denial) => match denial.cause {
                DenialCause::Refused => ErrorKind::Denied,
                DenialCause::PluginFailed | DenialCause::RuntimeFailed => ErrorKind::Unavailable,
            },
            Self::Process(err) => match err {
                ProcessError::NotFound(_) => ErrorKind::NotFound,
                ProcessError::NotRunning(_) => ErrorKind::Conflict,
                ProcessError::Workdir { .. } => ErrorKind::Invalid,
                ProcessError::TooLong { .. } => ErrorKind::TooLarge,
                ProcessError::ShuttingDown => ErrorKind::Unavailable,
                ProcessError::Spawn(_) | ProcessError::Signal(_) => ErrorKind::Internal,
                ProcessError::Input { error, .. } | ProcessError::Resize { error, .. } => {
                    match error {
                        InputError::Write(_) => ErrorKind::Internal,
                        // Another client's write holds the input: a conflict, never the
                        // agent's fault.
                        InputError::NoStdin
                        | InputError::AfterEof
                        | InputError::Exited
                        | InputError::Closed
                        | InputError::Busy
                        | InputError::NoTerminal => ErrorKind::Conflict,
                    }
                }
            },
        }
    }
}
