//! On-disk cache of compiled plugins, so a restart deserializes instead of compiling.
//!
//! An entry's name is the SHA-256 of (a format tag, the engine fingerprint, the SHA-256 of the
//! component bytes). The engine fingerprint covers Wasmtime's version, the target, compiler
//! flags and tunables, so an upgrade or a changed engine setting simply misses and recompiles.
//! An entry is the serialized artifact followed by its SHA-256, checked before use. Entries
//! are written to a temporary file and renamed into place, so a reader never sees a partial
//! file. The directory is bounded (`[policy] cache_max_bytes`): after storing an entry, the
//! least recently used entries (by modification time, which a hit refreshes) are deleted
//! until the rest fit. One compiled Python plugin is tens of megabytes. Deleting the directory
//! is always safe.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::wasm_err;

/// Bump when the layout or meaning of cache entries changes.
const FORMAT_TAG: &[u8] = b"procwarden-policy-cwasm-v1";

/// How a plugin's compiled code was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheStatus {
    /// Deserialized from the cache: no compilation.
    Hit,
    /// Compiled; the result was stored for next time (unless storing failed, which is logged).
    Miss,
    /// Compiled; no usable cache directory.
    Off,
}

impl std::fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Off => "off",
        })
    }
}

/// The compiled-artifact cache of one engine.
pub(crate) struct ArtifactCache {
    /// `None` when caching is off or the directory is unusable.
    dir: Option<PathBuf>,
    fingerprint: [u8; 32],
    /// Most bytes of entries kept; older ones are evicted after a store.
    max_bytes: u64,
}

impl ArtifactCache {
    /// A cache under `dir` (created owner-only if missing). A directory another user owns or
    /// may write to is refused with a warning, and plugins are then compiled every time.
    pub fn new(dir: Option<PathBuf>, fingerprint: [u8; 32]) -> Self {
        let dir = dir.and_then(|dir| {
            let dir = dir.join("plugins");
            match prepare_dir(&dir) {
                Ok(()) => Some(dir),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "not caching compiled policy plugins: {e:#}");
                    None
                }
            }
        });
        Self {
            dir,
            fingerprint,
            max_bytes: u64::MAX,
        }
    }

    /// Bound the entries' total size to `max_bytes`.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The directory entries go to, if caching is on.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Where the entry for `wasm` lives (whether or not it exists yet).
    pub fn entry_path(&self, wasm: &[u8]) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut h = Sha256::new();
        h.update(FORMAT_TAG);
        h.update(self.fingerprint);
        h.update(Sha256::digest(wasm));
        Some(dir.join(format!("{}.cwasm", hex(&h.finalize()))))
    }

    /// Compiled code for `wasm`: from the cache if a valid entry exists, else compiled (which
    /// also validates the bytes) and stored. `label` names the plugin in logs.
    pub fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        label: &str,
    ) -> anyhow::Result<(Component, CacheStatus)> {
        let Some(path) = self.entry_path(wasm) else {
            let component = Component::new(engine, wasm).map_err(wasm_err)?;
            return Ok((component, CacheStatus::Off));
        };
        match self.read_entry(engine, &path) {
            Ok(Some(component)) => {
                // Used now: the last to be evicted.
                touch(&path);
                return Ok((component, CacheStatus::Hit));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(plugin = label, entry = %path.display(),
                    "discarding unusable cached policy plugin: {e:#}");
                let _ = fs::remove_file(&path);
            }
        }
        let component = Component::new(engine, wasm).map_err(wasm_err)?;
        if let Err(e) = component
            .serialize()
            .map_err(wasm_err)
            .and_then(|artifact| write_atomically(&path, &entry_bytes(&artifact)))
        {
            tracing::warn!(plugin = label, entry = %path.display(),
                "cannot store compiled policy plugin in the cache: {e:#}");
        } else {
            evict(&path, self.max_bytes);
        }
        Ok((component, CacheStatus::Miss))
    }

    fn read_entry(&self, engine: &Engine, path: &Path) -> anyhow::Result<Option<Component>> {
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context("cannot inspect the entry"),
        };
        anyhow::ensure!(meta.is_file(), "not a regular file");
        check_private(&meta)?;
        // Read into memory rather than `Component::deserialize_file`, which maps the file:
        // a mapped file that someone truncates or rewrites in place would crash the agent
        // (SIGBUS) or change code under it. Our own updates are renames, but others' may not be.
        let entry = fs::read(path).context("cannot read the entry")?;
        let artifact = verified_artifact(&entry)?;
        // SAFETY: `Component::deserialize` trusts its input to be an artifact Wasmtime
        // produced; arbitrary bytes could make the runtime execute anything. These bytes are
        // exactly what `store` wrote: the entry ends with the SHA-256 of the artifact, checked
        // just above, so a damaged or partial file is rejected; the entry lives in a
        // directory this user owns and no one else may write to (checked by `prepare_dir`),
        // and the file itself is owned by this user and not writable by others (checked just
        // above), so only this user could have put it there. Its name is the hash of the
        // component bytes and the engine fingerprint, so it is `Component::serialize` output
        // for this very component and a compatible engine; Wasmtime still checks the
        // artifact's header (version, target, flags) and fails on a mismatch, which `load`
        // handles by recompiling.
        let component = unsafe { Component::deserialize(engine, artifact) }.map_err(wasm_err)?;
        Ok(Some(component))
    }
}

/// Mark an entry as just used (its modification time orders eviction).
fn touch(path: &Path) {
    if let Ok(file) = OpenOptions::new().write(true).open(path) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// Delete the least recently used entries of `kept`'s directory, never `kept` itself, until
/// the entries total at most `max_bytes`. Best effort: an entry another agent removes first is
/// simply gone.
fn evict(kept: &Path, max_bytes: u64) {
    let Some(dir) = kept.parent() else { return };
    let Ok(listing) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = listing
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
    let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
    if total <= max_bytes {
        return;
    }
    entries.sort();
    for (_, len, path) in entries {
        if total <= max_bytes {
            break;
        }
        if path == kept {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => {
                total = total.saturating_sub(len);
                tracing::info!(entry = %path.display(), bytes = len,
                    "evicted a compiled policy plugin from the cache (cache_max_bytes)");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => total = total.saturating_sub(len),
            Err(e) => tracing::warn!(entry = %path.display(), "cannot evict from the cache: {e}"),
        }
    }
}

/// An entry is the serialized artifact followed by its SHA-256.
fn entry_bytes(artifact: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(artifact.len() + 32);
    entry.extend_from_slice(artifact);
    entry.extend_from_slice(&Sha256::digest(artifact));
    entry
}

/// The artifact of an entry whose checksum matches.
fn verified_artifact(entry: &[u8]) -> anyhow::Result<&[u8]> {
    anyhow::ensure!(entry.len() > 32, "truncated entry ({} bytes)", entry.len());
    let (artifact, sum) = entry.split_at(entry.len() - 32);
    anyhow::ensure!(
        Sha256::digest(artifact).as_slice() == sum,
        "checksum mismatch (damaged entry)"
    );
    Ok(artifact)
}

/// Creates `dir` owner-only if missing, then checks it is a directory this user owns and no
/// one else may write to.
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let meta = fs::metadata(dir).with_context(|| format!("cannot inspect {}", dir.display()))?;
    anyhow::ensure!(meta.is_dir(), "{} is not a directory", dir.display());
    check_private(&meta).with_context(|| dir.display().to_string())
}

/// This user owns it, and neither group nor others may write to it.
fn check_private(meta: &fs::Metadata) -> anyhow::Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    anyhow::ensure!(
        meta.uid() == me,
        "owned by uid {}, not by this user (uid {me})",
        meta.uid()
    );
    anyhow::ensure!(
        meta.mode() & 0o022 == 0,
        "writable by group or others (mode {:o})",
        meta.mode() & 0o7777
    );
    Ok(())
}

/// Writes `bytes` to `path` through a private temporary file in the same directory, fsyncs
/// it, and renames it into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().context("entry path has no directory")?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let result = (|| {
        let mut f: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path).with_context(|| format!("cannot rename into {}", path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn entry_names_depend_on_bytes_and_engine() {
        let dir = tempfile::tempdir().unwrap();
        let a = ArtifactCache::new(Some(dir.path().into()), [1; 32]);
        let b = ArtifactCache::new(Some(dir.path().into()), [2; 32]);
        let p = a.entry_path(b"one").unwrap();
        assert_eq!(p, a.entry_path(b"one").unwrap());
        assert_ne!(p, a.entry_path(b"two").unwrap());
        assert_ne!(p, b.entry_path(b"one").unwrap());
        assert!(p.starts_with(dir.path().join("plugins")));
        let mode = fs::metadata(dir.path().join("plugins")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("plugins");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let c = ArtifactCache::new(Some(dir.path().into()), [0; 32]);
        assert!(c.dir().is_none());
        assert!(c.entry_path(b"x").is_none());
    }

    #[test]
    fn eviction_removes_the_least_recently_used_but_never_the_new_entry() {
        use std::time::{Duration, SystemTime};
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str, age_s: u64| {
            let path = dir.path().join(name);
            fs::write(&path, [0u8; 100]).unwrap();
            let file = OpenOptions::new().write(true).open(&path).unwrap();
            file.set_modified(SystemTime::now() - Duration::from_secs(age_s))
                .unwrap();
            path
        };
        let oldest = at("a.cwasm", 300);
        let middle = at("b.cwasm", 200);
        let newest = at("c.cwasm", 100);
        // The entry just stored is the oldest by time (say, a clock step) and still stays.
        let kept = at("d.cwasm", 400);
        let other = at("notes.txt", 500);
        evict(&kept, 250);
        assert!(kept.exists() && newest.exists() && other.exists());
        assert!(!oldest.exists() && !middle.exists());
        // A hit refreshes an entry, so it outlives older ones.
        touch(&kept);
        let again = at("e.cwasm", 50);
        evict(&again, 200);
        assert!(kept.exists() && again.exists() && !newest.exists());
        // Within the bound nothing goes.
        evict(&again, u64::MAX);
        assert!(kept.exists() && again.exists());
    }

    #[test]
    fn entries_carry_a_checksum() {
        let entry = entry_bytes(b"artifact");
        assert_eq!(verified_artifact(&entry).unwrap(), b"artifact");
        let mut bad = entry.clone();
        bad[0] ^= 1;
        assert!(verified_artifact(&bad).is_err());
        assert!(verified_artifact(&entry[..20]).is_err());
    }

    #[test]
    fn atomic_write_leaves_only_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.cwasm");
        write_atomically(&path, b"abc").unwrap();
        write_atomically(&path, b"abcd").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"abcd");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }
}
