//! How a command appears in the agent's log: commands can be huge and can carry secrets, so
//! the log gets at most the first [`LOGGED_COMMAND_BYTES`] bytes and a hash of the whole,
//! enough to tell commands apart and to match a log line to a known command.

use std::hash::{Hash, Hasher};

/// Most bytes of a command written to the log.
pub const LOGGED_COMMAND_BYTES: usize = 200;

/// `command` as the log shows it: whole when short, else its first bytes (cut on a character
/// boundary), its length and a hash of the whole.
pub fn loggable_command(command: &str) -> String {
    if command.len() <= LOGGED_COMMAND_BYTES {
        return command.to_owned();
    }
    let mut end = LOGGED_COMMAND_BYTES;
    while !command.is_char_boundary(end) {
        end -= 1;
    }
    // SipHash with fixed keys: the same command hashes the same in every run of this build.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    command.hash(&mut hasher);
    format!(
        "{}… [{} bytes, hash {:016x}]",
        &command[..end],
        command.len(),
        hasher.finish()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_commands_are_logged_whole() {
        assert_eq!(loggable_command("cargo test"), "cargo test");
    }

    #[test]
    fn long_commands_are_cut_with_their_length_and_a_hash() {
        let secret_tail = format!("{} TOKEN=hunter2", "x".repeat(300));
        let logged = loggable_command(&secret_tail);
        assert!(
            logged.starts_with(&"x".repeat(LOGGED_COMMAND_BYTES)),
            "{logged}"
        );
        assert!(!logged.contains("hunter2"), "{logged}");
        assert!(logged.contains("[314 bytes, hash "), "{logged}");
        // The same command always logs the same; a different one does not.
        assert_eq!(logged, loggable_command(&secret_tail));
        assert_ne!(logged, loggable_command(&format!("{secret_tail}!")));
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let command = "é".repeat(150); // 300 bytes, two per character
        let logged = loggable_command(&command);
        assert!(logged.starts_with(&"é".repeat(100)), "{logged}");
    }
}
