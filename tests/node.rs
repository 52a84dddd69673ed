//! In-process nodes on real loopback sockets: the `Node` seam the API codes against —
//! leader-only writes, group commit, leader ticks, effects on every replica, bootstrap.

mod support;

use std::time::Duration;

use serde_json::json;
use slct::engine::types::{Case, Select, State};
use slct::engine::{Op, Response, Store, Table};
use slct::node::{Node, NodeError};
use slct::raft::auth::{ClusterKey, AUTH_HEADER};
use support::{eventually, Cluster};
use tokio::net::TcpListener;

/// Nodes `1..=n` in this process as one cluster with a cluster secret, plus `joining`
/// more that list every node as a peer but are not members yet (so they wait to be
/// added).
async fn start(n: u64, joining: u64) -> Cluster {
    Cluster::build()
        .nodes(n)
        .joining(joining)
        .secret("s3cret")
        .tune(|config| config.snapshot_threshold = 1000)
        .start()
        .await
}

/// A follower among the nodes.
fn follower(cluster: &Cluster) -> Node {
    cluster.nodes[cluster.follower()].clone()
}

fn create(id: &str, selects: Vec<Select>) -> Op {
    Op::CreateState {
        id: id.to_owned(),
        data: json!({ "id": id }).into(),
        selects,
        callback: None,
        priority: 0,
        max_deliveries: 0,
        retain_ms: 0,
    }
}

fn local_state(node: &Node, id: &str) -> Option<State> {
    let bytes = node.reader().get(Table::States, id.as_bytes()).ok()??;
    slct::codec::decode(&bytes).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_refuse_writes_and_name_the_leader() {
    let cluster = start(3, 0).await;
    let leader = cluster.leader_node().await;
    let follower = follower(&cluster);
    eventually(
        Duration::from_secs(10),
        "the follower knows the leader",
        || async { follower.leader() },
    )
    .await;

    let refused = follower.write(create("x", vec![])).await;
    let expected = (leader.config().id, leader.config().listen.to_string());
    assert!(
        matches!(&refused, Err(NodeError::NotLeader(Some(l))) if *l == expected),
        "{refused:?}"
    );
    assert!(matches!(
        follower.linearizable_read().await,
        Err(NodeError::NotLeader(Some(_)))
    ));
    leader
        .linearizable_read()
        .await
        .expect("read index on the leader");

    let applied = leader.write(create("x", vec![])).await.expect("write");
    assert!(matches!(applied.reply, Ok(Response::State(_))));
    for node in &cluster.nodes {
        eventually(Duration::from_secs(10), "replicated", || async {
            local_state(node, "x")
        })
        .await;
    }
    let info = follower.cluster_info();
    assert_eq!(info.members.len(), 3);
    assert_eq!(info.leader, Some(leader.config().id));
    assert_eq!(info.state, "Follower");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_log_entries() {
    let cluster = start(3, 0).await;
    let leader = cluster.leader_node().await;
    let before = leader.cluster_info().last_log_index.unwrap_or(0);
    let writes: Vec<_> = (0..200)
        .map(|i| {
            let leader = leader.clone();
            tokio::spawn(async move { leader.write(create(&format!("c{i}"), vec![])).await })
        })
        .collect();
    for write in writes {
        let applied = write.await.expect("task").expect("write");
        assert!(matches!(applied.reply, Ok(Response::State(_))));
    }
    let entries = leader.cluster_info().last_log_index.unwrap_or(0) - before;
    assert!(entries < 100, "200 writes took {entries} entries");
    for i in 0..200 {
        assert!(local_state(&leader, &format!("c{i}")).is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_ticks_when_a_timer_is_due_and_every_replica_hears_it() {
    let cluster = start(3, 0).await;
    let leader = cluster.leader_node().await;
    let follower = follower(&cluster);
    let mut effects = follower.subscribe();

    let timer = Select {
        id: "sleep".to_owned(),
        cases: vec![Case::Timer {
            at: 0,
            after_ms: Some(300),
        }],
        queued: vec![],
    };
    let created = leader
        .write(create("sleeper", vec![timer]))
        .await
        .expect("write");
    let Ok(Response::State(state)) = created.reply else {
        panic!("{:?}", created.reply)
    };
    assert!(state.results.is_empty(), "the timer is not due yet");
    let registered = state.updated_at;

    for node in &cluster.nodes {
        let fired = eventually(Duration::from_secs(10), "the timer fires", || async {
            local_state(node, "sleeper").filter(|s| !s.results.is_empty())
        })
        .await;
        assert!(
            fired.results[0].at >= registered + 300,
            "not before its deadline"
        );
    }
    let heard = eventually(
        Duration::from_secs(30),
        "the follower hears the state turn pending",
        || {
            let got = effects.try_recv().ok();
            async move { got.filter(|e| e.pending.iter().any(|p| p.id == "sleeper")) }
        },
    )
    .await;
    assert!(!heard.pending.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_peers_is_a_cluster_of_one() {
    let single = start(1, 0).await;
    let node = single.leader_node().await;
    let applied = node.write(create("solo", vec![])).await.expect("write");
    assert!(applied.reply.is_ok());
    eventually(Duration::from_secs(30), "ready", || async {
        node.is_ready().await.then_some(())
    })
    .await;
    node.shutdown().await;
    assert!(matches!(
        node.write(create("late", vec![])).await,
        Err(NodeError::NotLeader(_) | NodeError::NoLeader | NodeError::ShuttingDown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_routes_refuse_a_wrong_cluster_secret() {
    let cluster = start(3, 0).await;
    cluster.leader_node().await;
    let config = cluster.nodes[0].config();
    let (addr, me) = (config.listen, config.id);
    let http = reqwest::Client::new();
    let key = ClusterKey::new(Some("s3cret"));
    let tag = |secret: &str, node: u64| {
        ClusterKey::new(Some(secret))
            .sign(node, "status", &[b"", b""])
            .unwrap()
    };
    let refused = [
        None,
        Some("s3cret".to_owned()),
        Some(tag("wrong", me)),
        Some(tag("s3cret", me + 1)),
    ];
    for auth in refused {
        let mut request = http.get(format!("http://{addr}/raft/status"));
        if let Some(auth) = &auth {
            request = request.header(AUTH_HEADER, auth);
        }
        let response = request.send().await.expect("GET /raft/status");
        assert_eq!(response.status(), 401, "auth {auth:?}");
    }
    let right = key.sign(me, "status", &[b"", b""]).unwrap();
    let response = http
        .get(format!("http://{addr}/raft/status"))
        .header(AUTH_HEADER, right)
        .send()
        .await
        .expect("GET /raft/status");
    assert_eq!(response.status(), 200);
    let status: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(status["initialized"], true);
    for route in ["append", "vote", "snapshot"] {
        let forged = http
            .post(format!("http://{addr}/raft/{route}"))
            .header(AUTH_HEADER, tag("s3cret", me + 1))
            .body(vec![0u8; 64])
            .send()
            .await
            .expect("POST");
        assert_eq!(forged.status(), 401, "/raft/{route} without a valid MAC");
    }
    // Refused from its headers alone: the 401 comes although not a byte of the
    // announced 3 MB body was sent, so a stranger cannot make a node buffer anything.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for (path, auth) in [
        ("/raft/append", tag("wrong", me)),
        ("/raft/snapshot", tag("s3cret", me)),
    ] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{AUTH_HEADER}: {auth}\r\n\
             Slct-Raft-Digest: 00\r\nContent-Length: 3000000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut answer))
            .await
            .expect("an answer before the body")
            .unwrap();
        assert_eq!(&answer, b"HTTP/1.1 401", "{path}");
    }
    // The body must be the one the authenticated digest names.
    let body = vec![1u8; 64];
    let digest = slct::raft::auth::digest(&[2u8; 64]);
    let auth = key.sign(me, "vote", &[b"", digest.as_bytes()]).unwrap();
    let swapped = http
        .post(format!("http://{addr}/raft/vote"))
        .header(AUTH_HEADER, auth)
        .header(slct::raft::auth::DIGEST_HEADER, digest)
        .body(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(swapped.status(), 400, "a body swapped under its digest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_joins_as_learner_then_voter() {
    let cluster = start(3, 1).await;
    let leader = cluster.leader_node().await;
    leader.write(create("before", vec![])).await.expect("write");
    let newcomer = cluster.nodes[3].clone();
    assert_eq!(newcomer.cluster_info().leader, None, "it waits to be added");

    let addr = newcomer.config().listen.to_string();
    leader.add_learner(4, addr).await.expect("add learner");
    assert!(
        leader.add_learner(4, "127.0.0.1:1".into()).await.is_err(),
        "a learner cannot move to another address"
    );
    assert_eq!(leader.cluster_info().learners.len(), 1);
    leader
        .change_membership(vec![1, 2, 3, 4], false)
        .await
        .expect("promote");
    let info = leader.cluster_info();
    assert_eq!(info.members.len(), 4);
    assert!(info.learners.is_empty());

    leader.write(create("after", vec![])).await.expect("write");
    for id in ["before", "after"] {
        eventually(
            Duration::from_secs(10),
            "the new voter has every state",
            || async { local_state(&newcomer, id) },
        )
        .await;
    }
}

/// A cluster member that answers `/raft/status` as a fresh node and everything else
/// with 500 (a broken peer), counting the requests it gets.
async fn broken_peer(hits: std::sync::Arc<std::sync::atomic::AtomicU64>) -> String {
    use axum::routing::{any, get};
    let app = axum::Router::new()
        .route(
            "/raft/status",
            get(|| async { axum::Json(json!({"initialized": false})) }),
        )
        .fallback(any(move || {
            hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "broken") }
        }));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_answers_errors_gets_backoff_not_a_flood() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let hits = std::sync::Arc::new(AtomicU64::new(0));
    let cluster = Cluster::build()
        .nodes(2)
        .stranger(broken_peer(hits.clone()).await)
        .secret("s3cret")
        .tune(|config| config.snapshot_threshold = 1000)
        .start()
        .await;
    let leader = cluster.leader_node().await;
    leader
        .write(create("w", vec![]))
        .await
        .expect("a quorum of two writes");
    let before = hits.load(Ordering::SeqCst);
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rate = (hits.load(Ordering::SeqCst) - before) as f64 / started.elapsed().as_secs_f64();
    println!("requests per second to a peer answering 500: {rate:.1}");
    assert!(rate < 50.0, "{rate:.1} requests/s to a broken peer");
}
