//! The questions a plugin may ask about the agent's machine (`is-dir`, `is-file`,
//! `exists`, `which`, `read-file`), how the host answers them, and how an answer is recorded
//! so that a remembered answer of the plugin is used only while every question it asked
//! still gets the same answer (see [`super::memo`]).

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::wit::latest::ReadError;

/// Largest file `read-file` returns, in bytes.
pub(crate) const MAX_READ_BYTES: u64 = 64 << 10;

/// One question a plugin asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Question {
    IsDir(String),
    IsFile(String),
    Exists(String),
    Which(String),
    ReadFile { path: String, scope: Arc<ReadScope> },
}

/// What a question was answered, as far as telling a change goes: a file's contents are
/// kept as their digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    Bool(bool),
    Path(Option<String>),
    File(Result<[u8; 32], ReadError>),
}

impl Question {
    /// Asks again, for [`super::memo`].
    pub fn answer(&self) -> Answer {
        match self {
            Question::IsDir(path) => Answer::Bool(is_dir(path)),
            Question::IsFile(path) => Answer::Bool(is_file(path)),
            Question::Exists(path) => Answer::Bool(exists(path)),
            Question::Which(name) => Answer::Path(which(name)),
            Question::ReadFile { path, scope } => Answer::File(digest(&scope.read(path))),
        }
    }

    /// Roughly the heap bytes this takes.
    pub fn bytes(&self) -> usize {
        match self {
            Question::IsDir(p) | Question::IsFile(p) | Question::Exists(p) | Question::Which(p) => {
                p.len() + 16
            }
            // The scope is shared by the questions of one call.
            Question::ReadFile { path, .. } => path.len() + 64,
        }
    }
}

/// What recording a read keeps of its result.
pub(crate) fn digest(read: &Result<Vec<u8>, ReadError>) -> Result<[u8; 32], ReadError> {
    read.as_ref()
        .map(|bytes| Sha256::digest(bytes).into())
        .map_err(Clone::clone)
}

/// Whether `path` names a directory, as the `is-dir` import answers.
pub(crate) fn is_dir(path: &str) -> bool {
    !path.is_empty() && std::fs::metadata(path).is_ok_and(|m| m.is_dir())
}

/// Whether `path` names a regular file, as the `is-file` import answers.
pub(crate) fn is_file(path: &str) -> bool {
    !path.is_empty() && std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Whether anything exists at `path`, as the `exists` import answers.
pub(crate) fn exists(path: &str) -> bool {
    !path.is_empty() && std::fs::metadata(path).is_ok()
}

/// Where `name` is found in the agent's `PATH`, as the `which` import answers: the first
/// executable regular file `DIR/name` for an absolute `DIR`; a name with `/` is checked as
/// it is.
pub(crate) fn which(name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    if name.contains('/') {
        return is_executable(Path::new(name)).then(|| name.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .map(|found| found.to_string_lossy().into_owned())
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where one call's `read-file` may read: under the request's working directory (as the
/// plugin received the request), the agent's working directory, or a path the operator
/// allowed for the plugin. Relative paths are taken relative to the request's working
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadScope {
    base: Option<PathBuf>,
    roots: Vec<PathBuf>,
}

impl ReadScope {
    pub fn new(workdir: Option<&str>, agent_workdir: Option<&str>, allowed: &[PathBuf]) -> Self {
        let base = workdir
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .map(|p| normalize(&p));
        let roots = base
            .iter()
            .cloned()
            .chain(agent_workdir.map(PathBuf::from).filter(|p| p.is_absolute()))
            .chain(allowed.iter().filter(|p| p.is_absolute()).cloned())
            .map(|p| normalize(&p))
            .collect();
        Self { base, roots }
    }

    /// The contents of the file at `path`, within the scope and the size limit.
    pub fn read(&self, path: &str) -> Result<Vec<u8>, ReadError> {
        let requested = Path::new(path);
        let full = if requested.is_absolute() {
            normalize(requested)
        } else {
            normalize(
                &self
                    .base
                    .as_ref()
                    .ok_or(ReadError::NotAllowed)?
                    .join(requested),
            )
        };
        // First by name, so nothing is learnt about paths outside the scope...
        if !self.roots.iter().any(|root| full.starts_with(root)) {
            return Err(ReadError::NotAllowed);
        }
        // ...then with symbolic links resolved, on both sides, so a link cannot lead out.
        let real = std::fs::canonicalize(&full).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ReadError::NotFound,
            _ => ReadError::Failed(e.to_string()),
        })?;
        let inside = self.roots.iter().any(|root| {
            std::fs::canonicalize(root).is_ok_and(|real_root| real.starts_with(real_root))
        });
        if !inside {
            return Err(ReadError::NotAllowed);
        }
        let file = std::fs::File::open(&real).map_err(|e| ReadError::Failed(e.to_string()))?;
        let meta = file
            .metadata()
            .map_err(|e| ReadError::Failed(e.to_string()))?;
        if !meta.is_file() {
            return Err(ReadError::NotAFile);
        }
        if meta.len() > MAX_READ_BYTES {
            return Err(ReadError::TooLarge(meta.len()));
        }
        // The file may grow between the two steps: read one byte past the limit to tell.
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_READ_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ReadError::Failed(e.to_string()))?;
        if bytes.len() as u64 > MAX_READ_BYTES {
            return Err(ReadError::TooLarge(bytes.len() as u64));
        }
        Ok(bytes)
    }
}

/// `path` with `.` and `..` resolved by name (`..` at the root stays at the root).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(dir: &Path) -> ReadScope {
        ReadScope::new(dir.to_str(), None, &[])
    }

    #[test]
    fn reads_small_files_under_the_roots_only() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "hello").unwrap();
        std::fs::write(outside.path().join("secret"), "no").unwrap();
        let s = scope(dir.path());
        assert_eq!(s.read("a.txt").unwrap(), b"hello");
        let abs = dir.path().join("a.txt");
        assert_eq!(s.read(abs.to_str().unwrap()).unwrap(), b"hello");
        let secret = outside.path().join("secret");
        assert_eq!(s.read(secret.to_str().unwrap()), Err(ReadError::NotAllowed));
        assert_eq!(s.read("/etc/passwd"), Err(ReadError::NotAllowed));
        let escape = format!(
            "../{}/secret",
            outside.path().file_name().unwrap().to_str().unwrap()
        );
        assert_eq!(s.read(&escape), Err(ReadError::NotAllowed));
        assert_eq!(s.read("missing"), Err(ReadError::NotFound));
        assert_eq!(s.read("."), Err(ReadError::NotAFile));
        // An operator-allowed path opens the other directory.
        let allowed = ReadScope::new(dir.path().to_str(), None, &[outside.path().to_owned()]);
        assert_eq!(allowed.read(secret.to_str().unwrap()).unwrap(), b"no");
        // Without a request workdir, relative paths are refused.
        let none = ReadScope::new(None, dir.path().to_str(), &[]);
        assert_eq!(none.read("a.txt"), Err(ReadError::NotAllowed));
        assert_eq!(none.read(abs.to_str().unwrap()).unwrap(), b"hello");
    }

    #[test]
    fn symbolic_links_cannot_lead_out() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "no").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
        assert_eq!(scope(dir.path()).read("link"), Err(ReadError::NotAllowed));
    }

    #[test]
    fn files_over_the_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let limit = MAX_READ_BYTES as usize;
        std::fs::write(dir.path().join("max"), vec![b'x'; limit]).unwrap();
        std::fs::write(dir.path().join("big"), vec![b'x'; limit + 1]).unwrap();
        assert_eq!(scope(dir.path()).read("max").unwrap().len(), limit);
        assert_eq!(
            scope(dir.path()).read("big"),
            Err(ReadError::TooLarge(MAX_READ_BYTES + 1))
        );
    }

    #[test]
    fn which_searches_absolute_path_entries() {
        let sh = which("sh").expect("sh is on PATH");
        assert!(sh.starts_with('/') && sh.ends_with("/sh"), "{sh}");
        assert_eq!(which("/bin/sh").as_deref(), Some("/bin/sh"));
        assert_eq!(which("procwarden-no-such-program"), None);
        assert_eq!(which(""), None);
    }
}
