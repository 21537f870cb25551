//! Links the component with a 256 KiB shadow stack instead of Rust's default 1 MiB. The
//! plugin needs a few KiB; the host resets every page of linear memory a call dirtied and
//! scans all of it to find them, so a smaller memory makes every call cheaper. The stack
//! comes first in memory, so an overflow is an out-of-bounds trap, never corruption.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=-zstack-size=262144");
    }
}
