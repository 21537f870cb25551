//! MCP over streamable HTTP: rmcp's client against `procwarden serve`'s `/mcp` endpoint, on
//! the same listener and agent as the HTTP API.

use std::time::Duration;

use procwarden_tests::api::ListReply;
use procwarden_tests::mcp::*;

#[tokio::test]
async fn http_endpoint_serves_the_same_tools() {
    let server = HttpServer::start();
    let client = server.session(&[]).await;
    let mut names: Vec<_> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "execute",
            "process_input",
            "process_list",
            "process_output",
            "process_signal"
        ]
    );
}

#[tokio::test]
async fn execute_over_http_foreground_background_and_timeout() {
    let server = HttpServer::start();
    let client = server.session(&[]).await;

    let reply = call(&client, "execute", json!({"command": "echo hello; exit 4"}))
        .await
        .ok();
    assert_eq!(reply.exit_code, Some(4));
    assert_eq!(reply.output(), "hello\n");

    let reply = call(
        &client,
        "execute",
        json!({"command": "sleep 2; echo done", "wait_seconds": 1}),
    )
    .await
    .ok();
    assert_eq!(reply.running, Some(true));
    let id = reply.process_id().to_owned();
    let reply = call(
        &client,
        "process_output",
        json!({"id": id, "wait_timeout_seconds": 10}),
    )
    .await
    .ok();
    assert_eq!(reply.running, Some(false));
    assert_eq!(reply.output(), "done\n");

    let marker = Marker::new();
    let id = start_background(&client, &marker.sleep()).await;
    assert!(eventually(Duration::from_secs(5), || marker.alive()).await);
    let reply = call(
        &client,
        "process_signal",
        json!({"id": id, "signal": "kill"}),
    )
    .await
    .ok();
    assert_eq!(reply.running, Some(false));
    assert!(eventually(Duration::from_secs(5), || !marker.alive()).await);
}

#[tokio::test]
async fn each_session_is_its_own_chat() {
    let server = HttpServer::start();
    let alice = server.session(&[]).await;
    let bob = server.session(&[]).await;
    let marker = Marker::new();
    let id = start_background(&alice, &marker.sleep()).await;
    assert!(eventually(Duration::from_secs(5), || marker.alive()).await);

    assert!(list_ids(&alice).await.contains(&id));
    assert!(
        !list_ids(&bob).await.contains(&id),
        "bob sees alice's process"
    );
    let text = call(
        &bob,
        "process_output",
        json!({"id": id, "wait_timeout_seconds": 0}),
    )
    .await
    .err();
    assert!(text.contains("not found"), "{text}");
    let text = call(&bob, "process_signal", json!({"id": id, "signal": "kill"}))
        .await
        .err();
    assert!(text.contains("not found"), "{text}");
    assert!(marker.alive(), "bob's signal reached alice's process");

    // Children learn their chat: the session's own.
    let reply = call(
        &alice,
        "execute",
        json!({"command": "echo \"$PROCWARDEN_CHAT_ID\""}),
    )
    .await
    .ok();
    let alice_chat = reply.output().trim().to_owned();
    let reply = call(
        &bob,
        "execute",
        json!({"command": "echo \"$PROCWARDEN_CHAT_ID\""}),
    )
    .await
    .ok();
    let bob_chat = reply.output().trim().to_owned();
    assert!(!alice_chat.is_empty() && !bob_chat.is_empty());
    assert_ne!(alice_chat, bob_chat);

    call(
        &alice,
        "process_signal",
        json!({"id": id, "signal": "kill"}),
    )
    .await
    .ok();
    assert!(eventually(Duration::from_secs(5), || !marker.alive()).await);
}

#[tokio::test]
async fn a_chat_header_joins_sessions_and_the_http_api() {
    let server = HttpServer::start();
    let chat = format!("chat-{}", uuid::Uuid::new_v4());
    let first = server.session(&[("Procwarden-Chat-Id", &chat)]).await;
    let second = server.session(&[("Coder-Chat-Id", &chat)]).await;
    let other = server.session(&[]).await;
    let id = start_background(&first, "sleep 30").await;

    assert!(
        list_ids(&second).await.contains(&id),
        "same chat, other session"
    );
    assert!(!list_ids(&other).await.contains(&id));

    // The HTTP API shares the agent: the same chat there sees the process too.
    let http = reqwest::Client::new();
    let list: ListReply = http
        .get(format!("{}/api/v0/processes/list", server.base))
        .header("Procwarden-Chat-Id", &chat)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<_> = list.processes.iter().map(|p| p.id.clone()).collect();
    assert!(ids.contains(&id), "{list}");

    let reply = call(
        &second,
        "process_signal",
        json!({"id": id, "signal": "kill"}),
    )
    .await
    .ok();
    assert_eq!(reply.running, Some(false));
}

#[tokio::test]
async fn the_token_guards_mcp_like_the_api() {
    let server = HttpServer::start_with_config(Some("token = \"s3cret-0123456789abcdef\"\n"));
    let refused = server.try_session(&[], None).await;
    assert!(refused.is_err(), "a session without the token was accepted");
    let refused = server.try_session(&[], Some("wrong")).await;
    assert!(
        refused.is_err(),
        "a session with a wrong token was accepted"
    );
    let client = server
        .try_session(&[], Some("s3cret-0123456789abcdef"))
        .await
        .expect("session with the token");
    let reply = call(&client, "execute", json!({"command": "echo ok"}))
        .await
        .ok();
    assert_eq!(reply.output(), "ok\n");
}

#[tokio::test]
async fn long_calls_are_not_cut_by_the_api_request_deadline() {
    // The API's per-request deadline (1 s here) must not apply to MCP calls, which block as
    // long as the model asked.
    let server = HttpServer::start_with_config(Some("request_timeout_seconds = 1.0\n"));
    let client = server.session(&[]).await;
    let reply = call(
        &client,
        "execute",
        json!({"command": "sleep 2; echo finished", "wait_seconds": 10}),
    )
    .await
    .ok();
    assert_eq!(reply.running, Some(false), "{reply}");
    assert_eq!(reply.output(), "finished\n");
}

#[tokio::test]
async fn shutdown_with_open_sessions_is_prompt_and_stops_their_processes() {
    let mut server = HttpServer::start();
    let client = server.session(&[]).await;
    let marker = Marker::new();
    start_background(&client, &marker.sleep()).await;
    assert!(eventually(Duration::from_secs(5), || marker.alive()).await);
    // A call blocked in a long wait, and an idle session with its stream open.
    let waiting = tokio::spawn({
        let client = server.session(&[]).await;
        async move {
            let _ = call(
                &client,
                "execute",
                json!({"command": "sleep 600", "wait_seconds": 600}),
            )
            .await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.terminate(Duration::from_secs(12)),
        "serve did not exit within 12 s of SIGTERM"
    );
    assert!(!marker.alive(), "a session's process outlived the server");
    waiting.abort();
}

#[tokio::test]
async fn web_pages_from_other_origins_are_refused() {
    let server = HttpServer::start();
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "0"}}
    });
    let post = |origin: Option<&str>| {
        let mut request = reqwest::Client::new()
            .post(server.mcp_url())
            .header("Accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        request.send()
    };
    let status = post(Some("https://evil.example")).await.unwrap().status();
    assert_eq!(status, 403, "a foreign web page reached the tools");
    let status = post(Some("http://localhost:6274")).await.unwrap().status();
    assert!(
        status.is_success(),
        "a local browser client was refused: {status}"
    );
    let status = post(None).await.unwrap().status();
    assert!(
        status.is_success(),
        "a non-browser client was refused: {status}"
    );
}

#[tokio::test]
async fn stateless_clients_are_scoped_by_their_chat_header() {
    let server = HttpServer::start();
    let mine = server
        .stateless_client(&[("Procwarden-Chat-Id", "stateless-a")])
        .await;
    let theirs = server
        .stateless_client(&[("Procwarden-Chat-Id", "stateless-b")])
        .await;
    let reply = call(
        &mine,
        "execute",
        json!({"command": "echo \"$PROCWARDEN_CHAT_ID\""}),
    )
    .await
    .ok();
    assert_eq!(reply.output(), "stateless-a\n");
    let id = start_background(&mine, "sleep 30").await;
    assert!(list_ids(&mine).await.contains(&id));
    assert!(!list_ids(&theirs).await.contains(&id));
    call(&mine, "process_signal", json!({"id": id, "signal": "kill"}))
        .await
        .ok();
}
