//! A policy plugin's settings ([`Settings`]) as plain Rust values, without WIT bindings.
//!
//! The SDKs compile the same source and add `Settings::load` (which asks the host), so plugin
//! authors see one type; the sample plugins' decision logic takes this crate's type, so the
//! host can run that logic natively (its built-ins) without generated bindings.

#![cfg_attr(not(test), no_std)]
extern crate alloc;

mod settings;
pub use settings::Settings;
