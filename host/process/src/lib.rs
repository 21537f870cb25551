//! Running shell commands: spawning in their own session, bounded output, exit tracking,
//! group signals, reaping. Knows nothing of HTTP or WebAssembly.

// The spawn path speaks to the Linux kernel directly (clone with CLONE_PIDFD, waitid on a
// pidfd, raw signal masks whose size is the x86_64/aarch64 one).
#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
compile_error!("procwarden-process supports Linux on x86_64 and aarch64 only");

pub mod buffer;
#[cfg(target_os = "linux")]
pub mod cgroup;
#[cfg(target_os = "linux")]
mod child_stack;
mod children;
pub mod environment;
pub mod group;
mod heap;
pub mod input;
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod kernel;
pub mod limits;
mod live;
pub mod log_text;
pub mod manager;
#[cfg(target_os = "linux")]
pub mod os_spawn;
pub mod output_read;
mod patterns;
pub mod record;
pub mod request;
pub mod spawn;
pub mod spool;
pub mod state_file;
pub mod stdin_wait;
pub mod subreaper;
pub mod sync;
/// The black-box suite's way of saying a test cannot run here, shared by path.
#[cfg(test)]
#[path = "../../../tests/support/skip.rs"]
mod test_skip;
pub mod waits;

pub use buffer::{BufferLimits, RenderedOutput, Truncation};
pub use input::{INPUT_LOCK_WAIT, InputError, InputMode, InputWritten, TerminalSize};
pub use manager::{
    Census, Containment, ContainmentMode, GroupSignal, ManagerSettings, ProcessError,
    ProcessManager, Scope,
};
pub use output_read::{Covers, GrepCount, LineSpan, OutputRead, ReadMode};
pub use record::{ExitHook, OutputSnapshot, Phase, Process, ProcessInfo};
pub use request::StartRequest;
pub use spool::{SpoolInfo, SpoolSettings};
pub use waits::{EndedBy, Until};
