//! Bindings of `procwarden:filter@0.1.0` (`wit/filter/v0.1.0`).
//!
//! Async like the other plugin kinds: a call runs on a fiber, so the CPU budget can make it
//! yield and the real-time cap can stop a guest that spins.

wasmtime::component::bindgen!({
    world: "procwarden:filter/filter-plugin@0.1.0",
    path: "../../wit/filter/v0.1.0",
    imports: { default: async },
    exports: { default: async },
});

pub(crate) use procwarden::filter::{host, types};
