//! **Test fixture, not a sample.** A valid WebAssembly component of the wrong world.
//!
//! A plain `wasm32-wasip2` binary: a `wasi:cli` command that exports `wasi:cli/run` and not
//! `procwarden:policy/policy`. The host's tests load it as a policy plugin to check that
//! it is rejected at load time with an error naming the plugin and the missing export,
//! rather than failing on the first request.

fn main() {
    println!("faulty_wrong_world: this is a wasi:cli command, not a procwarden policy plugin");
}
