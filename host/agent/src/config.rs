//! The agent's configuration file (TOML). Every key is optional; unknown keys are errors so a
//! typo does not silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use procwarden_extensions::policy::{PluginConfig, PluginSource, PolicyConfig};
use procwarden_process::{BufferLimits, ManagerSettings, buffer::LINE_TRUNCATION_SUFFIX};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7077";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP API.
    pub listen: Option<SocketAddr>,
    /// Bearer token every API request must carry. Required when not bound to loopback.
    pub token: Option<String>,
    /// The agent's working directory: where commands run when a request names none.
    pub workdir: Option<PathBuf>,
    pub head_bytes: usize,
    pub tail_bytes: usize,
    pub max_line_bytes: usize,
    /// Most processes one list returns.
    pub list_cap: usize,
    pub reap_age_seconds: f64,
    pub reap_interval_seconds: f64,
    /// Longest a `?wait=true` request blocks before answering with a snapshot.
    pub wait_cap_seconds: f64,
    /// Deadline of every other request.
    pub request_timeout_seconds: f64,
    pub max_body_bytes: usize,
    /// Between SIGTERM and SIGKILL, on shutdown and timeouts.
    pub shutdown_grace_seconds: f64,
    /// Ignore unknown fields in a start request's body instead of refusing it with 400 (for
    /// old clients that send fields this agent does not know).
    pub lenient_start_body: bool,
    /// The policy runtime (`[policy]`).
    pub policy: PolicyConfig,
    /// The policy chain, in order (`[[plugin]]`). Empty: the built-in samples.
    #[serde(rename = "plugin")]
    pub plugins: Vec<PluginConfig>,
    /// Directory of the file this came from; relative plugin paths are resolved against it.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        let buffer = BufferLimits::default();
        Self {
            listen: None,
            token: None,
            workdir: None,
            head_bytes: buffer.head_bytes,
            tail_bytes: buffer.tail_bytes,
            max_line_bytes: buffer.max_line_bytes,
            list_cap: 10,
            reap_age_seconds: 300.0,
            reap_interval_seconds: 30.0,
            wait_cap_seconds: 300.0,
            request_timeout_seconds: 20.0,
            max_body_bytes: 1024 * 1024,
            shutdown_grace_seconds: 5.0,
            lenient_start_body: false,
            policy: PolicyConfig::default(),
            plugins: Vec::new(),
            base_dir: None,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut config = Self::parse(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        config.base_dir = path.parent().map(Path::to_path_buf);
        Ok(config)
    }

    /// The plugins to load: the configured ones, or the built-in samples when none are.
    pub fn plugin_sources(&self) -> anyhow::Result<Vec<PluginSource>> {
        if self.plugins.is_empty() {
            return Ok(PluginSource::samples());
        }
        self.plugins
            .iter()
            .map(|p| {
                p.to_source(self.base_dir.as_deref())
                    .with_context(|| format!("plugin {}", p.path.display()))
            })
            .collect()
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        for (name, value) in [
            ("reap_age_seconds", self.reap_age_seconds),
            ("reap_interval_seconds", self.reap_interval_seconds),
            ("wait_cap_seconds", self.wait_cap_seconds),
            ("request_timeout_seconds", self.request_timeout_seconds),
            ("shutdown_grace_seconds", self.shutdown_grace_seconds),
        ] {
            if !(value.is_finite() && value > 0.0 && value < 1e9) {
                bail!("{name} must be a positive number of seconds, got {value}");
            }
        }
        if self.max_line_bytes <= LINE_TRUNCATION_SUFFIX.len() {
            bail!(
                "max_line_bytes must be more than {}",
                LINE_TRUNCATION_SUFFIX.len()
            );
        }
        if self.list_cap == 0 {
            bail!("list_cap must be at least 1");
        }
        if self.token.as_deref().is_some_and(str::is_empty) {
            bail!("token must not be empty");
        }
        Ok(())
    }

    pub fn manager_settings(&self) -> ManagerSettings {
        ManagerSettings {
            buffer: BufferLimits {
                head_bytes: self.head_bytes,
                tail_bytes: self.tail_bytes,
                max_line_bytes: self.max_line_bytes,
            },
            reap_age: secs(self.reap_age_seconds),
            kill_grace: secs(self.shutdown_grace_seconds),
        }
    }

    pub fn reap_interval(&self) -> Duration {
        secs(self.reap_interval_seconds)
    }

    pub fn wait_cap(&self) -> Duration {
        secs(self.wait_cap_seconds)
    }

    pub fn request_timeout(&self) -> Duration {
        secs(self.request_timeout_seconds)
    }
}

fn secs(value: f64) -> Duration {
    Duration::from_secs_f64(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_reference_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.head_bytes, 16384);
        assert_eq!(config.list_cap, 10);
        assert_eq!(config.wait_cap(), Duration::from_secs(300));
    }

    #[test]
    fn plugins_default_to_the_samples_and_resolve_against_the_file() {
        let config = Config::default();
        let names: Vec<String> = config
            .plugin_sources()
            .unwrap()
            .iter()
            .map(|s| s.effective_name())
            .collect();
        assert_eq!(names, ["ampersand", "env", "workdir", "deny"]);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("procwarden.toml");
        std::fs::write(
            &file,
            "[[plugin]]\npath = \"plugins/mine.wasm\"\n[[plugin]]\npath = \"builtin:deny\"\nsettings = { patterns = [\"git push\"] }\n",
        )
        .unwrap();
        let sources = Config::load(&file).unwrap().plugin_sources().unwrap();
        assert_eq!(
            sources[0].code.describe(),
            dir.path().join("plugins/mine.wasm").display().to_string()
        );
        assert_eq!(sources[1].effective_name(), "deny");
        assert!(sources[1].settings.contains_key("patterns"));
        let unknown = Config::parse("[[plugin]]\npath = \"builtin:nope\"").unwrap();
        assert!(unknown.plugin_sources().is_err());
    }

    #[test]
    fn typos_and_nonsense_are_rejected() {
        assert!(Config::parse("wait_cap = 3").is_err());
        assert!(Config::parse("wait_cap_seconds = -1").is_err());
        assert!(Config::parse("max_line_bytes = 4").is_err());
        assert!(Config::parse("listen = \"nowhere\"").is_err());
        assert!(Config::parse("[[plugin]]\npath = \"x.wasm\"\nonerror = \"allow\"").is_err());
    }
}
