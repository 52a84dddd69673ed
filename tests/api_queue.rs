//! What users of a queue expect, on a real three-node cluster over HTTP: strict input
//! (an unknown field is refused, naming it), ...

mod common;

use common::Cluster;
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
