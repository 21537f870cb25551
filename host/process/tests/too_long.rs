//! Commands and environment values too long for `execve` get an error naming the limit.

use procwarden_process::limits::{arg_max, max_arg_strlen};
use procwarden_process::{ManagerSettings, Phase, ProcessError, ProcessManager, StartRequest};

fn spec(command: String, env: Vec<(String, String)>) -> StartRequest {
    StartRequest {
        command,
        workdir: Some("/".into()),
        env,
        background: false,
        timeout_seconds: Some(30),
    }
}

#[tokio::test]
async fn a_command_of_exactly_the_limit_runs_and_one_byte_more_is_refused() {
    let manager = ProcessManager::new(ManagerSettings::default());
    let limit = max_arg_strlen();
    let prefix = "echo ok #";
    let fits = format!("{prefix}{}", "x".repeat(limit - 1 - prefix.len()));
    let process = manager.start(spec(fits.clone(), Vec::new()), None).unwrap();
    process.wait_for(Phase::Finished).await;
    let snapshot = process.snapshot();
    assert_eq!(
        (snapshot.exit_code, snapshot.output.as_str()),
        (Some(0), "ok\n")
    );

    let err = manager
        .start(spec(format!("{fits}x"), Vec::new()), None)
        .unwrap_err();
    let ProcessError::TooLong {
        what,
        length,
        limit: said,
        limit_name,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(
        (what.as_str(), *length, *said, *limit_name),
        ("command", limit, limit - 1, "MAX_ARG_STRLEN")
    );
    assert!(err.to_string().contains(&format!("{}", limit - 1)), "{err}");
    assert_eq!(manager.len(), 1, "nothing was started for the refused one");
}

#[tokio::test]
async fn an_environment_value_over_the_limit_is_refused_before_spawning() {
    let manager = ProcessManager::new(ManagerSettings::default());
    let env = vec![("BIG".to_owned(), "v".repeat(max_arg_strlen()))];
    let err = manager.start(spec("true".into(), env), None).unwrap_err();
    assert!(
        matches!(&err, ProcessError::TooLong { what, .. } if what.contains("BIG")),
        "{err:?}"
    );
    assert!(manager.is_empty());
}

#[tokio::test]
async fn strings_that_each_fit_but_together_exceed_arg_max_are_refused_too() {
    let manager = ProcessManager::new(ManagerSettings::default());
    let each = max_arg_strlen() - 64;
    let count = arg_max() / each + 2;
    let env = (0..count)
        .map(|i| (format!("V{i}"), "v".repeat(each)))
        .collect();
    let err = manager.start(spec("true".into(), env), None).unwrap_err();
    assert!(
        matches!(&err, ProcessError::TooLong { limit_name, .. } if *limit_name == "ARG_MAX"),
        "{err:?}"
    );
    assert!(manager.is_empty());
}
