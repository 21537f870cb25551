//! The `[filters]` table and the `[[filter]]` entries of the configuration file, and
//! [`FilterSource`], the form in which filters reach [`FilterChain::load`](super::FilterChain::load).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::builtin::{self, Builtin};
use super::native::MakeNative;
use crate::policy::OnError;

/// CPU budget of one filter call, when the entry sets none. A 32 KiB read takes the `redact`
/// sample tens of microseconds; the budget only stops a filter that has gone wrong.
pub const DEFAULT_CPU_BUDGET_MS: u64 = 100;
/// Memory bound of one filter instance, when the entry sets none.
pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 64 << 20;

/// The `[filters]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FiltersConfig {
    /// Whether the sample filters built into the binary that `[[filter]]` does not name
    /// (`redact`) run too, after the configured ones. `false`: only the configured ones.
    pub builtins: bool,
}

impl Default for FiltersConfig {
    fn default() -> Self {
        Self { builtins: true }
    }
}

/// One `[[filter]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Name of the filter in logs, errors and health. Default: the file stem, or NAME of
    /// `builtin:NAME`.
    #[serde(default)]
    pub name: Option<String>,
    /// The component file (`.wasm`, relative to the config file), or `builtin:redact`.
    pub path: String,
    /// The filter's own settings, readable through its `config` host import (for `redact`:
    /// `names`, the list of variable-name globs whose values are masked).
    #[serde(default)]
    pub settings: toml::Table,
    /// When the filter fails: `deny` (the default) withholds the output and the client gets
    /// an error naming the filter; `allow` passes the text on without this filter's changes.
    #[serde(default)]
    pub on_error: OnError,
    /// CPU time of one call, in milliseconds (a call is also stopped after ten times this in
    /// real time).
    #[serde(default)]
    pub cpu_budget_ms: Option<u64>,
    /// Memory bound of one instance, in bytes.
    #[serde(default)]
    pub max_memory_bytes: Option<u64>,
}

/// Where a filter's code comes from.
#[derive(Debug, Clone)]
pub enum FilterCode {
    /// A component file.
    File(PathBuf),
    /// Component bytes in memory (the embedded `builtin:NAME.wasm`).
    Bytes { label: String, bytes: Arc<[u8]> },
    /// A native built-in (`builtin:NAME`): host code, no component.
    Native { label: String, make: MakeNative },
}

/// A filter to load, with its limits (which apply to components only).
#[derive(Debug, Clone)]
pub struct FilterSource {
    pub name: String,
    pub code: FilterCode,
    pub settings: toml::Table,
    pub on_error: OnError,
    pub cpu_budget_ms: u64,
    pub max_memory_bytes: u64,
}

impl FilterSource {
    /// In-memory component bytes named `name`, with default limits.
    pub fn bytes(name: impl Into<String>, bytes: impl Into<Arc<[u8]>>) -> Self {
        let name = name.into();
        Self::with_code(
            name.clone(),
            FilterCode::Bytes {
                label: format!("built-in filter {name}"),
                bytes: bytes.into(),
            },
        )
    }

    /// Native built-in code named `name`.
    pub fn native(name: impl Into<String>, make: MakeNative) -> Self {
        let name = name.into();
        Self::with_code(
            name.clone(),
            FilterCode::Native {
                label: format!("built-in filter {name}"),
                make,
            },
        )
    }

    /// A component file with default limits, named after its stem.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let name = path
            .file_stem()
            .map_or_else(|| "filter".into(), |s| s.to_string_lossy().into_owned());
        Self::with_code(name, FilterCode::File(path))
    }

    fn with_code(name: String, code: FilterCode) -> Self {
        Self {
            name,
            code,
            settings: toml::Table::new(),
            on_error: OnError::Deny,
            cpu_budget_ms: DEFAULT_CPU_BUDGET_MS,
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
        }
    }

    /// The filters built into the binary that the default chain runs (natively), with
    /// default settings.
    pub fn samples() -> Vec<Self> {
        builtin::NATIVE
            .iter()
            .map(|(name, make)| Self::native(*name, *make))
            .collect()
    }

    /// What `builtin:NAME` names, with default settings: `NAME` natively, `NAME.wasm` as
    /// the embedded component. Either is named NAME.
    pub fn builtin(name: &str) -> Option<Self> {
        let base = name.strip_suffix(".wasm").unwrap_or(name);
        let mut src = match builtin::find(name)? {
            Builtin::Native(make) => Self::native(base, make),
            Builtin::Component(bytes) => Self::bytes(base, bytes),
        };
        if let FilterCode::Bytes { label, .. } = &mut src.code {
            *label = format!("built-in filter {name}");
        }
        Some(src)
    }

    /// Where the code comes from, for logs and errors.
    pub fn origin(&self) -> String {
        match &self.code {
            FilterCode::File(path) => path.display().to_string(),
            FilterCode::Bytes { label, .. } | FilterCode::Native { label, .. } => {
                format!("<{label}>")
            }
        }
    }

    /// How it runs: `native` (host code) or `component` (WebAssembly, sandboxed).
    pub fn runs(&self) -> &'static str {
        match &self.code {
            FilterCode::Native { .. } => "native",
            FilterCode::File(_) | FilterCode::Bytes { .. } => "component",
        }
    }

    /// Resolves a `[[filter]]` entry: `builtin:NAME` names a filter built into the binary
    /// (`NAME` native, `NAME.wasm` its component), any other path is a file (relative ones
    /// against `base`, the config file's directory). The limits of a native built-in are
    /// checked and accepted but do not apply (it is the host's own code).
    pub fn from_config(cfg: &FilterConfig, base: Option<&Path>) -> anyhow::Result<Self> {
        let mut src = if let Some(name) = cfg.path.strip_prefix("builtin:") {
            let Some(src) = Self::builtin(name) else {
                anyhow::bail!(
                    "filter path \"{}\": no built-in filter \"{name}\" (built in: {})",
                    cfg.path,
                    builtin::names().join(", ")
                );
            };
            src
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
        src.on_error = cfg.on_error;
        if let Some(c) = cfg.cpu_budget_ms {
            crate::policy::config::check_timeout(c, "cpu_budget_ms")?;
            src.cpu_budget_ms = c;
        }
        if let Some(m) = cfg.max_memory_bytes {
            crate::policy::config::check_memory(m, "max_memory_bytes")?;
            src.max_memory_bytes = m;
        }
        if src.runs() == "native" && (cfg.cpu_budget_ms.is_some() || cfg.max_memory_bytes.is_some())
        {
            tracing::warn!(
                filter = %src.name,
                "cpu_budget_ms and max_memory_bytes do not apply to the native built-in {} \
                 (use {}.wasm to run its component within limits)",
                cfg.path,
                cfg.path
            );
        }
        Ok(src)
    }

    /// The filters to load, in order: the configured ones, then the built-in samples they do
    /// not name (by `builtin:NAME`, `builtin:NAME.wasm` or by taking the name) unless
    /// `builtins` is false.
    pub fn chain(
        configured: &[FilterConfig],
        filters: &FiltersConfig,
        base: Option<&Path>,
    ) -> anyhow::Result<Vec<Self>> {
        let mut chain = configured
            .iter()
            .map(|c| {
                Self::from_config(c, base).map_err(|e| anyhow::anyhow!("filter {}: {e:#}", c.path))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if filters.builtins {
            for sample in Self::samples() {
                let by_path = |p: &str| {
                    p.strip_prefix("builtin:")
                        .map(|n| n.strip_suffix(".wasm").unwrap_or(n))
                        == Some(sample.name.as_str())
                };
                let named = configured.iter().any(|c| by_path(&c.path))
                    || chain.iter().any(|c| c.name == sample.name);
                if !named {
                    chain.push(sample);
                }
            }
        }
        Ok(chain)
    }
}
