//! What a callback target can make the leader do, on a real three-node cluster:
//! `--callback-allow` refuses other targets at PUT, redirects are not followed, answers
//! are read only up to `--max-body`, and `last_error` does not tell a closed port from
//! a service that is not HTTP.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode as AxStatus};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use slct::api::ApiConfig;
use slct::callbacks::{CallbackConfig, NO_VALID_ANSWER};
use support::{eventually, Cluster};

/// Largest request and callback answer in these tests.
const MAX_BODY: usize = 64 << 10;

/// Serves `app` on 127.0.0.1:0 and returns its `host:port`.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A finished update carrying `n` bytes of data.
fn update_of(n: usize) -> String {
    json!({"data": "x".repeat(n), "selects": []}).to_string()
}

/// A receiver: `/redirect` answers 307 to `/target`, which counts its calls; `/big`
/// answers an update larger than [`MAX_BODY`] with its length, `/big-chunked` the same
/// without one; `/small` a valid update.
async fn receiver(target_hits: Arc<AtomicUsize>) -> String {
    let app = Router::new()
        .route(
            "/redirect",
            post(|| async {
                (
                    AxStatus::TEMPORARY_REDIRECT,
                    [(header::LOCATION, "/target")],
                )
            }),
        )
        .route(
            "/target",
            post(move || {
                target_hits.fetch_add(1, Ordering::SeqCst);
                async { update_of(10) }
            }),
        )
        .route("/big", post(|| async { update_of(MAX_BODY + 1000) }))
        .route(
            "/big-chunked",
            post(|| async { chunked(update_of(MAX_BODY + 1000)) }),
        )
        .route("/small", post(|| async { update_of(MAX_BODY / 2) }));
    serve(app).await
}

/// `text` as a chunked body (no `Content-Length`), in 8 KiB pieces.
fn chunked(text: String) -> Response {
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = text
        .into_bytes()
        .chunks(8 << 10)
        .map(|c| Ok(c.to_vec()))
        .collect();
    Body::from_stream(futures::stream::iter(pieces)).into_response()
}

/// A TCP service that answers every connection with a line that is not HTTP.
async fn not_http() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await;
        }
    });
    addr
}

fn start_now(url: &str) -> Value {
    json!({"data": 0, "callback": {"url": url, "timeout_ms": 2000},
           "selects": [{"id": "g", "cases": [{"op": "default"}]}]})
}

async fn cluster(allow: &str) -> Cluster {
    Cluster::start_with(ApiConfig {
        max_body: MAX_BODY,
        callbacks: CallbackConfig {
            max_attempts: 2,
            allow: allow.parse().unwrap(),
            ..CallbackConfig::default()
        },
        ..ApiConfig::default()
    })
    .await
}

/// Waits until state `id` is done or failed and returns it.
async fn settled(c: &Cluster, id: &str) -> Value {
    let path = format!("/state/{id}");
    eventually(
        Duration::from_secs(20),
        &format!("{id} settled"),
        || async {
            let status = c.call(0, Method::GET, &path, None).await.body["status"].clone();
            status == "done" || status == "failed"
        },
    )
    .await;
    c.call(0, Method::GET, &path, None).await.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_large_answers_and_dead_targets_are_failed_attempts() {
    let c = cluster("").await;
    let hits = Arc::new(AtomicUsize::new(0));
    let base = format!("http://{}", receiver(hits.clone()).await);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let garbage = not_http().await;
    let targets = [
        ("redirect", format!("{base}/redirect")),
        ("big", format!("{base}/big")),
        ("big-chunked", format!("{base}/big-chunked")),
        ("small", format!("{base}/small")),
        ("closed", format!("http://{closed}/cb")),
        ("garbage", format!("http://{garbage}/cb")),
    ];
    for (id, url) in &targets {
        let put = c
            .call(
                c.follower(),
                Method::PUT,
                &format!("/state/{id}"),
                Some(start_now(url)),
            )
            .await;
        assert_eq!(put.status, StatusCode::CREATED, "{id}: {:?}", put.body);
    }

    let redirect = settled(&c, "redirect").await;
    assert_eq!(redirect["status"], "failed");
    assert!(redirect["last_error"]
        .as_str()
        .unwrap()
        .contains("HTTP 307"));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the redirect was not followed"
    );

    for id in ["big", "big-chunked"] {
        let big = settled(&c, id).await;
        assert_eq!(big["status"], "failed", "{id}");
        let error = big["last_error"].as_str().unwrap();
        assert!(
            error.contains(&format!("larger than {MAX_BODY} bytes")),
            "{id}: {error}"
        );
    }
    let small = settled(&c, "small").await;
    assert_eq!(
        small["status"], "done",
        "an answer within the limit is applied"
    );

    let closed = settled(&c, "closed").await;
    let garbage = settled(&c, "garbage").await;
    for state in [&closed, &garbage] {
        assert_eq!(state["status"], "failed");
        assert_eq!(state["last_error"], NO_VALID_ANSWER, "{}", state["id"]);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_answer_cannot_move_the_callback_outside_the_allow_list() {
    let c = cluster("127.0.0.0/8").await;
    let app = Router::new().route(
        "/move",
        post(|| async {
            json!({"data": 1, "callback": {"url": "http://localhost:1/elsewhere"},
                   "selects": [{"id": "g", "cases": [{"op": "default"}]}]})
            .to_string()
        }),
    );
    let url = format!("http://{}/move", serve(app).await);
    let put = c
        .call(
            c.follower(),
            Method::PUT,
            "/state/mover",
            Some(start_now(&url)),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED);
    let mover = settled(&c, "mover").await;
    assert_eq!(mover["status"], "failed");
    let error = mover["last_error"].as_str().unwrap();
    assert!(error.contains("not in --callback-allow"), "{error}");
    assert_eq!(
        mover["callback"]["url"],
        url.as_str(),
        "the answer was not applied"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_outside_the_allow_list_is_refused_at_put() {
    let c = cluster("127.0.0.0/8, hooks.example.com").await;
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = receiver(hits.clone()).await;
    let port = addr.rsplit_once(':').unwrap().1;
    for url in [
        format!("http://localhost:{port}/target"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://10.0.0.1/cb".to_owned(),
        "http://evil.example.com/cb".to_owned(),
    ] {
        let put = c
            .call(
                c.follower(),
                Method::PUT,
                "/state/refused",
                Some(start_now(&url)),
            )
            .await;
        assert_eq!(put.status, StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        assert_eq!(put.code(), "callback_not_allowed", "{url}");
    }
    let missing = c.call(0, Method::GET, "/state/refused", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "nothing was created");

    let url = format!("http://{addr}/target");
    let put = c
        .call(
            c.follower(),
            Method::PUT,
            "/state/allowed",
            Some(start_now(&url)),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED);
    assert_eq!(settled(&c, "allowed").await["status"], "done");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    c.shutdown().await;
}

/// A target whose answers carry a marker: a 500 with it as the body, a 200 whose
/// `selects` is the marker (a parser's error would quote it), a 200 whose update the
/// engine refuses with the marker as duplicate select ids.
async fn echoing(marker: &'static str) -> String {
    let app = Router::new()
        .route(
            "/status",
            post(move || async move { (AxStatus::INTERNAL_SERVER_ERROR, marker) }),
        )
        .route(
            "/not-a-state",
            post(move || async move { json!({"selects": marker}).to_string() }),
        )
        .route(
            "/refused",
            post(move || async move {
                let select = json!({"id": &marker[..200], "cases": [{"op": "default"}]});
                json!({"selects": [select, select]}).to_string()
            }),
        );
    format!("http://{}", serve(app).await)
}

/// `last_error` and the history's attempt events are a short fixed sentence with the
/// HTTP status: nothing of the answer, at most 200 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_error_says_the_status_and_nothing_of_the_answer() {
    let c = cluster("").await;
    let marker: &'static str = Box::leak("MARKER".repeat(5_000).into_boxed_str());
    let base = echoing(marker).await;
    for (id, status) in [("status", 500), ("not-a-state", 200), ("refused", 200)] {
        let put = c
            .call(
                c.follower(),
                Method::PUT,
                &format!("/state/{id}"),
                Some(start_now(&format!("{base}/{id}"))),
            )
            .await;
        assert_eq!(put.status, StatusCode::CREATED, "{id}: {:?}", put.body);
        let state = settled(&c, id).await;
        assert_eq!(state["status"], "failed", "{id}");
        let error = state["last_error"].as_str().unwrap();
        assert!(error.len() <= 200, "{id}: {} bytes", error.len());
        assert!(error.contains(&format!("HTTP {status}")), "{id}: {error}");
        assert!(!error.contains("MARKER"), "{id}: {error}");
        let history = c
            .call(0, Method::GET, &format!("/state/{id}/history"), None)
            .await;
        let attempts: Vec<&Value> = history.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "callback_failed")
            .collect();
        assert_eq!(attempts.len(), 2, "{id}: {:?}", history.body);
        for event in attempts {
            assert_eq!(event["error"], error, "{id}");
        }
        assert!(
            !history.body.to_string().contains("MARKER"),
            "{id}: the history quotes the answer"
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_timeout_above_a_minute_is_refused() {
    let c = cluster("").await;
    let body = |timeout_ms: u64| json!({"data": 0, "callback": {"url": "http://127.0.0.1:1/cb", "timeout_ms": timeout_ms}});
    let refused = c
        .call(c.follower(), Method::PUT, "/state/slow", Some(body(60_001)))
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::BAD_REQUEST, "invalid"),
        "{:?}",
        refused.body
    );
    let created = c
        .call(c.follower(), Method::PUT, "/state/slow", Some(body(60_000)))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    c.shutdown().await;
}

/// A tarpit: accepts connections, reads what comes, never answers; counts connections.
async fn tarpit(accepted: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut sink = vec![0; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// 64 callbacks to a target that never answers (15 s timeouts) take that target's
/// slots only: a healthy target's callback completes while every tarpit attempt is
/// still open (none has failed yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_target_does_not_delay_callbacks_to_others() {
    let c = cluster("").await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let slow = format!("http://{}/cb", tarpit(accepted.clone()).await);
    for i in 0..64 {
        let body = json!({"data": 0, "callback": {"url": slow, "timeout_ms": 15_000},
                          "selects": [{"id": "g", "cases": [{"op": "default"}]}]});
        let put = c
            .call(
                c.leader(),
                Method::PUT,
                &format!("/state/tarpit-{i}"),
                Some(body),
            )
            .await;
        assert_eq!(put.status, StatusCode::CREATED);
    }
    eventually(Duration::from_secs(10), "tarpit attempts open", || async {
        accepted.load(Ordering::SeqCst) >= slct::callbacks::PER_TARGET
    })
    .await;
    let hits = Arc::new(AtomicUsize::new(0));
    let healthy = format!("http://{}/target", receiver(hits.clone()).await);
    let put = c
        .call(
            c.leader(),
            Method::PUT,
            "/state/healthy",
            Some(start_now(&healthy)),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED);
    assert_eq!(settled(&c, "healthy").await["status"], "done");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    for i in 0..64 {
        let state = c
            .call(c.leader(), Method::GET, &format!("/state/tarpit-{i}"), None)
            .await
            .body;
        assert_eq!(
            (
                state["attempts"].as_u64().unwrap_or(0),
                &state["last_error"]
            ),
            (0, &Value::Null),
            "tarpit-{i} had an attempt end before the healthy callback landed"
        );
    }
    assert!(
        accepted.load(Ordering::SeqCst) <= slct::callbacks::PER_TARGET,
        "at most {} attempts open to one target",
        slct::callbacks::PER_TARGET
    );
    c.shutdown().await;
}

/// A refused connection fails in milliseconds, a silent listener at the timeout: the
/// failure is recorded at the timeout either way, so the history's log times do not
/// tell them apart, and the attempt's own duration is shown to the admin token only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_durations_are_shown_to_the_admin_token_only() {
    let c = Cluster::start_with(ApiConfig {
        admin_token: Some("root".into()),
        callbacks: CallbackConfig {
            max_attempts: 1,
            ..CallbackConfig::default()
        },
        ..ApiConfig::default()
    })
    .await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let put = c
        .call(
            c.follower(),
            Method::PUT,
            "/state/closed",
            Some(start_now(&format!("http://{closed}/cb"))),
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED);
    assert_eq!(settled(&c, "closed").await["status"], "failed");
    let url = format!("{}/state/closed/history", c.urls[0]);
    let events = |body: Value| body["events"].as_array().unwrap().clone();
    let open = events(
        support::answer(c.http.get(&url).send().await.unwrap())
            .await
            .body,
    );
    let failed = open
        .iter()
        .find(|e| e["event"] == "callback_failed")
        .unwrap();
    let leased = open.iter().find(|e| e["event"] == "leased").unwrap();
    assert!(failed.get("duration_ms").is_none(), "{failed}");
    // start_now's timeout_ms is 2000: the refusal is recorded no earlier.
    let recorded_after = failed["at"].as_u64().unwrap() - leased["at"].as_u64().unwrap();
    assert!(
        recorded_after >= 2_000,
        "recorded {recorded_after} ms after the lease"
    );
    let admin = events(
        support::answer(c.http.get(&url).bearer_auth("root").send().await.unwrap())
            .await
            .body,
    );
    let failed = admin
        .iter()
        .find(|e| e["event"] == "callback_failed")
        .unwrap();
    let took = failed["duration_ms"]
        .as_u64()
        .expect("duration_ms for the admin");
    assert!(
        took < recorded_after,
        "{took} ms, recorded after {recorded_after} ms"
    );
    c.shutdown().await;
}
