//! Builds the policy plugins in `plugins/` (WebAssembly components for `wasm32-wasip2`) so
//! the host can embed them, and tells the host where they are:
//!
//! * `PROCWARDEN_PLUGIN_AMPERSAND`, `_ENV`, `_WORKDIR`, `_DENY`, `_NPM_CI`: the sample
//!   plugins, for `include_bytes!(env!("PROCWARDEN_PLUGIN_AMPERSAND"))` (see
//!   `src/policy/builtin.rs`);
//! * `PROCWARDEN_FIXTURE_TRAP`, `_SPIN`, `_HOG`, `_WRONG_WORLD`, `_SLEEP`, `_FILESYSTEM`,
//!   `_QUESTIONS`, `_COUNTER`, `_TOOL`: test fixtures (mostly deliberately faulty components) for the
//!   host's tests;
//! * `PROCWARDEN_TOOL_SERVE`, `_TEST_SUMMARY`: the sample tool plugins (`src/tool/builtin.rs`);
//! * `PROCWARDEN_FILTER_REDACT`: the sample output filter (`src/filter/builtin.rs`), and
//!   `PROCWARDEN_FIXTURE_FILTER`, a deliberately faulty one for tests.
//!
//! The build is the one `scripts/build-plugins.sh` runs: `cargo build --release --target
//! wasm32-wasip2 --manifest-path plugins/Cargo.toml --workspace` with
//! `CARGO_TARGET_DIR=<workspace>/target/plugins`. The separate target directory matters: the
//! outer build holds the lock of `target/`, so a nested build there would wait forever.
//! The components are copied into `OUT_DIR` (only when their bytes changed), so the host
//! does not depend on `target/plugins` staying around.
//!
//! This script reruns only when something under `plugins/` (other than build output) or
//! `wit/` changes; the nested cargo is quick when nothing needs rebuilding.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

const TARGET: &str = "wasm32-wasip2";

/// (environment variable, artifact name).
const COMPONENTS: &[(&str, &str)] = &[
    ("PROCWARDEN_PLUGIN_AMPERSAND", "ampersand"),
    ("PROCWARDEN_PLUGIN_ENV", "env"),
    ("PROCWARDEN_PLUGIN_WORKDIR", "workdir"),
    ("PROCWARDEN_PLUGIN_DENY", "deny"),
    ("PROCWARDEN_PLUGIN_NPM_CI", "npm_ci"),
    ("PROCWARDEN_FIXTURE_TRAP", "faulty_trap"),
    ("PROCWARDEN_FIXTURE_SPIN", "faulty_spin"),
    ("PROCWARDEN_FIXTURE_HOG", "faulty_hog"),
    ("PROCWARDEN_FIXTURE_WRONG_WORLD", "faulty_wrong_world"),
    ("PROCWARDEN_FIXTURE_SLEEP", "faulty_sleep"),
    ("PROCWARDEN_FIXTURE_FILESYSTEM", "faulty_filesystem"),
    ("PROCWARDEN_FIXTURE_QUESTIONS", "faulty_questions"),
    ("PROCWARDEN_FIXTURE_COUNTER", "faulty_counter"),
    ("PROCWARDEN_TOOL_SERVE", "tool_serve"),
    ("PROCWARDEN_TOOL_TEST_SUMMARY", "tool_test_summary"),
    ("PROCWARDEN_FIXTURE_TOOL", "faulty_tool"),
    ("PROCWARDEN_FILTER_REDACT", "filter_redact"),
    ("PROCWARDEN_FIXTURE_FILTER", "faulty_filter"),
];

/// Environment the outer cargo sets for this script (or the user sets for the host) that
/// must not leak into the nested build of another workspace for another target.
const DROP_VARS: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    // Set by `cargo clippy`; the plugins are linted on their own.
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "OUT_DIR",
    "TARGET",
    "HOST",
    "NUM_JOBS",
    "OPT_LEVEL",
    "PROFILE",
    "DEBUG",
    "RUSTC_LINKER",
    "CARGO_PRIMARY_PACKAGE",
];
const DROP_PREFIXES: &[&str] = &[
    "CARGO_CFG_",
    "CARGO_FEATURE_",
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "DEP_",
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    // host/extensions -> the repository root.
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .expect("host/extensions sits two levels below the repository root")
        .to_path_buf();
    let plugins = root.join("plugins");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    watch_sources(&plugins);
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    if !target_installed(&rustc) {
        fail(&format!(
            "the {TARGET} target is not installed; run: rustup target add {TARGET}"
        ));
    }

    let target_dir = root.join("target").join("plugins");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--release", "--target", TARGET, "--workspace"])
        .arg("--manifest-path")
        .arg(plugins.join("Cargo.toml"))
        .current_dir(&root);
    for (key, _) in env::vars_os() {
        let Some(name) = key.to_str() else { continue };
        if DROP_VARS.contains(&name) || DROP_PREFIXES.iter().any(|p| name.starts_with(p)) {
            command.env_remove(&key);
        }
    }
    command.env("CARGO_TARGET_DIR", &target_dir);
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!(
            "building the policy plugins failed ({status}); see the cargo output above, or run \
             scripts/build-plugins.sh"
        )),
        Err(err) => fail(&format!(
            "could not run {} to build the policy plugins: {err}",
            Path::new(&cargo).display()
        )),
    }

    let built = target_dir.join(TARGET).join("release");
    let embedded = out_dir.join("plugins");
    fs::create_dir_all(&embedded)
        .unwrap_or_else(|err| fail(&format!("cannot create {}: {err}", embedded.display())));
    for &(var, name) in COMPONENTS {
        let source = built.join(format!("{name}.wasm"));
        let bytes = fs::read(&source)
            .unwrap_or_else(|err| fail(&format!("cannot read {}: {err}", source.display())));
        if !bytes.starts_with(b"\0asm\x0d\0\x01\0") {
            fail(&format!(
                "{} is not a WebAssembly component (expected the component header)",
                source.display()
            ));
        }
        let dest = embedded.join(format!("{name}.wasm"));
        // Rewrite only on change: an unchanged mtime keeps the host crate from recompiling.
        if fs::read(&dest).ok().as_deref() != Some(bytes.as_slice()) {
            fs::write(&dest, &bytes)
                .unwrap_or_else(|err| fail(&format!("cannot write {}: {err}", dest.display())));
        }
        println!("cargo:rustc-env={var}={}", dest.display());
    }
}

/// `cargo:rerun-if-changed` for every input of the plugin build: the workspace manifest and
/// lock file, and each crate's manifest and `src/` (cargo scans directories recursively).
/// Build output (`target/`) and hidden directories are skipped, so running the plugins'
/// tests does not make this script run again.
fn watch_sources(plugins: &Path) {
    for file in ["Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", plugins.join(file).display());
    }
    let mut pending = vec![plugins.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !path.is_dir() || name == "target" || name.starts_with('.') || name == "src" {
                continue;
            }
            if path.join("Cargo.toml").is_file() {
                println!(
                    "cargo:rerun-if-changed={}",
                    path.join("Cargo.toml").display()
                );
                println!("cargo:rerun-if-changed={}", path.join("src").display());
            }
            pending.push(path);
        }
    }
}

/// Whether the standard library for the wasm target is installed.
fn target_installed(rustc: &OsString) -> bool {
    let Ok(output) = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
    else {
        return false;
    };
    let libdir = String::from_utf8_lossy(&output.stdout);
    let libdir = Path::new(libdir.trim());
    output.status.success()
        && libdir.is_dir()
        && fs::read_dir(libdir).is_ok_and(|mut d| d.next().is_some())
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    exit(1);
}
