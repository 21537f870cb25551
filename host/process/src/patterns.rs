//! Compiled patterns shared between requests: a hundred clients waiting for the same
//! `until=regex:READY` (or grepping for the same error) compile it once. A clone shares the
//! compiled program, so the reply path after the matching line frees only the clone's small
//! search cache instead of a whole compiled regex per waiter.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use regex::bytes::Regex;

/// Distinct patterns kept; past it the map starts over (bounded memory, no eviction order).
const KEPT: usize = 64;

fn kept() -> &'static Mutex<HashMap<String, Regex>> {
    static KEPT_PATTERNS: OnceLock<Mutex<HashMap<String, Regex>>> = OnceLock::new();
    KEPT_PATTERNS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// `pattern` compiled by `compile`, or a clone of the one compiled before.
pub fn shared(
    pattern: &str,
    compile: impl FnOnce() -> Result<Regex, String>,
) -> Result<Regex, String> {
    if let Some(regex) = kept()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(pattern)
    {
        return Ok(regex.clone());
    }
    // Compiled outside the lock: a slow pattern never holds up the others.
    let regex = compile()?;
    let mut map = kept().lock().unwrap_or_else(PoisonError::into_inner);
    if map.len() >= KEPT {
        map.clear();
    }
    map.insert(pattern.to_owned(), regex.clone());
    Ok(regex)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_counted(pattern: &str, compiled: &mut usize) -> Result<Regex, String> {
        *compiled += 1;
        Regex::new(pattern).map_err(|e| e.to_string())
    }

    #[test]
    fn a_pattern_is_compiled_once_and_errors_are_not_kept() {
        let mut compiled = 0;
        let pattern = "patterns-test-once";
        let first = shared(pattern, || compile_counted(pattern, &mut compiled)).unwrap();
        let second = shared(pattern, || compile_counted(pattern, &mut compiled)).unwrap();
        assert_eq!(compiled, 1);
        assert!(first.is_match(b"a patterns-test-once b"));
        assert!(second.is_match(b"a patterns-test-once b"));
        let err = shared("patterns-test-bad", || Err("bad".into())).unwrap_err();
        assert_eq!(err, "bad");
        let again = shared("patterns-test-bad", || Err("still bad".into())).unwrap_err();
        assert_eq!(again, "still bad");
    }
}
