//! Callbacks on a real three-node cluster: two processes playing ping-pong resumed only
//! by callbacks, retries with backoff, giving up and re-arming, deferred updates, and
//! signed bodies. The callback receiver is a small axum server in the test.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use axum::routing::post;
use axum::{Json, Router};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use slct::api::ApiConfig;
use slct::callbacks::{signature, CallbackConfig};
use support::{eventually, Cluster};

/// Serves `app` on 127.0.0.1:0 and returns its base URL.
async fn receiver(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Values exchanged before the game ends: 20 rounds, one value each way per round.
const LAST: u64 = 40;

/// One player: after a receive of `n`, send `n + 1` on its out channel (or stop at
/// [`LAST`]); after a send, receive on its in channel.
async fn play(Json(state): Json<Value>) -> Json<Value> {
    let me = state["id"].as_str().unwrap();
    let (inbox, outbox) = if me == "ping" { ("a", "b") } else { ("b", "a") };
    let mut data = state["data"].clone();
    let result = state["results"].as_array().unwrap().last().unwrap().clone();
    let next = match result["op"].as_str().unwrap() {
        "recv" => {
            let n = result["data"].as_u64().unwrap();
            data["log"].as_array_mut().unwrap().push(json!(n));
            if n >= LAST {
                json!([])
            } else {
                data["sent"] = json!(n + 1);
                json!([{"id": "s", "cases": [{"op": "send", "chan": outbox, "data": n + 1}]}])
            }
        }
        _ if data["sent"].as_u64() >= Some(LAST) => json!([]),
        _ => json!([{"id": "r", "cases": [{"op": "recv", "chan": inbox}]}]),
    };
    Json(json!({"data": data, "selects": next, "callback": state["callback"]}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_pong_for_twenty_rounds_resumed_only_by_callbacks() {
    let c = Cluster::start().await;
    let url = receiver(Router::new().route("/play", post(play))).await;
    let callback = json!({"url": format!("{url}/play"), "timeout_ms": 5000});
    let pong = json!({"data": {"log": []}, "callback": callback,
        "selects": [{"id": "r", "cases": [{"op": "recv", "chan": "b"}]}]});
    let ping = json!({"data": {"log": [], "sent": 1}, "callback": callback,
        "selects": [{"id": "s", "cases": [{"op": "send", "chan": "b", "data": 1}]}]});
    let started = Instant::now();
    assert_eq!(
        c.call(1, Method::PUT, "/state/pong", Some(pong))
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        c.call(2, Method::PUT, "/state/ping", Some(ping))
            .await
            .status,
        StatusCode::CREATED
    );
    eventually(Duration::from_secs(60), "both players done", || async {
        let a = c.call(0, Method::GET, "/state/ping", None).await;
        let b = c.call(0, Method::GET, "/state/pong", None).await;
        a.body["status"] == "done" && b.body["status"] == "done"
    })
    .await;
    let elapsed = started.elapsed();
    let ping = c.call(0, Method::GET, "/state/ping", None).await.body;
    let pong = c.call(0, Method::GET, "/state/pong", None).await.body;
    let evens: Vec<u64> = (1..=LAST / 2).map(|i| 2 * i).collect();
    let odds: Vec<u64> = (0..LAST / 2).map(|i| 2 * i + 1).collect();
    assert_eq!(ping["data"]["log"], json!(evens));
    assert_eq!(pong["data"]["log"], json!(odds));
    println!(
        "ping-pong: {} rounds in {elapsed:?} = {:.1} rounds/s",
        LAST / 2,
        (LAST / 2) as f64 / elapsed.as_secs_f64()
    );
    c.shutdown().await;
}

/// One callback call: attempt, lease token, whether the signature was right, the
/// lease's expiry.
type Call = (u64, String, bool, u64);

/// What the flaky receiver saw: per state, its calls.
#[derive(Clone, Default)]
struct Seen {
    calls: Arc<Mutex<HashMap<String, Vec<Call>>>>,
    failing: Arc<Mutex<bool>>,
}

const SECRET: &str = "s3cret";

/// Fails the first two attempts of `flaky`, always fails `broken` while `failing`,
/// defers `later`, fails the first two calls of `stuck` and never answers its third;
/// everything else is finished.
async fn flaky(State(seen): State<Seen>, headers: HeaderMap, body: String) -> (AxStatus, String) {
    let h = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    let id = h("slct-state-id");
    let attempt: u64 = h("slct-attempt").parse().unwrap();
    // The receiver's check: HMAC over "<timestamp>.<body>", and a fresh timestamp.
    let signed = headers
        .get("slct-timestamp")
        .and_then(|t| t.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|at| {
            let fresh = at.abs_diff(slct::clock::now_ms()) < 60_000;
            let expected = signature(SECRET, at, body.as_bytes());
            fresh
                && headers.get("slct-signature").map(|v| v.as_bytes()) == Some(expected.as_bytes())
        });
    let state: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["lease"]["token"].as_str().unwrap(), h("slct-lease"));
    assert_eq!(h("idempotency-key"), format!("{id}:{}", state["version"]));
    let calls = {
        let mut seen = seen.calls.lock().unwrap();
        let calls = seen.entry(id.clone()).or_default();
        let expires_at = state["lease"]["expires_at"].as_u64().unwrap();
        calls.push((attempt, h("slct-lease"), signed, expires_at));
        calls.len()
    };
    if id == "stuck" && calls == 3 {
        std::future::pending::<()>().await;
    }
    let done = json!({"data": "finished", "selects": []}).to_string();
    match id.as_str() {
        "flaky" if attempt < 3 => (AxStatus::INTERNAL_SERVER_ERROR, String::new()),
        "broken" if *seen.failing.lock().unwrap() => (AxStatus::BAD_GATEWAY, String::new()),
        "later" => (AxStatus::ACCEPTED, String::new()),
        "stuck" if calls < 3 => (AxStatus::INTERNAL_SERVER_ERROR, String::new()),
        _ => (AxStatus::OK, done),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_retry_give_up_rearm_and_defer() {
    let api = ApiConfig {
        callbacks: CallbackConfig {
            secret: Some(SECRET.into()),
            max_attempts: 3,
            ..CallbackConfig::default()
        },
        ..ApiConfig::default()
    };
    let c = Cluster::start_with(api).await;
    let seen = Seen::default();
    *seen.failing.lock().unwrap() = true;
    let url = receiver(
        Router::new()
            .route("/cb", post(flaky))
            .with_state(seen.clone()),
    )
    .await;
    let start_now = |timeout_ms: u64| {
        json!({"data": 0,
            "callback": {"url": format!("{url}/cb"), "timeout_ms": timeout_ms},
            "selects": [{"id": "g", "cases": [{"op": "default"}]}]})
    };
    // `later` has a short timeout: its attempt's lease lapses long before its PUT.
    for (id, timeout_ms) in [("flaky", 10_000), ("broken", 10_000), ("later", 200)] {
        let r = c
            .call(
                c.follower(),
                Method::PUT,
                &format!("/state/{id}"),
                Some(start_now(timeout_ms)),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }

    eventually(
        Duration::from_secs(20),
        "flaky done on the third attempt",
        || async { c.call(0, Method::GET, "/state/flaky", None).await.body["status"] == "done" },
    )
    .await;
    let calls = seen.calls.lock().unwrap().clone();
    let attempts: Vec<u64> = calls["flaky"].iter().map(|c| c.0).collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert!(calls["flaky"].iter().all(|c| c.2), "every body is signed");
    let tokens: std::collections::HashSet<_> = calls["flaky"].iter().map(|c| &c.1).collect();
    assert_eq!(tokens.len(), 3, "each attempt has its own lease");

    eventually(Duration::from_secs(20), "broken to fail", || async {
        c.call(0, Method::GET, "/state/broken", None).await.body["status"] == "failed"
    })
    .await;
    let broken = c.call(0, Method::GET, "/state/broken", None).await.body;
    assert_eq!(broken["attempts"], 3);
    assert_eq!(
        broken["max_attempts"], 3,
        "--callback-max-attempts shown with a callback"
    );
    assert!(broken["last_error"].as_str().unwrap().contains("502"));
    let failed = c.call(1, Method::GET, "/states?status=failed", None).await;
    assert_eq!(failed.body["states"][0]["id"], "broken");
    *seen.failing.lock().unwrap() = false;
    let rearmed = c
        .call(c.follower(), Method::POST, "/state/broken/retry", None)
        .await;
    assert_eq!(rearmed.status, StatusCode::OK, "{:?}", rearmed.body);
    eventually(
        Duration::from_secs(20),
        "broken done after retry",
        || async { c.call(0, Method::GET, "/state/broken", None).await.body["status"] == "done" },
    )
    .await;

    eventually(Duration::from_secs(10), "later to be called", || async {
        seen.calls.lock().unwrap().contains_key("later")
    })
    .await;
    let (_, token, _, attempt_expiry) = seen.calls.lock().unwrap()["later"][0].clone();
    // The 202 extends the attempt's lease (200 ms + margin) to `--callback-defer-ms`:
    // the state is still leased, under the same token, once the attempt's lease is past.
    eventually(
        Duration::from_secs(10),
        "the attempt's lease to pass",
        || async { slct::clock::now_ms() > attempt_expiry + 200 },
    )
    .await;
    let later = c.call(0, Method::GET, "/state/later", None).await.body;
    assert_eq!(later["status"], "leased", "a deferred state stays leased");
    assert_eq!(later["lease"]["token"], token.as_str());
    assert!(later["lease"]["expires_at"].as_u64().unwrap() > attempt_expiry + 20_000);
    let put = c
        .http
        .put(format!("{}/state/later", c.urls[c.follower()]))
        .header("Slct-Lease", token)
        .json(&json!({"data": "by hand", "selects": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let later = c.call(0, Method::GET, "/state/later", None).await.body;
    assert_eq!(
        (later["status"].as_str(), later["data"].as_str()),
        (Some("done"), Some("by hand"))
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_delivery_continues_after_a_leader_change() {
    let c = Cluster::start().await;
    let seen = Seen::default();
    let url = receiver(
        Router::new()
            .route("/cb", post(flaky))
            .with_state(seen.clone()),
    )
    .await;
    let start_now = json!({"data": 0,
        "callback": {"url": format!("{url}/cb"), "timeout_ms": 1000},
        "selects": [{"id": "g", "cases": [{"op": "default"}]}]});
    let old = c.leader();
    let r = c
        .call(old, Method::PUT, "/state/stuck", Some(start_now))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let calls = || seen.calls.lock().unwrap().get("stuck").map_or(0, Vec::len);
    eventually(
        Duration::from_secs(10),
        "two failed attempts and a third in flight",
        || async { calls() >= 3 },
    )
    .await;
    let stopped = Instant::now();
    c.stop_node(old).await;
    let survivor = (old + 1) % 3;
    // The attempt in flight holds its lease (its 1 s timeout + 2 s) until it lapses;
    // then the new leader delivers again, within seconds.
    eventually(
        Duration::from_secs(15),
        "a new leader to deliver again",
        || async { calls() >= 4 },
    )
    .await;
    println!(
        "redelivered {:?} after stopping the leader",
        stopped.elapsed()
    );
    eventually(
        Duration::from_secs(10),
        "the delivery to finish",
        || async {
            let r = c
                .http
                .get(format!("{}/state/stuck", c.urls[survivor]))
                .send()
                .await;
            match r {
                Ok(r) => support::answer(r).await.body["status"] == "done",
                Err(_) => false,
            }
        },
    )
    .await;
    let attempts: Vec<u64> = seen.calls.lock().unwrap()["stuck"]
        .iter()
        .map(|c| c.0)
        .collect();
    // The attempt cut short by the stop was never recorded as failed: it is made again.
    assert_eq!(attempts, [1, 2, 3, 3]);
    assert!(c.nodes[survivor]
        .leader()
        .is_some_and(|(id, _)| id != old as u64 + 1));
}
