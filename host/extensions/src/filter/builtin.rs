//! The filters built into the binary. `builtin:redact` (on by default) runs the `redact`
//! crate natively in the host; `builtin:redact.wasm` runs the component build of the same
//! crate, embedded in the binary (same settings, same answers, inside the sandbox).

use super::native::{self, MakeNative};

/// Component builds: (name without `.wasm`, component bytes).
pub const SAMPLES: &[(&str, &[u8])] =
    &[("redact", include_bytes!(env!("PROCWARDEN_FILTER_REDACT")))];

/// Native built-ins: (name, constructor). The default chain runs these.
pub const NATIVE: &[(&str, MakeNative)] = &[("redact", native::redact)];

/// What `builtin:NAME` names.
#[derive(Clone, Copy)]
pub enum Builtin {
    Native(MakeNative),
    Component(&'static [u8]),
}

/// The built-in `name`: `NAME` is the native one, `NAME.wasm` the component.
pub fn find(name: &str) -> Option<Builtin> {
    if let Some(base) = name.strip_suffix(".wasm") {
        return SAMPLES
            .iter()
            .find(|(n, _)| *n == base)
            .map(|(_, b)| Builtin::Component(b));
    }
    NATIVE
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, make)| Builtin::Native(*make))
}

/// Names of the built-in filters, as `builtin:` takes them.
pub fn names() -> Vec<String> {
    NATIVE
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .chain(SAMPLES.iter().map(|(n, _)| format!("{n}.wasm")))
        .collect()
}
