//! The stdin options of a start (`stdin`, `tty`, `rows`, `cols`) as every front end takes
//! them, checked once: the default stays /dev/null.

use procwarden_process::{InputMode, TerminalSize};

/// Largest terminal side accepted: far past any real screen, small enough to be a typo check.
const MAX_TERMINAL_SIDE: u16 = 1000;

/// `stdin` (`null` or `pipe`), `tty` (implies a stdin) and its size; a bad combination is an
/// error sentence naming the option.
pub fn input_mode(
    stdin: Option<&str>,
    tty: Option<bool>,
    rows: Option<u16>,
    cols: Option<u16>,
) -> Result<InputMode, String> {
    let pipe = match stdin {
        None => None,
        Some("null") => Some(false),
        Some("pipe") => Some(true),
        Some(other) => {
            return Err(format!(
                "Invalid stdin \"{other}\": use \"null\" (the default: reads get end-of-file) or \
                 \"pipe\" (write to it with the input endpoint)."
            ));
        }
    };
    if tty == Some(true) {
        if pipe == Some(false) {
            return Err(
                "tty true gives the command a terminal to read from; it cannot have stdin \"null\"."
                    .to_owned(),
            );
        }
        let default = TerminalSize::default();
        let size = terminal_size(rows.unwrap_or(default.rows), cols.unwrap_or(default.cols))?;
        return Ok(InputMode::Terminal(size));
    }
    if rows.is_some() || cols.is_some() {
        return Err("rows and cols set a terminal's size: they need tty true.".to_owned());
    }
    Ok(if pipe == Some(true) {
        InputMode::Pipe
    } else {
        InputMode::Null
    })
}

/// A terminal size as given at start or to a resize, each side checked.
pub fn terminal_size(rows: u16, cols: u16) -> Result<TerminalSize, String> {
    for (name, side) in [("rows", rows), ("cols", cols)] {
        if side == 0 || side > MAX_TERMINAL_SIDE {
            return Err(format!(
                "{name} must be between 1 and {MAX_TERMINAL_SIDE}; got {side}."
            ));
        }
    }
    Ok(TerminalSize { rows, cols })
}

/// The bytes of an input write, given as text (`data`) or base64 (`data_base64`, for bytes
/// that are not UTF-8 or include NUL); at most one of the two.
pub fn input_bytes(data: Option<String>, data_base64: Option<String>) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    match (data, data_base64) {
        (Some(_), Some(_)) => {
            Err("Pass data (text) or data_base64 (bytes, base64-encoded), not both.".to_owned())
        }
        (Some(text), None) => Ok(text.into_bytes()),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|err| {
                format!("data_base64 is not valid base64 (standard alphabet, padded): {err}.")
            }),
        (None, None) => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_dev_null_and_tty_implies_stdin() {
        assert_eq!(input_mode(None, None, None, None), Ok(InputMode::Null));
        assert_eq!(
            input_mode(Some("null"), Some(false), None, None),
            Ok(InputMode::Null)
        );
        assert_eq!(
            input_mode(Some("pipe"), None, None, None),
            Ok(InputMode::Pipe)
        );
        assert_eq!(
            input_mode(None, Some(true), None, None),
            Ok(InputMode::Terminal(TerminalSize { rows: 24, cols: 80 }))
        );
        assert_eq!(
            input_mode(Some("pipe"), Some(true), Some(50), Some(132)),
            Ok(InputMode::Terminal(TerminalSize {
                rows: 50,
                cols: 132
            }))
        );
    }

    #[test]
    fn bad_combinations_are_named() {
        let err = input_mode(Some("file"), None, None, None).unwrap_err();
        assert!(err.contains("Invalid stdin \"file\""), "{err}");
        let err = input_mode(Some("null"), Some(true), None, None).unwrap_err();
        assert!(err.contains("tty"), "{err}");
        let err = input_mode(None, None, Some(10), None).unwrap_err();
        assert!(err.contains("need tty true"), "{err}");
        let err = input_mode(None, Some(true), Some(0), None).unwrap_err();
        assert!(err.contains("rows must be"), "{err}");
    }

    #[test]
    fn input_is_text_or_base64_never_both() {
        assert_eq!(input_bytes(Some("a\n".into()), None), Ok(b"a\n".to_vec()));
        assert_eq!(
            input_bytes(None, Some("AP/+Cg==".into())),
            Ok(vec![0, 0xff, 0xfe, b'\n'])
        );
        assert_eq!(input_bytes(None, None), Ok(Vec::new()));
        let err = input_bytes(Some("a".into()), Some("YQ==".into())).unwrap_err();
        assert!(err.contains("not both"), "{err}");
        let err = input_bytes(None, Some("not base64!".into())).unwrap_err();
        assert!(err.starts_with("data_base64 "), "{err}");
    }

    #[test]
    fn resize_sizes_are_checked() {
        assert_eq!(
            terminal_size(50, 132),
            Ok(TerminalSize {
                rows: 50,
                cols: 132
            })
        );
        let err = terminal_size(0, 80).unwrap_err();
        assert!(err.contains("rows must be"), "{err}");
        let err = terminal_size(24, 5000).unwrap_err();
        assert!(err.contains("cols must be"), "{err}");
    }
}
