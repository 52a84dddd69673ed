//! Process control (design.md §3.6) over HTTP on a real three-node cluster: pause and
//! resume, priorities and `min_priority`, `?status=paused`, and histories that are the
//! same on every replica.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use support::{eventually, Cluster};

async fn create(c: &Cluster, id: &str, priority: u64) {
    let body =
        json!({"priority": priority, "selects": [{"id": "g", "cases": [{"op": "default"}]}]});
    let made = c
        .call(0, Method::PUT, &format!("/state/{id}"), Some(body))
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
}

async fn poll(c: &Cluster, query: &str) -> Vec<String> {
    let polled = c
        .call(1, Method::GET, &format!("/state/poll?wait=0&{query}"), None)
        .await;
    assert_eq!(polled.status, StatusCode::OK, "{:?}", polled.body);
    let ids = polled.body.as_array().unwrap().iter();
    ids.map(|s| s["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_priorities_and_paused_listings() {
    let c = Cluster::start().await;
    create(&c, "a-low", 0).await;
    create(&c, "a-high", 9).await;
    create(&c, "a-paused", 9).await;
    let paused = c.call(2, Method::POST, "/state/a-paused/pause", None).await;
    assert_eq!(
        (paused.status, paused.body["paused"].clone()),
        (StatusCode::OK, json!(true))
    );
    let again = c.call(0, Method::POST, "/state/a-paused/pause", None).await;
    assert_eq!(again.status, StatusCode::OK, "idempotent");

    let listed = c.call(0, Method::GET, "/states?status=paused", None).await;
    assert_eq!(listed.body["states"][0]["id"], "a-paused");
    assert_eq!(listed.body["states"].as_array().unwrap().len(), 1);
    let urgent = c.call(0, Method::GET, "/states?min_priority=5", None).await;
    assert_eq!(urgent.body["states"].as_array().unwrap().len(), 2);

    assert_eq!(
        poll(&c, "min_priority=5&limit=5").await,
        ["a-high"],
        "paused is skipped"
    );
    assert_eq!(poll(&c, "limit=5").await, ["a-low"]);
    assert!(poll(&c, "limit=5").await.is_empty());
    let resumed = c
        .call(1, Method::POST, "/state/a-paused/resume", None)
        .await;
    assert_eq!(resumed.body["paused"], false);
    assert_eq!(
        poll(&c, "limit=5").await,
        ["a-paused"],
        "deliverable at once"
    );

    let bad = c
        .call(0, Method::PUT, "/state/x", Some(json!({"priority": 10})))
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::BAD_REQUEST, "invalid")
    );
    let missing = c.call(0, Method::POST, "/state/none/pause", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_paged_and_the_same_on_every_replica() {
    let c = Cluster::start().await;
    create(&c, "h", 0).await;
    for _ in 0..3 {
        c.call(0, Method::POST, "/state/h/pause", None).await;
        c.call(0, Method::POST, "/state/h/resume", None).await;
    }
    let all = c.call(1, Method::GET, "/state/h/history", None).await;
    assert_eq!(all.status, StatusCode::OK);
    let events = all.body["events"].as_array().unwrap().clone();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[..2], ["resumed", "paused"]);
    assert_eq!(kinds.last(), Some(&"created"));
    assert!(events
        .iter()
        .all(|e| e["index"].as_u64() > Some(0) && e["at"].as_u64() > Some(0)));

    let first = c
        .call(0, Method::GET, "/state/h/history?limit=2", None)
        .await
        .body;
    assert_eq!(first["events"].as_array().unwrap().len(), 2);
    let next = first["next"].as_u64().expect("a next page");
    let second = c
        .call(
            0,
            Method::GET,
            &format!("/state/h/history?limit=100&before={next}"),
            None,
        )
        .await
        .body;
    assert_eq!(second["events"].as_array().unwrap().len(), events.len() - 2);
    assert_eq!(second["next"], Value::Null);

    eventually(
        Duration::from_secs(10),
        "every replica has the same history",
        || async {
            let mut seen = Vec::new();
            for i in 0..3 {
                let path = "/state/h/history?stale=true";
                seen.push(c.call(i, Method::GET, path, None).await.body["events"].clone());
            }
            seen.iter().all(|h| *h == Value::Array(events.clone()))
        },
    )
    .await;
    c.call(0, Method::DELETE, "/state/h", None).await;
    let gone = c.call(0, Method::GET, "/state/h/history", None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    c.shutdown().await;
}
