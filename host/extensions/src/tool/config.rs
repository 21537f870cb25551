//! The `[[tool]]` entries of the configuration file.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Real-time limit of one tool call, when the entry sets none.
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 120;
/// Memory bound of one tool instance, when the entry sets none.
pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 64 << 20;
/// Guest CPU time of one call, when the entry sets none. Time spent in host calls (starting
/// or waiting for processes) does not count.
pub const DEFAULT_CPU_BUDGET_MS: u64 = 2_000;

/// One `[[tool]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// Name of the component in logs and errors. Default: the file stem, or NAME of
    /// `builtin:NAME`.
    #[serde(default)]
    pub name: Option<String>,
    /// The component file (`.wasm`), or `builtin:NAME` for a tool built into the binary
    /// (`builtin:serve`, `builtin:test_summary`).
    pub path: String,
    /// The tool's own settings, readable through its `config` host import.
    #[serde(default)]
    pub settings: toml::Table,
    /// Real-time limit of one call, in seconds (waiting for processes included).
    #[serde(default)]
    pub timeout_seconds: Option<u32>,
    /// Memory bound of one instance, in bytes.
    #[serde(default)]
    pub max_memory_bytes: Option<u64>,
    /// Guest CPU time of one call, in milliseconds (host calls excluded).
    #[serde(default)]
    pub cpu_budget_ms: Option<u64>,
}

/// Where a tool component's code comes from.
#[derive(Debug, Clone)]
pub enum ToolCode {
    File(PathBuf),
    Bytes { label: String, bytes: Arc<[u8]> },
}

impl ToolCode {
    pub fn describe(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Bytes { label, .. } => format!("<{label}>"),
        }
    }
}

/// A tool component to load, with its limits.
#[derive(Debug, Clone)]
pub struct ToolSource {
    pub name: String,
    pub code: ToolCode,
    pub settings: toml::Table,
    pub timeout_seconds: u32,
    pub max_memory_bytes: u64,
    pub cpu_budget_ms: u64,
}

impl ToolSource {
    /// In-memory component bytes named `name`, with default limits.
    pub fn bytes(name: impl Into<String>, bytes: impl Into<Arc<[u8]>>) -> Self {
        let name = name.into();
        Self::with_code(
            name.clone(),
            ToolCode::Bytes {
                label: format!("built-in tool {name}"),
                bytes: bytes.into(),
            },
        )
    }

    /// A component file with default limits, named after its stem.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let name = path
            .file_stem()
            .map_or_else(|| "tool".into(), |s| s.to_string_lossy().into_owned());
        Self::with_code(name, ToolCode::File(path))
    }

    fn with_code(name: String, code: ToolCode) -> Self {
        Self {
            name,
            code,
            settings: toml::Table::new(),
            timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            cpu_budget_ms: DEFAULT_CPU_BUDGET_MS,
        }
    }

    /// Resolves a `[[tool]]` entry: `builtin:NAME` names a tool built into the binary, any
    /// other path is a file (relative ones against `base`, the config file's directory).
    pub fn from_config(cfg: &ToolConfig, base: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let mut src = if let Some(name) = cfg.path.strip_prefix("builtin:") {
            let Some(bytes) = super::builtin::find(name) else {
                anyhow::bail!(
                    "tool path \"{}\": no built-in tool \"{name}\" (built in: {})",
                    cfg.path,
                    super::builtin::names().join(", ")
                );
            };
            Self::bytes(name, bytes)
        } else {
            let path = PathBuf::from(&cfg.path);
            let path = match base {
                Some(base) if path.is_relative() => base.join(path),
                _ => path,
            };
            Self::file(path)
        };
        if let Some(name) = &cfg.name {
            src.name = name.clone();
        }
        src.settings = cfg.settings.clone();
        if let Some(t) = cfg.timeout_seconds {
            anyhow::ensure!(
                t >= 1,
                "tool \"{}\": timeout_seconds must be at least 1",
                src.name
            );
            src.timeout_seconds = t;
        }
        if let Some(m) = cfg.max_memory_bytes {
            crate::policy::config::check_memory(m, "max_memory_bytes")?;
            src.max_memory_bytes = m;
        }
        if let Some(c) = cfg.cpu_budget_ms {
            crate::policy::config::check_timeout(c, "cpu_budget_ms")?;
            src.cpu_budget_ms = c;
        }
        Ok(src)
    }
}
