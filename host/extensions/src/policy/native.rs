//! Native built-ins: the sample policy plugins' decision logic, compiled into the host from
//! the plugins' own crates (`plugins/ampersand`, `env`, `workdir`, `deny`).
//!
//! Why: on a small VM any call into a WebAssembly component costs 15 µs warm and 100–300 µs
//! cold, whatever the guest does, so a default chain of four components adds far more than
//! the decisions themselves (a few µs). `builtin:NAME` (and the default chain) runs this
//! native code; `builtin:NAME.wasm` runs the component built from the same crate, with the
//! same settings and the same answers, for operators who want the sandbox.
//!
//! A native built-in is the host's own code: no CPU budget or memory bound applies
//! (`timeout_ms` and `max_memory_bytes` are accepted and ignored), its answers are not
//! remembered (computing one costs less than looking it up), and a panic in it is caught and
//! reported like a trap of that plugin, so its `on_error` applies and the agent keeps serving.

mod samples;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use plugin_settings::Settings;

use super::plugin::{PluginFailure, Verdict};
use super::{PolicyContext, WitRequest};

/// One native built-in, ready to be called: its settings are already parsed.
pub(crate) trait NativePolicy: Send + Sync {
    /// Decides on `req`. Log lines go to `tracing`, tagged with `plugin` (the plugin's name
    /// in the chain), as a component's `log` calls do.
    fn on_start(&self, plugin: &str, req: &WitRequest, ctx: &PolicyContext) -> Verdict;
}

/// Whether `name` has a native built-in (`npm-ci` is a component only).
pub(crate) fn exists(name: &str) -> bool {
    samples::NAMES.contains(&name)
}

/// The native built-in `name` with `settings` (flattened as a component's `config` sees
/// them), named `plugin` in the log; `None` if there is none of that name. Warnings about
/// the settings, which a component logs at every call, are logged once here.
pub(crate) fn build(
    name: &str,
    plugin: &str,
    settings: &BTreeMap<String, String>,
) -> Option<Box<dyn NativePolicy>> {
    let settings = Settings::from_pairs(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    #[cfg(test)]
    if name == tests::PANICS {
        return Some(Box::new(tests::Panics));
    }
    samples::build(name, plugin, &settings)
}

/// Calls `native`, turning a panic into a trap of the plugin.
pub(crate) fn call(
    native: &dyn NativePolicy,
    plugin: &str,
    req: &WitRequest,
    ctx: &PolicyContext,
) -> Result<Verdict, PluginFailure> {
    catch_unwind(AssertUnwindSafe(|| native.on_start(plugin, req, ctx))).map_err(|payload| {
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        tracing::error!(plugin, "native built-in panicked: {text}");
        PluginFailure::Trap {
            message: format!("the native built-in panicked: {text}"),
            stderr: None,
        }
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A native built-in that panics at every call (only in test builds), for the tests of
    /// panic containment.
    pub(crate) const PANICS: &str = "test-panics";

    pub(crate) struct Panics;

    impl NativePolicy for Panics {
        fn on_start(&self, _plugin: &str, _req: &WitRequest, _ctx: &PolicyContext) -> Verdict {
            panic!("deliberate panic of a test plugin");
        }
    }
}
