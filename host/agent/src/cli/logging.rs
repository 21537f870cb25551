//! How the agent logs, from `PROCWARDEN_LOG` (a tracing filter) and `PROCWARDEN_LOG_FORMAT`
//! (`text` or `json`). Logs always go to stderr; stdout carries only results (and `serve`'s
//! listening line). A value that would log nothing or something other than meant is reported,
//! and the default used in its place.

use tracing_subscriber::EnvFilter;

pub struct LogSettings {
    pub filter: EnvFilter,
    /// One JSON object per line instead of text.
    pub json: bool,
    /// What was wrong with the variables, to log once logging is set up.
    pub problems: Vec<String>,
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

impl LogSettings {
    pub fn from_env(default: &str) -> Self {
        Self::from_values(
            std::env::var("PROCWARDEN_LOG").ok().as_deref(),
            std::env::var("PROCWARDEN_LOG_FORMAT").ok().as_deref(),
            default,
        )
    }

    fn from_values(filter: Option<&str>, format: Option<&str>, default: &str) -> Self {
        let mut problems = Vec::new();
        let json = match format.map(str::trim) {
            None | Some("") | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                problems.push(format!(
                    "PROCWARDEN_LOG_FORMAT={other:?} is not a log format (text or json); logging as text"
                ));
                false
            }
        };
        let filter = match filter.map(str::trim).filter(|f| !f.is_empty()) {
            None => EnvFilter::new(default),
            Some(text) => match check_filter(text) {
                Ok(filter) => filter,
                Err(problem) => {
                    problems.push(format!(
                        "{problem}; logging with the default filter {default:?}"
                    ));
                    EnvFilter::new(default)
                }
            },
        };
        Self {
            filter,
            json,
            problems,
        }
    }
}

/// A filter that parses and whose bare words are levels or procwarden's own targets. A bare
/// word is a target at every level (`json` would show only a target named `json`: nothing).
fn check_filter(text: &str) -> Result<EnvFilter, String> {
    if matches!(text, "json" | "text") {
        return Err(format!(
            "PROCWARDEN_LOG={text:?} is a log format, not a filter: set PROCWARDEN_LOG_FORMAT={text} (PROCWARDEN_LOG takes a filter such as info or procwarden=debug)"
        ));
    }
    for directive in text.split(',').map(str::trim) {
        let bare = !directive.contains(['=', '[', ':']);
        if bare
            && !LEVELS.contains(&directive.to_ascii_lowercase().as_str())
            && !directive.starts_with("procwarden")
        {
            return Err(format!(
                "PROCWARDEN_LOG: {directive:?} is neither a level ({}) nor one of procwarden's targets",
                LEVELS.join(", ")
            ));
        }
    }
    EnvFilter::try_new(text)
        .map_err(|e| format!("PROCWARDEN_LOG={text:?} is not a valid filter ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_filters() {
        let s = LogSettings::from_values(None, None, "info");
        assert!(!s.json && s.problems.is_empty());
        let s = LogSettings::from_values(Some("debug,procwarden=trace"), Some("json"), "info");
        assert!(s.json && s.problems.is_empty(), "{:?}", s.problems);
        let s = LogSettings::from_values(Some("json"), None, "info");
        assert!(
            s.problems[0].contains("PROCWARDEN_LOG_FORMAT=json"),
            "{:?}",
            s.problems
        );
        let s = LogSettings::from_values(Some("verbose"), None, "info");
        assert!(s.problems[0].contains("\"verbose\""), "{:?}", s.problems);
        let s = LogSettings::from_values(Some("procwarden=loud"), None, "info");
        assert!(
            s.problems[0].contains("not a valid filter"),
            "{:?}",
            s.problems
        );
        let s = LogSettings::from_values(None, Some("yaml"), "info");
        assert!(
            s.problems[0].contains("yaml") && !s.json,
            "{:?}",
            s.problems
        );
    }
}
