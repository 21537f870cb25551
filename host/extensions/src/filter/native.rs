//! Native built-in filters: the project's own filter crates (`plugins/filters/*`) compiled
//! into the host and called in place, on the caller's thread, with no instance to create and
//! no copy across a component boundary. The same crates' component builds stay embedded
//! (`builtin:NAME.wasm`), for operators who want the sandbox.
//!
//! A native filter is the host's own code: the CPU budget and memory bound of components do
//! not apply to it. A panic in it is caught and reported like a component's trap: the filter
//! is named, its `on_error` applies, and the agent keeps serving.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use super::FilterContext;

/// A filter running natively in the host.
pub trait NativeFilter: Send + Sync {
    /// `text` with this filter's changes and their number, or `None` when it changes nothing
    /// (the caller keeps its text: no copy).
    fn on_output(&self, text: &str, ctx: &FilterContext) -> Option<(String, u32)>;
}

/// Makes a native filter from its flattened settings (`names.0 = "X"`, as a component reads
/// them through `config`).
pub type MakeNative = fn(&BTreeMap<String, String>) -> Arc<dyn NativeFilter>;

/// `redact` (`plugins/filters/redact`), with the settings parsed by the crate's own code, as
/// its component does.
pub fn redact(settings: &BTreeMap<String, String>) -> Arc<dyn NativeFilter> {
    let settings = settings.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    Arc::new(Redact(filter_redact::Redactor::from_settings(settings)))
}

struct Redact(filter_redact::Redactor<'static>);

impl NativeFilter for Redact {
    fn on_output(&self, text: &str, _ctx: &FilterContext) -> Option<(String, u32)> {
        self.0.redact_str(text)
    }
}

/// One call of `filter`; a panic becomes the reason it failed, as words after its name.
pub(crate) fn call(
    filter: &dyn NativeFilter,
    text: &str,
    ctx: &FilterContext,
) -> Result<Option<(String, u32)>, String> {
    // Unwind safety: a filter's state is its settings, read-only after it was made, so a
    // panic leaves nothing half-changed for the next call.
    std::panic::catch_unwind(AssertUnwindSafe(|| filter.on_output(text, ctx)))
        .map_err(|payload| format!("panicked: {}", panic_message(payload.as_ref())))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}
