//! The sample tools built into the binary (`builtin:NAME` in a `[[tool]]` entry).

/// (name, component bytes).
pub const SAMPLES: &[(&str, &[u8])] = &[
    ("serve", include_bytes!(env!("PROCWARDEN_TOOL_SERVE"))),
    (
        "test_summary",
        include_bytes!(env!("PROCWARDEN_TOOL_TEST_SUMMARY")),
    ),
];

/// The component of built-in tool `name`.
pub fn find(name: &str) -> Option<&'static [u8]> {
    SAMPLES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// Names of the built-in tools.
pub fn names() -> Vec<&'static str> {
    SAMPLES.iter().map(|(n, _)| *n).collect()
}
