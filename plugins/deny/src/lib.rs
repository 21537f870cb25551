//! `deny`: refuses commands that match deny patterns.
//!
//! A guard against accidents, **not a security boundary**: a determined client can always
//! spell a command so that no textual pattern sees it (`r\m`, `$(echo rm)`, a script file).
//! Matching is on the command text, so a command that merely mentions a refused command in
//! a quoted string (an `echo`, a commit message) is refused as well; the reason says so.
//!
//! # Built-in rules
//!
//! Unless `defaults = false`, these rules apply (written to avoid refusing everyday
//! commands: `rm -rf /tmp/x`, `rm -rf ~/.cache/foo`, `dd of=/dev/null`, `last reboot`,
//! `grep shutdown` all pass):
//!
//! | rule                | refuses |
//! |---------------------|---------|
//! | `rm-root-or-home`   | `rm` of `/`, `/*`, `~`, `~/*`, `$HOME`, or a top-level system directory (`/usr`, `/etc`, ...) |
//! | `recursive-chmod-root` | `chmod`/`chown`/`chgrp -R` of any of those |
//! | `fork-bomb`         | `:(){ :\|:& };:` and the same shape with another name |
//! | `mkfs-device`       | `mkfs*`, `mke2fs`, `mkswap` on a `/dev/` device |
//! | `write-block-device`| `dd of=`, `>` or `tee` to a disk (`/dev/sd*`, `/dev/nvme*`, ...) |
//! | `kill-all`          | `kill ... -1` (every process of the user, the agent included) |
//! | `power`             | `shutdown`, `reboot`, `halt`, `poweroff`, `init 0`/`6`, `systemctl reboot`/`poweroff`/... as a command |
//!
//! # Configuration
//!
//! ```toml
//! [[plugin]]
//! path = "deny.wasm"
//! [plugin.settings]
//! # A plain pattern matches anywhere in the command (case-sensitive; runs of spaces and
//! # tabs count as one space). With `re:` it is a regular expression (regex-lite syntax:
//! # https://docs.rs/regex-lite), matched against the command as is.
//! patterns = [
//!     "git push --force",
//!     're:\bgit\s+reset\s+--hard\b',
//! ]
//! # Optional: what to tell the client instead of the generic text, for every pattern...
//! reason = "Force-pushing is not allowed on this machine; push to a new branch instead."
//! # ...or for one pattern, by its index (this wins over `reason`).
//! reasons = { 1 = "Do not discard work; commit or stash it instead." }
//! # Optional: whether the built-in rules apply too (default true).
//! defaults = true
//! ```
//!
//! A refusal reads `refused by deny pattern "<pattern>": <reason>`. If a setting is invalid
//! (a `re:` pattern that does not compile), every command is refused with a reason saying
//! the deny plugin is misconfigured: a deny list that silently stops working is worse.

pub use procwarden_plugin_settings::Settings;
use regex_lite::Regex;
// `OnceLock`, not `OnceCell`: the host's native built-in shares one `Rules` between threads.
use std::sync::OnceLock;

/// A built-in rule: a regular expression, and a cheap test every match passes (so most
/// commands are passed without compiling the expression: compiling all of them costs far
/// more than the rest of a call).
struct BuiltIn {
    name: &'static str,
    /// A necessary condition for `regex` to match: when it is false, the rule does not apply.
    prefilter: fn(&str) -> bool,
    regex: &'static str,
    reason: &'static str,
}

/// `\s` of regex-lite: ASCII whitespace, vertical tab included.
fn is_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r' | b' ')
}

/// What `before_word!()` accepts before a command word (besides the start).
fn is_before_word(b: u8) -> bool {
    is_space(b) || b";&|(`'\"/".contains(&b)
}

/// Whether `text` has one of `words` at the start or after [`is_before_word`], followed by
/// whitespace: the necessary part of `before_word!()` `word\s`.
fn has_word_then_space(text: &str, words: &[&str]) -> bool {
    let bytes = text.as_bytes();
    words.iter().any(|word| {
        text.match_indices(word).any(|(at, _)| {
            (at == 0 || is_before_word(bytes[at - 1]))
                && bytes.get(at + word.len()).copied().is_some_and(is_space)
        })
    })
}

fn contains_any(text: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| text.contains(n))
}

/// Whether `text` names a disk device the way `write-block-device` does.
fn names_disk_device(text: &str) -> bool {
    const DISKS: &[&str] = &[
        "sd", "hd", "vd", "xvd", "nvme", "mmcblk", "md", "dm-", "mapper/", "disk/",
    ];
    text.match_indices("/dev/")
        .any(|(at, _)| DISKS.iter().any(|d| text[at + 5..].starts_with(d)))
}

/// What may stand before a command word: the start, a separator, a quote (`sh -c '...'`) or
/// a path (`/bin/rm`).
macro_rules! before_word {
    () => {
        r#"(?:^|[\s;&|(`'"/])"#
    };
}

/// Where a command starts: the beginning, a separator or `then`/`do`/`else`, and then
/// wrappers (`sudo`, `exec`, `env`, `VAR=value`, ...) and a directory.
macro_rules! command_position {
    () => {
        concat!(
            r#"(?:^|[;&|(\n`{'"]|\$\(|\b(?:then|do|else)\s)\s*"#,
            r#"(?:(?:sudo|doas|exec|nohup|command|nice|env|time)\s+(?:-\S+\s+)*|[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*"#,
            r#"(?:\S*/)?"#,
        )
    };
}

/// The end of a word.
macro_rules! word_end {
    () => {
        r#"(?:\s|$|[;&|)`'"])"#
    };
}

/// A path whose removal wrecks the machine or the user's files: `/`, `/*`, `/..`, `~`,
/// `~/*`, `$HOME`, `${HOME}/*`, a top-level system directory; optionally quoted.
macro_rules! precious_path {
    () => {
        concat!(
            r#"["']?(?:/+\*?|/\.\.?/?|~["']?/?\*?|\$\{?HOME\}?["']?/?\*?"#,
            r#"|/(?:bin|boot|dev|etc|home|lib|lib32|lib64|opt|proc|root|run|sbin|srv|sys|usr|var)/?\*?)["']?"#,
        )
    };
}

const BUILT_IN: &[BuiltIn] = &[
    BuiltIn {
        name: "rm-root-or-home",
        prefilter: |c| has_word_then_space(c, &["rm"]),
        regex: concat!(
            before_word!(),
            r"rm\s(?:[^;&|\n]*\s)?",
            precious_path!(),
            word_end!()
        ),
        reason: "this would delete the root directory, the home directory or a system \
                 directory. Name the exact files or directories to delete instead (for \
                 example `rm -rf ./build`).",
    },
    BuiltIn {
        name: "recursive-chmod-root",
        prefilter: |c| has_word_then_space(c, &["chmod", "chown", "chgrp"]),
        regex: concat!(
            before_word!(),
            r"(?:chmod|chown|chgrp)\s(?:[^;&|\n]*\s)?(?:-[A-Za-z]*R[A-Za-z]*|--recursive)\s",
            r"(?:[^;&|\n]*\s)?",
            precious_path!(),
            word_end!()
        ),
        reason: "this would change the owner or permissions of every file under the root, \
                 home or a system directory. Change only the files that need it (for example \
                 `chmod -R u+w ./build`).",
    },
    BuiltIn {
        name: "fork-bomb",
        prefilter: |c| c.contains('(') && c.contains('{') && c.contains('|') && c.contains('&'),
        regex: r"[\w:.-]+\s*\(\s*\)\s*\{\s*[\w:.-]+\s*\|\s*[\w:.-]+\s*&\s*;?\s*\}",
        reason: "this is a fork bomb: it would exhaust the machine's processes. Do not run it.",
    },
    BuiltIn {
        name: "mkfs-device",
        prefilter: |c| c.contains("/dev/") && contains_any(c, &["mkfs", "mke2fs", "mkswap"]),
        regex: concat!(
            before_word!(),
            r"(?:mkfs(?:\.\w+)?|mke2fs|mkswap)\s[^;&|\n]*/dev/"
        ),
        reason: "this would create a file system on a device and erase what is on it. To \
                 experiment, use an image file (`mkfs.ext4 disk.img`); ask the user before \
                 touching real devices.",
    },
    BuiltIn {
        name: "write-block-device",
        prefilter: names_disk_device,
        regex: concat!(
            r#"(?:\bof=|>\s*|(?:^|[\s;&|(])tee\s(?:[^;&|\n]*\s)?)["']?"#,
            r"/dev/(?:sd[a-z]|hd[a-z]|vd[a-z]|xvd[a-z]|nvme\d|mmcblk\d|md\d|dm-\d|mapper/|disk/)",
        ),
        reason: "this would write directly to a disk device and destroy its data. Write to a \
                 file instead (for example `dd of=./disk.img`); ask the user before touching \
                 real devices.",
    },
    BuiltIn {
        name: "kill-all",
        prefilter: |c| c.contains("-1") && has_word_then_space(c, &["kill"]),
        regex: concat!(before_word!(), r#"kill\s+(?:-\S+\s+)*-1\s*(?:$|[;&|)`'"])"#),
        reason: "`kill -1` signals every process of this user, including the agent that runs \
                 your commands. Signal the process IDs or process group you mean instead.",
    },
    BuiltIn {
        name: "power",
        // The literals of the original needle list. `systemctl rescue` and `systemctl
        // emergency` are in the expression but not here, so they are not refused (as before
        // this prefilter replaced the needles).
        prefilter: |c| {
            contains_any(
                c,
                &[
                    "shutdown",
                    "reboot",
                    "halt",
                    "poweroff",
                    "init",
                    "kexec",
                    "suspend",
                    "hibernate",
                ],
            )
        },
        regex: concat!(
            command_position!(),
            r"(?:shutdown|reboot|halt|poweroff|(?:tel)?init\s+[06]",
            r"|systemctl\s+(?:-\S+\s+)*(?:poweroff|reboot|soft-reboot|halt|kexec|suspend|hibernate|hybrid-sleep|suspend-then-hibernate|rescue|emergency))",
            word_end!()
        ),
        reason: "this would shut down, restart or suspend the machine the agent runs on. \
                 Restart only the service you need (for example `systemctl restart <unit>`), \
                 or ask the user.",
    },
];

/// Appended to the reasons of the built-in rules: the match is textual.
const MENTION_NOTE: &str = " (Commands are matched as text: if you only mention it, e.g. in \
                            an echo or a commit message, rephrase.)";

/// The generic text for configured patterns.
const CONFIGURED_REASON: &str = "the operator of this agent does not allow such commands. Do \
                                 not try to get around the pattern; do the task another way, \
                                 or ask the user to run it.";

enum Matcher {
    /// A plain pattern, whitespace-normalized.
    Substring(String),
    Regex(Regex),
    /// A built-in expression, compiled the first time a command passes its prefilter.
    BuiltIn(&'static str, OnceLock<Regex>),
}

struct Rule {
    /// Shown in the refusal: the pattern as configured, or the built-in rule's name.
    label: String,
    reason: String,
    /// A necessary condition for a match, if the rule has one.
    prefilter: Option<fn(&str) -> bool>,
    matcher: Matcher,
}

/// The compiled deny rules.
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// The built-in rules only.
    pub fn built_in() -> Rules {
        Rules {
            rules: BUILT_IN.iter().map(compile_built_in).collect(),
        }
    }

    /// The rules `settings` describe, and warnings about settings that were ignored. `Err`
    /// means the settings are invalid; its text says what to fix.
    pub fn from_settings(settings: &Settings) -> Result<(Rules, Vec<String>), String> {
        let mut warnings = Vec::new();
        let defaults = match settings.bool("defaults") {
            Ok(value) => value.unwrap_or(true),
            Err(err) => {
                warnings.push(format!("{err}; keeping the built-in rules"));
                true
            }
        };
        let general_reason = settings.get("reason");
        let reasons = settings.list("reasons");
        let patterns = settings.list("patterns");

        let mut rules = if defaults {
            Rules::built_in().rules
        } else {
            Vec::new()
        };
        for &(index, pattern) in &patterns {
            let reason = reasons
                .iter()
                .find(|&&(i, _)| i == index)
                .map(|&(_, r)| r)
                .or(general_reason)
                .unwrap_or(CONFIGURED_REASON);
            let matcher = match pattern.strip_prefix("re:") {
                Some(expr) => Matcher::Regex(Regex::new(expr).map_err(|err| {
                    format!(
                        "pattern {index} ({pattern:?}) is not a valid regular expression: {err}"
                    )
                })?),
                None => {
                    let normalized = normalize_space(pattern);
                    if normalized.trim().is_empty() {
                        warnings.push(format!(
                            "ignoring pattern {index}: an empty pattern would match everything"
                        ));
                        continue;
                    }
                    Matcher::Substring(normalized)
                }
            };
            rules.push(Rule {
                label: pattern.to_owned(),
                reason: reason.to_owned(),
                prefilter: None,
                matcher,
            });
        }

        for &(index, _) in &reasons {
            if !patterns.iter().any(|&(i, _)| i == index) {
                warnings.push(format!(
                    "ignoring `reasons.{index}`: there is no `patterns.{index}`"
                ));
            }
        }
        for key in settings.keys() {
            let item = |prefix: &str| {
                key.strip_prefix(prefix).is_some_and(|rest| {
                    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                })
            };
            let known =
                matches!(key, "defaults" | "reason") || item("patterns.") || item("reasons.");
            if !known {
                warnings.push(format!(
                    "ignoring unknown setting `{key}` (known: patterns = [...], reasons = {{ N = \"...\" }}, reason, defaults)"
                ));
            }
        }
        Ok((Rules { rules }, warnings))
    }

    /// The refusal for `command`, if a rule matches it.
    pub fn check(&self, command: &str) -> Option<String> {
        let mut normalized = None;
        self.rules
            .iter()
            .find(|rule| {
                if rule.prefilter.is_some_and(|applies| !applies(command)) {
                    return false;
                }
                match &rule.matcher {
                    Matcher::Regex(regex) => regex.is_match(command),
                    Matcher::BuiltIn(expr, regex) => regex
                        .get_or_init(|| compile_built_in_expr(expr))
                        .is_match(command),
                    Matcher::Substring(pattern) => normalized
                        .get_or_insert_with(|| normalize_space(command))
                        .contains(pattern.as_str()),
                }
            })
            .map(|rule| {
                format!(
                    "refused by deny pattern \"{}\": {}",
                    rule.label, rule.reason
                )
            })
    }
}

fn compile_built_in(rule: &BuiltIn) -> Rule {
    Rule {
        label: rule.name.to_owned(),
        reason: format!("{}{MENTION_NOTE}", rule.reason),
        prefilter: Some(rule.prefilter),
        matcher: Matcher::BuiltIn(rule.regex, OnceLock::new()),
    }
}

fn compile_built_in_expr(expr: &str) -> Regex {
    // The built-in expressions are tested; a failure here is a bug in this file.
    Regex::new(expr).expect("built-in deny rule compiles")
}

/// `text` with every run of spaces and tabs replaced by one space.
fn normalize_space(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.chars() {
        if c == ' ' || c == '\t' {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// The whole decision: `Ok(())` to allow, `Err(reason)` to refuse.
pub fn decide(command: &str, settings: &Settings) -> (Result<(), String>, Vec<String>) {
    match Rules::from_settings(settings) {
        Ok((rules, warnings)) => (rules.check(command).map_or(Ok(()), Err), warnings),
        Err(err) => (Err(misconfigured(&err)), Vec::new()),
    }
}

/// The refusal of every command when the settings are invalid (`err` from
/// [`Rules::from_settings`]).
pub fn misconfigured(err: &str) -> String {
    format!(
        "the deny policy plugin is misconfigured ({err}), so every command is refused; \
         ask the operator to fix the agent's configuration"
    )
}

/// The component's `on-start`: a thin adapter over [`decide`]. The host runs the same logic
/// natively for `builtin:deny`.
#[cfg(target_arch = "wasm32")]
mod component {
    use super::{Settings, decide};
    use procwarden_plugin_sdk::{Context, Decision, Guest, LogLevel, StartRequest, host, log};

    /// The plugin; its `on-start` is exported with [`procwarden_plugin_sdk::export!`].
    pub struct Deny;

    impl Guest for Deny {
        fn on_start(req: StartRequest, _ctx: Context) -> Decision {
            let settings = Settings::from_pairs(
                host::config_keys()
                    .into_iter()
                    .filter_map(|key| host::config(&key).map(|value| (key, value))),
            );
            let (decision, warnings) = decide(&req.command, &settings);
            for warning in warnings {
                log(LogLevel::Warn, &warning);
            }
            match decision {
                Ok(()) => Decision::Allow(req),
                Err(reason) => Decision::Deny(reason),
            }
        }
    }

    procwarden_plugin_sdk::export!(Deny);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_by(command: &str) -> Option<String> {
        let rules = Rules::built_in();
        let reason = rules.check(command)?;
        let label = reason.split('"').nth(1).unwrap_or_default().to_owned();
        Some(label)
    }

    #[track_caller]
    fn refused(rule: &str, commands: &[&str]) {
        for command in commands {
            assert_eq!(refused_by(command).as_deref(), Some(rule), "{command:?}");
        }
    }

    #[track_caller]
    fn allowed(commands: &[&str]) {
        for command in commands {
            assert_eq!(refused_by(command), None, "{command:?}");
        }
    }

    #[test]
    fn built_in_rules_compile() {
        assert_eq!(Rules::built_in().rules.len(), BUILT_IN.len());
        for rule in BUILT_IN {
            Regex::new(rule.regex).unwrap_or_else(|e| panic!("{}: {e}", rule.name));
        }
    }

    /// Commands near every rule, matched and not; each must get the same answer with and
    /// without the prefilters (which only skip expressions that cannot match).
    const CORPUS: &[&str] = &[
        "rm -rf /",
        "rm\t-rf /",
        "rm\x0b-rf /",
        "x;rm -rf ~",
        "`rm -rf /`",
        "(rm -rf /usr)",
        "/bin/rm -rf /",
        "'rm -rf /'",
        "farm -rf /",
        "rm-rf /",
        "rm",
        "format /",
        "npm run x /",
        "chmod -R 777 /",
        "chown -R me /usr",
        "chgrp\n-R x /",
        "xchmod -R 777 /",
        "chmod -R",
        ":(){ :|:& };:",
        "bomb(){ bomb|bomb& };bomb",
        "f() { a | b & }",
        "(a|b)&{",
        "mkfs.ext4 /dev/sdb1",
        "mkswap /dev/sda2",
        "mke2fs /dev/x",
        "mkfs /tmp/dev/x",
        "dd of=/dev/sda",
        "x > /dev/nvme0n1",
        "tee /dev/mmcblk0",
        "x >/dev/md0",
        "x >/dev/dm-1",
        "tee /dev/mapper/x",
        "dd of=\"/dev/disk/by-id/x\"",
        "x >/dev/xvda",
        "x >/dev/hdb",
        "x > /dev/vdc",
        "x > /dev/null",
        "x > /dev/sd",
        "dd of=/dev/sdZ",
        "/dev/sda",
        "kill -9 -1",
        "kill -1",
        "kill\t-1",
        "pkill -1",
        "kill -- -1",
        "kill -9 1234",
        "skill -1",
        "(kill -1)",
        "kill -1;",
        "kill-1",
        "reboot",
        "sudo shutdown -h now",
        "/sbin/halt",
        "init 0",
        "telinit 6",
        "systemctl reboot",
        "systemctl --no-wall suspend",
        "systemctl hibernate",
        "systemctl kexec",
        "last reboot",
        "echo $(poweroff)",
        "if x; then halt; fi",
        "FOO=1 reboot",
        "env -i reboot",
        "ls",
        "sleep 30",
        "cargo build --release",
        "echo hi > /dev/stderr",
        "",
    ];

    #[test]
    fn prefilters_never_hide_a_match() {
        for &command in CORPUS {
            for rule in BUILT_IN {
                let matched = Regex::new(rule.regex).unwrap().is_match(command);
                if matched {
                    assert!((rule.prefilter)(command), "{}: {command:?}", rule.name);
                }
            }
        }
    }

    #[test]
    fn rm_of_root_or_home_is_refused() {
        refused(
            "rm-root-or-home",
            &[
                "rm -rf /",
                "rm -rf /*",
                "rm -rf / ",
                "rm -fr /",
                "rm -r -f /",
                "rm -rf --no-preserve-root /",
                "rm -rf / --no-preserve-root",
                "sudo rm -rf /",
                "/bin/rm -rf /",
                "cd /tmp && rm -rf /",
                "rm -rf ~",
                "rm -rf ~/",
                "rm -rf ~/*",
                "rm -rf $HOME",
                "rm -rf \"$HOME\"",
                "rm -rf \"$HOME\"/*",
                "rm -rf ${HOME}/",
                "rm -rf '/'",
                "rm -rf //",
                "rm -rf /..",
                "rm -rf /usr",
                "rm -rf /etc/",
                "rm -rf /home/*",
                "rm -rf build /",
                "sh -c 'rm -rf /'",
                "rm -rf /;",
            ],
        );
    }

    #[test]
    fn ordinary_rm_is_allowed() {
        allowed(&[
            "rm -rf /tmp/x",
            "rm -rf /tmp",
            "rm -rf ./build",
            "rm -rf build/",
            "rm -rf ~/.cache/foo",
            "rm -rf $HOME/.cache",
            "rm -rf \"$HOME/.npm/_cacache\"",
            "rm -rf /usr/local/lib/foo",
            "rm -rf /home/agent/project/target",
            "rm -rf *",
            "rm -rf .",
            "docker run --rm -v /:/host img ls /",
            "docker run --rm img ls /",
            "cargo rm serde",
            "rm file && ls /",
            "npm run format",
            "echo /",
        ]);
    }

    #[test]
    fn recursive_chmod_of_root_is_refused() {
        refused(
            "recursive-chmod-root",
            &[
                "chmod -R 777 /",
                "chmod 777 -R /",
                "sudo chown -R me:me /",
                "chown -R me /usr",
                "chmod --recursive 755 ~",
            ],
        );
        allowed(&[
            "chmod -R u+w ./build",
            "chmod 755 /tmp/x",
            "chmod +x script.sh",
            "chown -R me:me /home/me/project",
        ]);
    }

    #[test]
    fn fork_bombs_are_refused() {
        refused(
            "fork-bomb",
            &[
                ":(){ :|:& };:",
                ":() { : | : & } ; :",
                "bomb(){ bomb|bomb& };bomb",
                ":(){ :|:&; };:",
            ],
        );
        allowed(&["f() { echo hi; }; f", "(cd x && make) | tee log"]);
    }

    #[test]
    fn mkfs_on_devices_is_refused() {
        refused(
            "mkfs-device",
            &[
                "mkfs.ext4 /dev/sdb1",
                "sudo mkfs -t ext4 /dev/nvme0n1p1",
                "mkswap /dev/sda2",
            ],
        );
        allowed(&["mkfs.ext4 disk.img", "man mkfs", "which mkfs.ext4"]);
    }

    #[test]
    fn writes_to_disks_are_refused() {
        refused(
            "write-block-device",
            &[
                "dd if=/dev/zero of=/dev/sda",
                "dd if=img of=/dev/nvme0n1 bs=4M",
                "cat img > /dev/sdb",
                "echo x >/dev/mmcblk0",
                "cat img | sudo tee /dev/sdc",
                "dd if=x of=\"/dev/disk/by-id/usb-1\"",
            ],
        );
        allowed(&[
            "dd if=/dev/zero of=/dev/null bs=1M count=100",
            "dd if=/dev/sda of=./backup.img",
            "cmd > /dev/null 2>&1",
            "echo hi > /dev/stderr",
            "ls /dev/sda*",
            "lsblk /dev/nvme0n1",
        ]);
    }

    #[test]
    fn kill_minus_one_is_refused() {
        refused(
            "kill-all",
            &["kill -9 -1", "kill -KILL -1", "kill -- -1", "kill -1"],
        );
        allowed(&[
            "kill -9 1234",
            "kill -1 1234",
            "kill -TERM -4321",
            "pkill -f server",
        ]);
    }

    #[test]
    fn power_commands_are_refused_only_as_commands() {
        refused(
            "power",
            &[
                "shutdown -h now",
                "sudo reboot",
                "reboot",
                "sudo -n poweroff",
                "/sbin/halt",
                "make && sudo shutdown -r now",
                "systemctl reboot",
                "sudo systemctl poweroff",
                "systemctl --no-wall suspend",
                "init 0",
                "sudo telinit 6",
                "if true; then reboot; fi",
                "echo $(reboot)",
            ],
        );
        allowed(&[
            "last reboot",
            "grep -r shutdown src/",
            "man shutdown",
            "systemctl restart nginx",
            "systemctl status",
            "./reboot.sh",
            "cargo run --bin reboot-helper",
            "echo reboot",
            "git commit -m 'handle shutdown signal'",
            "init-db --force",
            "npm init",
        ]);
    }

    #[test]
    fn reasons_name_the_rule_and_say_what_to_do() {
        let reason = Rules::built_in().check("rm -rf /").unwrap();
        assert!(
            reason.starts_with("refused by deny pattern \"rm-root-or-home\": "),
            "{reason}"
        );
        assert!(reason.contains("instead"), "{reason}");
    }

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_pairs(pairs.to_vec())
    }

    #[test]
    fn configured_substring_patterns() {
        let (rules, warnings) =
            Rules::from_settings(&settings(&[("patterns.0", "git push  --force")])).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let reason = rules.check("git   push --force origin main").unwrap();
        assert!(reason.contains("\"git push  --force\""), "{reason}");
        assert!(reason.contains("do the task another way"), "{reason}");
        assert_eq!(rules.check("git push origin main"), None);
        // The built-in rules still apply.
        assert!(rules.check("rm -rf /").is_some());
    }

    #[test]
    fn configured_regex_patterns_and_reasons() {
        let (rules, warnings) = Rules::from_settings(&settings(&[
            ("patterns.0", "curl"),
            ("patterns.1", r"re:\bgit\s+reset\s+--hard\b"),
            ("patterns.2", "wget"),
            ("reasons.1", "commit or stash instead"),
            ("reason", "no downloads here"),
        ]))
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let reason = rules.check("git reset --hard HEAD~1").unwrap();
        assert!(reason.contains("commit or stash instead"), "{reason}");
        assert!(reason.contains(r#""re:\bgit\s+reset"#), "{reason}");
        assert!(rules.check("curl x").unwrap().contains("no downloads here"));
        assert!(rules.check("wget x").unwrap().contains("no downloads here"));
        assert_eq!(rules.check("git reset --soft HEAD~1"), None);
    }

    #[test]
    fn defaults_can_be_turned_off() {
        let (rules, _) = Rules::from_settings(&settings(&[("defaults", "false")])).unwrap();
        assert_eq!(rules.check("rm -rf /"), None);
        let (rules, warnings) = Rules::from_settings(&settings(&[("defaults", "nope")])).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(rules.check("rm -rf /").is_some());
    }

    #[test]
    fn no_settings_means_built_in_rules() {
        let (decision, warnings) = decide("rm -rf /", &Settings::default());
        assert!(decision.is_err());
        assert!(warnings.is_empty());
        assert_eq!(decide("rm -rf /tmp/x", &Settings::default()).0, Ok(()));
    }

    #[test]
    fn invalid_regex_refuses_everything() {
        let (decision, _) = decide("ls", &settings(&[("patterns.0", "re:(")]));
        let reason = decision.unwrap_err();
        assert!(reason.contains("misconfigured"), "{reason}");
        assert!(reason.contains("pattern 0"), "{reason}");
    }

    #[test]
    fn odd_settings_give_warnings() {
        let (rules, warnings) = Rules::from_settings(&settings(&[
            ("patterns.0", "  "),
            ("reasons.3", "x"),
            ("patterns", "single"),
            ("colour", "red"),
        ]))
        .unwrap();
        assert_eq!(warnings.len(), 4, "{warnings:#?}");
        assert_eq!(rules.rules.len(), BUILT_IN.len());
        assert_eq!(rules.check("ls"), None);
    }
}
