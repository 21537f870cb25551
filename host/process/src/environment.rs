//! Which of the agent's own environment variables commands inherit (`[env]` in the agent's
//! configuration). Process-wide and set once, before the first command starts: the inherited
//! environment is read once and shared by every start (copying it per start showed up in the
//! cost of a start).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

/// What commands inherit from the agent's environment. Variables a request (or a policy
/// plugin) sets are added on top either way.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Inheritance {
    /// Every variable of the agent (the default).
    #[default]
    All,
    /// Only the variables named here; a name ending in `*` is a prefix (`LC_*`). Empty: none.
    Only(Vec<String>),
}

impl Inheritance {
    /// Whether a variable named `key` is passed on.
    pub fn keeps(&self, key: &OsStr) -> bool {
        match self {
            Inheritance::All => true,
            Inheritance::Only(names) => names.iter().any(|name| match name.strip_suffix('*') {
                Some(prefix) => key.as_bytes().starts_with(prefix.as_bytes()),
                None => key.as_bytes() == name.as_bytes(),
            }),
        }
    }
}

static INHERITANCE: OnceLock<Inheritance> = OnceLock::new();

/// Set what commands inherit. Call it before the first start; it cannot change afterwards
/// (the agent's configuration reload reports `[env]` as needing a restart). Setting the value
/// already in force is not an error.
pub fn set_inheritance(inheritance: Inheritance) -> Result<(), Inheritance> {
    let current = INHERITANCE.get_or_init(|| inheritance.clone());
    if *current == inheritance {
        Ok(())
    } else {
        Err(current.clone())
    }
}

/// What commands inherit: what [`set_inheritance`] set, else everything. Once read, fixed.
pub(crate) fn inheritance() -> &'static Inheritance {
    INHERITANCE.get_or_init(Inheritance::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes() {
        let only = Inheritance::Only(vec!["PATH".into(), "LC_*".into()]);
        assert!(only.keeps(OsStr::new("PATH")));
        assert!(only.keeps(OsStr::new("LC_ALL")));
        assert!(!only.keeps(OsStr::new("PATHS")));
        assert!(!only.keeps(OsStr::new("AWS_SECRET_ACCESS_KEY")));
        assert!(!Inheritance::Only(Vec::new()).keeps(OsStr::new("PATH")));
        assert!(Inheritance::All.keeps(OsStr::new("ANYTHING")));
    }
}
