//! `GET /metrics`: Prometheus text, every metric `procwarden_*`, counts that move with what
//! the agent does; behind the token like the rest of the API. And the OpenAPI description
//! served at `/api/v0/openapi.json`.

use procwarden_tests::mcp::HttpServer;
use procwarden_tests::*;

/// The value of one series (`name{labels}` exactly as the text has it), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(api: &Api) -> String {
    let reply = api.get("/metrics").await;
    reply.expect_status(200);
    reply.text.clone()
}

#[tokio::test]
async fn metrics_appear_and_move_with_starts_denials_waits_and_requests() {
    let server = Server::start();
    let api = server.api().pw_chat("metrics-chat");
    let before = scrape(&api).await;
    for line in before.lines().filter(|l| !l.is_empty()) {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .unwrap_or(line);
        assert!(name.starts_with("procwarden_"), "{line}");
    }
    let starts = "procwarden_starts_total{front_end=\"http\"}";
    let denials = "procwarden_denials_total{plugin=\"deny\",cause=\"refused\"}";
    assert_eq!(value(&before, starts), None, "{before}");

    let id = api.start("printf 12345").await;
    api.wait_exit(&id).await;
    let message = api
        .start_req(&json!({ "command": "rm -rf /" }))
        .await
        .error(403);
    assert!(message.contains("\"deny\""), "{message}");
    api.get("/no/such/route").await.expect_status(404);

    let after = scrape(&api).await;
    assert_eq!(value(&after, starts), Some(1.0), "{after}");
    assert_eq!(value(&after, denials), Some(1.0), "{after}");
    assert_eq!(
        value(
            &after,
            "procwarden_plugin_calls_total{plugin=\"deny\",outcome=\"denied\"}"
        ),
        Some(1.0),
        "{after}"
    );
    // The deny plugin ran for both starts (the second it refused).
    assert_eq!(
        value(
            &after,
            "procwarden_plugin_call_seconds_count{plugin=\"deny\"}"
        ),
        Some(2.0),
        "{after}"
    );
    assert_eq!(
        value(&after, "procwarden_waits_total{ended_by=\"exit\"}"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        value(&after, "procwarden_output_bytes_total"),
        Some(5.0),
        "{after}"
    );
    // Requests count under their route template, never the process ID.
    assert_eq!(
        value(
            &after,
            "procwarden_http_requests_total{method=\"GET\",route=\"/api/v0/processes/{id}/output\",status=\"200\"}"
        ),
        Some(1.0),
        "{after}"
    );
    assert!(!after.contains(&id), "{after}");
    assert_eq!(
        value(
            &after,
            "procwarden_http_requests_total{method=\"POST\",route=\"/api/v0/processes/start\",status=\"403\"}"
        ),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        value(
            &after,
            "procwarden_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"
        ),
        Some(1.0),
        "{after}"
    );
    // States are read at the scrape: one finished process, in one chat.
    let tracked: f64 = ["running", "exited", "finished"]
        .iter()
        .filter_map(|s| value(&after, &format!("procwarden_processes{{state=\"{s}\"}}")))
        .sum();
    assert_eq!(tracked, 1.0, "{after}");
    assert_eq!(value(&after, "procwarden_chats"), Some(1.0), "{after}");
}

#[tokio::test]
async fn metrics_need_the_token_like_every_route() {
    let token = "metrics-token-0123456789abcdef";
    let server = Server::with_config(&format!("token = \"{token}\"\n"));
    server.api().get("/metrics").await.error(401);
    let text = scrape(&server.api().token(token)).await;
    assert!(text.contains("procwarden_processes"), "{text}");
}

#[tokio::test]
async fn mcp_sessions_are_counted() {
    let server = HttpServer::start();
    let api = Api::new(&server.base);
    let before = scrape(&api).await;
    assert_eq!(
        value(&before, "procwarden_mcp_sessions"),
        Some(0.0),
        "{before}"
    );
    let client = server.session(&[]).await;
    let during = scrape(&api).await;
    assert_eq!(
        value(&during, "procwarden_mcp_sessions"),
        Some(1.0),
        "{during}"
    );
    drop(client);
}

#[tokio::test]
async fn the_openapi_description_is_served_and_matches_the_checked_in_copy() {
    let server = Server::start();
    let reply = server.api().get("/api/v0/openapi.json").await;
    reply.expect_status(200);
    assert_eq!(reply.body["openapi"], "3.1.0");
    let checked_in: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(reply.body, checked_in);
    for path in [
        "/api/v0/processes/start",
        "/api/v0/processes/list",
        "/api/v0/processes/{id}/output",
        "/api/v0/processes/{id}/signal",
        "/api/v0/processes/{id}/input",
        "/api/v0/health",
        "/api/v0/reload",
        "/api/v0/tools",
        "/api/v0/tools/{name}",
        "/metrics",
        "/api/v0/openapi.json",
    ] {
        assert!(
            reply.body["paths"][path].is_object(),
            "{path} not described"
        );
    }
}
