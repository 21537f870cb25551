//! Bytes read in chunks as JSON strings: a UTF-8 sequence split across two reads is kept
//! whole, and bytes that are not UTF-8 become U+FFFD.

/// Carries an incomplete trailing sequence over to the next chunk.
#[derive(Debug, Default)]
pub struct Utf8Chunks {
    pending: Vec<u8>,
}

impl Utf8Chunks {
    /// The text of `chunk` after what was pending; at `last`, nothing is held back.
    pub fn push(&mut self, chunk: &[u8], last: bool) -> String {
        self.pending.extend_from_slice(chunk);
        let keep = if last {
            0
        } else {
            match std::str::from_utf8(&self.pending) {
                Ok(_) => 0,
                // Incomplete at the end (no error length): hold those bytes back.
                Err(err) if err.error_len().is_none() => self.pending.len() - err.valid_up_to(),
                Err(_) => incomplete_tail(&self.pending),
            }
        };
        let split = self.pending.len() - keep;
        let rest = self.pending.split_off(split);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        text
    }
}

/// Bytes at the end that start a sequence not finished yet (at most 3).
fn incomplete_tail(bytes: &[u8]) -> usize {
    let tail_start = bytes.len().saturating_sub(3);
    (tail_start..bytes.len())
        .find(|&i| {
            std::str::from_utf8(&bytes[i..])
                .is_err_and(|e| e.error_len().is_none() && e.valid_up_to() == 0)
        })
        .map_or(0, |i| bytes.len() - i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_sequence_is_kept_whole_and_invalid_bytes_are_replaced() {
        let mut chunks = Utf8Chunks::default();
        let e = "é".as_bytes();
        assert_eq!(chunks.push(&[b'a', e[0]], false), "a");
        assert_eq!(chunks.push(&[e[1], b'b'], false), "éb");
        assert_eq!(chunks.push(&[0xff, b'c', e[0]], false), "\u{fffd}c");
        assert_eq!(chunks.push(&[], true), "\u{fffd}");
    }
}
