//! A cluster that has lost its quorum, on a real three-node cluster: writes answer 503
//! `outcome_unknown` after `--write-timeout` instead of hanging, linearizable reads 503
//! `no_quorum`, and `/readyz` turns 503 on the survivor, leader or follower.

mod support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use slct::api::ApiConfig;
use support::{eventually, Cluster};

const WRITE_TIMEOUT: Duration = Duration::from_millis(1500);

async fn short_timeout_cluster() -> Cluster {
    Cluster::start_tuned(ApiConfig::default(), |config| {
        config.write_timeout = WRITE_TIMEOUT
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_followers_times_out_writes_and_is_not_ready() {
    let c = short_timeout_cluster().await;
    let leader = c.leader();
    let put = c
        .call(
            leader,
            Method::PUT,
            "/state/before",
            Some(json!({"data": 1})),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED);
    for i in 0..3 {
        if i != leader {
            c.stop_node(i).await;
        }
    }

    let started = Instant::now();
    let put = c
        .call(
            leader,
            Method::PUT,
            "/state/after",
            Some(json!({"data": 2})),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(
        put.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        put.body
    );
    assert_eq!(put.code(), "outcome_unknown");
    assert!(put.headers.contains_key("retry-after"));
    let message = put.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("may or may not"), "{message}");
    assert!(
        took >= WRITE_TIMEOUT && took < WRITE_TIMEOUT + Duration::from_secs(3),
        "answered after {took:?}"
    );

    let get = c.call(leader, Method::GET, "/state/before", None).await;
    assert_eq!(
        get.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        get.body
    );
    assert_eq!(get.code(), "no_quorum");
    let stale = c
        .call(leader, Method::GET, "/state/before?stale=true", None)
        .await;
    assert_eq!(stale.status, StatusCode::OK, "stale reads still work");

    assert!(c.nodes[leader].is_leader(), "openraft keeps it in office");
    eventually(Duration::from_secs(30), "the leader not ready", || async {
        let ready = c.call(leader, Method::GET, "/readyz", None).await;
        ready.status == StatusCode::SERVICE_UNAVAILABLE && ready.code() == "not_ready"
    })
    .await;
    assert_eq!(
        c.call(leader, Method::GET, "/healthz", None).await.status,
        StatusCode::OK
    );
    c.stop_node(leader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_without_a_leader_is_not_ready_and_refuses_writes_in_time() {
    let c = short_timeout_cluster().await;
    let leader = c.leader();
    let survivor = c.follower();
    // Ready once it has heard from the leader and applied what it knows is committed.
    eventually(Duration::from_secs(30), "the follower ready", || async {
        let ready = c.call(survivor, Method::GET, "/readyz", None).await;
        ready.status == StatusCode::OK
    })
    .await;
    for i in 0..3 {
        if i != survivor {
            c.stop_node(i).await;
        }
    }
    assert_ne!(leader, survivor);
    eventually(
        Duration::from_secs(30),
        "the follower not ready",
        || async {
            c.call(survivor, Method::GET, "/readyz", None).await.status
                == StatusCode::SERVICE_UNAVAILABLE
        },
    )
    .await;
    let started = Instant::now();
    let put = c
        .call(survivor, Method::PUT, "/state/x", Some(json!({"data": 1})))
        .await;
    assert_eq!(
        put.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        put.body
    );
    assert!(put.headers.contains_key("retry-after"));
    assert!(started.elapsed() < WRITE_TIMEOUT + Duration::from_secs(3));
    c.stop_node(survivor).await;
}
