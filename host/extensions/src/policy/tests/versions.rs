//! Tests of the versioned plugin worlds: what the linker grants, 0.1.0 and 0.2.0 plugins
//! in one chain, and the imports 0.2.0 adds (`is-file`, `read-file`, `which`, the front end).

use std::path::Path;

use super::*;

/// `faulty-filesystem` reads files and opens a socket with the standard library, so its
/// component imports `wasi:filesystem` and `wasi:sockets`, which policy plugins are not
/// granted: it must not load, and the error must name the import.
#[test]
fn a_component_importing_an_interface_not_granted_fails_to_load_naming_it() {
    let e = load_err(&[source("faulty-filesystem")]);
    println!("{e}");
    assert!(e.contains("policy plugin \"faulty-filesystem\""), "{e}");
    assert!(e.contains("not granted"), "{e}");
    assert!(
        e.contains("wasi:filesystem/") || e.contains("wasi:sockets/"),
        "the error does not name the import: {e}"
    );
}

fn lockfile_dir(with_lockfile: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    if with_lockfile {
        std::fs::write(dir.path().join("package-lock.json"), "{}").unwrap();
    }
    dir
}

fn in_dir(command: &str, dir: &Path) -> StartRequest {
    StartRequest {
        command: command.to_owned(),
        workdir: Some(dir.display().to_string()),
        ..Default::default()
    }
}

/// `ampersand` and `workdir` are built against 0.1.0, `npm-ci` against 0.2.0: one chain
/// runs them in order, each seeing what the one before left.
#[test]
fn plugins_of_both_versions_run_in_one_chain() {
    let c = chain(&[source("ampersand"), source("npm-ci"), source("workdir")]);
    let versions: Vec<&str> = c.plugins().iter().map(|p| p.load.wit_version).collect();
    assert_eq!(versions, ["0.1.0", "0.2.0", "0.1.0"]);
    let with = lockfile_dir(true);
    let out = c
        .evaluate(in_dir("npm install &", with.path()), &ctx())
        .unwrap();
    assert_eq!(out.command, "npm ci");
    assert!(out.background, "ampersand (0.1.0) ran first");
    assert_eq!(out.workdir.as_deref(), with.path().to_str());
    let without = lockfile_dir(false);
    let out = c
        .evaluate(in_dir("npm install", without.path()), &ctx())
        .unwrap();
    assert_eq!(out.command, "npm install");
}

/// The rewrite follows the lockfile, also when the answer was remembered: `is-file` is
/// recorded, so a remembered answer is dropped when the file appears or goes.
#[test]
fn npm_install_becomes_npm_ci_only_where_a_lockfile_exists() {
    let c = remembering(64, &[source("npm-ci")]).unwrap();
    let dir = lockfile_dir(false);
    let request = in_dir("npm install", dir.path());
    let run = |c: &PolicyChain| c.evaluate(request.clone(), &ctx()).unwrap().command;
    assert_eq!(run(&c), "npm install");
    assert_eq!(run(&c), "npm install");
    assert_eq!(remembered(&c), [1]);
    std::fs::write(dir.path().join("package-lock.json"), "{}").unwrap();
    assert_eq!(run(&c), "npm ci");
    assert_eq!(run(&c), "npm ci");
    std::fs::remove_file(dir.path().join("package-lock.json")).unwrap();
    assert_eq!(run(&c), "npm install");
    assert_eq!(remembered(&c), [2]);
    // Other npm commands pass unchanged.
    std::fs::write(dir.path().join("package-lock.json"), "{}").unwrap();
    let other = in_dir("npm install left-pad", dir.path());
    assert_eq!(
        c.evaluate(other, &ctx()).unwrap().command,
        "npm install left-pad"
    );
}

/// What `faulty-questions` (0.2.0) answers to `command` run in `dir`, with no agent
/// working directory (the tests' temporary directories are all under the default one).
fn ask(c: &PolicyChain, command: &str, dir: &Path) -> String {
    let context = PolicyContext {
        agent_workdir: None,
        ..ctx()
    };
    c.evaluate(in_dir(command, dir), &context)
        .unwrap_err()
        .reason
}

#[test]
fn read_file_reads_small_files_under_the_allowed_roots_only() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "hello").unwrap();
    std::fs::write(allowed.path().join("b.txt"), "operator").unwrap();
    std::fs::write(dir.path().join("big"), vec![b'x'; 64 * 1024 + 1]).unwrap();
    std::fs::write(dir.path().join("max"), vec![b'x'; 64 * 1024]).unwrap();
    let c = chain(&[source("faulty-questions")]);
    assert_eq!(ask(&c, "read a.txt", dir.path()), "read 5 bytes: hello");
    assert_eq!(
        ask(&c, "read /etc/passwd", dir.path()),
        "read error: ReadError::NotAllowed"
    );
    let b = allowed.path().join("b.txt");
    let b = b.to_str().unwrap();
    assert_eq!(
        ask(&c, &format!("read {b}"), dir.path()),
        "read error: ReadError::NotAllowed"
    );
    assert_eq!(
        ask(&c, "read big", dir.path()),
        "read error: ReadError::TooLarge(65537)"
    );
    assert!(ask(&c, "read max", dir.path()).starts_with("read 65536 bytes"));
    assert_eq!(
        ask(&c, "read nope", dir.path()),
        "read error: ReadError::NotFound"
    );
    // The agent's working directory is a root too.
    let agent = PolicyContext {
        agent_workdir: Some(allowed.path().display().to_string()),
        ..ctx()
    };
    let denial = c
        .evaluate(in_dir(&format!("read {b}"), dir.path()), &agent)
        .unwrap_err();
    assert_eq!(denial.reason, "read 8 bytes: operator");
    // So is a path the operator allowed for the plugin.
    let c = chain(&[source("faulty-questions").with_read_paths([allowed.path().to_owned()])]);
    assert_eq!(
        ask(&c, &format!("read {b}"), dir.path()),
        "read 8 bytes: operator"
    );
}

#[test]
fn a_remembered_answer_is_dropped_when_a_file_it_read_changes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "one").unwrap();
    let c = remembering(64, &[source("faulty-questions")]).unwrap();
    assert_eq!(ask(&c, "read a.txt", dir.path()), "read 3 bytes: one");
    assert_eq!(ask(&c, "read a.txt", dir.path()), "read 3 bytes: one");
    assert_eq!(remembered(&c), [1]);
    std::fs::write(dir.path().join("a.txt"), "two").unwrap();
    assert_eq!(ask(&c, "read a.txt", dir.path()), "read 3 bytes: two");
    assert_eq!(remembered(&c), [1]);
}

#[test]
fn which_exists_and_is_file_answer_about_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    let c = chain(&[source("faulty-questions")]);
    let sh = crate::policy::probe::which("sh").expect("sh on PATH");
    assert_eq!(
        ask(&c, "which sh", dir.path()),
        format!("which: Some({sh:?})")
    );
    assert_eq!(
        ask(&c, "which procwarden-no-such-program", dir.path()),
        "which: None"
    );
    let d = dir.path().display().to_string();
    assert_eq!(ask(&c, &format!("exists {d}"), dir.path()), "exists: true");
    assert_eq!(
        ask(&c, &format!("is-file {d}"), dir.path()),
        "is-file: false"
    );
    assert_eq!(
        ask(&c, &format!("exists {d}/x"), dir.path()),
        "exists: false"
    );
}

#[test]
fn the_front_end_reaches_0_2_0_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let c = chain(&[source("faulty-questions")]);
    for (front_end, expect) in [
        (None, "none"),
        (Some(FrontEnd::Http), "http"),
        (Some(FrontEnd::Mcp), "mcp"),
        (Some(FrontEnd::Cli), "cli"),
        (Some(FrontEnd::Tool("serve".into())), "tool:serve"),
    ] {
        let context = PolicyContext { front_end, ..ctx() };
        let denial = c
            .evaluate(in_dir("front-end", dir.path()), &context)
            .unwrap_err();
        assert_eq!(denial.reason, expect);
    }
}
