//! What users of a queue expect, on a real three-node cluster over HTTP: strict input
//! (an unknown field is refused, naming it), errors that say what to do, and poison
//! states that end as a dead letter.

mod common;

use std::time::Duration;

use common::{eventually, Cluster};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_anywhere_are_refused_naming_the_field() {
    let c = Cluster::start().await;
    let f = c.follower();
    let recv = json!({"op": "recv", "chan": "q"});
    let refused = [
        (
            "/state/a",
            json!({"data": 1, "selectz": [{"id": "g", "cases": [recv]}]}),
            "selectz",
        ),
        (
            "/state/a",
            json!({"selects": [{"id": "g", "cases": [{"op": "timer", "after_ms": 5, "timeout": 5}]}]}),
            "timeout",
        ),
        (
            "/state/a",
            json!({"selects": [{"id": "g", "cases": [recv], "prio": 1}]}),
            "prio",
        ),
        (
            "/state/a",
            json!({"callback": {"url": "http://127.0.0.1:9/", "retries": 3}}),
            "retries",
        ),
        ("/state/a", json!({"lease": {"tokn": "x"}}), "tokn"),
    ];
    for (path, body, field) in refused {
        let r = c.call(f, Method::PUT, path, Some(body.clone())).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "invalid"),
            "{body}"
        );
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("unknown field \"{field}\"")),
            "{message}"
        );
    }
    let gone = c.call(f, Method::GET, "/state/a", None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "nothing was created");

    let chan = c
        .call(f, Method::PUT, "/chan/c", Some(json!({"capacty": 3})))
        .await;
    assert_eq!(
        (chan.status, chan.code()),
        (StatusCode::BAD_REQUEST, "invalid")
    );
    let extend = json!({"token": "00000000-0000-0000-0000-000000000000", "extend": 5});
    let lease = c
        .call(f, Method::POST, "/state/a/lease", Some(extend))
        .await;
    assert_eq!(
        (lease.status, lease.code()),
        (StatusCode::BAD_REQUEST, "invalid")
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_sent_back_whole_is_accepted() {
    let c = Cluster::start().await;
    let f = c.follower();
    let body = json!({"data": {"n": 1}, "selects": [
        {"id": "now", "cases": [{"op": "default"}]},
        {"id": "later", "cases": [{"op": "recv", "chan": "never"}, {"op": "timer", "after_ms": 3_600_000}]}
    ]});
    let created = c.call(f, Method::PUT, "/state/whole", Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let polled = c
        .call(f, Method::GET, "/state/poll?prefix=whole&wait=5", None)
        .await;
    let mut state = polled.body[0].clone();
    assert_eq!(state["status"], "leased", "{:?}", polled.body);
    // Everything the server sent, server-owned fields and all, with new data.
    state["data"] = json!({"n": 2});
    let updated = c.call(f, Method::PUT, "/state/whole", Some(state)).await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert_eq!(updated.body["data"], json!({"n": 2}));
    assert_eq!(updated.body["status"], "waiting");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_to_do_next() {
    let c = Cluster::start().await;
    let f = c.follower();
    let body = json!({"selects": [{"id": "g", "cases": [{"op": "recv", "chan": "q"}]}]});
    c.call(f, Method::PUT, "/state/order-9", Some(body.clone()))
        .await;
    let exists = c.call(f, Method::PUT, "/state/order-9", Some(body)).await;
    assert_eq!(exists.code(), "exists");
    let message = exists.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("under a lease (`Slct-Lease`), or delete it first"),
        "{message}"
    );

    let slash = c
        .call(f, Method::POST, "/chan/payments/x/send", Some(json!(1)))
        .await;
    assert_eq!(slash.status, StatusCode::NOT_FOUND);
    let message = slash.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("percent-encode `/` as %2F"), "{message}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_state_turns_failed_after_max_deliveries_and_retry_rearms_it() {
    let c = Cluster::start().await;
    let f = c.follower();
    let ready = json!([{"id": "g", "cases": [{"op": "default"}]}]);
    let body = json!({"selects": ready, "max_deliveries": 2});
    let created = c.call(f, Method::PUT, "/state/poison", Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(
        (
            created.body["deliveries"].as_u64(),
            created.body["max_deliveries"].as_u64()
        ),
        (Some(0), Some(2))
    );
    let plain = c
        .call(f, Method::PUT, "/state/plain", Some(json!({})))
        .await;
    assert_eq!(
        plain.body["max_deliveries"], 10,
        "--max-deliveries by default"
    );

    // A worker takes it and dies, twice: each lease runs out.
    for delivery in 1..=2 {
        let polled = c
            .call(
                f,
                Method::GET,
                "/state/poll?prefix=poison&wait=10&lease_ms=100",
                None,
            )
            .await;
        assert_eq!(polled.body[0]["deliveries"], delivery, "{:?}", polled.body);
    }
    eventually(Duration::from_secs(10), "the dead letter", || async {
        c.call(f, Method::GET, "/state/poison", None).await.body["status"] == "failed"
    })
    .await;
    let dead = c.call(f, Method::GET, "/state/poison", None).await;
    assert_eq!(dead.body["last_error"], "max deliveries reached");
    let none = c
        .call(f, Method::GET, "/state/poll?prefix=poison&wait=0", None)
        .await;
    assert_eq!(
        none.body,
        json!([]),
        "a failed state is delivered to no one"
    );
    let listed = c.call(f, Method::GET, "/states?status=failed", None).await;
    assert_eq!(listed.body["states"][0]["id"], "poison");

    let retried = c.call(f, Method::POST, "/state/poison/retry", None).await;
    assert_eq!(retried.status, StatusCode::OK);
    assert_eq!(
        (
            retried.body["status"].as_str(),
            retried.body["deliveries"].as_u64()
        ),
        (Some("pending"), Some(0))
    );
    let polled = c
        .call(f, Method::GET, "/state/poll?prefix=poison&wait=10", None)
        .await;
    let token = polled.body[0]["lease"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let update = json!({"lease": {"token": token}, "selects": [], "max_deliveries": 0});
    let done = c.call(f, Method::PUT, "/state/poison", Some(update)).await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);
    assert_eq!(
        (
            done.body["deliveries"].as_u64(),
            done.body["max_deliveries"].as_u64()
        ),
        (Some(0), Some(0))
    );

    let bad = c
        .call(
            f,
            Method::PUT,
            "/state/neg",
            Some(json!({"max_deliveries": -1})),
        )
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::BAD_REQUEST, "invalid")
    );
    c.shutdown().await;
}
