//! `[env]`: commands inherit only the agent's variables the operator allows. (The variable
//! is not named like a secret: the default output filter would mask its value.)

use procwarden_tests::*;

async fn environment_of_a_command(server: &Server) -> String {
    let api = server.api();
    let id = api
        .start_with(json!({"command": "env", "env": {"FROM_REQUEST": "1"}}))
        .await;
    api.wait_exit(&id).await.output
}

#[tokio::test]
async fn by_default_commands_inherit_the_agents_environment() {
    let server = Server::builder()
        .env("PW_TEST_INHERITED", "hunter2")
        .spawn();
    let env = environment_of_a_command(&server).await;
    assert!(env.contains("PW_TEST_INHERITED=hunter2"), "{env}");
}

#[tokio::test]
async fn inherit_keeps_only_the_listed_variables() {
    let server = Server::builder()
        .env("PW_TEST_INHERITED", "hunter2")
        .env("PW_TEST_KEEP_ME", "yes")
        .config("[env]\ninherit = [\"PATH\", \"PW_TEST_KEEP*\"]\n")
        .spawn();
    let env = environment_of_a_command(&server).await;
    assert!(!env.contains("PW_TEST_INHERITED"), "{env}");
    assert!(!env.lines().any(|l| l.starts_with("HOME=")), "{env}");
    assert!(env.contains("PW_TEST_KEEP_ME=yes"), "{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    // What the request and the plugins set still arrives.
    assert!(env.contains("FROM_REQUEST=1"), "{env}");
    assert!(env.contains("PAGER=cat"), "{env}");
    assert!(server.logged("commands inherit only these variables").await);
}

#[tokio::test]
async fn clear_inherits_nothing() {
    let server = Server::builder()
        .env("PW_TEST_INHERITED", "hunter2")
        .config("[env]\nclear = true\n")
        .spawn();
    let env = environment_of_a_command(&server).await;
    assert!(!env.contains("PW_TEST_INHERITED"), "{env}");
    assert!(!env.lines().any(|l| l.starts_with("HOME=")), "{env}");
    assert!(env.contains("FROM_REQUEST=1"), "{env}");
}
