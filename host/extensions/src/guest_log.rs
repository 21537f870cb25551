//! Lines a tool or filter component logs through its `host` interface, written to the
//! agent's log under the component's name.

/// The level of a logged line (each world has its own generated copy of this enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// What kind of component logged, which is also the log field that names it.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Tool,
    Filter,
}

/// Cut `message` to at most `max` bytes, on a character boundary.
pub fn cut(message: &mut String, max: usize) {
    if message.len() > max {
        let mut end = max;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
}

/// Write `message` at `level`, as `tool=NAME` or `filter=NAME`.
pub fn emit(kind: Kind, name: &str, level: Level, message: &str) {
    // tracing's field names are identifiers, so each kind spells its own.
    macro_rules! at_level {
        ($field:ident) => {
            match level {
                Level::Trace => tracing::trace!($field = name, "{message}"),
                Level::Debug => tracing::debug!($field = name, "{message}"),
                Level::Info => tracing::info!($field = name, "{message}"),
                Level::Warn => tracing::warn!($field = name, "{message}"),
                Level::Error => tracing::error!($field = name, "{message}"),
            }
        };
    }
    match kind {
        Kind::Tool => at_level!(tool),
        Kind::Filter => at_level!(filter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_whole_characters() {
        let mut text = "aé".repeat(3);
        cut(&mut text, 4);
        assert_eq!(text, "aéa");
        let mut short = String::from("ok");
        cut(&mut short, 4);
        assert_eq!(short, "ok");
    }
}
