//! The output spool through the server: the whole output kept on disk and read back by byte
//! range, cursor, line range, grep and errors first; its files deleted on reap and shutdown.

use std::time::Duration;

use procwarden_tests::*;

fn q(text: &str) -> String {
    // Query values: encode what a URL would mangle.
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn read(api: &Api, id: &str, query: &str) -> OutputSnapshot {
    let resp = api
        .get(&format!("/api/v0/processes/{id}/output?{query}"))
        .await;
    resp.expect_status(200);
    resp.json()
}

#[tokio::test]
async fn an_error_in_the_middle_of_50_mb_is_found_by_grep() {
    let server = Server::start();
    let api = server.api();
    let filler =
        "yes 'compiling crate foo v0.1.0 (/src/foo) with some more words.....' | head -c 25000000";
    let id = api
        .start(&format!(
            "{filler}; echo 'error[E0599]: no method named `frob` found'; {filler}"
        ))
        .await;
    let done = api.wait_exit(&id).await;
    assert!(
        !done.output.contains("frob"),
        "the middle is cut from the default view"
    );
    assert_eq!(done.covers.total_bytes, 50_000_000 + 43);
    // Each read lets the spool writer catch up for a bounded time; on a loaded machine 50 MB
    // may take longer than one read waits, so read until the spool holds all of it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let found = loop {
        let found = read(&api, &id, &format!("grep={}&context=1", q("E0599|frob"))).await;
        let spooled = found.spool.as_ref().map_or(0, |s| s.spooled_bytes);
        if spooled >= 50_000_000 + 43 || std::time::Instant::now() > deadline {
            break found;
        }
    };
    let spool = found.spool.clone().expect("spool reported");
    assert!(spool.complete, "{found}");
    assert_eq!(spool.spooled_bytes, 50_000_000 + 43);
    let grep = found.grep.clone().expect("grep counts");
    assert_eq!(
        (grep.matches, grep.shown, grep.omitted),
        (1, 1, 0),
        "{found}"
    );
    // 25e6 bytes of 64-byte lines: 390625 lines, then the error on the next line.
    assert!(
        found
            .output
            .contains("390626:error[E0599]: no method named `frob` found"),
        "{}",
        found.output
    );
    assert_eq!(
        found.output.lines().count(),
        3,
        "one line of context each side"
    );
    assert_eq!(found.covers.end, found.covers.total_bytes);
    assert_eq!(found.covers.missing_bytes, 0);
    // The line grep named can be read directly.
    let line = read(&api, &id, "lines=390626:390626").await;
    assert_eq!(line.output, "error[E0599]: no method named `frob` found\n");
    assert_eq!(line.lines.unwrap().first, 390626);
}

#[tokio::test]
async fn byte_cursors_and_line_ranges_cover_what_they_say() {
    let server = Server::start();
    let api = server.api();
    let id = api.start("seq 1 100000").await;
    let done = api.wait_exit(&id).await;
    let total = done.covers.total_bytes;
    // Follow with a cursor in 200 KiB steps: the pieces join up to the whole output.
    let mut cursor = 0;
    let mut joined = String::new();
    while cursor < total {
        let part = read(&api, &id, &format!("since={cursor}&limit=200000")).await;
        assert_eq!(part.covers.start, cursor, "{part}");
        assert!(part.covers.end > cursor);
        cursor = part.covers.end;
        joined.push_str(&part.output);
    }
    let expected: String = (1..=100000).map(|i| format!("{i}\n")).collect();
    assert!(joined == expected, "cursor reads rebuild the output");
    let last = read(&api, &id, "lines=-3:").await;
    assert_eq!(last.output, "99998\n99999\n100000\n");
    let span = last.lines.unwrap();
    assert_eq!((span.first, span.last, span.total), (99998, 100000, 100000));
    assert_eq!(last.covers.end, total);
    let middle = read(&api, &id, "lines=50000:50001").await;
    assert_eq!(middle.output, "50000\n50001\n");
    let bytes = read(&api, &id, "offset=6&limit=4").await;
    assert_eq!(bytes.output, "4\n5\n");
    assert_eq!((bytes.covers.start, bytes.covers.end), (6, 10));
}

#[tokio::test]
async fn errors_first_keeps_the_failure_from_the_middle() {
    let server = Server::start();
    let api = server.api();
    let id = api
        .start("seq 1 20000; echo 'test foo::bar ... FAILED'; echo \"thread 'main' panicked at src/lib.rs:3\"; seq 1 20000")
        .await;
    api.wait_exit(&id).await;
    let view = read(&api, &id, "view=errors").await;
    assert!(
        view.output.contains(":test foo::bar ... FAILED"),
        "{}",
        view.output
    );
    assert!(
        view.output.contains("panicked at src/lib.rs:3"),
        "{}",
        view.output
    );
    assert!(view.output.starts_with("1\n2\n"), "head kept");
    assert!(view.output.ends_with("19999\n20000\n"), "tail kept");
    let t = view.truncated.expect("cut");
    assert_eq!(t.strategy, "errors_first");
    assert!(t.retained_bytes < 40 * 1024, "{t}");
}

#[tokio::test]
async fn bad_read_parameters_are_400_naming_the_parameter() {
    let server = Server::start();
    let api = server.api();
    let id = api.start("echo hi").await;
    api.wait_exit(&id).await;
    for (query, name) in [
        ("grep=%28", "grep"),
        ("grep=a&context=500", "context"),
        ("lines=abc", "lines"),
        ("offset=-1", "offset"),
        ("limit=99999999", "limit"),
        ("lines=1:2&grep=x", "grep"),
        ("view=everything", "view"),
        ("until=regex:x", "until"),
        ("wait=true&until=port:99999", "until"),
        ("wait=true&until=sometime", "until"),
    ] {
        let resp = api
            .get(&format!("/api/v0/processes/{id}/output?{query}"))
            .await;
        let message = resp.error(400);
        assert!(
            message.contains(&format!("\"{name}\"")),
            "{query}: {message}"
        );
    }
}

#[tokio::test]
async fn spool_files_are_deleted_on_reap_and_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_config(&format!(
        "spool_dir = {:?}\nreap_age_seconds = 0.5\nreap_interval_seconds = 0.2\n",
        dir.path()
    ));
    let api = server.api();
    // Past the in-memory buffer (32 KiB), so the output goes to a spool file.
    let id = api.start("seq 1 20000").await;
    let file = dir.path().join(format!("{id}.out"));
    api.wait_exit(&id).await;
    let body = read(&api, &id, "offset=0&limit=10").await;
    assert_eq!(body.output, "1\n2\n3\n4\n5\n", "the start, from the spool");
    assert!(
        eventually_sync(Duration::from_secs(10), || !file.exists()).await,
        "spool file still there after reap"
    );
    let running = api
        .start_with(json!({"command": "seq 1 20000; sleep 100", "background": true}))
        .await;
    let held = dir.path().join(format!("{running}.out"));
    assert!(eventually_sync(Duration::from_secs(5), || held.exists()).await);
    server.send_signal(nix::sys::signal::Signal::SIGTERM);
    server
        .wait_exit(Duration::from_secs(20))
        .expect("server exits");
    assert!(!held.exists(), "spool file survived shutdown");
}

/// Output the buffer holds whole needs no file: the spool reports it complete, and a file
/// is made only once the output outgrows the buffer, holding it from its first byte.
#[tokio::test]
async fn a_spool_file_is_made_only_when_the_output_outgrows_the_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_config(&format!("spool_dir = {:?}\n", dir.path()));
    let api = server.api();
    let id = api
        .start_with(json!({
            "command": "echo small; read -r _ </dev/stdin; seq 1 20000; sleep 100",
            "background": true,
            "stdin": "pipe"
        }))
        .await;
    let file = dir.path().join(format!("{id}.out"));
    let small = read(&api, &id, "wait=true&until=regex%3Asmall").await;
    assert!(small.output.contains("small"), "{small}");
    let spool = small.spool.expect("spool info");
    assert!(spool.complete, "{spool:?}");
    assert_eq!(spool.spooled_bytes, 6);
    assert!(!file.exists(), "a spool file for 6 bytes of output");

    api.post(
        &format!("/api/v0/processes/{id}/input"),
        &json!({"data": "go\n"}),
    )
    .await
    .expect_status(200);
    let big = read(&api, &id, "wait=true&until=regex%3A%5E20000%24").await;
    assert!(eventually_sync(Duration::from_secs(10), || file.exists()).await);
    let whole = read(&api, &id, "offset=0&limit=16").await;
    assert_eq!(whole.output, "small\n1\n2\n3\n4\n5\n", "{whole}");
    assert!(big.covers.total_bytes > 100_000, "{big}");
}

/// A pattern wait over output whose middle is gone (no spool) skips the gap and finds the
/// line in the tail, instead of stopping at the line the gap cut.
#[tokio::test]
async fn with_the_spool_off_a_pattern_wait_finds_a_line_past_the_cut_middle() {
    let server = Server::with_config("spool_max_bytes = 0\n");
    let api = server.api();
    let id = api
        .start_with(json!({"command": "seq 1 20000; sleep 100", "background": true}))
        .await;
    let found = read(&api, &id, "wait=true&until=regex%3A%5E20000%24").await;
    assert_eq!(found.ended_by.as_deref(), Some("regex"), "{found}");
    api.signal(&id, "kill").await.expect_status(200);
}

#[tokio::test]
async fn with_the_spool_off_reads_use_the_buffer_and_say_so() {
    let server = Server::with_config("spool_max_bytes = 0\n");
    let api = server.api();
    let id = api.start("seq 1 100000").await;
    api.wait_exit(&id).await;
    let body = read(&api, &id, "grep=%5E50000%24").await;
    assert!(body.spool.is_none());
    assert_eq!(
        body.grep.unwrap().matches,
        0,
        "the middle is gone without a spool"
    );
    assert!(
        body.covers.missing_bytes > 500_000,
        "{}",
        body.covers.missing_bytes
    );
    let tail = read(&api, &id, "lines=-1:").await;
    assert_eq!(tail.output, "100000\n");
}

#[tokio::test]
async fn the_cli_prints_greps_and_follows_the_whole_output() {
    let server = Server::start();
    let api = server.api();
    let url = server.url().to_owned();
    let id = api.start("seq 1 200000").await;
    api.wait_exit(&id).await;
    let all = cli(&["logs", &id, "--url", &url], &[]).await;
    assert_eq!(all.code, Some(0), "{all:?}");
    assert_eq!(
        all.stdout.lines().count(),
        200000,
        "the middle is printed too"
    );
    let found = cli(
        &["logs", &id, "--url", &url, "--grep", "^100000$", "-C", "1"],
        &[],
    )
    .await;
    assert_eq!(
        found.stdout, "99999-99999\n100000:100000\n100001-100001\n",
        "{found:?}"
    );
    let part = cli(&["logs", &id, "--url", &url, "--lines", "-2:"], &[]).await;
    assert_eq!(part.stdout, "199999\n200000\n", "{part:?}");
    let slow = api
        .start_with(json!({
            "command": "for i in 1 2 3 4 5; do echo tick $i; sleep 0.2; done",
            "background": true,
        }))
        .await;
    let followed = cli(&["logs", &slow, "--url", &url, "-f"], &[]).await;
    assert_eq!(followed.code, Some(0), "{followed:?}");
    assert_eq!(
        followed.stdout, "tick 1\ntick 2\ntick 3\ntick 4\ntick 5\n",
        "{followed:?}"
    );
}
