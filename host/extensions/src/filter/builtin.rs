//! The sample filter built into the binary (`builtin:redact` in a `[[filter]]` entry; on by
//! default).

/// (name, component bytes).
pub const SAMPLES: &[(&str, &[u8])] =
    &[("redact", include_bytes!(env!("PROCWARDEN_FILTER_REDACT")))];

/// The component of built-in filter `name`.
pub fn find(name: &str) -> Option<&'static [u8]> {
    SAMPLES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// Names of the built-in filters.
pub fn names() -> Vec<&'static str> {
    SAMPLES.iter().map(|(n, _)| *n).collect()
}
