//! What users of a queue expect, on a real three-node cluster over HTTP: strict input
//! (an unknown field is refused, naming it), errors that say what to do, and poison
//! states that end as a dead letter, retention and bulk deletes, closes that report what
//! they discard, and idempotent writes.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{eventually, Cluster};

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

/// The value of `slct_states_deleted{kind}` on node `i`.
async fn deleted_metric(c: &Cluster, i: usize, kind: &str) -> u64 {
    let text = c
        .http
        .get(format!("{}/metrics", c.urls[i]))
        .send()
        .await
        .unwrap();
    let text = text.text().await.unwrap();
    let series = format!("slct_states_deleted{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_states_are_deleted_after_retain_ms_in_log_time() {
    let c = Cluster::start().await;
    let f = c.follower();
    let short = c
        .call(
            f,
            Method::PUT,
            "/state/short",
            Some(json!({"retain_ms": 300})),
        )
        .await;
    assert_eq!(
        (
            short.body["status"].as_str(),
            short.body["retain_ms"].as_u64()
        ),
        (Some("done"), Some(300))
    );
    let kept = c
        .call(f, Method::PUT, "/state/kept", Some(json!({"retain_ms": 0})))
        .await;
    assert_eq!(kept.body["retain_ms"], 0);
    let default = c.call(f, Method::PUT, "/state/week", Some(json!({}))).await;
    assert_eq!(
        default.body["retain_ms"],
        7 * 86_400_000u64,
        "--retain-done by default"
    );
    // A waiting state with a retention is not deleted: only a done one is.
    let waiting = json!({"retain_ms": 1, "selects": [{"id": "g", "cases": [{"op": "recv", "chan": "never"}]}]});
    c.call(f, Method::PUT, "/state/waiting", Some(waiting))
        .await;

    eventually(
        Duration::from_secs(10),
        "the retention to delete short",
        || async {
            c.call(f, Method::GET, "/state/short", None).await.status == StatusCode::NOT_FOUND
        },
    )
    .await;
    for id in ["kept", "week", "waiting"] {
        let r = c.call(f, Method::GET, &format!("/state/{id}"), None).await;
        assert_eq!(r.status, StatusCode::OK, "{id}");
    }
    eventually(Duration::from_secs(10), "every replica's count", || async {
        let mut all = true;
        for i in 0..3 {
            all &= deleted_metric(&c, i, "retention").await == 1;
        }
        all
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_states_deletes_by_prefix_and_status_and_needs_the_admin_token() {
    let c = Cluster::start_with(slct::api::ApiConfig {
        token: Some("api".into()),
        admin_token: Some("admin".into()),
        ..slct::api::ApiConfig::default()
    })
    .await;
    let f = c.follower();
    let call =
        |method: Method, path: String, token: &'static str, body: Option<serde_json::Value>| {
            let mut req = c
                .http
                .request(method, format!("{}{path}", c.urls[f]))
                .bearer_auth(token);
            if let Some(body) = body {
                req = req.json(&body);
            }
            async move { support::answer(req.send().await.unwrap()).await }
        };
    let blocked = json!({"selects": [{"id": "g", "cases": [{"op": "recv", "chan": "never"}]}]});
    for i in 0..5 {
        let r = call(
            Method::PUT,
            format!("/state/bulk-{i}"),
            "api",
            Some(blocked.clone()),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    for id in ["bulk-done", "other-1"] {
        call(Method::PUT, format!("/state/{id}"), "api", Some(json!({}))).await;
    }

    let forbidden = call(Method::DELETE, "/states?prefix=bulk-".into(), "api", None).await;
    assert_eq!(
        (forbidden.status, forbidden.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let unnamed = call(Method::DELETE, "/states".into(), "admin", None).await;
    assert_eq!(
        (unnamed.status, unnamed.code()),
        (StatusCode::BAD_REQUEST, "invalid")
    );

    let waiting = call(
        Method::DELETE,
        "/states?prefix=bulk-&status=waiting".into(),
        "admin",
        None,
    )
    .await;
    assert_eq!(waiting.status, StatusCode::OK, "{:?}", waiting.body);
    assert_eq!(waiting.body, json!({"deleted": 5, "more": false}));
    let left = call(Method::GET, "/states".into(), "api", None).await;
    let ids: Vec<&str> = left.body["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["bulk-done", "other-1"]);
    let done = call(Method::DELETE, "/states?status=done".into(), "admin", None).await;
    assert_eq!(done.body, json!({"deleted": 2, "more": false}));

    // The follower's figure follows once it has applied the deletes.
    eventually(
        Duration::from_secs(10),
        "the deletes in the metrics",
        || async {
            let metrics = c
                .http
                .get(format!("{}/metrics", c.urls[f]))
                .bearer_auth("api");
            let text = metrics.send().await.unwrap().text().await.unwrap();
            text.contains("slct_states_deleted{kind=\"request\"} 7")
        },
    )
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_channel_reports_the_detached_sends_it_discards() {
    let c = Cluster::start().await;
    let f = c.follower();
    c.call(f, Method::PUT, "/chan/orders", Some(json!({"capacity": 1})))
        .await;
    let a = c
        .call(f, Method::POST, "/chan/orders/send", Some(json!("a")))
        .await;
    assert_eq!(a.status, StatusCode::OK, "buffered");
    let b = c
        .call(f, Method::POST, "/chan/orders/send", Some(json!("b")))
        .await;
    assert_eq!(b.status, StatusCode::ACCEPTED, "parked");
    let closed = c.call(f, Method::POST, "/chan/orders/close", None).await;
    assert_eq!(closed.status, StatusCode::OK, "{:?}", closed.body);
    assert_eq!(closed.body["discarded_count"], 1);
    let discarded = closed.body["discarded"].as_array().unwrap();
    assert_eq!(discarded.len(), 1);
    assert_eq!(discarded[0]["data"], "b");
    assert!(discarded[0]["sent_at"].as_u64().unwrap() > 0);
    // The buffered value still drains, then the channel reads closed.
    let first = c
        .call(f, Method::POST, "/chan/orders/recv?wait=0", None)
        .await;
    assert_eq!(first.body, json!({"data": "a", "ok": true}));
    let then = c
        .call(f, Method::POST, "/chan/orders/recv?wait=0", None)
        .await;
    assert_eq!(then.body, json!({"data": null, "ok": false}));
    let info = c.call(f, Method::GET, "/chan/orders", None).await;
    assert_eq!(info.body["discarded"], 1);
    eventually(
        Duration::from_secs(10),
        "the discard in the metrics",
        || async {
            let text = c
                .http
                .get(format!("{}/metrics", c.urls[f]))
                .send()
                .await
                .unwrap();
            text.text()
                .await
                .unwrap()
                .lines()
                .any(|l| l == "slct_sends_discarded 1")
        },
    )
    .await;

    // Many: the list is bounded, the count is not.
    for i in 0..150 {
        let r = c
            .call(f, Method::POST, "/chan/many/send", Some(json!(i)))
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
    }
    let closed = c.call(f, Method::POST, "/chan/many/close", None).await;
    assert_eq!(closed.body["discarded_count"], 150);
    let listed = closed.body["discarded"].as_array().unwrap();
    assert_eq!(
        (listed.len(), &listed[0]["data"]),
        (100, &json!(0)),
        "the oldest first"
    );
    c.shutdown().await;
}

/// A request to node `i` with `Idempotency-Key: key`.
async fn keyed(
    c: &Cluster,
    i: usize,
    method: Method,
    path: &str,
    key: &str,
    body: serde_json::Value,
) -> support::Answer {
    let req = c.http.request(method, format!("{}{path}", c.urls[i]));
    let req = req.header("idempotency-key", key).json(&body);
    support::answer(req.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_makes_a_retried_write_apply_once() {
    let c = Cluster::start().await;
    let (f, l) = (c.follower(), c.leader());
    let body = json!({"data": {"order": 9}, "selects": [{"id": "g", "cases": [{"op": "recv", "chan": "pay"}]}]});
    let first = keyed(
        &c,
        f,
        Method::PUT,
        "/state/order-9",
        "create-order-9",
        body.clone(),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    // The same request again, through another node: the first reply, not `exists`.
    let again = keyed(&c, l, Method::PUT, "/state/order-9", "create-order-9", body).await;
    assert_eq!(
        (again.status, &again.body),
        (StatusCode::CREATED, &first.body)
    );
    let other = keyed(
        &c,
        f,
        Method::PUT,
        "/state/order-9",
        "create-order-9",
        json!({}),
    )
    .await;
    assert_eq!(
        (other.status, other.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );

    // A detached send retried with its key is sent once.
    for _ in 0..3 {
        let sent = keyed(
            &c,
            f,
            Method::POST,
            "/chan/pay/send",
            "pay-9",
            json!({"amount": 42}),
        )
        .await;
        assert_eq!(
            sent.status,
            StatusCode::OK,
            "the state's receive takes it: {:?}",
            sent.body
        );
    }
    let state = c.call(f, Method::GET, "/state/order-9", None).await;
    assert_eq!(state.body["results"].as_array().unwrap().len(), 1);
    let parked = keyed(&c, f, Method::POST, "/chan/pay/send", "pay-10", json!(10)).await;
    assert_eq!(parked.status, StatusCode::ACCEPTED);
    let repeat = keyed(&c, f, Method::POST, "/chan/pay/send", "pay-10", json!(10)).await;
    assert_eq!(repeat.status, StatusCode::ACCEPTED);
    let info = c.call(f, Method::GET, "/chan/pay", None).await;
    assert_eq!(info.body["senders"], 1, "one parked send, not two");

    let blocking = keyed(
        &c,
        f,
        Method::POST,
        "/chan/pay/send?wait=5",
        "b-1",
        json!(1),
    )
    .await;
    assert_eq!(
        (blocking.status, blocking.code()),
        (StatusCode::BAD_REQUEST, "invalid")
    );
    let long = "k".repeat(129);
    let too_long = keyed(&c, f, Method::POST, "/chan/pay/send", &long, json!(1)).await;
    assert_eq!(
        (too_long.status, too_long.code()),
        (StatusCode::BAD_REQUEST, "invalid")
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_repeats_a_keyed_write_and_gets_the_first_reply() {
    let c = Cluster::start().await;
    let client = slct::client::Client::builder(c.urls.join(","))
        .build()
        .unwrap();
    let keyed = client.with_idempotency_key("create-x");
    let body = slct::client::StateBody::new().data(json!(1));
    let first = keyed.put_state("x", &body).await.unwrap();
    let again = keyed.put_state("x", &body).await.unwrap();
    assert_eq!(again, first, "the first reply, not exists");
    // Without a key of its own, each call draws one: a second create is a new request.
    let plain = client.put_state("x", &body).await.unwrap_err();
    assert!(matches!(plain, slct::client::Error::Exists(_)), "{plain:?}");
    // Blocking operations take no key, even from a keyed client.
    let timeout = keyed.recv("nobody", 1).await.unwrap_err();
    assert!(
        matches!(timeout, slct::client::Error::Timeout(_)),
        "{timeout:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_record_survives_the_loss_of_the_leader() {
    let c = Cluster::start().await;
    let old = c.leader();
    let first = keyed(&c, old, Method::POST, "/chan/jobs/send", "job-1", json!(1)).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    c.stop_node(old).await;
    let other = (old + 1) % 3;
    // The repeat reaches the new leader: it has the record, replicated with the send.
    eventually(
        Duration::from_secs(20),
        "a new leader answers the repeat",
        || async {
            let again = keyed(
                &c,
                other,
                Method::POST,
                "/chan/jobs/send",
                "job-1",
                json!(1),
            )
            .await;
            again.status == StatusCode::ACCEPTED
        },
    )
    .await;
    let info = c.call(other, Method::GET, "/chan/jobs", None).await;
    assert_eq!(info.body["senders"], 1, "sent once: {:?}", info.body);
    for i in (0..3).filter(|&i| i != old) {
        c.stop_node(i).await;
    }
}
