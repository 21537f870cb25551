//! `ampersand`: turns a trailing shell `&` into `background = true`.
//!
//! Models often start long-running commands as `npm run dev &`. Under `sh -c` that forks
//! the server and lets the shell exit at once: procwarden then tracks a process that has
//! already finished, while the real one runs untracked (no output, no signals, no reaping).
//! This plugin strips such a trailing `&` (and the whitespace or comment after it) and sets
//! `background`, so the command itself becomes the tracked process.
//!
//! A trailing `&` is stripped only when it is a real control operator:
//!
//! | command                | result                         |
//! |------------------------|--------------------------------|
//! | `sleep 5 &`            | `sleep 5`, background          |
//! | `cmd 2>&1 &`           | `cmd 2>&1`, background         |
//! | `a && b &`             | `a && b`, background           |
//! | `a & b &`              | `a & b`, background (`a` still forks, untracked) |
//! | `sleep 5 & # note`     | `sleep 5`, background          |
//! | `a && b`, `a & b`      | unchanged (`&` not trailing)   |
//! | `cmd &&`, `cmd \|&`     | unchanged (not a background `&`; the shell reports the error) |
//! | `echo x \&`            | unchanged (escaped)            |
//! | `echo 'x &'`, `echo "x &"` | unchanged (quoted)         |
//! | `echo hi # &`          | unchanged (comment)            |
//! | `&`                    | unchanged (nothing to run; the shell reports the error) |
//!
//! Unlike a plain suffix test, the scanner knows single and double quotes, `$'...'`,
//! backslash escapes, line continuations and `#` comments. When it cannot be sure (an
//! unterminated quote, for instance inside a here-document it does not parse) it leaves the
//! command unchanged: the worst case is the old behaviour, never a mangled command.
//!
//! # Configuration
//!
//! No settings. Place it first in the chain, so later plugins see the final command:
//!
//! ```toml
//! [[plugin]]
//! path = "ampersand.wasm"
//! ```

#![cfg_attr(target_arch = "wasm32", no_std)]
// On wasm32 the component is `no_std`: it imports no WASI, so the host creates one core
// instance per call instead of eighteen. Native builds (the unit tests) keep `std`.
extern crate alloc;
#[cfg(target_arch = "wasm32")]
use procwarden_plugin_bare as _;

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;

/// If `command` ends in a background `&` (unquoted, unescaped, not part of `&&`, `|&`, `>&`
/// or `;&`, and with something before it to run), the command without that `&` and without
/// the whitespace, line continuations and comment around it. `None` means "leave it alone".
pub fn strip_trailing_ampersand(command: &str) -> Option<&str> {
    let scan = Scanner::scan(command)?;
    let last = scan.last?;
    let before = scan.before_last?;
    if last.kind != Kind::Ampersand || before.kind != Kind::Word {
        return None;
    }
    Some(&command[..before.end])
}

/// What the request becomes: `Some((command, background))` if the plugin rewrites it.
pub fn rewrite(command: &str) -> Option<(String, bool)> {
    strip_trailing_ampersand(command).map(|stripped| (stripped.to_owned(), true))
}

/// The log line for a rewrite of `before` (the component and the host's native built-in write
/// the same one, at DEBUG). It names no part of the command: commands can carry secrets and be
/// huge, and the agent logs each command itself, cut and hashed.
pub fn rewrite_note(before: &str) -> String {
    format!(
        "stripped a trailing `&` from a {}-byte command and set background",
        before.len()
    )
}

/// The kind of a significant piece of the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An unquoted, unescaped `&`.
    Ampersand,
    /// Another unquoted control or redirection character: `|`, `;`, `(`, `<`, `>`.
    Operator,
    /// Anything else: word characters, quoted text, escaped characters, `)`.
    Word,
}

#[derive(Debug, Clone, Copy)]
struct Unit {
    kind: Kind,
    /// Byte offset just after the unit.
    end: usize,
}

#[derive(Debug, Default)]
struct Scanner {
    last: Option<Unit>,
    before_last: Option<Unit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
    /// Bash's `$'...'`, where a backslash escapes the next character.
    AnsiC,
}

impl Scanner {
    fn push(&mut self, kind: Kind, end: usize) {
        self.before_last = self.last.replace(Unit { kind, end });
    }

    /// The last two significant units of `command`, or `None` if its quoting is unbalanced.
    /// Works on bytes: every character the shell treats specially is ASCII, and the bytes of
    /// a multi-byte UTF-8 character are never ASCII.
    fn scan(command: &str) -> Option<Scanner> {
        let bytes = command.as_bytes();
        let mut scan = Scanner::default();
        let mut quote = Quote::None;
        // Whether the next byte would start a word (for `#` comments).
        let mut at_word_start = true;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match quote {
                Quote::Single => {
                    if b == b'\'' {
                        quote = Quote::None;
                    }
                    scan.push(Kind::Word, i + 1);
                    i += 1;
                }
                Quote::Double | Quote::AnsiC => {
                    let closing = if quote == Quote::Double { b'"' } else { b'\'' };
                    if b == b'\\' && i + 1 < bytes.len() {
                        i += 2;
                    } else {
                        if b == closing {
                            quote = Quote::None;
                        }
                        i += 1;
                    }
                    scan.push(Kind::Word, i);
                }
                Quote::None => match b {
                    b'\\' => {
                        if bytes.get(i + 1) == Some(&b'\n') {
                            // Line continuation: as if neither byte were there.
                            i += 2;
                        } else {
                            i = (i + 2).min(bytes.len());
                            scan.push(Kind::Word, i);
                            at_word_start = false;
                        }
                    }
                    b' ' | b'\t' | b'\n' | b'\r' => {
                        at_word_start = true;
                        i += 1;
                    }
                    b'#' if at_word_start => {
                        // A comment runs to the end of the line.
                        while i < bytes.len() && bytes[i] != b'\n' {
                            i += 1;
                        }
                    }
                    b'\'' | b'"' => {
                        quote = if b == b'"' {
                            Quote::Double
                        } else if i > 0 && bytes[i - 1] == b'$' && !is_escaped(bytes, i - 1) {
                            Quote::AnsiC
                        } else {
                            Quote::Single
                        };
                        i += 1;
                        scan.push(Kind::Word, i);
                        at_word_start = false;
                    }
                    b'&' | b'|' | b';' | b'(' | b'<' | b'>' => {
                        let kind = if b == b'&' {
                            Kind::Ampersand
                        } else {
                            Kind::Operator
                        };
                        i += 1;
                        scan.push(kind, i);
                        at_word_start = true;
                    }
                    _ => {
                        i += 1;
                        scan.push(Kind::Word, i);
                        at_word_start = false;
                    }
                },
            }
        }
        (quote == Quote::None).then_some(scan)
    }
}

/// Whether the byte at `at` is escaped by an odd number of backslashes before it (as the `$`
/// of `\$'...'`, which then opens an ordinary single-quoted string).
fn is_escaped(bytes: &[u8], at: usize) -> bool {
    let backslashes = bytes[..at]
        .iter()
        .rev()
        .take_while(|&&b| b == b'\\')
        .count();
    backslashes % 2 == 1
}

/// The component's `on-start`: a thin adapter over [`rewrite`]. The host runs the same
/// logic natively for `builtin:ampersand`.
#[cfg(target_arch = "wasm32")]
mod component {
    use procwarden_plugin_sdk::{Context, Decision, Guest, LogLevel, StartRequest, log};

    /// The plugin; its `on-start` is exported with [`procwarden_plugin_sdk::export!`].
    pub struct Ampersand;

    impl Guest for Ampersand {
        fn on_start(mut req: StartRequest, _ctx: Context) -> Decision {
            // Stripped even when the request is already `background = true`: left in place, the
            // `&` would make `sh` fork the command and exit at once, so the tracked process would
            // be the finished shell while the real command ran untracked.
            if let Some((command, background)) = super::rewrite(&req.command) {
                log(LogLevel::Debug, &super::rewrite_note(&req.command));
                req.command = command;
                req.background = background;
            }
            Decision::Allow(req)
        }
    }

    procwarden_plugin_sdk::export!(Ampersand);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn unchanged(command: &str) {
        assert_eq!(strip_trailing_ampersand(command), None, "{command:?}");
    }

    #[track_caller]
    fn stripped(command: &str, expected: &str) {
        assert_eq!(
            strip_trailing_ampersand(command),
            Some(expected),
            "{command:?}"
        );
    }

    #[test]
    fn non_trailing_and_double_ampersands_are_left_alone() {
        unchanged("a && b");
        unchanged("a & b");
        unchanged("cmd &&");
        unchanged("cmd &&   ");
        unchanged("cmd |&");
        unchanged("cmd1 | cmd2 |&");
        unchanged("cmd &>/dev/null");
        unchanged("cmd 2>&1");
        unchanged("cmd >&");
        unchanged("cmd 2>& &");
        unchanged("a & &");
        unchanged("a; &");
        unchanged("( &");
    }

    #[test]
    fn quoted_and_escaped_ampersands_are_left_alone() {
        unchanged("echo 'x &'");
        unchanged("echo \"x &\"");
        unchanged("echo x \\&");
        unchanged("echo x\\&");
        unchanged("echo \"a\\\"&\"");
        unchanged("echo $'a\\'&'");
        unchanged("echo `true &`");
    }

    #[test]
    fn empty_and_lone_ampersand_are_left_alone() {
        unchanged("");
        unchanged("   ");
        unchanged("&");
        unchanged("  &  ");
        unchanged("# just a comment &");
    }

    #[test]
    fn unbalanced_quotes_are_left_alone() {
        unchanged("echo 'x &");
        unchanged("echo \"x &");
        unchanged("echo it's &");
    }

    #[test]
    fn trailing_ampersand_is_stripped_with_whitespace() {
        stripped("sleep 5 &", "sleep 5");
        stripped("sleep 5 &   ", "sleep 5");
        stripped("sleep 5&", "sleep 5");
        stripped("sleep 5 &\n", "sleep 5");
        stripped("sleep 5\t&\t\n  ", "sleep 5");
        stripped("  npm run dev &", "  npm run dev");
    }

    #[test]
    fn redirections_and_lists_before_the_ampersand_stay() {
        stripped("cmd 2>&1 &", "cmd 2>&1");
        stripped("cmd &>/dev/null &", "cmd &>/dev/null");
        stripped("cmd >out.log 2>&1 &", "cmd >out.log 2>&1");
        stripped("cmd1 && cmd2 &", "cmd1 && cmd2");
        stripped("a & b &", "a & b");
        stripped("a | b &", "a | b");
        stripped("(sleep 5) &", "(sleep 5)");
        stripped("{ sleep 5; } &", "{ sleep 5; }");
        stripped("nohup ./server &", "nohup ./server");
    }

    #[test]
    fn quotes_and_escapes_before_the_ampersand_stay() {
        stripped("echo \"a\\\"&\" &", "echo \"a\\\"&\"");
        stripped("echo 'x &' &", "echo 'x &'");
        stripped("echo x \\& &", "echo x \\&");
        stripped("echo $'a\\'b' &", "echo $'a\\'b'");
        stripped("echo \\$'a' &", "echo \\$'a'");
        // An escaped space is part of the word and is kept.
        stripped("echo a\\  &", "echo a\\ ");
        stripped("echo ☃ &", "echo ☃");
    }

    #[test]
    fn comments_and_line_continuations_around_the_ampersand_go() {
        stripped("sleep 5 & # start the server", "sleep 5");
        stripped("sleep 5 \\\n&", "sleep 5");
        stripped("sleep 5 &\n# done\n", "sleep 5");
        unchanged("echo hi # &");
        unchanged("echo hi #&");
        // `#` inside a word is not a comment.
        stripped("echo a#b &", "echo a#b");
        stripped("echo ${#x} &", "echo ${#x}");
    }

    #[test]
    fn multi_line_commands() {
        stripped("cd /tmp\n./server &", "cd /tmp\n./server");
        unchanged("./server &\necho started");
    }

    #[test]
    fn rewrite_sets_background() {
        assert_eq!(rewrite("sleep 5 &"), Some(("sleep 5".to_owned(), true)));
        assert_eq!(rewrite("sleep 5"), None);
    }

    #[test]
    fn the_rewrite_note_names_no_part_of_the_command() {
        let note = rewrite_note("curl -H 'Authorization: Bearer s3cr3t' example.test &");
        assert!(!note.contains("s3cr3t"), "{note}");
        assert!(!note.contains("curl"), "{note}");
        assert!(note.contains("53-byte"), "{note}");
    }
}
