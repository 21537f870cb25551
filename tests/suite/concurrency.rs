//! Concurrency: 100 simultaneous starts, 120 simultaneous blocked waiters released by the exits.

use std::collections::HashSet;
use std::time::Duration;

use procwarden_tests::*;
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_starts() {
    let server = Server::with_config("list_cap = 1000\n");
    let api = server.api();
    let mut set = JoinSet::new();
    for i in 0..100 {
        let api = api.fresh();
        set.spawn(async move {
            let r = api
                .start_req(&json!({"command": format!("echo out-{i}; exit {}", i % 7)}))
                .await;
            (i, r)
        });
    }
    let mut ids = Vec::new();
    while let Some(res) = set.join_next().await {
        let (i, r) = res.unwrap();
        r.expect_status(200);
        ids.push((i, r.json::<StartReply>().id));
    }
    let distinct: HashSet<&String> = ids.iter().map(|(_, id)| id).collect();
    assert_eq!(distinct.len(), 100, "100 distinct ids");

    let mut set = JoinSet::new();
    for (i, id) in ids {
        let api = api.clone();
        set.spawn(async move {
            let body = api.wait_exit(&id).await;
            assert_eq!(body.output, format!("out-{i}\n"), "{body}");
            assert_eq!(body.exit_code, Some(i % 7), "{body}");
        });
    }
    while let Some(res) = set.join_next().await {
        res.unwrap();
    }
    assert_eq!(api.list().await.len(), 100);
    assert_eq!(api.health().await.processes, 100);
    server.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_twenty_blocked_waiters_are_released() {
    let server = Server::start();
    let m = Marker::new();
    let api = server.api();
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("go");
    // Two processes that exit by themselves once the flag exists, one that is killed.
    let natural = format!(
        "while [ ! -e '{}' ]; do sleep 0.05; done; echo released",
        flag.display()
    );
    let p1 = api.start(&natural).await;
    let p2 = api.start(&natural).await;
    let p3 = api.start(&m.sleep()).await;
    let procs = [p1, p2, p3];

    let mut set = JoinSet::new();
    for i in 0..120 {
        let api = api.fresh();
        let id = procs[i % 3].clone();
        set.spawn(async move { (id.clone(), api.output(&id, true).await) });
    }
    let all_blocked = eventually(Duration::from_secs(15), || {
        let api = api.clone();
        async move { api.waiters().await == 120 }
    })
    .await;
    assert!(all_blocked, "expected 120 waiters: {}", api.health().await);
    assert!(set.try_join_next().is_none(), "no waiter may return early");

    std::fs::write(&flag, "").unwrap();
    api.signal(&procs[2], "kill").await.expect_status(200);

    let released = tokio::time::timeout(Duration::from_secs(15), async {
        let mut n = 0;
        while let Some(res) = set.join_next().await {
            let (id, r) = res.unwrap();
            r.expect_status(200);
            let body: OutputSnapshot = r.json();
            assert!(!body.running, "{body}");
            if id == procs[2] {
                assert_eq!(body.exit_code, Some(137), "{body}");
            } else {
                assert_eq!(body.exit_code, Some(0), "{body}");
                assert_eq!(body.output, "released\n");
            }
            n += 1;
        }
        n
    })
    .await
    .expect("not all waiters were released");
    assert_eq!(released, 120);
    assert_eq!(api.waiters().await, 0);
    server.assert_alive();
}
