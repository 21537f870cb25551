//! The kernel's limits on what `execve` takes, checked before a start so that a command or an
//! environment value too long to pass gets an answer naming the limit, not "Argument list too
//! long" from deep in the spawn path.

use crate::manager::ProcessError;

/// Pages in the kernel's limit on one argument or environment entry (`MAX_ARG_STRLEN` is
/// `32 * PAGE_SIZE`: 131072 bytes with 4 KiB pages), its terminating NUL included.
const MAX_ARG_STRLEN_PAGES: usize = 32;

/// `MAX_ARG_STRLEN` on this machine: the most bytes one argument or environment entry may
/// have, its terminating NUL included.
pub fn max_arg_strlen() -> usize {
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    MAX_ARG_STRLEN_PAGES * usize::try_from(page).unwrap_or(4096).max(4096)
}

/// `ARG_MAX` on this machine: the most bytes of arguments and environment together, as the C
/// library reports it (a quarter of the stack limit, at least 128 KiB).
pub fn arg_max() -> usize {
    // SAFETY: sysconf has no memory effects.
    let max = unsafe { libc::sysconf(libc::_SC_ARG_MAX) };
    usize::try_from(max).unwrap_or(128 << 10)
}

/// Refuse a command or an environment entry (`KEY=value`) that `execve` could not pass as
/// one string: the command is `sh -c`'s argument.
pub fn check_lengths(command: &str, env: &[(String, String)]) -> Result<(), ProcessError> {
    let limit = max_arg_strlen();
    // Lengths with the terminating NUL, as the kernel counts them.
    let command_len = command.len() + 1;
    if command_len > limit {
        return Err(ProcessError::TooLong {
            what: "command".into(),
            length: command.len(),
            limit: limit - 1,
            limit_name: "MAX_ARG_STRLEN",
        });
    }
    for (key, value) in env {
        let entry_len = key.len() + 1 + value.len() + 1;
        if entry_len > limit {
            return Err(ProcessError::TooLong {
                what: format!("environment variable {key} (as KEY=value)"),
                length: entry_len - 1,
                limit: limit - 1,
                limit_name: "MAX_ARG_STRLEN",
            });
        }
    }
    Ok(())
}

/// The error for an `execve` that failed with `E2BIG` although every string fit: arguments
/// and environment together were over `ARG_MAX`. `length` counts what the caller sent; the
/// agent's own environment comes on top.
pub fn too_long_together(command: &str, env: &[(String, String)]) -> ProcessError {
    ProcessError::TooLong {
        what: "command and environment together (with the agent's own environment)".into(),
        length: command.len()
            + env
                .iter()
                .map(|(k, v)| k.len() + 1 + v.len())
                .sum::<usize>(),
        limit: arg_max(),
        limit_name: "ARG_MAX",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_single_string_limit_is_32_pages() {
        assert_eq!(max_arg_strlen() % (32 * 4096), 0);
        assert!(arg_max() >= max_arg_strlen());
    }

    #[test]
    fn a_string_fits_up_to_the_limit_less_its_nul() {
        let limit = max_arg_strlen();
        assert!(check_lengths(&"x".repeat(limit - 1), &[]).is_ok());
        let err = check_lengths(&"x".repeat(limit), &[]).unwrap_err();
        assert!(
            matches!(&err, ProcessError::TooLong { what, length, limit: l, .. }
                if what == "command" && *length == limit && *l == limit - 1),
            "{err:?}"
        );
        // KEY=value plus NUL: "K=" takes two of the bytes.
        let fits = [("K".to_owned(), "v".repeat(limit - 3))];
        assert!(check_lengths("true", &fits).is_ok());
        let over = [("K".to_owned(), "v".repeat(limit - 2))];
        let err = check_lengths("true", &over).unwrap_err();
        assert!(err.to_string().contains("environment variable K"), "{err}");
        assert!(err.to_string().contains("MAX_ARG_STRLEN"), "{err}");
    }
}
