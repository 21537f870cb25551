//! Reads over a process's whole output (spool plus buffer): a byte range, a line range,
//! matching lines with context, or errors first. Every read says which bytes it covers.

pub use regex::bytes::Regex;
use regex::bytes::RegexBuilder;
use serde::Serialize;

use crate::buffer::{BufferLimits, LINE_TRUNCATION_SUFFIX, Truncation, incomplete_utf8_suffix_len};
use crate::record::{Loaded, NumberedPiece, Process};
use crate::spool::count_newlines;

/// Most bytes a byte-range read returns.
pub const MAX_READ_BYTES: u64 = 1024 * 1024;
/// Bytes a byte-range read returns when the client names no limit.
pub const DEFAULT_READ_BYTES: u64 = 64 * 1024;
/// Most lines of text a line or grep read returns, in bytes.
pub const MAX_TEXT_BYTES: usize = 256 * 1024;
/// Most matching lines a grep shows.
pub const MAX_MATCHES: usize = 200;
/// Most context lines around a match.
pub const MAX_CONTEXT: usize = 20;
/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;

/// Lines that look like errors, for `view=errors`.
const ERROR_PATTERN: &str = r"(?i)\b(error|errors|failed|failure|fatal|panicked|panic|exception|traceback|assertion)\b|FAIL|\bE\d{4}\b";

/// Which bytes of the whole output a reply is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Covers {
    /// First byte (an offset in the whole output).
    pub start: u64,
    /// One past the last byte; also the cursor to pass as `since` to read on from here.
    pub end: u64,
    /// Bytes the process has written in all.
    pub total_bytes: u64,
    /// Bytes inside `[start, end)` the reply does not contain (no longer held, or left out).
    pub missing_bytes: u64,
}

impl Covers {
    pub fn whole(total: u64) -> Self {
        Self {
            start: 0,
            end: total,
            total_bytes: total,
            missing_bytes: 0,
        }
    }
}

/// What to read.
#[derive(Debug, Clone)]
pub enum ReadMode {
    /// `limit` bytes from `offset` (also `since=CURSOR`).
    Bytes { offset: u64, limit: u64 },
    /// Lines `from..=to`, numbered from 1; negative numbers count from the end (-1: last).
    Lines { from: Option<i64>, to: Option<i64> },
    /// Lines matching `regex`, with `context` lines around each.
    Grep { regex: Regex, context: usize },
    /// Head and tail as usual, but when the output is cut, error-looking lines first.
    Errors,
}

/// Line-oriented facts of a line read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LineSpan {
    /// First and last line returned (0 when none).
    pub first: u64,
    pub last: u64,
    /// Lines in the whole output.
    pub total: u64,
}

/// Counts of a grep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GrepCount {
    /// Matching lines in the output held.
    pub matches: u64,
    /// Matching lines shown.
    pub shown: u64,
    /// Matching lines left out (past the cap).
    pub omitted: u64,
}

/// The result of a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRead {
    pub text: String,
    pub covers: Covers,
    pub lines: Option<LineSpan>,
    pub grep: Option<GrepCount>,
    pub truncated: Option<Truncation>,
}

/// A client's pattern, compiled with limits so a hostile one cannot take the agent's memory.
pub fn compile_pattern(pattern: &str) -> Result<Regex, String> {
    if pattern.is_empty() {
        return Err("the pattern is empty".into());
    }
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(format!("the pattern is over {MAX_PATTERN_BYTES} bytes"));
    }
    RegexBuilder::new(pattern)
        .multi_line(true)
        .size_limit(1 << 20)
        .dfa_size_limit(4 << 20)
        .build()
        .map_err(|e| e.to_string())
}

/// Parse `A:B` (either side may be empty; negative from the end).
pub fn parse_line_range(text: &str) -> Result<(Option<i64>, Option<i64>), String> {
    let (a, b) = text
        .split_once(':')
        .ok_or_else(|| "expected A:B, e.g. 1:100 or -50:".to_owned())?;
    let parse = |s: &str| -> Result<Option<i64>, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        match s.parse::<i64>() {
            Ok(0) => Err("lines are numbered from 1 (or from -1 at the end); 0 is none".into()),
            Ok(n) => Ok(Some(n)),
            Err(_) => Err(format!("{s:?} is not a line number")),
        }
    };
    Ok((parse(a)?, parse(b)?))
}

impl crate::record::OutputSnapshot {
    /// This snapshot with its output replaced by `read`.
    pub fn with_read(mut self, read: OutputRead) -> Self {
        self.output = read.text;
        self.truncated = read.truncated;
        self.covers = read.covers;
        self.lines = read.lines;
        self.grep = read.grep;
        self
    }
}

impl Process {
    /// Read the output as `mode` asks. Reads the spool file: call off the async workers.
    pub fn read_output(&self, mode: &ReadMode, limits: BufferLimits) -> OutputRead {
        self.spool_catch_up(std::time::Duration::from_secs(2));
        match mode {
            ReadMode::Bytes { offset, limit } => {
                let limit = (*limit).min(MAX_READ_BYTES);
                read_bytes(&self.load(*offset, offset.saturating_add(limit)), *offset)
            }
            ReadMode::Lines { from, to } => read_lines(&self.load(0, u64::MAX), *from, *to, limits),
            ReadMode::Grep { regex, context } => grep(
                &self.load(0, u64::MAX),
                regex,
                (*context).min(MAX_CONTEXT),
                MAX_MATCHES,
                MAX_TEXT_BYTES,
                limits.max_line_bytes,
            ),
            ReadMode::Errors => {
                let snapshot = self.snapshot();
                if snapshot.truncated.is_none() {
                    return OutputRead {
                        text: snapshot.output,
                        covers: snapshot.covers,
                        lines: None,
                        grep: None,
                        truncated: None,
                    };
                }
                errors_first(&self.load(0, u64::MAX), limits)
            }
        }
    }
}

fn lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
    }
}

fn gap_marker(bytes: u64) -> String {
    format!("\n... [{bytes} bytes not held] ...\n")
}

fn read_bytes(loaded: &Loaded, offset: u64) -> OutputRead {
    let start = offset.min(loaded.total);
    let mut out = Vec::new();
    let mut at = start;
    let mut missing = 0;
    for piece in &loaded.pieces {
        if piece.start > at {
            missing += piece.start - at;
            out.extend_from_slice(gap_marker(piece.start - at).as_bytes());
        }
        out.extend_from_slice(&piece.bytes);
        at = piece.end();
    }
    // Never end on half a character: the cursor then resumes at its first byte.
    let cut = incomplete_utf8_suffix_len(&out);
    out.truncate(out.len() - cut);
    let end = at - cut as u64;
    OutputRead {
        text: lossy(out),
        covers: Covers {
            start,
            end,
            total_bytes: loaded.total,
            missing_bytes: missing,
        },
        lines: None,
        grep: None,
        truncated: None,
    }
}

/// One line of a piece: its number (when known), its offset, its bytes without the newline.
struct Line<'a> {
    number: Option<u64>,
    start: u64,
    bytes: &'a [u8],
}

fn lines_of(piece: &NumberedPiece) -> impl Iterator<Item = Line<'_>> {
    let mut offset = piece.start;
    let body = piece.bytes.strip_suffix(b"\n").unwrap_or(&piece.bytes[..]);
    body.split(|b| *b == b'\n')
        .filter(move |_| !piece.bytes.is_empty())
        .enumerate()
        .map(move |(i, bytes)| {
            let line = Line {
                number: piece.lines_before.map(|n| n + 1 + i as u64),
                start: offset,
                bytes,
            };
            offset += bytes.len() as u64 + 1;
            line
        })
}

fn total_lines(loaded: &Loaded) -> u64 {
    let ends_open = loaded
        .pieces
        .last()
        .is_some_and(|p| p.end() == loaded.total && p.bytes.last() != Some(&b'\n'));
    loaded.newlines + u64::from(ends_open)
}

/// Push `line` cut to `max_line` bytes on a character boundary.
fn push_capped(out: &mut Vec<u8>, line: &[u8], max_line: usize) {
    if line.len() <= max_line {
        out.extend_from_slice(line);
        return;
    }
    let mut cut = max_line.saturating_sub(LINE_TRUNCATION_SUFFIX.len());
    while cut > 0 && line[cut] & 0xC0 == 0x80 {
        cut -= 1;
    }
    out.extend_from_slice(&line[..cut]);
    out.extend_from_slice(LINE_TRUNCATION_SUFFIX.as_bytes());
}

fn read_lines(
    loaded: &Loaded,
    from: Option<i64>,
    to: Option<i64>,
    limits: BufferLimits,
) -> OutputRead {
    let total = total_lines(loaded);
    let resolve = |n: i64| -> u64 {
        if n > 0 {
            n as u64
        } else {
            (total as i64 + 1 + n).max(1) as u64
        }
    };
    let first = from.map_or(1, resolve);
    let last = to.map_or(total, resolve).min(total);
    let mut out = Vec::new();
    let (mut shown_first, mut shown_last) = (0, 0);
    let (mut start, mut end) = (None, 0);
    let mut missing = 0;
    let mut cut_short = false;
    for piece in &loaded.pieces {
        for line in lines_of(piece) {
            let Some(number) = line.number else { continue };
            if number < first || number > last {
                continue;
            }
            if out.len() + line.bytes.len() > MAX_TEXT_BYTES {
                cut_short = true;
                break;
            }
            if shown_first > 0 && number != shown_last + 1 {
                missing += line.start - end;
                out.extend_from_slice(gap_marker(line.start - end).as_bytes());
            }
            if shown_first == 0 {
                shown_first = number;
            }
            shown_last = number;
            start.get_or_insert(line.start);
            end = (line.start + line.bytes.len() as u64 + 1).min(loaded.total);
            push_capped(&mut out, line.bytes, limits.max_line_bytes);
            out.push(b'\n');
        }
        if cut_short {
            break;
        }
    }
    let start = start.unwrap_or(end);
    OutputRead {
        text: lossy(out),
        covers: Covers {
            start,
            end: end.max(start),
            total_bytes: loaded.total,
            missing_bytes: missing,
        },
        lines: Some(LineSpan {
            first: shown_first,
            last: shown_last,
            total,
        }),
        grep: None,
        truncated: None,
    }
}

/// One line to print in a grep result.
struct Shown {
    number: Option<u64>,
    start: u64,
    is_match: bool,
    bytes: Vec<u8>,
}

/// Matching lines with `context` lines around each, `grep -n` style (`N:` a match, `N-`
/// context, `--` between groups).
fn grep(
    loaded: &Loaded,
    regex: &Regex,
    context: usize,
    max_matches: usize,
    max_bytes: usize,
    max_line: usize,
) -> OutputRead {
    let mut matches = 0u64;
    let mut shown: Vec<Shown> = Vec::new();
    let mut printed_bytes = 0usize;
    let mut missing = 0;
    let mut prev_end: Option<u64> = None;
    for piece in &loaded.pieces {
        if let Some(end) = prev_end {
            missing += piece.start.saturating_sub(end);
        }
        prev_end = Some(piece.end());
        let bytes = &piece.bytes[..];
        // Line starts of the lines already looked at, for the context before a match.
        let mut search_at = 0usize;
        let mut counted_to = 0usize;
        let mut line_number = piece.lines_before.map(|n| n + 1);
        let mut last_shown_line_end = 0usize;
        while search_at < bytes.len() {
            let Some(found) = regex.find_at(bytes, search_at) else {
                break;
            };
            let line_start = memchr::memrchr(b'\n', &bytes[..found.start()]).map_or(0, |i| i + 1);
            let line_end = memchr::memchr(b'\n', &bytes[found.start()..])
                .map_or(bytes.len(), |i| found.start() + i);
            search_at = line_end + 1;
            matches += 1;
            if shown.iter().filter(|s| s.is_match).count() >= max_matches
                || printed_bytes >= max_bytes
            {
                continue;
            }
            line_number = line_number.map(|n| n + count_newlines(&bytes[counted_to..line_start]));
            counted_to = line_start;
            // Context before: up to `context` lines, not before what is already shown.
            let mut before = Vec::new();
            let mut cursor = line_start;
            for k in 1..=context {
                if cursor == 0 || cursor <= last_shown_line_end {
                    break;
                }
                let prev_start = memchr::memrchr(b'\n', &bytes[..cursor - 1]).map_or(0, |i| i + 1);
                if prev_start < last_shown_line_end {
                    break;
                }
                before.push((k as u64, prev_start, cursor - 1));
                cursor = prev_start;
            }
            if !shown.is_empty() && cursor > last_shown_line_end {
                shown.push(Shown {
                    number: None,
                    start: u64::MAX,
                    is_match: false,
                    bytes: b"--".to_vec(),
                });
            }
            for (k, a, b) in before.into_iter().rev() {
                shown.push(Shown {
                    number: line_number.map(|n| n - k),
                    start: piece.start + a as u64,
                    is_match: false,
                    bytes: bytes[a..b].to_vec(),
                });
            }
            shown.push(Shown {
                number: line_number,
                start: piece.start + line_start as u64,
                is_match: true,
                bytes: bytes[line_start..line_end].to_vec(),
            });
            last_shown_line_end = (line_end + 1).min(bytes.len());
            // Context after: lines not searched yet; a match among them starts a new line
            // of the result, so stop the context where the next match would be found.
            let mut after_end = last_shown_line_end;
            let mut k = 0;
            while k < context && after_end < bytes.len() {
                let end = memchr::memchr(b'\n', &bytes[after_end..])
                    .map_or(bytes.len(), |i| after_end + i);
                if regex.is_match(&bytes[after_end..end]) {
                    break;
                }
                k += 1;
                shown.push(Shown {
                    number: line_number.map(|n| n + k as u64),
                    start: piece.start + after_end as u64,
                    is_match: false,
                    bytes: bytes[after_end..end].to_vec(),
                });
                after_end = (end + 1).min(bytes.len());
            }
            last_shown_line_end = after_end;
            search_at = search_at.max(after_end);
            printed_bytes = shown.iter().map(|s| s.bytes.len().min(max_line) + 12).sum();
        }
    }
    let shown_matches = shown.iter().filter(|s| s.is_match).count() as u64;
    let mut out = Vec::new();
    for line in &shown {
        match (line.number, line.start) {
            (_, u64::MAX) => {}
            (Some(n), _) => out.extend_from_slice(
                format!("{n}{}", if line.is_match { ':' } else { '-' }).as_bytes(),
            ),
            (None, _) => out.extend_from_slice(if line.is_match { b"?:" } else { b"?-" }),
        }
        push_capped(&mut out, &line.bytes, max_line);
        out.push(b'\n');
    }
    OutputRead {
        text: lossy(out),
        covers: Covers {
            start: loaded
                .pieces
                .first()
                .map_or(0, |p| p.start.min(loaded.total)),
            end: loaded.total,
            total_bytes: loaded.total,
            missing_bytes: missing + loaded.pieces.first().map_or(loaded.total, |p| p.start),
        },
        lines: None,
        grep: Some(GrepCount {
            matches,
            shown: shown_matches,
            omitted: matches - shown_matches,
        }),
        truncated: None,
    }
}

/// The output cut to the buffer's size, error-looking lines (with a little context) first,
/// then as much head and tail as fits.
fn errors_first(loaded: &Loaded, limits: BufferLimits) -> OutputRead {
    let budget = limits.head_bytes + limits.tail_bytes;
    let Ok(regex) = compile_pattern(ERROR_PATTERN) else {
        return read_bytes(loaded, 0);
    };
    let errors = grep(
        loaded,
        &regex,
        2,
        MAX_MATCHES,
        budget / 2,
        limits.max_line_bytes,
    );
    let error_text = errors.text.into_bytes();
    let fill = budget.saturating_sub(error_text.len()) / 2;
    let head = loaded.load_head(fill);
    let tail = loaded.load_tail(fill);
    let mut out = Vec::new();
    out.extend_from_slice(&head);
    let count = errors.grep.map_or(0, |g| g.matches);
    out.extend_from_slice(
        format!("\n... [cut; {count} lines look like errors; shown with line numbers] ...\n")
            .as_bytes(),
    );
    out.extend_from_slice(&error_text);
    out.extend_from_slice(b"... [cut] ...\n");
    out.extend_from_slice(&tail);
    let text = lossy(out);
    let retained = (head.len() + tail.len() + error_text.len()) as u64;
    OutputRead {
        covers: Covers {
            start: 0,
            end: loaded.total,
            total_bytes: loaded.total,
            missing_bytes: loaded.total.saturating_sub(retained),
        },
        truncated: Some(Truncation {
            original_bytes: loaded.total,
            retained_bytes: text.len() as u64,
            omitted_bytes: loaded.total.saturating_sub(retained),
            strategy: "errors_first",
        }),
        text,
        lines: None,
        grep: errors.grep,
    }
}

impl Loaded {
    /// Up to `n` bytes from the start, ending at a line end when there is one.
    fn load_head(&self, n: usize) -> Vec<u8> {
        let Some(first) = self.pieces.first().filter(|p| p.start == 0) else {
            return Vec::new();
        };
        let bytes = &first.bytes[..n.min(first.bytes.len())];
        let end = memchr::memrchr(b'\n', bytes).map_or(bytes.len(), |i| i + 1);
        bytes[..end].to_vec()
    }

    /// Up to `n` bytes from the end, starting after a line end when there is one.
    fn load_tail(&self, n: usize) -> Vec<u8> {
        let Some(last) = self.pieces.last().filter(|p| p.end() == self.total) else {
            return Vec::new();
        };
        let bytes = &last.bytes[last.bytes.len() - n.min(last.bytes.len())..];
        let start = memchr::memchr(b'\n', bytes).map_or(0, |i| i + 1);
        let start = if start >= bytes.len() { 0 } else { start };
        bytes[start..].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(text: &str) -> Loaded {
        Loaded {
            pieces: vec![NumberedPiece {
                start: 0,
                bytes: text.as_bytes().to_vec(),
                lines_before: Some(0),
            }],
            total: text.len() as u64,
            newlines: count_newlines(text.as_bytes()),
        }
    }

    fn numbered(n: usize) -> String {
        (1..=n).map(|i| format!("line {i}\n")).collect()
    }

    #[test]
    fn line_ranges_parse_and_resolve_from_either_end() {
        assert_eq!(parse_line_range("1:3"), Ok((Some(1), Some(3))));
        assert_eq!(parse_line_range("-2:"), Ok((Some(-2), None)));
        assert!(parse_line_range("0:3").is_err());
        assert!(parse_line_range("x").is_err());
        let l = loaded(&numbered(10));
        let r = read_lines(&l, Some(-2), None, BufferLimits::default());
        assert_eq!(r.text, "line 9\nline 10\n");
        assert_eq!(
            r.lines,
            Some(LineSpan {
                first: 9,
                last: 10,
                total: 10
            })
        );
        assert_eq!(r.covers.end, l.total);
        let r = read_lines(&l, Some(2), Some(3), BufferLimits::default());
        assert_eq!(r.text, "line 2\nline 3\n");
        assert_eq!(r.covers.start, 7);
    }

    #[test]
    fn grep_numbers_matches_and_context_and_counts_what_is_left_out() {
        let l = loaded(&numbered(30));
        let re = compile_pattern(r"line (5|7|20)$").unwrap();
        let r = grep(&l, &re, 1, 2, MAX_TEXT_BYTES, 2048);
        assert_eq!(r.text, "4-line 4\n5:line 5\n6-line 6\n7:line 7\n8-line 8\n");
        assert_eq!(
            r.grep,
            Some(GrepCount {
                matches: 3,
                shown: 2,
                omitted: 1
            })
        );
        let r = grep(&l, &re, 0, 10, MAX_TEXT_BYTES, 2048);
        assert_eq!(r.text, "5:line 5\n--\n7:line 7\n--\n20:line 20\n");
    }

    #[test]
    fn a_grep_after_a_cut_middle_keeps_true_line_numbers() {
        let text = numbered(100);
        let tail_start = text.find("line 90\n").unwrap();
        let l = Loaded {
            pieces: vec![
                NumberedPiece {
                    start: 0,
                    bytes: text.as_bytes()[..14].to_vec(),
                    lines_before: Some(0),
                },
                NumberedPiece {
                    start: tail_start as u64,
                    bytes: text.as_bytes()[tail_start..].to_vec(),
                    lines_before: Some(89),
                },
            ],
            total: text.len() as u64,
            newlines: 100,
        };
        let r = grep(
            &l,
            &compile_pattern("line 95").unwrap(),
            0,
            10,
            MAX_TEXT_BYTES,
            2048,
        );
        assert_eq!(r.text, "95:line 95\n");
        assert_eq!(r.covers.missing_bytes, tail_start as u64 - 14);
    }

    #[test]
    fn byte_reads_never_end_in_half_a_character_and_mark_gaps() {
        let l = Loaded {
            pieces: vec![
                NumberedPiece {
                    start: 0,
                    bytes: b"ab".to_vec(),
                    lines_before: Some(0),
                },
                NumberedPiece {
                    start: 10,
                    bytes: "cé".as_bytes()[..2].to_vec(),
                    lines_before: None,
                },
            ],
            total: 13,
            newlines: 0,
        };
        let r = read_bytes(&l, 0);
        assert_eq!(r.covers.end, 11);
        assert_eq!(r.covers.missing_bytes, 8);
        assert!(
            r.text.starts_with("ab") && r.text.ends_with('c'),
            "{}",
            r.text
        );
    }

    #[test]
    fn errors_first_keeps_the_middle_error_and_some_head_and_tail() {
        let mut text = numbered(5000);
        text.insert_str(
            text.find("line 2500\n").unwrap(),
            "error[E0308]: mismatched types\n",
        );
        let r = errors_first(
            &loaded(&text),
            BufferLimits {
                head_bytes: 1024,
                tail_bytes: 1024,
                max_line_bytes: 2048,
            },
        );
        assert!(r.text.starts_with("line 1\n"), "{}", r.text);
        assert!(
            r.text.contains(":error[E0308]: mismatched types"),
            "{}",
            r.text
        );
        assert!(r.text.trim_end().ends_with("line 5000"), "{}", r.text);
        assert_eq!(r.truncated.unwrap().strategy, "errors_first");
    }
}
