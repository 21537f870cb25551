//! The built-in policy plugins run natively (`builtin:NAME`, the default chain) unless the
//! configuration names their component build (`builtin:NAME.wasm`); both answer alike.

use serde_json::json;

use procwarden_tests::*;

/// Each plugin of the chain in health, with how it runs.
fn runs(health: &Health) -> Vec<(&str, &str)> {
    health
        .plugins
        .iter()
        .map(|p| (p.name.as_str(), p.runs.as_str()))
        .collect()
}

#[tokio::test]
async fn the_default_chain_runs_natively() {
    let server = Server::start();
    let api = server.api();
    api.start_req(&json!({"command": "rm -rf ~"}))
        .await
        .error(403);
    let health = api.health().await;
    assert_eq!(
        runs(&health),
        [
            ("ampersand", "native"),
            ("env", "native"),
            ("workdir", "native"),
            ("deny", "native"),
        ]
    );
    assert_eq!(health.plugins[3].denied, 1);
}

#[tokio::test]
async fn a_dot_wasm_built_in_runs_its_component_in_the_default_place() {
    let server = Server::with_config(
        "[[plugin]]\npath = \"builtin:deny.wasm\"\nsettings = { patterns = [\"git push\"] }\n",
    );
    let api = server.api();
    let refused = api
        .start_req(&json!({"command": "git push origin main"}))
        .await
        .error(403);
    assert!(refused.contains("\"git push\""), "{refused}");
    // The built-in rules apply to the component as to the native build.
    api.start_req(&json!({"command": "rm -rf /"}))
        .await
        .error(403);
    let health = api.health().await;
    assert_eq!(
        runs(&health),
        [
            ("ampersand", "native"),
            ("env", "native"),
            ("workdir", "native"),
            ("deny", "component"),
        ]
    );
    assert_eq!(health.plugins[3].denied, 2);
}
