//! The agent's configuration file (TOML). Every key is optional; unknown keys are errors so a
//! typo does not silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use procwarden_extensions::filter::{FilterConfig, FiltersConfig};
use procwarden_extensions::policy::config::BUILTIN_PREFIX;
use procwarden_extensions::policy::{PluginConfig, PluginSource, PolicyConfig};
use procwarden_extensions::tool::{ToolConfig, ToolSource};
use procwarden_process::environment::Inheritance;
use procwarden_process::{
    BufferLimits, Containment, ManagerSettings, SpoolSettings, buffer::LINE_TRUNCATION_SUFFIX,
};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7077";

/// The `[env]` table: which of the agent's environment variables commands inherit. By
/// default all of them, cloud keys included; variables a request or a plugin sets are added
/// on top either way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvConfig {
    /// Inherit none of the agent's variables, except those in `inherit`.
    pub clear: bool,
    /// Inherit only these variables (a name ending in `*` is a prefix, e.g. `LC_*`).
    pub inherit: Option<Vec<String>>,
}

impl EnvConfig {
    pub fn inheritance(&self) -> Inheritance {
        match (&self.inherit, self.clear) {
            (Some(names), _) => Inheritance::Only(names.clone()),
            (None, true) => Inheritance::Only(Vec::new()),
            (None, false) => Inheritance::All,
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        for name in self.inherit.iter().flatten() {
            let bare = name.strip_suffix('*').unwrap_or(name);
            if bare.contains(['=', '\0', '*']) || (bare.is_empty() && name.is_empty()) {
                bail!("env.inherit: {name:?} is not a variable name (or a prefix ending in *)");
            }
        }
        Ok(())
    }
}

/// Limits on live processes; a start over one is refused (HTTP 429).
#[derive(Debug, Clone, Copy)]
pub struct ProcessLimits {
    pub max_processes: usize,
    pub max_processes_per_chat: usize,
}

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
    /// A client must send a request's whole header within this, or the connection is closed.
    pub header_read_timeout_seconds: f64,
    /// A client must send a request's whole body within this (from the end of its header),
    /// or it is answered 408.
    pub body_read_timeout_seconds: f64,
    /// Most open HTTP connections. At the cap, the connection that has waited longest for a
    /// request is closed to make room; when every connection has a request in flight, new
    /// ones are refused with 503.
    pub max_connections: usize,
    /// Most MCP sessions over HTTP at once; an `initialize` beyond it is refused with 503.
    pub mcp_max_sessions: usize,
    /// An MCP session without a message and without a call in flight for this long is closed.
    pub mcp_session_idle_seconds: f64,
    /// Between SIGTERM and SIGKILL, on shutdown and timeouts.
    pub shutdown_grace_seconds: f64,
    /// Most live processes (shell running or group alive) the agent runs at once.
    pub max_processes: usize,
    /// Most live processes one chat runs at once.
    pub max_processes_per_chat: usize,
    /// Most exited processes kept for reading; past it the oldest are forgotten first,
    /// before `reap_age_seconds`.
    pub max_exited_processes: usize,
    /// Ignore unknown fields in a start request's body instead of refusing it with 400 (for
    /// old clients that send fields this agent does not know).
    pub lenient_start_body: bool,
    /// How descendants of commands are tracked: `auto` (a cgroup v2 per command where one is
    /// writable, else `subreaper`), `cgroup` (refuse to start without one) or `subreaper`.
    pub containment: Containment,
    /// Names the agent's cgroup directory; set by `serve` from the address it listens on, so
    /// the next agent on that address kills what a crashed one left.
    #[serde(skip)]
    pub instance: Option<String>,
    /// Subreaper mode: directory of the file that lists running commands' groups, so the next
    /// agent on the same address kills what a crashed one left (default: `$XDG_RUNTIME_DIR/procwarden`,
    /// else `procwarden-state-<uid>` under the system's temporary directory).
    pub state_dir: Option<PathBuf>,
    /// Directory of the output spool files (default: a directory of this agent under the
    /// system's temporary directory). Files are deleted when their process is forgotten and at
    /// shutdown.
    pub spool_dir: Option<PathBuf>,
    /// Most bytes of one process's output kept on disk; past it the first half and the latest
    /// half are kept. 0 turns the spool off.
    pub spool_max_bytes: u64,
    /// Most bytes all spools keep together; past it the oldest exited processes' spools go.
    pub spool_total_bytes: u64,
    /// What commands inherit from the agent's environment (`[env]`).
    pub env: EnvConfig,
    /// The policy runtime (`[policy]`).
    pub policy: PolicyConfig,
    /// The policy chain, in order (`[[plugin]]`). Empty: the built-in samples.
    #[serde(rename = "plugin")]
    pub plugins: Vec<PluginConfig>,
    /// Tool plugins (`[[tool]]`), offered to models next to the built-in tools.
    #[serde(rename = "tool")]
    pub tools: Vec<ToolConfig>,
    /// The output filters as a whole (`[filters]`): whether the built-in `redact` runs.
    pub filters: FiltersConfig,
    /// Output filters (`[[filter]]`), in order, before the built-in ones.
    pub filter: Vec<FilterConfig>,
    /// Directory of the file this came from; relative plugin paths are resolved against it.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
    /// The file this came from: what a reload (SIGHUP, `POST /api/v0/reload`) reads again.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// `token` was set from the command line or the environment, not from the file: a
    /// reload does not report the file's token as changed.
    #[serde(skip)]
    pub token_overridden: bool,
    /// Working directories given outside the file (`procwarden mcp`); kept across reloads.
    #[serde(skip)]
    pub workdir_defaults: WorkdirDefaults,
}

/// The working directory from outside the file: `flag` (`mcp --workdir`) wins over the file's
/// `workdir`, `fallback` (the directory `procwarden mcp` was started in) applies when neither
/// names one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkdirDefaults {
    pub flag: Option<PathBuf>,
    pub fallback: Option<PathBuf>,
}

impl Config {
    /// The address `serve` listens on unless `--listen` names another.
    pub fn listen_or_default(&self) -> SocketAddr {
        self.listen.unwrap_or_else(|| {
            DEFAULT_LISTEN
                .parse()
                .expect("DEFAULT_LISTEN is a socket address")
        })
    }

    /// Put [`Config::workdir_defaults`] in force over the file's `workdir`.
    pub fn apply_workdir_defaults(&mut self) {
        let defaults = &self.workdir_defaults;
        if let Some(flag) = &defaults.flag {
            self.workdir = Some(flag.clone());
        } else if self.workdir.is_none() {
            self.workdir = defaults.fallback.clone();
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let buffer = BufferLimits::default();
        let spool = SpoolSettings::default();
        Self {
            listen: None,
            token: None,
            workdir: None,
            workdir_defaults: WorkdirDefaults::default(),
            head_bytes: buffer.head_bytes,
            tail_bytes: buffer.tail_bytes,
            max_line_bytes: buffer.max_line_bytes,
            list_cap: 10,
            reap_age_seconds: 300.0,
            reap_interval_seconds: 30.0,
            wait_cap_seconds: 300.0,
            request_timeout_seconds: 20.0,
            max_body_bytes: 1024 * 1024,
            header_read_timeout_seconds: 10.0,
            body_read_timeout_seconds: 30.0,
            max_connections: 256,
            mcp_max_sessions: 256,
            mcp_session_idle_seconds: 600.0,
            shutdown_grace_seconds: 5.0,
            max_processes: 1024,
            max_processes_per_chat: 64,
            max_exited_processes: 1000,
            lenient_start_body: false,
            containment: Containment::Auto,
            instance: None,
            state_dir: None,
            spool_dir: spool.dir,
            spool_max_bytes: spool.max_bytes,
            spool_total_bytes: spool.total_bytes,
            env: EnvConfig::default(),
            policy: PolicyConfig::default(),
            plugins: Vec::new(),
            tools: Vec::new(),
            filters: FiltersConfig::default(),
            filter: Vec::new(),
            base_dir: None,
            source: None,
            token_overridden: false,
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
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// The plugins to load, in chain order: the configured ones, with the sample plugins
    /// built into the binary that the configuration does not name in their default places
    /// (`ampersand`, `env`, `workdir` first, `deny` last) unless `[policy] builtins = false`.
    pub fn plugin_sources(&self) -> anyhow::Result<Vec<PluginSource>> {
        let configured = self
            .plugins
            .iter()
            .map(|p| {
                p.to_source(self.base_dir.as_deref())
                    .with_context(|| format!("plugin {}", p.path.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if !self.policy.builtins {
            return Ok(configured);
        }
        // A sample the file names (`builtin:deny`), or replaces with a plugin of the same
        // name (its own `deny.wasm`), is where the file puts it.
        let named = |sample: &str| {
            self.plugins
                .iter()
                .any(|p| p.path.to_str() == Some(&format!("{BUILTIN_PREFIX}{sample}")))
                || configured.iter().any(|c| c.effective_name() == sample)
        };
        let (mut chain, mut last) = (Vec::new(), Vec::new());
        for source in PluginSource::samples() {
            let name = source.effective_name();
            if named(&name) {
                continue;
            }
            // `deny` judges the command as it will run, after every rewrite.
            if name == "deny" {
                last.push(source);
            } else {
                chain.push(source);
            }
        }
        chain.extend(configured);
        chain.extend(last);
        Ok(chain)
    }

    /// The tool plugins to load (`builtin:NAME` or a file, relative to the config file).
    pub fn tool_sources(&self) -> anyhow::Result<Vec<ToolSource>> {
        self.tools
            .iter()
            .map(|t| ToolSource::from_config(t, self.base_dir.as_deref()))
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
            (
                "header_read_timeout_seconds",
                self.header_read_timeout_seconds,
            ),
            ("body_read_timeout_seconds", self.body_read_timeout_seconds),
            ("mcp_session_idle_seconds", self.mcp_session_idle_seconds),
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
        for (name, value) in [
            ("list_cap", self.list_cap),
            ("max_processes", self.max_processes),
            ("max_processes_per_chat", self.max_processes_per_chat),
        ] {
            if value == 0 {
                bail!("{name} must be at least 1");
            }
        }
        if let Some(token) = &self.token {
            validate_token(token)?;
        }
        if self.max_connections < 2 {
            bail!("max_connections must be at least 2");
        }
        if self.mcp_max_sessions == 0 {
            bail!("mcp_max_sessions must be at least 1");
        }
        self.env.validate()?;
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
            max_exited: self.max_exited_processes,
            containment: self.containment,
            instance: self
                .instance
                .clone()
                .unwrap_or_else(|| ManagerSettings::default().instance),
            spool: SpoolSettings {
                dir: self.spool_dir.clone(),
                max_bytes: self.spool_max_bytes,
                total_bytes: self.spool_total_bytes,
                ..SpoolSettings::default()
            },
            // Only a stable instance (set by `serve`) has a next agent to read the file.
            state_file: self
                .instance
                .as_ref()
                .map(|instance| self.state_dir().join(format!("{instance}.groups"))),
        }
    }

    fn state_dir(&self) -> PathBuf {
        if let Some(dir) = &self.state_dir {
            return dir.clone();
        }
        match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(runtime) if !runtime.is_empty() => PathBuf::from(runtime).join("procwarden"),
            _ => {
                // /proc/self belongs to the agent's effective user.
                use std::os::unix::fs::MetadataExt;
                let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
                std::env::temp_dir().join(format!("procwarden-state-{uid}"))
            }
        }
    }

    pub fn process_limits(&self) -> ProcessLimits {
        ProcessLimits {
            max_processes: self.max_processes,
            max_processes_per_chat: self.max_processes_per_chat,
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

    pub fn header_read_timeout(&self) -> Duration {
        secs(self.header_read_timeout_seconds)
    }

    pub fn body_read_timeout(&self) -> Duration {
        secs(self.body_read_timeout_seconds)
    }

    pub fn mcp_session_idle(&self) -> Duration {
        secs(self.mcp_session_idle_seconds)
    }
}

/// `serve` refuses to listen beyond loopback without a token: anyone who can reach the port
/// could run commands. `config check` applies the same rule, so a file it calls valid starts.
pub fn check_exposure(listen: SocketAddr, token: Option<&str>) -> anyhow::Result<()> {
    if !listen.ip().is_loopback() && token.is_none() {
        bail!(
            "listening on {listen} (not loopback) needs a token: set `token` in the config file, \
             pass `serve --token`, or set PROCWARDEN_TOKEN; or listen on 127.0.0.1"
        );
    }
    Ok(())
}

/// Shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_BYTES: usize = 16;

/// A token is sent as `Authorization: Bearer <token>`, so it must be a valid header value,
/// not blank, and long enough not to be guessed.
pub fn validate_token(token: &str) -> anyhow::Result<()> {
    if token.trim().is_empty() {
        bail!("token must not be blank");
    }
    if token.len() < MIN_TOKEN_BYTES {
        bail!(
            "token must be at least {MIN_TOKEN_BYTES} bytes long, got {} (generate one with e.g. `openssl rand -hex 32`)",
            token.len()
        );
    }
    if token.trim() != token || !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("token must be printable ASCII without spaces");
    }
    Ok(())
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
        let names: Vec<String> = sources.iter().map(|s| s.effective_name()).collect();
        // The samples the file does not name keep their places; `deny` is where it is put.
        assert_eq!(names, ["ampersand", "env", "workdir", "mine", "deny"]);
        assert_eq!(
            sources[3].code.describe(),
            dir.path().join("plugins/mine.wasm").display().to_string()
        );
        assert!(sources[4].settings.contains_key("patterns"));

        // Unnamed, `deny` comes last, after the operator's plugins.
        let config = Config::parse("[[plugin]]\npath = \"/x/mine.wasm\"").unwrap();
        let names: Vec<String> = config
            .plugin_sources()
            .unwrap()
            .iter()
            .map(|s| s.effective_name())
            .collect();
        assert_eq!(names, ["ampersand", "env", "workdir", "mine", "deny"]);
        // Only what the file lists.
        let config =
            Config::parse("[policy]\nbuiltins = false\n[[plugin]]\npath = \"/x/mine.wasm\"")
                .unwrap();
        assert_eq!(config.plugin_sources().unwrap().len(), 1);
        let config = Config::parse("[policy]\nbuiltins = false").unwrap();
        assert!(config.plugin_sources().unwrap().is_empty());
        // A setting a built-in does not read is an error, not a silent no-op.
        let typo =
            Config::parse("[[plugin]]\npath = \"builtin:deny\"\nsettings = { pattern = [\"x\"] }")
                .unwrap();
        let err = format!("{:#}", typo.plugin_sources().unwrap_err());
        assert!(err.contains("`pattern`"), "{err}");
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
        assert!(Config::parse("max_connections = 1").is_err());
        assert!(Config::parse("mcp_max_sessions = 0").is_err());
        assert!(Config::parse("body_read_timeout_seconds = 0").is_err());
    }

    #[test]
    fn env_inheritance() {
        assert_eq!(
            Config::parse("").unwrap().env.inheritance(),
            Inheritance::All
        );
        assert_eq!(
            Config::parse("[env]\nclear = true")
                .unwrap()
                .env
                .inheritance(),
            Inheritance::Only(Vec::new())
        );
        assert_eq!(
            Config::parse("[env]\ninherit = [\"PATH\", \"LC_*\"]")
                .unwrap()
                .env
                .inheritance(),
            Inheritance::Only(vec!["PATH".into(), "LC_*".into()])
        );
        assert!(Config::parse("[env]\ninherit = [\"A=B\"]").is_err());
        assert!(Config::parse("[env]\ninherit = [\"\"]").is_err());
        assert!(Config::parse("[env]\ninherti = []").is_err());
    }

    #[test]
    fn tokens_must_be_long_printable_and_not_blank() {
        for bad in [
            "",
            "                    ",
            "short-token",
            "has a space in the middle",
            "tab\tseparated-0123456789",
        ] {
            let err = Config::parse(&format!("token = {bad:?}")).unwrap_err();
            assert!(format!("{err:#}").contains("token"), "{bad:?}: {err:#}");
        }
        assert!(Config::parse("token = \"0123456789abcdef\"").is_ok());
    }
}

/// Every key the configuration file takes is in the README, so the operator's manual cannot
/// fall behind the code. The keys come from serde itself: an unknown key's error lists the
/// ones expected, for each table.
#[cfg(test)]
mod documented {
    use super::*;

    /// The keys serde expects where `table` (a TOML prefix such as `[policy]\n`) has an unknown
    /// key.
    fn keys_of(table: &str) -> Vec<String> {
        let text = format!("{table}not_a_key_of_any_table = 1\n");
        let err = Config::parse(&text).expect_err("an unknown key is refused");
        let message = format!("{err:#}");
        // serde says "expected `a`", "expected `a` or `b`" or "expected one of `a`, `b`, …".
        let expected = message
            .split("expected ")
            .nth(1)
            .unwrap_or_else(|| panic!("no key list in {message:?}"));
        let expected = expected.lines().next().unwrap_or_default();
        expected
            .strip_prefix("one of ")
            .unwrap_or(expected)
            .split(", ")
            .flat_map(|part| part.split(" or "))
            .map(|key| key.trim().trim_matches('`').to_owned())
            .filter(|key| !key.is_empty())
            .collect()
    }

    #[test]
    fn every_configuration_key_is_in_the_readme() {
        let readme = include_str!("../../../README.md");
        let tables = [
            "",
            "[policy]\n",
            "[[plugin]]\npath = \"builtin:deny\"\n",
            "[filters]\n",
            "[[filter]]\npath = \"builtin:redact\"\n",
            "[[tool]]\npath = \"builtin:serve\"\n",
            "[env]\n",
        ];
        let mut missing = Vec::new();
        for table in tables {
            let keys = keys_of(table);
            assert!(!keys.is_empty(), "{table:?}");
            if table.is_empty() {
                assert!(keys.len() > 30 && keys.iter().any(|k| k == "max_exited_processes"));
            }
            for key in keys {
                // A key (`name = …` or `` `name` ``) or a table (`[name]`, `[[name]]`).
                let documented = [format!("{key} ="), format!("`{key}`"), format!("[{key}]")]
                    .iter()
                    .any(|form| readme.contains(form.as_str()));
                if !documented {
                    missing.push(format!("{}{key}", table.lines().next().unwrap_or("")));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "keys missing from the README: {missing:?}"
        );
    }
}
