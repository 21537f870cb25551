//! The list reports how many processes the caller may see, so a capped list says so.

use procwarden_tests::*;

#[tokio::test]
async fn a_capped_list_reports_the_total_and_ps_says_how_many_more() {
    let server = Server::with_config("list_cap = 2\n");
    let api = server.api().pw_chat("total-chat");
    for _ in 0..3 {
        let id = api.start("true").await;
        api.wait_exit(&id).await;
    }
    // Another chat's process is not counted.
    server.api().pw_chat("other-chat").start("true").await;
    let reply: ListReply = api
        .get("/api/v0/processes/list")
        .await
        .expect_status(200)
        .json();
    assert_eq!(reply.processes.len(), 2);
    assert_eq!(reply.total, 3);
    let o = cli(&["ps", "--url", server.url(), "--chat", "total-chat"], &[]).await;
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(
        o.stdout
            .contains("... 1 more not listed by the agent (its list_cap is 2)"),
        "{o:?}"
    );
}
