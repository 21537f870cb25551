//! A plugin's settings. Shared, as source, by this crate and every SDK version; each SDK
//! adds `load`, which calls the `host` bindings of that SDK (every version has `config` and
//! `config-keys`).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// A plugin's settings: the `[plugin.settings]` table of its `[[plugin]]` entry, flattened
/// by the host into string keys and values.
///
/// Nested tables become dotted keys (`vars.PAGER`), array items get their index
/// (`patterns.0`, `patterns.1`), and numbers and booleans arrive in their TOML form
/// (`"0"`, `"true"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

impl Settings {
    /// Settings from plain pairs, for tests and for code that already has them.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Whether the plugin has no settings at all.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Every key, in sorted order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// `key` as a boolean: `Ok(None)` if unset, an error text naming the key and the value
    /// if it is neither `true` nor `false`.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(format!(
                "setting `{key}` must be true or false, not {other:?}"
            )),
        }
    }

    /// The items of the array `prefix` (keys `prefix.0`, `prefix.1`, ...) with their index,
    /// ordered by index (numerically: `prefix.10` comes after `prefix.9`). Keys below an item
    /// (`prefix.0.name`, from an array of tables) are not items and are skipped.
    pub fn list(&self, prefix: &str) -> Vec<(usize, &str)> {
        let mut items: Vec<(usize, &str)> = self
            .below(prefix)
            .into_iter()
            .filter_map(|(rest, value)| {
                let all_digits = !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
                all_digits
                    .then(|| rest.parse().ok())
                    .flatten()
                    .map(|index| (index, value))
            })
            .collect();
        items.sort_by_key(|&(index, _)| index);
        items
    }

    /// The entries of the table `prefix` (keys `prefix.NAME`) as `(NAME, value)`, sorted by
    /// name. `NAME` is everything after `prefix.`, dots included.
    pub fn table(&self, prefix: &str) -> Vec<(&str, &str)> {
        self.below(prefix)
    }

    /// `(rest, value)` for every key `prefix.rest`, sorted by key.
    fn below(&self, prefix: &str) -> Vec<(&str, &str)> {
        self.values
            .iter()
            .filter_map(|(key, value)| {
                key.strip_prefix(prefix)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .map(|rest| (rest, value.as_str()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_orders_items_numerically_and_skips_nested_keys() {
        let s = Settings::from_pairs([
            ("patterns.10", "ten"),
            ("patterns.2", "two"),
            ("patterns.0", "zero"),
            ("patterns.1.name", "nested"),
            ("patternsx.3", "other"),
            ("patterns", "bare"),
            ("patterns.", "empty"),
        ]);
        assert_eq!(
            s.list("patterns"),
            vec![(0, "zero"), (2, "two"), (10, "ten")]
        );
        assert!(s.list("missing").is_empty());
    }

    #[test]
    fn table_keeps_dots_in_names() {
        let s = Settings::from_pairs([
            ("vars.PAGER", "cat"),
            ("vars.a.b", "x"),
            ("override", "true"),
        ]);
        assert_eq!(s.table("vars"), vec![("PAGER", "cat"), ("a.b", "x")]);
    }

    #[test]
    fn bool_accepts_only_toml_booleans() {
        let s = Settings::from_pairs([("a", "true"), ("b", "false"), ("c", "yes")]);
        assert_eq!(s.bool("a"), Ok(Some(true)));
        assert_eq!(s.bool("b"), Ok(Some(false)));
        assert_eq!(s.bool("none"), Ok(None));
        let err = s.bool("c").unwrap_err();
        assert!(err.contains("`c`") && err.contains("\"yes\""), "{err}");
    }

    #[test]
    fn empty_and_get() {
        assert!(Settings::default().is_empty());
        let s = Settings::from_pairs([("k", "v")]);
        assert!(!s.is_empty());
        assert_eq!(s.get("k"), Some("v"));
        assert_eq!(s.get("x"), None);
        assert_eq!(s.keys().collect::<Vec<_>>(), vec!["k"]);
    }
}
