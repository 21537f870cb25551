//! Running shell commands: spawning in their own session, bounded output, exit tracking,
//! group signals, reaping. Knows nothing of HTTP or WebAssembly.

pub mod buffer;
pub mod group;
pub mod manager;
pub mod os_spawn;
pub mod record;
pub mod request;
pub mod spawn;
pub mod sync;

pub use buffer::{BufferLimits, RenderedOutput, Truncation};
pub use manager::{GroupSignal, ManagerSettings, ProcessError, ProcessManager, Scope};
pub use record::{OutputSnapshot, Phase, Process, ProcessInfo};
pub use request::StartRequest;
