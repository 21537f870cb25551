//! Cuts test-runner output down to what a model needs: the failing tests' own sections and
//! the final summary lines, with everything else elided and counted. Understands `cargo
//! test`, `pytest` and `node --test` (TAP and spec reporters); other runners get their last
//! lines.

use regex_lite::Regex;

/// Lines kept from the end of any output, whatever the runner (the last words of a run, or a
/// build error before any test ran).
const ALWAYS_TAIL: usize = 3;
/// Lines kept from the end when no failure section or summary was recognised.
const FALLBACK_TAIL: usize = 40;

struct Rules {
    summary: Vec<Regex>,
}

fn rules() -> Rules {
    let r = |s: &str| Regex::new(s).expect("static pattern");
    Rules {
        summary: vec![
            // cargo test
            r(r"^test result: "),
            r(r"^\s*Running "),
            r(r"^error: (test failed|\d+ target|could not compile)"),
            r(r"^error(\[E\d+\])?: "),
            // pytest
            r(r"^=+ .*\b(passed|failed|errors?|skipped|no tests ran|xfailed|deselected)\b.* =+$"),
            r(r"^(FAILED|ERROR) "),
            // node --test
            r(r"^# (tests|suites|pass|fail|cancelled|skipped|todo|duration_ms) \d"),
            r(r"^ℹ (tests|suites|pass|fail|cancelled|skipped|todo|duration_ms) \d"),
        ],
    }
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Marks the lines of failure sections.
fn mark_failures(lines: &[&str], keep: &mut [bool]) {
    let mut i = 0;
    let mut in_pytest_failures = false;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim();
        // cargo: `---- name stdout ----` up to the next section or the names list.
        if t.starts_with("---- ") && t.ends_with(" ----") {
            let mut j = i;
            while j < lines.len() {
                let l = lines[j].trim();
                if j > i
                    && (l.starts_with("---- ") || l == "failures:" || l.starts_with("test result:"))
                {
                    break;
                }
                keep[j] = true;
                j += 1;
            }
            i = j;
            continue;
        }
        // cargo: the `failures:` list of names (indented names up to a blank line).
        if t == "failures:" {
            keep[i] = true;
            let mut j = i + 1;
            while j < lines.len() && lines[j].starts_with("    ") && !lines[j].trim().is_empty() {
                keep[j] = true;
                j += 1;
            }
            i = j.max(i + 1);
            continue;
        }
        // pytest: the FAILURES / ERRORS sections, and the short summary.
        if t.starts_with("===") && t.ends_with("===") {
            in_pytest_failures = t.contains(" FAILURES ")
                || t.contains(" ERRORS ")
                || t.contains("short test summary info");
            if in_pytest_failures {
                keep[i] = true;
            }
            i += 1;
            continue;
        }
        if in_pytest_failures {
            keep[i] = true;
            i += 1;
            continue;
        }
        // node TAP: `not ok N - name` and its more-indented diagnostic block.
        // node spec: `✖ name` and its more-indented details; `✖ failing tests:` to the end.
        let tap = t.starts_with("not ok ");
        let spec = t.starts_with('✖');
        if tap || spec {
            if t.starts_with("✖ failing tests") {
                keep[i..].iter_mut().for_each(|k| *k = true);
                return;
            }
            let base = indent(line);
            keep[i] = true;
            let mut j = i + 1;
            while j < lines.len() && (lines[j].trim().is_empty() || indent(lines[j]) > base) {
                keep[j] = true;
                j += 1;
            }
            // Blank lines at the end of a block are not part of it.
            while j > i + 1 && lines[j - 1].trim().is_empty() {
                keep[j - 1] = false;
                j -= 1;
            }
            i = j;
            continue;
        }
        i += 1;
    }
}

/// The summary of `output`.
pub fn summarize(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let mut keep = vec![false; lines.len()];
    mark_failures(&lines, &mut keep);
    let rules = rules();
    for (i, line) in lines.iter().enumerate() {
        if rules.summary.iter().any(|r| r.is_match(line)) {
            keep[i] = true;
        }
    }
    let tail = if keep.iter().any(|k| *k) {
        ALWAYS_TAIL
    } else {
        FALLBACK_TAIL
    };
    let from = lines.len().saturating_sub(tail);
    keep[from..].iter_mut().for_each(|k| *k = true);

    let mut out = String::new();
    let mut elided = 0usize;
    for (line, kept) in lines.iter().zip(&keep) {
        if *kept {
            if elided > 0 {
                out.push_str(&format!(
                    "[... {elided} line{} elided ...]\n",
                    plural(elided)
                ));
                elided = 0;
            }
            out.push_str(line);
            out.push('\n');
        } else {
            elided += 1;
        }
    }
    if elided > 0 {
        out.push_str(&format!(
            "[... {elided} line{} elided ...]\n",
            plural(elided)
        ));
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elides_passing_lines_and_counts_them() {
        let text = "a\nb\nc\nd\ne\n---- t stdout ----\npanicked\n\nfailures:\n    t\n\ntest result: FAILED. 1 passed\n";
        let s = summarize(text);
        assert!(
            s.starts_with("[... 5 lines elided ...]\n---- t stdout ----\npanicked\n"),
            "{s}"
        );
        assert!(s.contains("failures:\n    t\n"), "{s}");
        assert!(s.contains("test result: FAILED"), "{s}");
    }

    #[test]
    fn unknown_output_keeps_its_tail() {
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let s = summarize(&text);
        assert!(s.starts_with("[... 60 lines elided ...]\nline 60\n"), "{s}");
    }

    #[test]
    fn tap_failure_block_is_kept() {
        let text = "ok 1 - good\nnot ok 2 - bad\n  ---\n  error: 'boom'\n  ...\nok 3 - fine\n# tests 3\n# pass 2\n# fail 1\n";
        let s = summarize(text);
        assert!(
            s.contains("not ok 2 - bad\n  ---\n  error: 'boom'\n  ...\n"),
            "{s}"
        );
        assert!(!s.contains("ok 1 - good"), "{s}");
        assert!(s.contains("# fail 1"), "{s}");
    }
}
