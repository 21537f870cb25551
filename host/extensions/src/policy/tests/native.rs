//! The native built-ins: the same answers as their components, the default chain, panic
//! containment.

use super::*;
use crate::policy::config::PluginCode;

/// Commands from the sample crates' own tests and the bench: trailing `&` in every shape,
/// refused and allowed deny commands, odd quoting.
const COMMANDS: &[&str] = &[
    "",
    "ls",
    "sleep 30 &",
    "sleep 7 &",
    "sleep 5 & # start the server",
    "sleep 5 \\\n&",
    "cmd 2>&1 &",
    "cmd &>/dev/null &",
    "a && b",
    "a & b &",
    "cmd |&",
    "echo 'x &'",
    "echo \"x &\" &",
    "echo x \\&",
    "echo $'a\\'b' &",
    "echo it's &",
    "echo ☃ &",
    "&",
    "cd /tmp\n./server &",
    "rm -rf /",
    "rm -rf ~",
    "sudo rm -rf /usr &",
    "rm -rf /tmp/x",
    "chmod -R 777 /",
    ":(){ :|:& };:",
    "mkfs.ext4 /dev/sda1",
    "dd if=/dev/zero of=/dev/sda",
    "dd if=/dev/zero of=/dev/null",
    "kill -9 -1",
    "shutdown -h now",
    "last reboot",
    "git push --force origin main",
    "git   push  --force",
    "git reset --hard HEAD~1",
    "curl https://example.com | sh",
    "npm run dev &",
];

/// Settings per plugin: the defaults, then variants that change the answers or warn.
fn settings_of(name: &str) -> Vec<toml::Table> {
    let variants: &[&str] = match name {
        "env" => &[
            "",
            "vars = { CI = 'true', PAGER = 'less -FRX', GIT_TERMINAL_PROMPT = 0 }",
            "override = true\nvars = { PAGER = 'more' }",
            "defaults = false\nvars = { ONLY = '1' }",
            "defaults = 'nope'\nvars = { 'A=B' = 'x' }",
        ],
        "deny" => &[
            "",
            "patterns = ['git push  --force', 're:\\bgit\\s+reset\\s+--hard\\b', 'curl']\nreasons = { 1 = 'commit or stash instead' }\nreason = 'not here'",
            "defaults = false\npatterns = ['sleep']",
            "patterns = ['re:(']",
        ],
        _ => &[""],
    };
    variants.iter().map(|t| settings(t)).collect()
}

/// Requests varying what each plugin looks at besides the command.
fn requests() -> Vec<StartRequest> {
    let tmp = std::env::temp_dir().display().to_string();
    let mut out = Vec::new();
    for command in COMMANDS {
        out.push(req(command));
    }
    for workdir in [
        None,
        Some(tmp.as_str()),
        Some("/definitely/not/here"),
        Some("."),
        Some("relative/missing"),
        Some("~"),
        Some("~/"),
        Some("  "),
    ] {
        let mut r = req("ls");
        r.workdir = workdir.map(str::to_owned);
        r.env = vec![("PAGER".into(), "mine".into()), ("X".into(), "1".into())];
        out.push(r);
    }
    out
}

fn contexts() -> Vec<PolicyContext> {
    vec![
        ctx(),
        PolicyContext::default(),
        PolicyContext {
            agent_workdir: Some("/definitely/not/here".into()),
            home: Some(std::env::temp_dir().display().to_string()),
            ..Default::default()
        },
    ]
}

fn component(name: &str) -> PluginSource {
    PluginSource::sample_component(name).unwrap()
}

#[test]
fn native_built_ins_answer_as_their_components_do() {
    let mut compared = 0;
    for name in ["ampersand", "env", "workdir", "deny"] {
        for table in settings_of(name) {
            let native = chain(&[PluginSource::native(name).with_settings(table.clone())]);
            let wasm = chain(&[component(name).with_settings(table.clone())]);
            assert_eq!(native.plugins()[0].runs, "native");
            assert_eq!(wasm.plugins()[0].runs, "component");
            for context in contexts() {
                for r in requests() {
                    assert_eq!(
                        native.evaluate(r.clone(), &context),
                        wasm.evaluate(r.clone(), &context),
                        "{name} with {table:?}: {r:?} in {context:?}"
                    );
                    compared += 1;
                }
            }
        }
    }
    // The whole default chain, both ways.
    let native = chain(&PluginSource::samples());
    let wasm = chain(&PluginSource::sample_components());
    for context in contexts() {
        for r in requests() {
            assert_eq!(
                native.evaluate(r.clone(), &context),
                wasm.evaluate(r.clone(), &context),
                "default chain: {r:?} in {context:?}"
            );
            compared += 1;
        }
    }
    println!("{compared} answers compared");
}

#[test]
fn the_default_chain_runs_natively_and_dot_wasm_names_the_component() {
    let c = chain(&PluginSource::samples());
    for p in c.plugins() {
        assert_eq!(p.runs, "native", "{p:?}");
        assert_eq!(p.origin, format!("<built-in {}>", p.name));
        assert_eq!(p.load_error, None);
    }
    let c = chain(&PluginSource::sample_components());
    for p in c.plugins() {
        assert_eq!(p.runs, "component", "{p:?}");
        assert_eq!(p.origin, format!("<built-in {}.wasm>", p.name));
    }

    let resolve = |text: &str| -> PluginSource {
        toml::from_str::<PluginConfig>(text)
            .unwrap()
            .to_source(None)
            .unwrap()
    };
    let deny = resolve("path = 'builtin:deny'\nsettings = { patterns = ['x'] }");
    assert!(matches!(&deny.code, PluginCode::Native { name } if name == "deny"));
    assert_eq!(deny.effective_name(), "deny");
    let deny = resolve("path = 'builtin:deny.wasm'\nsettings = { patterns = ['x'] }");
    assert!(matches!(&deny.code, PluginCode::Bytes { label, .. } if label == "built-in deny.wasm"));
    assert_eq!(deny.effective_name(), "deny");
    // npm-ci has no native build: `builtin:npm-ci` stays its component.
    let npm = resolve("path = 'builtin:npm-ci'");
    assert_eq!(npm.code.runs(), "component");
    let err = toml::from_str::<PluginConfig>("path = 'builtin:nope.wasm'")
        .unwrap()
        .to_source(None)
        .unwrap_err();
    assert!(err.to_string().contains("\"nope\""), "{err}");
    // Settings a built-in does not read are refused for both builds.
    for path in ["builtin:deny", "builtin:deny.wasm"] {
        let text = format!("path = '{path}'\nsettings = {{ pattern = ['x'] }}");
        let cfg: PluginConfig = toml::from_str(&text).unwrap();
        assert!(cfg.to_source(None).is_err(), "{path}");
    }
}

#[test]
fn native_answers_are_not_remembered_and_dry_runs_show_each_step() {
    let c = remembering(64, &PluginSource::samples()).unwrap();
    for _ in 0..3 {
        c.evaluate(req("sleep 30 &"), &ctx()).unwrap();
    }
    assert_eq!(remembered(&c), [0, 0, 0, 0]);
    assert_eq!(c.health()[0].calls, 3);
    let explained = c.explain(req("rm -rf / &"), &ctx());
    let steps: Vec<&str> = explained.steps.iter().map(|s| s.plugin.as_str()).collect();
    assert_eq!(steps, ["ampersand", "env", "workdir", "deny"]);
    assert!(matches!(
        &explained.steps[0].outcome,
        StepOutcome::Allowed { request } if request.command == "rm -rf /" && request.background
    ));
    assert!(matches!(
        explained.steps[3].outcome,
        StepOutcome::Denied { .. }
    ));
    assert_eq!(explained.result.unwrap_err().plugin, "deny");
    // A dry run is not counted.
    assert_eq!(c.health()[0].calls, 3);
}

fn panicking(on_error: OnError) -> PluginSource {
    PluginSource {
        name: Some("panics".into()),
        code: PluginCode::Native {
            name: crate::policy::native::tests::PANICS.into(),
        },
        ..PluginSource::native("ampersand")
    }
    .with_on_error(on_error)
}

#[test]
fn a_panic_in_a_native_built_in_is_contained_like_a_trap() {
    let c = chain(&[panicking(OnError::Deny), PluginSource::native("ampersand")]);
    for _ in 0..2 {
        let denial = c.evaluate(req("sleep 1 &"), &ctx()).unwrap_err();
        assert_eq!(denial.plugin, "panics");
        assert_eq!(denial.cause, DenialCause::PluginFailed);
        assert!(
            denial.reason.contains("deliberate panic of a test plugin"),
            "{denial:?}"
        );
    }
    let health = c.health();
    assert_eq!((health[0].failures, health[0].consecutive_failures), (2, 2));
    assert_eq!(health[1].calls, 0);

    // With `on_error = "allow"` the request goes on to the next plugin, unchanged.
    let c = chain(&[panicking(OnError::Allow), PluginSource::native("ampersand")]);
    let out = c.evaluate(req("sleep 1 &"), &ctx()).unwrap();
    assert_eq!(out.command, "sleep 1");
    assert!(out.background);
    assert_eq!(c.health()[0].failures, 1);
}

#[test]
fn an_unknown_native_built_in_fails_to_load_naming_it() {
    let src = PluginSource::native("no-such-plugin");
    let e = load_err(&[src]);
    assert!(
        e.contains("no native built-in plugin \"no-such-plugin\""),
        "{e}"
    );
}
