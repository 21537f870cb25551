//! Turning `run`'s argv into the shell line the agent runs.

use anyhow::anyhow;

/// Each word quoted for `sh`, joined with spaces: `echo "a    b"` stays two words with the
/// spaces kept. A word that needs no quoting is passed as it is, so `run -- ls -la` reads
/// `ls -la` in `ps`.
pub fn shell_line(argv: &[String]) -> anyhow::Result<String> {
    shlex::try_join(argv.iter().map(String::as_str))
        .map_err(|_| anyhow!("a command word contains a NUL byte, which no shell can pass"))
}

#[cfg(test)]
mod tests {
    use super::shell_line;

    fn line(words: &[&str]) -> String {
        shell_line(&words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn plain_words_stay_plain_and_others_are_quoted() {
        assert_eq!(line(&["ls", "-la"]), "ls -la");
        assert_eq!(line(&["echo", "a    b"]), "echo 'a    b'");
        assert_eq!(line(&["echo", "it's", "$HOME"]), r#"echo "it's" '$HOME'"#);
        assert!(shell_line(&["a\0b".to_owned()]).is_err());
    }
}
