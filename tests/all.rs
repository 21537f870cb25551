//! The black-box integration tests, built as one binary (the `tests/all.rs` layout of codex and
//! wasmtime): one link instead of one per suite. The suites live in `suite/`, the helpers they
//! share in the crate's library (`support/`).

// Unwrapping is how a test says "this cannot fail here"; the workspace denies it in product code.
#![allow(clippy::unwrap_used)]

mod suite;
