//! Bounded head+tail output buffer.
//!
//! A process may print gigabytes; a model can read a few kilobytes. We keep the first
//! `head_bytes` and the last `tail_bytes` of the combined output, count everything, and render
//! the two halves with an omission marker. Memory per process is `head_bytes + tail_bytes`
//! whatever the output size or line length. Long lines are cut only when rendering.

use serde::Serialize;

/// Marker appended to a line cut at `max_line_bytes`.
pub const LINE_TRUNCATION_SUFFIX: &str = " ... [truncated]";

/// Sizes of one process's output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferLimits {
    pub head_bytes: usize,
    pub tail_bytes: usize,
    pub max_line_bytes: usize,
}

impl Default for BufferLimits {
    fn default() -> Self {
        Self {
            head_bytes: 16 * 1024,
            tail_bytes: 16 * 1024,
            max_line_bytes: 2048,
        }
    }
}

/// How rendered output differs from what the process wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Truncation {
    /// Bytes the process wrote in total.
    pub original_bytes: u64,
    /// Bytes of the rendered text, markers included.
    pub retained_bytes: u64,
    /// Bytes of the original output the rendered text does not contain
    /// (the gap between head and tail, plus the cut-off ends of long lines).
    pub omitted_bytes: u64,
    /// Always `head_tail`.
    pub strategy: &'static str,
}

/// Output rendered for a client: valid UTF-8, with honest truncation facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedOutput {
    pub text: String,
    pub truncated: Option<Truncation>,
}

/// The first bytes of the output, then a ring of the last bytes.
#[derive(Debug)]
pub struct HeadTailBuffer {
    limits: BufferLimits,
    head: Vec<u8>,
    tail: Ring,
    total: u64,
}

impl HeadTailBuffer {
    pub fn new(limits: BufferLimits) -> Self {
        Self {
            limits,
            head: Vec::new(),
            tail: Ring::new(limits.tail_bytes),
            total: 0,
        }
    }

    /// Append output. Never fails and never grows past the configured sizes.
    pub fn write(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let head_room = self.limits.head_bytes - self.head.len();
        if head_room > 0 {
            let n = head_room.min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        if !data.is_empty() {
            self.tail.push(data);
        }
    }

    /// Bytes written so far, stored or not.
    pub fn total_written(&self) -> u64 {
        self.total
    }

    /// Bytes held in memory.
    pub fn stored_len(&self) -> usize {
        self.head.len() + self.tail.len
    }

    /// The stored bytes with their offsets in the whole output: the head, then the tail
    /// (one piece when they meet).
    pub fn pieces(&self) -> Vec<crate::spool::Piece> {
        let tail = self.tail.to_vec();
        let tail_start = self.total - tail.len() as u64;
        let mut head = crate::spool::Piece {
            start: 0,
            bytes: self.head.clone(),
        };
        if tail.is_empty() {
            return vec![head];
        }
        if tail_start == head.end() {
            head.bytes.extend_from_slice(&tail);
            return vec![head];
        }
        vec![
            head,
            crate::spool::Piece {
                start: tail_start,
                bytes: tail,
            },
        ]
    }

    /// A copy of output bytes `[from, to)` when the buffer holds all of them.
    pub fn copy_range(&self, from: u64, to: u64) -> Option<Vec<u8>> {
        let head_len = self.head.len() as u64;
        if to <= head_len {
            return Some(self.head[from as usize..to as usize].to_vec());
        }
        let tail_start = self.total - self.tail.len as u64;
        if from < tail_start || to > self.total {
            return None;
        }
        let skip = (from - tail_start) as usize;
        let take = (to - from) as usize;
        let first = (self.tail.start + skip) % self.tail.cap.max(1);
        let mut out = Vec::with_capacity(take);
        let run = take.min(self.tail.cap - first);
        out.extend_from_slice(&self.tail.buf[first..first + run]);
        out.extend_from_slice(&self.tail.buf[..take - run]);
        Some(out)
    }

    /// Render head and tail for a client.
    pub fn render(&self) -> RenderedOutput {
        let tail = self.tail.to_vec();
        let gap = self.total - self.head.len() as u64 - tail.len() as u64;
        let mut omitted = 0u64;
        let mut out = Vec::with_capacity(self.head.len() + tail.len() + 64);
        if gap == 0 {
            // Head and tail are contiguous: render them as one text so a line
            // spanning the seam is treated as the single line it is.
            let mut all = self.head.clone();
            all.extend_from_slice(&tail);
            omitted += cap_lines(&all, self.limits.max_line_bytes, &mut out);
        } else {
            // Never render half a character at the seam: the partial bytes count as omitted.
            let head_end = self.head.len() - incomplete_utf8_suffix_len(&self.head);
            let tail_start = leading_continuation_len(&tail);
            let omitted_here = gap + (self.head.len() - head_end) as u64 + tail_start as u64;
            omitted += cap_lines(&self.head[..head_end], self.limits.max_line_bytes, &mut out);
            out.extend_from_slice(omission_marker(omitted_here).as_bytes());
            omitted += omitted_here;
            omitted += cap_lines(&tail[tail_start..], self.limits.max_line_bytes, &mut out);
        }
        let text = match String::from_utf8(out) {
            Ok(text) => text,
            // Binary output: replace invalid sequences rather than fail the whole read.
            Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
        };
        let truncated = (omitted > 0).then_some(Truncation {
            original_bytes: self.total,
            retained_bytes: text.len() as u64,
            omitted_bytes: omitted,
            strategy: "head_tail",
        });
        RenderedOutput { text, truncated }
    }
}

fn omission_marker(omitted: u64) -> String {
    format!("\n\n... [omitted {omitted} bytes] ...\n\n")
}

/// Copy `text` into `out`, cutting every line longer than `max_line` to exactly `max_line`
/// bytes or fewer (ending with the truncation suffix, on a character boundary).
/// Returns how many bytes of `text` were left out.
fn cap_lines(text: &[u8], max_line: usize, out: &mut Vec<u8>) -> u64 {
    if text.len() <= max_line {
        out.extend_from_slice(text);
        return 0;
    }
    let keep = max_line.saturating_sub(LINE_TRUNCATION_SUFFIX.len());
    let mut omitted = 0u64;
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        if line.len() <= max_line {
            out.extend_from_slice(line);
            continue;
        }
        let mut cut = keep;
        while cut > 0 && is_continuation(line[cut]) {
            cut -= 1;
        }
        out.extend_from_slice(&line[..cut]);
        out.extend_from_slice(LINE_TRUNCATION_SUFFIX.as_bytes());
        omitted += (line.len() - cut) as u64;
    }
    omitted
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// Length of a UTF-8 sequence cut short at the end of `bytes` (0 if it ends cleanly).
pub(crate) fn incomplete_utf8_suffix_len(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(4) {
        let b = bytes[bytes.len() - back];
        if is_continuation(b) {
            continue;
        }
        let needed = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

/// Continuation bytes at the start of `bytes`: the rest of a character whose start was lost.
fn leading_continuation_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take(3)
        .take_while(|b| is_continuation(**b))
        .count()
}

/// Fixed-size ring keeping the last `cap` bytes written; allocated on first use.
#[derive(Debug)]
struct Ring {
    buf: Vec<u8>,
    cap: usize,
    start: usize,
    len: usize,
}

impl Ring {
    fn new(cap: usize) -> Self {
        Self {
            buf: Vec::new(),
            cap,
            start: 0,
            len: 0,
        }
    }

    fn push(&mut self, mut data: &[u8]) {
        if self.cap == 0 {
            return;
        }
        if self.buf.is_empty() {
            self.buf = vec![0; self.cap];
        }
        if data.len() >= self.cap {
            data = &data[data.len() - self.cap..];
            self.buf.copy_from_slice(data);
            self.start = 0;
            self.len = self.cap;
            return;
        }
        let write_at = (self.start + self.len) % self.cap;
        let first = data.len().min(self.cap - write_at);
        self.buf[write_at..write_at + first].copy_from_slice(&data[..first]);
        self.buf[..data.len() - first].copy_from_slice(&data[first..]);
        let overflow = (self.len + data.len()).saturating_sub(self.cap);
        self.len = (self.len + data.len()).min(self.cap);
        self.start = (self.start + overflow) % self.cap;
    }

    fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        let first = self.len.min(self.cap - self.start);
        if self.len > 0 {
            out.extend_from_slice(&self.buf[self.start..self.start + first]);
            out.extend_from_slice(&self.buf[..self.len - first]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(head: usize, tail: usize) -> HeadTailBuffer {
        HeadTailBuffer::new(BufferLimits {
            head_bytes: head,
            tail_bytes: tail,
            max_line_bytes: 2048,
        })
    }

    #[test]
    fn ranges_are_copied_only_when_held() {
        let mut buf = sized(4, 6);
        for chunk in [&b"HEAD"[..], b"0123456789", b"abcdef"] {
            buf.write(chunk);
        }
        // Held: head [0, 4) and the ring's last 6 bytes [14, 20) = "abcdef".
        assert_eq!(buf.copy_range(1, 3).as_deref(), Some(&b"EA"[..]));
        assert_eq!(buf.copy_range(15, 20).as_deref(), Some(&b"bcdef"[..]));
        assert_eq!(buf.copy_range(13, 20), None);
        assert_eq!(buf.copy_range(3, 15), None);
    }

    #[test]
    fn empty_buffer_renders_nothing() {
        let buf = HeadTailBuffer::new(BufferLimits::default());
        let out = buf.render();
        assert_eq!(out.text, "");
        assert_eq!(out.truncated, None);
        assert_eq!(buf.total_written(), 0);
        assert_eq!(buf.stored_len(), 0);
    }

    #[test]
    fn small_output_is_verbatim() {
        let mut buf = HeadTailBuffer::new(BufferLimits::default());
        buf.write(b"hello\nworld\n");
        assert_eq!(buf.render().text, "hello\nworld\n");
        assert_eq!(buf.render().truncated, None);
        assert_eq!(buf.stored_len(), 12);
    }

    #[test]
    fn byte_at_a_time_is_verbatim() {
        let mut buf = sized(4, 4);
        for b in b"hello wo" {
            buf.write(&[*b]);
        }
        assert_eq!(buf.render().text, "hello wo");
        assert_eq!(buf.render().truncated, None);
    }

    #[test]
    fn exactly_head_plus_tail_is_verbatim_without_a_fake_seam() {
        let mut buf = sized(10, 10);
        buf.write(b"0123456789abcdefghij");
        let out = buf.render();
        assert_eq!(out.text, "0123456789abcdefghij");
        assert_eq!(out.truncated, None);
    }

    #[test]
    fn overflow_keeps_head_and_tail_and_counts_the_gap() {
        let mut buf = sized(10, 10);
        buf.write(&[b'A'; 50]);
        buf.write(&[b'Z'; 50]);
        let out = buf.render();
        assert!(out.text.starts_with(&"A".repeat(10)));
        assert!(out.text.ends_with(&"Z".repeat(10)));
        assert!(out.text.contains("... [omitted 80 bytes] ..."));
        let t = out.truncated.expect("truncation reported");
        assert_eq!(t.original_bytes, 100);
        assert_eq!(t.omitted_bytes, 80);
        assert_eq!(t.retained_bytes, out.text.len() as u64);
        assert_eq!(t.strategy, "head_tail");
        assert_eq!(buf.stored_len(), 20);
    }

    #[test]
    fn one_byte_past_the_boundary_is_reported() {
        let mut buf = sized(10, 10);
        buf.write(b"0123456789abcdefghijX");
        let out = buf.render();
        assert!(out.text.starts_with("0123456789"));
        assert!(out.text.ends_with("bcdefghijX"));
        assert_eq!(out.truncated.unwrap().omitted_bytes, 1);
    }

    #[test]
    fn tail_ring_wraps_in_order() {
        let mut buf = sized(5, 10);
        for chunk in [&b"HEADD"[..], b"0123456789", b"abcdefghij", b"ABCDE"] {
            buf.write(chunk);
        }
        let out = buf.render();
        assert!(out.text.starts_with("HEADD"));
        assert!(out.text.ends_with("fghijABCDE"), "{:?}", out.text);
    }

    #[test]
    fn memory_is_bounded_for_huge_output_without_newlines() {
        let mut buf = HeadTailBuffer::new(BufferLimits::default());
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..48 {
            buf.write(&chunk); // 3 MiB, one line
        }
        assert!(buf.stored_len() <= 32 * 1024);
        assert!(buf.head.capacity() <= 16 * 1024 && buf.tail.buf.capacity() <= 16 * 1024);
        let out = buf.render();
        assert_eq!(buf.total_written(), 3 * 1024 * 1024);
        assert!(
            out.text.len() <= 2 * 2048 + 64,
            "rendered {} bytes",
            out.text.len()
        );
        assert_eq!(out.truncated.unwrap().original_bytes, 3 * 1024 * 1024);
    }

    #[test]
    fn many_chunks_keep_exact_totals() {
        let mut buf = HeadTailBuffer::new(BufferLimits::default());
        let mut line = vec![b'a'; 4096];
        line.push(b'\n');
        let mut written = 0u64;
        while written < 5 * 1024 * 1024 {
            buf.write(&line);
            written += line.len() as u64;
        }
        assert_eq!(buf.total_written(), written);
        let t = buf.render().truncated.unwrap();
        assert_eq!(t.original_bytes, written);
        assert!(t.omitted_bytes > 0);
    }

    #[test]
    fn long_line_is_cut_with_a_marker() {
        let mut buf = HeadTailBuffer::new(BufferLimits::default());
        buf.write(&vec![b'x'; 2048 + 500]);
        let out = buf.render();
        assert_eq!(out.text.lines().count(), 1);
        assert_eq!(out.text.len(), 2048);
        assert!(out.text.ends_with(LINE_TRUNCATION_SUFFIX));
        let t = out.truncated.expect("line cut is reported");
        assert_eq!(
            t.omitted_bytes,
            2048 + 500 - (2048 - LINE_TRUNCATION_SUFFIX.len()) as u64
        );
    }

    #[test]
    fn only_long_lines_are_cut() {
        let mut buf = HeadTailBuffer::new(BufferLimits::default());
        buf.write(b"short\n");
        buf.write(&vec![b'm'; 2148]);
        buf.write(b"\nafter\n");
        let out = buf.render();
        let lines: Vec<&str> = out.text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "short");
        assert!(lines[1].ends_with(LINE_TRUNCATION_SUFFIX));
        assert_eq!(lines[2], "after");
    }

    #[test]
    fn long_line_in_the_tail_is_cut_too() {
        let mut buf = HeadTailBuffer::new(BufferLimits {
            head_bytes: 20,
            tail_bytes: 5000,
            max_line_bytes: 2048,
        });
        buf.write(&[b'h'; 20]);
        buf.write(b"\n");
        buf.write(&vec![b't'; 4000]);
        let out = buf.render();
        let last = out.text.lines().last().unwrap();
        assert!(last.len() <= 2048 && last.ends_with(LINE_TRUNCATION_SUFFIX));
    }

    #[test]
    fn utf8_split_at_the_head_boundary_is_not_rendered_as_garbage() {
        // "é" is two bytes; the head ends after its first byte.
        let mut buf = sized(5, 4);
        buf.write("abcdé".as_bytes()); // a b c d 0xC3 | 0xA9
        buf.write(b"0123456789");
        let out = buf.render();
        assert!(
            out.text.starts_with("abcd\n\n... [omitted"),
            "{:?}",
            out.text
        );
        assert!(!out.text.contains('\u{FFFD}'));
        assert!(out.text.ends_with("6789"));
        // 0xC3 and 0xA9 plus the 6 bytes between head and tail.
        assert_eq!(out.truncated.unwrap().omitted_bytes, 8);
    }

    #[test]
    fn utf8_split_at_the_tail_start_is_not_rendered_as_garbage() {
        let mut buf = sized(4, 5);
        buf.write(b"head");
        buf.write("xxxxxé€".as_bytes()); // tail keeps the last 5 bytes: 0xA9 + "€" (3 bytes)... plus 1
        let out = buf.render();
        assert!(!out.text.contains('\u{FFFD}'), "{:?}", out.text);
        assert!(out.text.ends_with('€'));
    }

    #[test]
    fn utf8_is_never_split_when_cutting_a_long_line() {
        let mut buf = HeadTailBuffer::new(BufferLimits {
            head_bytes: 1 << 20,
            tail_bytes: 0,
            max_line_bytes: 20,
        });
        buf.write("ééééééééééééééééééééé".as_bytes());
        let out = buf.render();
        assert!(!out.text.contains('\u{FFFD}'));
        assert!(out.text.len() <= 20);
        assert!(out.text.ends_with(LINE_TRUNCATION_SUFFIX));
    }

    #[test]
    fn binary_output_is_valid_text() {
        let mut buf = HeadTailBuffer::new(BufferLimits::default());
        buf.write(&[0xff, 0xfe, b'o', b'k']);
        assert!(buf.render().text.ends_with("ok"));
    }

    #[test]
    fn ring_keeps_only_the_last_bytes_of_a_big_write() {
        let mut ring = Ring::new(4);
        ring.push(b"ab");
        ring.push(b"0123456789");
        assert_eq!(ring.to_vec(), b"6789");
        ring.push(b"xy");
        assert_eq!(ring.to_vec(), b"89xy");
    }
}
