//! Bindings of `procwarden:tool@0.1.0` (`wit/tool/v0.1.0`) with the `procwarden:host@0.2.0`
//! package it imports (`wit/host/v0.2.0`).
//!
//! Imports and exports are async: a call runs on a fiber, and a host function such as
//! `wait` suspends it without holding a thread.

wasmtime::component::bindgen!({
    world: "procwarden:tool/tool-plugin@0.1.0",
    path: ["../../wit/host/v0.2.0", "../../wit/tool/v0.1.0"],
    imports: { default: async },
    exports: { default: async },
});

pub(crate) use procwarden::host::process;
pub(crate) use procwarden::tool::{host, types};
