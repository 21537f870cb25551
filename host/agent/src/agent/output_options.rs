//! What a client may ask of an output read, as name/value pairs from any front end: which
//! part to read (bytes, lines, grep, errors first), from which cursor, and what ends a wait.
//! One parser, so HTTP and MCP refuse the same mistakes with the same words.

use std::time::Duration;

use procwarden_process::output_read::{
    DEFAULT_READ_BYTES, MAX_CONTEXT, MAX_READ_BYTES, compile_pattern, parse_line_range,
};
use procwarden_process::{ReadMode, Until};

/// A parameter the client got wrong: its name and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParameter {
    pub name: String,
    pub message: String,
}

impl std::fmt::Display for BadParameter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Invalid parameter \"{}\": {}.", self.name, self.message)
    }
}

/// What ends a wait, before it is tied to a cursor.
#[derive(Debug, Clone)]
pub enum UntilSpec {
    Exit,
    Regex(procwarden_process::output_read::Regex),
    Quiet(Duration),
    Port(u16),
}

/// A parsed output request.
#[derive(Debug, Clone, Default)]
pub struct OutputOptions {
    pub read: Option<ReadMode>,
    /// `since=CURSOR`: the client's cursor (an offset in the whole output).
    pub since: Option<u64>,
    pub until: Option<UntilSpec>,
}

fn bad(name: &str, message: impl Into<String>) -> BadParameter {
    BadParameter {
        name: name.to_owned(),
        message: message.into(),
    }
}

fn number(name: &str, value: &str) -> Result<u64, BadParameter> {
    value.trim().parse().map_err(|_| {
        bad(
            name,
            format!("expected a whole number of bytes, got {value:?}"),
        )
    })
}

impl OutputOptions {
    /// Parse the read and wait parameters among `pairs`; other names are left alone (`wait`
    /// and anything a front end reads itself).
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, BadParameter> {
        let (mut offset, mut limit, mut since, mut lines, mut grep, mut context, mut view) =
            (None, None, None, None, None, None, None);
        let mut until = None;
        for (name, value) in pairs {
            let slot = match name {
                "offset" => &mut offset,
                "limit" => &mut limit,
                "since" => &mut since,
                "lines" => &mut lines,
                "grep" => &mut grep,
                "context" => &mut context,
                "view" => &mut view,
                "until" => &mut until,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(bad(name, "given more than once"));
            }
        }
        let mut options = OutputOptions::default();
        let mut chosen: Option<&str> = None;
        let mut choose = |name: &'static str| -> Result<(), BadParameter> {
            match chosen.replace(name) {
                Some(first) if first != name => Err(bad(
                    name,
                    format!("cannot be combined with {first}; read one way at a time"),
                )),
                _ => Ok(()),
            }
        };
        if let Some(value) = since {
            if offset.is_some() {
                return Err(bad("since", "cannot be combined with offset"));
            }
            choose("since")?;
            options.since = Some(number("since", value)?);
        }
        if offset.is_some() || limit.is_some() {
            choose(if since.is_some() { "since" } else { "offset" })?;
        }
        if since.is_some() || offset.is_some() || limit.is_some() {
            let offset = match (options.since, offset) {
                (Some(cursor), _) => cursor,
                (None, Some(value)) => number("offset", value)?,
                (None, None) => 0,
            };
            let limit = match limit {
                Some(value) => {
                    let limit = number("limit", value)?;
                    if limit == 0 || limit > MAX_READ_BYTES {
                        return Err(bad(
                            "limit",
                            format!("must be from 1 to {MAX_READ_BYTES} bytes"),
                        ));
                    }
                    limit
                }
                None => DEFAULT_READ_BYTES,
            };
            options.read = Some(ReadMode::Bytes { offset, limit });
        }
        if let Some(value) = lines {
            choose("lines")?;
            let (from, to) = parse_line_range(value).map_err(|m| bad("lines", m))?;
            options.read = Some(ReadMode::Lines { from, to });
        }
        if let Some(value) = grep {
            choose("grep")?;
            let regex = compile_pattern(value).map_err(|m| bad("grep", m))?;
            let context = match context {
                Some(value) => match value.trim().parse::<usize>() {
                    Ok(n) if n <= MAX_CONTEXT => n,
                    _ => {
                        return Err(bad(
                            "context",
                            format!("must be a number of lines from 0 to {MAX_CONTEXT}"),
                        ));
                    }
                },
                None => 0,
            };
            options.read = Some(ReadMode::Grep { regex, context });
        } else if context.is_some() {
            return Err(bad("context", "only applies with grep"));
        }
        match view {
            None | Some("head_tail") => {}
            Some("errors") => {
                choose("view")?;
                options.read = Some(ReadMode::Errors);
            }
            Some(other) => {
                return Err(bad(
                    "view",
                    format!("unknown view {other:?}; use \"errors\" or \"head_tail\""),
                ));
            }
        }
        if let Some(value) = until {
            options.until = Some(parse_until(value)?);
        }
        Ok(options)
    }

    /// The wait to run, tied to the client's cursor: a pattern is looked for from `since`
    /// (else from the start, so a line printed before the call still counts); with a cursor
    /// and no `until`, any new output past the cursor ends the wait.
    pub fn until(&self) -> Until {
        match (&self.until, self.since) {
            (Some(UntilSpec::Exit), _) | (None, None) => Until::Exit,
            (None, Some(after)) => Until::Output { after },
            (Some(UntilSpec::Regex(regex)), from) => Until::Regex {
                regex: regex.clone(),
                from: from.unwrap_or(0),
            },
            (Some(UntilSpec::Quiet(quiet)), _) => Until::Quiet(*quiet),
            (Some(UntilSpec::Port(port)), _) => Until::Port(*port),
        }
    }
}

fn parse_until(value: &str) -> Result<UntilSpec, BadParameter> {
    let until = |m: String| bad("until", m);
    if value == "exit" {
        return Ok(UntilSpec::Exit);
    }
    let Some((kind, arg)) = value.split_once(':') else {
        return Err(until(format!(
            "unknown condition {value:?}; use exit, regex:PATTERN, quiet:SECONDS or port:N"
        )));
    };
    match kind {
        "regex" => compile_pattern(arg).map(UntilSpec::Regex).map_err(until),
        "quiet" => match arg.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 && s <= 86400.0 => {
                Ok(UntilSpec::Quiet(Duration::from_secs_f64(s)))
            }
            _ => Err(until(format!(
                "quiet takes a number of seconds above 0 and at most 86400, got {arg:?}"
            ))),
        },
        "port" => match arg.trim().parse::<u16>() {
            Ok(port) if port > 0 => Ok(UntilSpec::Port(port)),
            _ => Err(until(format!(
                "port takes a TCP port from 1 to 65535, got {arg:?}"
            ))),
        },
        other => Err(until(format!(
            "unknown condition {other:?}; use exit, regex:PATTERN, quiet:SECONDS or port:N"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<OutputOptions, BadParameter> {
        OutputOptions::parse(pairs.iter().copied())
    }

    #[test]
    fn each_read_parses_and_mistakes_name_their_parameter() {
        assert!(parse(&[]).unwrap().read.is_none());
        assert!(matches!(
            parse(&[("since", "10")]).unwrap().read,
            Some(ReadMode::Bytes {
                offset: 10,
                limit: DEFAULT_READ_BYTES
            })
        ));
        assert!(matches!(
            parse(&[("offset", "5"), ("limit", "7")]).unwrap().read,
            Some(ReadMode::Bytes {
                offset: 5,
                limit: 7
            })
        ));
        assert!(matches!(
            parse(&[("lines", "-5:")]).unwrap().read,
            Some(ReadMode::Lines {
                from: Some(-5),
                to: None
            })
        ));
        assert!(matches!(
            parse(&[("grep", "err"), ("context", "2")]).unwrap().read,
            Some(ReadMode::Grep { context: 2, .. })
        ));
        assert!(matches!(
            parse(&[("view", "errors")]).unwrap().read,
            Some(ReadMode::Errors)
        ));
        for (pairs, name) in [
            (&[("grep", "(")][..], "grep"),
            (&[("grep", "a"), ("context", "99")], "context"),
            (&[("context", "1")], "context"),
            (&[("lines", "1:2"), ("grep", "a")], "grep"),
            (&[("offset", "x")], "offset"),
            (&[("limit", "0")], "limit"),
            (&[("since", "1"), ("offset", "2")], "since"),
            (&[("view", "all")], "view"),
            (&[("until", "regex:(")], "until"),
            (&[("until", "port:0")], "until"),
            (&[("until", "quiet:-1")], "until"),
            (&[("until", "soon")], "until"),
            (&[("lines", "0:1")], "lines"),
        ] {
            let err = parse(pairs).expect_err(&format!("{pairs:?}"));
            assert_eq!(err.name, name, "{pairs:?}: {err}");
        }
    }

    #[test]
    fn waits_tie_to_the_cursor() {
        assert!(matches!(parse(&[]).unwrap().until(), Until::Exit));
        assert!(matches!(
            parse(&[("since", "9")]).unwrap().until(),
            Until::Output { after: 9 }
        ));
        assert!(matches!(
            parse(&[("since", "9"), ("until", "regex:ready")])
                .unwrap()
                .until(),
            Until::Regex { from: 9, .. }
        ));
        assert!(matches!(
            parse(&[("until", "port:8080")]).unwrap().until(),
            Until::Port(8080)
        ));
        assert!(matches!(
            parse(&[("until", "quiet:1.5")]).unwrap().until(),
            Until::Quiet(d) if d == Duration::from_millis(1500)
        ));
    }
}
