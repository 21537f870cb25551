//! The four native built-ins: thin adapters, like the components' `Guest` adapters, over
//! the logic of `plugins/ampersand`, `env`, `workdir` and `deny`.

use plugin_settings::Settings;

use super::NativePolicy;
use crate::policy::plugin::Verdict;
use crate::policy::{PolicyContext, WitRequest, probe};

/// The built-ins that run natively.
pub(super) const NAMES: &[&str] = &["ampersand", "env", "workdir", "deny"];

pub(super) fn build(
    name: &str,
    plugin: &str,
    settings: &Settings,
) -> Option<Box<dyn NativePolicy>> {
    Some(match name {
        "ampersand" => Box::new(Ampersand),
        "env" => Box::new(Env::new(plugin, settings)),
        "workdir" => Box::new(Workdir),
        "deny" => Box::new(Deny::new(plugin, settings)),
        _ => return None,
    })
}

/// `ampersand`: a trailing shell `&` becomes `background = true`.
struct Ampersand;

impl NativePolicy for Ampersand {
    fn on_start(&self, plugin: &str, req: &WitRequest, _ctx: &PolicyContext) -> Verdict {
        let mut req = req.clone();
        if let Some((command, background)) = policy_ampersand::rewrite(&req.command) {
            let note = policy_ampersand::rewrite_note(&req.command);
            tracing::debug!(plugin, "{note}");
            req.command = command;
            req.background = background;
        }
        Verdict::Allow(req)
    }
}

/// `env`: adds the configured variables.
struct Env(policy_env::Config);

impl Env {
    fn new(plugin: &str, settings: &Settings) -> Self {
        let (config, warnings) = policy_env::Config::from_settings(settings);
        for warning in warnings {
            tracing::warn!(plugin, "{warning}");
        }
        Self(config)
    }
}

impl NativePolicy for Env {
    fn on_start(&self, _plugin: &str, req: &WitRequest, _ctx: &PolicyContext) -> Verdict {
        let mut req = req.clone();
        req.env = policy_env::apply(std::mem::take(&mut req.env), &self.0);
        Verdict::Allow(req)
    }
}

/// `workdir`: checks or chooses the working directory. `is_dir` is the answer of the
/// components' `is-dir` import ([`probe::is_dir`]): the same question, asked directly.
struct Workdir;

impl NativePolicy for Workdir {
    fn on_start(&self, plugin: &str, req: &WitRequest, ctx: &PolicyContext) -> Verdict {
        let decided = policy_workdir::choose(
            req.workdir.as_deref(),
            ctx.agent_workdir.as_deref(),
            ctx.home.as_deref(),
            probe::is_dir,
        );
        match decided {
            Ok(choice) => {
                for note in &choice.notes {
                    tracing::warn!(plugin, "{note}");
                }
                let mut req = req.clone();
                req.workdir = choice.workdir;
                Verdict::Allow(req)
            }
            Err(reason) => Verdict::Deny(reason),
        }
    }
}

/// `deny`: refuses commands that match deny patterns. The rules are compiled once, at load
/// (the component compiles them at every call); invalid settings refuse every command, with
/// the component's reason.
enum Deny {
    Rules(policy_deny::Rules),
    Misconfigured(String),
}

impl Deny {
    fn new(plugin: &str, settings: &Settings) -> Self {
        match policy_deny::Rules::from_settings(settings) {
            Ok((rules, warnings)) => {
                for warning in warnings {
                    tracing::warn!(plugin, "{warning}");
                }
                Deny::Rules(rules)
            }
            Err(err) => {
                tracing::error!(plugin, "{err}");
                Deny::Misconfigured(policy_deny::misconfigured(&err))
            }
        }
    }
}

impl NativePolicy for Deny {
    fn on_start(&self, _plugin: &str, req: &WitRequest, _ctx: &PolicyContext) -> Verdict {
        match self {
            Deny::Rules(rules) => match rules.check(&req.command) {
                Some(reason) => Verdict::Deny(reason),
                None => Verdict::Allow(req.clone()),
            },
            Deny::Misconfigured(reason) => Verdict::Deny(reason.clone()),
        }
    }
}
