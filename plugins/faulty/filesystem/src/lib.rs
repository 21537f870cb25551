//! **Test fixture, not a sample.** A policy plugin that tries to read files, list `/`, find
//! its working directory and open a TCP connection with the standard library, so its
//! component imports `wasi:filesystem` and `wasi:sockets`. Policy plugins are not granted
//! those interfaces: the host must refuse to load it, naming the import.

// Natively (the plugins' own tests) the wasm export glue compiles to nothing, so the
// guest type and its helpers look unused there.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use procwarden_plugin_sdk::{Context, Decision, Guest, StartRequest};

struct Filesystem;

impl Guest for Filesystem {
    fn on_start(_req: StartRequest, _ctx: Context) -> Decision {
        let mut found = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/") {
            found.push(format!("read_dir / ok ({} entries)", dir.count()));
        }
        if std::fs::read("/etc/passwd").is_ok() {
            found.push("read /etc/passwd ok".to_owned());
        }
        if std::env::current_dir().is_ok_and(|d| d.as_os_str().len() > 1) {
            found.push("cwd".to_owned());
        }
        if std::net::TcpStream::connect("127.0.0.1:22").is_ok() {
            found.push("tcp connect ok".to_owned());
        }
        Decision::Deny(found.join("; "))
    }
}

procwarden_plugin_sdk::export!(Filesystem);
