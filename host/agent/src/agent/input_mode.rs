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
        let size = TerminalSize {
            rows: rows.unwrap_or(default.rows),
            cols: cols.unwrap_or(default.cols),
        };
        for (name, side) in [("rows", size.rows), ("cols", size.cols)] {
            if side == 0 || side > MAX_TERMINAL_SIDE {
                return Err(format!(
                    "{name} must be between 1 and {MAX_TERMINAL_SIDE}; got {side}."
                ));
            }
        }
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
}
