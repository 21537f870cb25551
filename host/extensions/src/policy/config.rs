//! Configuration of the policy chain: the `[policy]` table and the `[[plugin]]` entries of the
//! agent's TOML file, plus [`PluginSource`], the form in which plugins reach
//! [`PolicyChain::load`](super::PolicyChain::load) (from a file, or bytes built into the binary).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Default bound of the compiled-plugin cache, in bytes (512 MiB).
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 512 << 20;
/// Default CPU budget of one plugin call, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 10;
/// Default bound of one plugin instance's linear memory, in bytes (64 MiB).
pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 64 << 20;
/// Largest accepted per-call timeout (one minute): a policy decision must be quick.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Largest accepted memory bound per plugin instance (4 GiB, the 32-bit address space).
pub const MAX_MEMORY_BYTES: u64 = 4 << 30;
/// Smallest accepted memory bound per plugin instance (one 64 KiB wasm page).
pub const MIN_MEMORY_BYTES: u64 = 64 << 10;

/// What happens to a request when a plugin fails (traps, runs out of time or memory, or
/// cannot be instantiated). A denial by the plugin is not a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Fail closed: the request is denied, naming the plugin and the cause. The default.
    #[default]
    Deny,
    /// Fail open: the failure is logged and the request passes that plugin unchanged.
    Allow,
}

impl std::fmt::Display for OnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OnError::Deny => "deny",
            OnError::Allow => "allow",
        })
    }
}

/// The `[policy]` table: settings of the policy runtime as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Whether compiled plugins are cached on disk so restarts skip compilation.
    pub cache: bool,
    /// Where compiled plugins are cached. Default: systemd's `$CACHE_DIRECTORY`, else
    /// `$XDG_CACHE_HOME/procwarden`, else `~/.cache/procwarden`. The directory is created owner-only (0700) and is not used if
    /// another user owns it or can write to it.
    pub cache_dir: Option<PathBuf>,
    /// Most bytes of compiled plugins kept in `cache_dir`; past it the least recently used
    /// are deleted (one compiled Python plugin is tens of megabytes).
    pub cache_max_bytes: u64,
    /// Append one JSON line per plugin decision to this file.
    pub audit_file: Option<PathBuf>,
    /// CPU-time budget of one plugin call unless the plugin sets `timeout_ms` (a call is also
    /// stopped after ten times its budget in real time).
    pub default_timeout_ms: u64,
    /// Memory bound of one plugin instance unless the plugin sets `max_memory_bytes`.
    pub default_max_memory_bytes: u64,
    /// How many plugin calls may run at once. Each running chain holds one instance at a
    /// time; the pool also has room for each plugin's ready instance and for spent ones
    /// waiting to be dropped. A call beyond this fails like a trap.
    pub max_instances: u32,
    /// Threads of the chain's own runtime: they keep time for plugins that sleep, and run
    /// plugins when the synchronous API is called from inside a Tokio runtime.
    pub workers: usize,
    /// Answers each plugin remembers (least recently used forgotten first), so a request it
    /// has decided before is answered without running it again; 0 turns this off. An
    /// answer is remembered only if the plugin read no clock and no random numbers, and is
    /// used only while its `is-dir` questions still get the same answers.
    pub remembered_answers: usize,
    /// Whether the sample plugins built into the binary that `[[plugin]]` does not name
    /// (`builtin:NAME`) run too, in their default places: `ampersand`, `env` and `workdir`
    /// before the configured plugins, `deny` after them. `false`: only the configured ones.
    pub builtins: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            cache: true,
            cache_dir: None,
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
            audit_file: None,
            default_timeout_ms: DEFAULT_TIMEOUT_MS,
            default_max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            max_instances: 64,
            workers: 2,
            remembered_answers: 1024,
            builtins: true,
        }
    }
}

/// Where compiled plugins are cached when the configuration does not say, from the
/// environment `var` reads: the directory systemd made for the service (`CacheDirectory=`,
/// given as `$CACHE_DIRECTORY`, its first entry when there are several), else
/// `$XDG_CACHE_HOME/procwarden`, else `~/.cache/procwarden`.
fn default_cache_dir(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let non_empty = |name: &str| var(name).filter(|v| !v.is_empty());
    if let Some(dirs) = non_empty("CACHE_DIRECTORY")
        && let Some(first) = std::env::split_paths(&dirs).next()
        && first.is_absolute()
    {
        return Some(first);
    }
    if let Some(xdg) = non_empty("XDG_CACHE_HOME") {
        return Some(PathBuf::from(xdg).join("procwarden"));
    }
    non_empty("HOME").map(|home| PathBuf::from(home).join(".cache").join("procwarden"))
}

#[cfg(test)]
mod default_cache_dir_tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> Option<PathBuf> {
        default_cache_dir(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.into())
        })
    }

    #[test]
    fn systemds_cache_directory_comes_first_then_xdg_then_home() {
        let all = [
            ("CACHE_DIRECTORY", "/var/cache/procwarden:/var/cache/other"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("HOME", "/home/op"),
        ];
        assert_eq!(with(&all), Some("/var/cache/procwarden".into()));
        assert_eq!(with(&all[1..]), Some("/xdg/procwarden".into()));
        assert_eq!(with(&all[2..]), Some("/home/op/.cache/procwarden".into()));
        assert_eq!(with(&[("CACHE_DIRECTORY", "relative")]), None);
        assert_eq!(with(&[]), None);
    }
}

impl PolicyConfig {
    /// The cache directory in effect, or `None` when caching is off or no home is known.
    pub fn effective_cache_dir(&self) -> Option<PathBuf> {
        if !self.cache {
            return None;
        }
        if let Some(dir) = &self.cache_dir {
            return Some(dir.clone());
        }
        default_cache_dir(|name| std::env::var_os(name))
    }

    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        check_timeout(self.default_timeout_ms, "policy.default_timeout_ms")?;
        check_memory(
            self.default_max_memory_bytes,
            "policy.default_max_memory_bytes",
        )?;
        anyhow::ensure!(
            (1..=10_000).contains(&self.max_instances),
            "policy.max_instances must be between 1 and 10000 (got {})",
            self.max_instances
        );
        anyhow::ensure!(
            (1..=64).contains(&self.workers),
            "policy.workers must be between 1 and 64 (got {})",
            self.workers
        );
        anyhow::ensure!(
            self.remembered_answers <= 1_000_000,
            "policy.remembered_answers must be at most 1000000 (got {})",
            self.remembered_answers
        );
        Ok(())
    }
}

/// One `[[plugin]]` entry of the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Name used in logs, audit records and denials. Default: the file stem of `path`.
    #[serde(default)]
    pub name: Option<String>,
    /// The component file (`.wasm`).
    pub path: PathBuf,
    /// The plugin's own settings, readable through the `config` host import.
    #[serde(default)]
    pub settings: toml::Table,
    /// What a failure of this plugin does to the request. Default: `deny`.
    #[serde(default)]
    pub on_error: OnError,
    /// CPU-time budget of one call, in milliseconds (the call is also stopped after ten times
    /// this in real time). Default: `policy.default_timeout_ms`.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Memory bound of one instance, in bytes. Default: `policy.default_max_memory_bytes`.
    #[serde(default)]
    pub max_memory_bytes: Option<u64>,
    /// Directories (or files) whose files a `procwarden:policy@0.2.0` plugin may read with
    /// `read-file`, besides the request's and the agent's working directories. Relative
    /// paths are relative to the configuration file's directory.
    #[serde(default)]
    pub read_paths: Vec<PathBuf>,
}

/// Where a plugin's component comes from.
#[derive(Debug, Clone)]
pub enum PluginCode {
    /// A component file on disk.
    File(PathBuf),
    /// Component bytes held in memory, e.g. built into the binary. `label` names the origin in
    /// messages (e.g. `built-in ampersand`).
    Bytes { label: String, bytes: Arc<[u8]> },
    /// A native built-in (`builtin:NAME`): the sample plugin's logic compiled into the
    /// host, no component (see `native.rs`).
    Native { name: String },
}

impl PluginCode {
    /// How the origin is shown in messages: the path, or `<label>`.
    pub fn describe(&self) -> String {
        match self {
            PluginCode::File(path) => path.display().to_string(),
            PluginCode::Bytes { label, .. } => format!("<{label}>"),
            PluginCode::Native { name } => format!("<built-in {name}>"),
        }
    }

    /// How the plugin runs: `native` (the host's own code) or `component`.
    pub fn runs(&self) -> &'static str {
        match self {
            PluginCode::Native { .. } => "native",
            PluginCode::File(_) | PluginCode::Bytes { .. } => "component",
        }
    }
}

/// A plugin to load: its code plus everything its `[[plugin]]` entry says.
#[derive(Debug, Clone)]
pub struct PluginSource {
    /// Name in logs and denials. Default: the file stem (for [`PluginCode::File`]) or the label.
    pub name: Option<String>,
    pub code: PluginCode,
    pub settings: toml::Table,
    pub on_error: OnError,
    pub timeout_ms: Option<u64>,
    pub max_memory_bytes: Option<u64>,
    /// Paths `read-file` may read under, besides the request's and the agent's working
    /// directories.
    pub read_paths: Vec<PathBuf>,
}

impl PluginSource {
    /// A component file with default settings.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::with_code(PluginCode::File(path.into()))
    }

    /// In-memory component bytes (e.g. `include_bytes!`) named `name`, with default settings.
    pub fn bytes(name: impl Into<String>, bytes: impl Into<Arc<[u8]>>) -> Self {
        let name = name.into();
        Self {
            name: Some(name.clone()),
            ..Self::with_code(PluginCode::Bytes {
                label: format!("built-in {name}"),
                bytes: bytes.into(),
            })
        }
    }

    /// The native built-in `name` (see `native.rs`), with default settings. Loading fails
    /// if there is no native built-in of that name.
    pub fn native(name: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            name: Some(name.clone()),
            ..Self::with_code(PluginCode::Native { name })
        }
    }

    /// The component build of the sample `name`, embedded in the binary
    /// (`builtin:NAME.wasm`), with default settings; `None` if there is no such sample.
    pub fn sample_component(name: &str) -> Option<Self> {
        let (name, bytes) = super::builtin::all().find(|(n, _)| *n == name)?;
        Some(Self {
            name: Some((*name).to_owned()),
            ..Self::with_code(PluginCode::Bytes {
                label: format!("built-in {name}.wasm"),
                bytes: Arc::from(*bytes),
            })
        })
    }

    /// The sample plugins built into the binary ([`super::builtin::SAMPLES`]), with default
    /// settings, in their default order: the chain to load when there is no configuration.
    /// They run natively (`builtin:NAME`).
    pub fn samples() -> Vec<Self> {
        super::builtin::SAMPLES
            .iter()
            .map(|&(name, _)| Self::native(name))
            .collect()
    }

    /// [`samples`](Self::samples) as their embedded components (`builtin:NAME.wasm`): same
    /// settings, same answers, run in the WebAssembly sandbox.
    pub fn sample_components() -> Vec<Self> {
        super::builtin::SAMPLES
            .iter()
            .filter_map(|&(name, _)| Self::sample_component(name))
            .collect()
    }

    fn with_code(code: PluginCode) -> Self {
        Self {
            name: None,
            code,
            settings: toml::Table::new(),
            on_error: OnError::default(),
            timeout_ms: None,
            max_memory_bytes: None,
            read_paths: Vec::new(),
        }
    }

    /// Adds paths `read-file` may read under.
    pub fn with_read_paths(mut self, paths: impl IntoIterator<Item = PathBuf>) -> Self {
        self.read_paths.extend(paths);
        self
    }

    /// Replaces the settings table.
    pub fn with_settings(mut self, settings: toml::Table) -> Self {
        self.settings = settings;
        self
    }

    /// Sets what a failure of this plugin does.
    pub fn with_on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// Sets the per-call CPU budget.
    pub fn with_timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// Sets the per-instance memory bound.
    pub fn with_max_memory_bytes(mut self, bytes: u64) -> Self {
        self.max_memory_bytes = Some(bytes);
        self
    }

    /// The name this plugin goes by: the configured name, else the file stem or label.
    pub fn effective_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match &self.code {
            PluginCode::File(path) => file_stem(path),
            PluginCode::Bytes { label, .. } => label.clone(),
            PluginCode::Native { name } => name.clone(),
        }
    }
}

impl From<PluginConfig> for PluginSource {
    fn from(c: PluginConfig) -> Self {
        Self {
            name: c.name,
            code: PluginCode::File(c.path),
            settings: c.settings,
            on_error: c.on_error,
            timeout_ms: c.timeout_ms,
            max_memory_bytes: c.max_memory_bytes,
            read_paths: c.read_paths,
        }
    }
}

/// Prefix of a `[[plugin]]` path that names a sample plugin built into the binary.
pub const BUILTIN_PREFIX: &str = "builtin:";

impl PluginConfig {
    /// Where this plugin's code comes from: `builtin:NAME` for a sample built into the binary
    /// (so operators can configure one without building it), else a file, relative to
    /// `base_dir` (the configuration file's directory) unless absolute.
    pub fn to_source(&self, base_dir: Option<&Path>) -> anyhow::Result<PluginSource> {
        let mut config = self.clone();
        let text = config.path.to_string_lossy();
        if let Some(sample) = text.strip_prefix(BUILTIN_PREFIX) {
            // `builtin:NAME` runs natively where there is a native built-in of that name;
            // `builtin:NAME.wasm` is always the embedded component.
            let (sample, component) = match sample.strip_suffix(".wasm") {
                Some(stem) => (stem, true),
                None => (sample, false),
            };
            let Some((name, bytes)) = super::builtin::all().find(|(n, _)| *n == sample) else {
                let known: Vec<&str> = super::builtin::all().map(|(n, _)| *n).collect();
                anyhow::bail!(
                    "unknown built-in plugin {sample:?} (built-in: {}; add `.wasm` for the \
                     component build)",
                    known.join(", ")
                );
            };
            super::builtin::check_settings(name, &config.settings)?;
            let source = if !component && super::native::exists(name) {
                PluginSource::native(*name)
            } else if component {
                PluginSource::sample_component(name)
                    .unwrap_or_else(|| PluginSource::bytes(*name, *bytes))
            } else {
                PluginSource::bytes(*name, *bytes)
            };
            let mut source = source
                .with_settings(config.settings)
                .with_on_error(config.on_error);
            source.name = config.name.or(Some((*name).to_owned()));
            source.timeout_ms = config.timeout_ms;
            source.max_memory_bytes = config.max_memory_bytes;
            source.read_paths = relative_to(base_dir, config.read_paths);
            return Ok(source);
        }
        if let Some(base) = base_dir.filter(|_| config.path.is_relative()) {
            config.path = base.join(&config.path);
        }
        config.read_paths = relative_to(base_dir, config.read_paths);
        Ok(config.into())
    }
}

impl From<&PluginConfig> for PluginSource {
    fn from(c: &PluginConfig) -> Self {
        c.clone().into()
    }
}

/// `paths`, the relative ones joined to `base` if there is one.
fn relative_to(base: Option<&Path>, paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths
        .into_iter()
        .map(|p| match base {
            Some(base) if p.is_relative() => base.join(p),
            _ => p,
        })
        .collect()
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| path.display().to_string())
}

pub(crate) fn check_timeout(ms: u64, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_TIMEOUT_MS).contains(&ms),
        "{what} must be between 1 and {MAX_TIMEOUT_MS} ms (got {ms})"
    );
    Ok(())
}

pub(crate) fn check_memory(bytes: u64, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        (MIN_MEMORY_BYTES..=MAX_MEMORY_BYTES).contains(&bytes),
        "{what} must be between {MIN_MEMORY_BYTES} and {MAX_MEMORY_BYTES} bytes (got {bytes})"
    );
    Ok(())
}

/// Flattens a plugin's settings table into the string map the `config` host import serves.
///
/// Nested tables join keys with dots (`vars.PAGER`), array items get their index
/// (`patterns.0`), strings are given as they are, and other scalars in their TOML form
/// (`42`, `1.5`, `true`, `1979-05-27T07:32:00Z`). Empty tables and arrays yield no keys.
pub fn flatten_settings(table: &toml::Table) -> BTreeMap<String, String> {
    fn walk(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
        let key = |k: &str| {
            if prefix.is_empty() {
                k.to_owned()
            } else {
                format!("{prefix}.{k}")
            }
        };
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    walk(&key(k), v, out);
                }
            }
            toml::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(&key(&i.to_string()), v, out);
                }
            }
            toml::Value::String(s) => {
                out.insert(prefix.to_owned(), s.clone());
            }
            toml::Value::Integer(i) => {
                out.insert(prefix.to_owned(), i.to_string());
            }
            toml::Value::Boolean(b) => {
                out.insert(prefix.to_owned(), b.to_string());
            }
            // TOML's own rendering: `1.0`, `inf`, `nan`, and RFC 3339 for dates.
            toml::Value::Float(_) | toml::Value::Datetime(_) => {
                out.insert(prefix.to_owned(), value.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    for (k, v) in table {
        walk(k, v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_flatten_tables_arrays_and_scalars() {
        let table: toml::Table = toml::from_str(
            r#"
            greeting = "hi there"
            count = 42
            ratio = 1.5
            whole = 2.0
            enabled = true
            when = 1979-05-27T07:32:00Z
            patterns = ["rm -rf /", "mkfs"]
            empty = []
            [vars]
            PAGER = "cat"
            [vars.nested]
            deep = false
            [[rules]]
            name = "a"
            [[rules]]
            name = "b"
            "#,
        )
        .unwrap();
        let flat = flatten_settings(&table);
        let expect: BTreeMap<String, String> = [
            ("count", "42"),
            ("enabled", "true"),
            ("greeting", "hi there"),
            ("patterns.0", "rm -rf /"),
            ("patterns.1", "mkfs"),
            ("ratio", "1.5"),
            ("rules.0.name", "a"),
            ("rules.1.name", "b"),
            ("vars.PAGER", "cat"),
            ("vars.nested.deep", "false"),
            ("when", "1979-05-27T07:32:00Z"),
            ("whole", "2.0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(flat, expect);
    }

    #[test]
    fn config_parses_with_defaults_and_rejects_unknown_keys() {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            policy: PolicyConfig,
            #[serde(default)]
            plugin: Vec<PluginConfig>,
        }
        let f: File = toml::from_str(
            r#"
            [policy]
            audit_file = "/tmp/audit.jsonl"
            default_timeout_ms = 20
            [[plugin]]
            path = "/opt/plugins/env.wasm"
            on_error = "allow"
            settings = { vars = { PAGER = "cat" } }
            [[plugin]]
            name = "no-rm"
            path = "deny.wasm"
            timeout_ms = 5
            max_memory_bytes = 1048576
            "#,
        )
        .unwrap();
        assert_eq!(f.policy.default_timeout_ms, 20);
        assert_eq!(f.policy.default_max_memory_bytes, DEFAULT_MAX_MEMORY_BYTES);
        assert!(f.policy.cache);
        assert_eq!(f.plugin.len(), 2);
        assert_eq!(f.plugin[0].on_error, OnError::Allow);
        assert_eq!(PluginSource::from(&f.plugin[0]).effective_name(), "env");
        assert_eq!(f.plugin[1].on_error, OnError::Deny);
        assert_eq!(PluginSource::from(&f.plugin[1]).effective_name(), "no-rm");

        let bad = toml::from_str::<PluginConfig>("path = \"x.wasm\"\ntimeout = 3\n");
        assert!(bad.unwrap_err().to_string().contains("unknown field"));
        let bad = toml::from_str::<PolicyConfig>("cache_directory = \"/x\"\n");
        assert!(bad.unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn cache_dir_default_and_off() {
        let mut c = PolicyConfig {
            cache_dir: Some("/var/cache/pw".into()),
            ..Default::default()
        };
        assert_eq!(
            c.effective_cache_dir(),
            Some(PathBuf::from("/var/cache/pw"))
        );
        c.cache = false;
        assert_eq!(c.effective_cache_dir(), None);
    }
}
