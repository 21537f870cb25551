//! Output buffer through the server: head/tail truncation and its metadata, exact rendering at the
//! boundaries, line caps, UTF-8 safety, memory bound on a huge single line, stdout/stderr
//! interleaving, output of lingering children. Reference acceptance items 32, 35, 36 and the buffer
//! behaviours 38-53 as far as they are observable over HTTP.

use std::time::{Duration, Instant};

use procwarden_tests::*;

/// `seq -f '%060g' 1 n`: n lines of 61 bytes.
fn seq60(n: usize) -> String {
    (1..=n).map(|i| format!("{i:060}\n")).collect()
}

fn truncation(body: &OutputSnapshot) -> &Truncation {
    body.truncated
        .as_ref()
        .unwrap_or_else(|| panic!("expected `truncated` object: {}", short(body)))
}

#[tokio::test]
async fn small_output_is_verbatim_without_truncation() {
    let server = Server::start();
    let api = server.api();
    let id = api.start("printf 'hello world'").await;
    let body = api.wait_exit(&id).await;
    assert_eq!(body.output, "hello world");
    assert!(body.truncated.is_none(), "{body}");

    let id = api.start("true").await;
    let body = api.wait_exit(&id).await;
    assert_eq!(body.output, "");
    assert!(body.truncated.is_none(), "{body}");
}

#[tokio::test]
async fn output_between_head_and_head_plus_tail_is_complete() {
    // 18300 bytes: more than head_bytes (16384) but less than head+tail: nothing is lost.
    let server = Server::start();
    let api = server.api();
    let id = api.start("seq -f '%060g' 1 300").await;
    let body = api.wait_exit(&id).await;
    assert!(body.truncated.is_none(), "{}", short(&body));
    assert_eq!(body.output, seq60(300));
}

#[tokio::test]
async fn output_over_32k_is_truncated_head_tail() {
    let server = Server::start();
    let api = server.api();
    let id = api.start("seq -f '%060g' 1 1000").await; // 61000 bytes
    let body = api.wait_exit(&id).await;
    let t = truncation(&body);
    assert_eq!(t.strategy, "head_tail", "{t}");
    let original = t.original_bytes;
    let retained = t.retained_bytes;
    let omitted = t.omitted_bytes;
    assert_eq!(original, 61000, "{t}");
    assert!(omitted > 0, "{t}");
    assert!(original > retained, "{t}");
    let text = &body.output;
    assert!(
        text.contains(&format!("\n\n... [omitted {omitted} bytes] ...\n\n")),
        "omission marker missing"
    );
    assert!(text.contains("... [omitted"));
    let all = seq60(1000);
    assert!(text.starts_with(&all[..61 * 10]), "head kept");
    assert!(text.ends_with(&all[all.len() - 61 * 10..]), "tail kept");
    assert!(text.len() <= 32768 + 100, "bounded: {}", text.len());
}

#[tokio::test]
async fn exact_head_tail_rendering_with_small_config() {
    let server = Server::with_config("head_bytes = 64\ntail_bytes = 64\n");
    let api = server.api();

    // 1000 bytes, no newline: 64 x A + omitted marker + 64 x Z.
    let id = api
        .start("printf '%500s' '' | tr ' ' A; printf '%500s' '' | tr ' ' Z")
        .await;
    let body = api.wait_exit(&id).await;
    let expected = format!(
        "{}\n\n... [omitted 872 bytes] ...\n\n{}",
        "A".repeat(64),
        "Z".repeat(64)
    );
    assert_eq!(body.output, expected);
    let t = truncation(&body);
    assert_eq!(t.original_bytes, 1000, "{t}");
    assert_eq!(t.omitted_bytes, 872, "{t}");
    assert_eq!(t.strategy, "head_tail", "{t}");
}

#[tokio::test]
async fn head_plus_tail_boundary_with_small_config() {
    let server = Server::with_config("head_bytes = 64\ntail_bytes = 64\n");
    let api = server.api();

    // Exactly head + tail bytes: complete, so no `truncated`.
    let exact: String = (0..128u8).map(|i| (b'a' + i % 26) as char).collect();
    let id = api.start(&format!("printf '{exact}'")).await;
    let body = api.wait_exit(&id).await;
    assert_eq!(body.output, exact);
    assert!(body.truncated.is_none(), "{body}");

    // One byte more: truncated with one omitted byte.
    let over: String = (0..129u8).map(|i| (b'a' + i % 26) as char).collect();
    let id = api.start(&format!("printf '{over}'")).await;
    let body = api.wait_exit(&id).await;
    let t = truncation(&body);
    assert_eq!(t.original_bytes, 129, "{t}");
    assert_eq!(t.omitted_bytes, 1, "{t}");
    let text = &body.output;
    assert!(text.starts_with(&over[..64]), "{text:?}");
    assert!(text.ends_with(&over[65..]), "{text:?}");
    assert!(text.contains("... [omitted 1 byte"), "{text:?}");

    // Many writes: the tail is the last tail_bytes written (reference item 52).
    let id = api
        .start("for i in $(seq 1 200); do printf 'HEADD'; done; printf 0123456789; printf abcdefghij; printf ABCDE")
        .await;
    let body = api.wait_exit(&id).await;
    let text = &body.output;
    assert!(text.ends_with("fghijABCDE"), "{text:?}");
    assert!(text.starts_with(&"HEADD".repeat(12)), "{text:?}");
}

/// `retained_bytes` counts the bytes of the original output that were kept (head + tail), as in
/// the reference (`original_bytes == retained_bytes + omitted_bytes`), not the rendered text.
#[tokio::test]
async fn truncation_metadata_counts_original_bytes() {
    let server = Server::with_config("head_bytes = 64\ntail_bytes = 64\n");
    let api = server.api();
    let id = api
        .start("printf '%500s' '' | tr ' ' A; printf '%500s' '' | tr ' ' Z")
        .await;
    let body = api.wait_exit(&id).await;
    let t = truncation(&body);
    assert_eq!(t.original_bytes, 1000, "{t}");
    assert_eq!(t.omitted_bytes, 872, "{t}");
    // As in the reference, retained_bytes is the length of the returned text, marker included.
    assert_eq!(t.retained_bytes, body.output.len() as u64, "{t}");
    assert!(body.output.contains("... [omitted 872 bytes] ..."));

    let server = Server::start();
    let api = server.api();
    let id = api.start("seq -f '%060g' 1 1000").await;
    let body = api.wait_exit(&id).await;
    let t = truncation(&body);
    let original = t.original_bytes;
    let retained = t.retained_bytes;
    let omitted = t.omitted_bytes;
    assert_eq!(retained, body.output.len() as u64, "{t}");
    let marker = format!("\n\n... [omitted {omitted} bytes] ...\n\n");
    assert!(body.output.contains(&marker), "{t}");
    // Everything not omitted is in the text: head + tail + the marker.
    assert_eq!(original, retained - marker.len() as u64 + omitted, "{t}");
}

#[tokio::test]
async fn long_lines_are_cut_with_marker() {
    let server = Server::start();
    let api = server.api();
    // 2548-byte line between two short ones (reference items 44, 53).
    let id = api
        .start("echo short1; printf '%2548s\\n' '' | tr ' ' L; echo short2")
        .await;
    let body = api.wait_exit(&id).await;
    let text = &body.output;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text:.300}");
    assert_eq!(lines[0], "short1");
    assert_eq!(lines[2], "short2");
    assert!(lines[1].ends_with(" ... [truncated]"), "{:.100}", lines[1]);
    assert!(lines[1].starts_with(&"L".repeat(1000)));
    assert!(
        lines[1].len() <= 2048 + 20,
        "cut near 2048: {}",
        lines[1].len()
    );
    assert!(
        body.truncated.is_some(),
        "a cut line means the text is not complete: {}",
        short(&body)
    );
}

#[tokio::test]
async fn max_line_bytes_is_configurable() {
    let server = Server::with_config("max_line_bytes = 100\n");
    let api = server.api();
    let id = api
        .start("printf '%99s\\n' '' | tr ' ' k; printf '%500s\\n' '' | tr ' ' L; echo after")
        .await;
    let body = api.wait_exit(&id).await;
    let text = &body.output;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text:?}");
    assert_eq!(lines[0], "k".repeat(99), "short line intact");
    assert!(lines[1].ends_with(" ... [truncated]"), "{:?}", lines[1]);
    assert!(lines[1].len() <= 100 + 20, "{:?}", lines[1]);
    assert_eq!(lines[2], "after");
}

#[tokio::test]
async fn huge_single_line_is_bounded_in_output_and_memory() {
    let server = Server::start();
    let api = server.api();
    // Warm the server up so that lazily created runtime state is already counted.
    for _ in 0..3 {
        let id = api.start("seq 1 2000").await;
        api.wait_exit(&id).await;
    }
    api.list().await;
    let rss_before = server.rss_kib();
    assert!(rss_before > 0, "could not read VmRSS of the server");

    let id = api.start("head -c 3000000 /dev/zero | tr '\\0' x").await;
    let body = api.wait_exit(&id).await;
    assert_eq!(body.exit_code, Some(0), "{}", short(&body));
    let text = &body.output;
    assert!(
        text.len() <= 34 * 1024,
        "output must stay bounded, got {} bytes",
        text.len()
    );
    assert!(text.starts_with("xxxxxxxx"));
    let t = truncation(&body);
    assert_eq!(t.original_bytes, 3_000_000, "{t}");
    assert!(t.omitted_bytes > 2_900_000, "{t}");
    // The spool's queue may hold copies of the line until its writer has caught up; the
    // agent hands that memory back once the queue has been quiet for a moment.
    let settled = eventually_sync(Duration::from_secs(5), || {
        server.rss_kib().saturating_sub(rss_before) < 2048
    })
    .await;
    let rss_after = server.rss_kib();
    eprintln!("server VmRSS {rss_before} KiB -> {rss_after} KiB");
    assert!(
        settled,
        "server RSS grew by {} KiB ({rss_before} -> {rss_after}) for one 3 MB line",
        rss_after.saturating_sub(rss_before)
    );
}

#[tokio::test]
async fn output_is_always_valid_utf8() {
    let server = Server::with_config("head_bytes = 63\ntail_bytes = 63\n");
    let api = server.api();
    // Invalid bytes from the process.
    let id = api.start("printf 'start\\377\\376\\300ok\\n'").await;
    let body = api.wait_exit(&id).await; // parsing JSON already proves valid UTF-8
    let text = &body.output;
    assert!(
        text.starts_with("start") && text.ends_with("ok\n"),
        "{text:?}"
    );

    // Multi-byte characters split by the 63-byte head/tail boundaries.
    let id = api
        .start("for i in $(seq 1 300); do printf 'é'; done")
        .await;
    let body = api.wait_exit(&id).await;
    let text = &body.output;
    let omitted = truncation(&body).omitted_bytes;
    let without_marker = text.replace(&format!("\n\n... [omitted {omitted} bytes] ...\n\n"), "");
    assert!(
        without_marker.chars().all(|c| c == 'é' || c == '\u{FFFD}'),
        "{text:?}"
    );
    assert!(text.starts_with("éé") && text.ends_with("éé"), "{text:?}");
}

#[tokio::test]
async fn stdout_and_stderr_interleave_in_write_order() {
    let server = Server::start();
    let api = server.api();
    let id = api
        .start("echo a; echo b >&2; echo c; echo d >&2; echo e")
        .await;
    let body = api.wait_exit(&id).await;
    assert_eq!(body.output, "a\nb\nc\nd\ne\n", "one buffer, in order");
}

#[tokio::test]
async fn lingering_child_output_keeps_being_collected() {
    let server = Server::start();
    let api = server.api();
    let t0 = Instant::now();
    let id = api.start("(sleep 1; echo late) & echo early").await;
    let body = api.wait_exit(&id).await;
    let waited = secs(t0);
    assert_eq!(body.exit_code, Some(0), "{body}");
    assert_eq!(body.output, "early\n", "{body}");
    assert!(
        waited < 0.9,
        "the wait returns at shell exit, not at pipe close (took {waited:.2}s)"
    );

    let last = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let got = eventually(Duration::from_secs(5), || {
        let api = api.clone();
        let id = id.clone();
        let last = last.clone();
        async move {
            let b = api.output_ok(&id, false).await;
            let text = b.output.to_string();
            let done = text.contains("late");
            *last.lock().unwrap() = text;
            done
        }
    })
    .await;
    let last = last.lock().unwrap().clone();
    assert!(got, "late output of the background child missing: {last:?}");
    assert_eq!(last, "early\nlate\n");
}
