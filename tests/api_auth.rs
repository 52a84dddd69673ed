//! Who may call what, on a real three-node cluster: the API token, the admin token on
//! membership routes, `/metrics`, and membership mistakes answered as 4xx. Requests go
//! through a follower, so they also show that forwarding keeps the caller's token.

mod support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use slct::api::ApiConfig;
use support::{answer, Answer, Cluster};

/// A request to node `i` with `Authorization: Bearer <token>` if given.
async fn call(
    c: &Cluster,
    i: usize,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut req = c.http.request(method, format!("{}{}", c.urls[i], path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    answer(req.send().await.expect("the node answers")).await
}

/// An address where nothing listens.
fn dead_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_needs_the_admin_token_and_the_api_token_is_forbidden_there() {
    let api = ApiConfig {
        token: Some("api-token".into()),
        admin_token: Some("admin-token".into()),
        ..ApiConfig::default()
    };
    let c = Cluster::start_with(api).await;
    let f = c.follower();
    let learner = json!({"id": 4, "addr": dead_addr()});

    let none = call(
        &c,
        f,
        Method::POST,
        "/cluster/learners",
        None,
        Some(learner.clone()),
    )
    .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    let api = call(
        &c,
        f,
        Method::POST,
        "/cluster/learners",
        Some("api-token"),
        Some(learner.clone()),
    )
    .await;
    assert_eq!(
        (api.status, api.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let shrink = Some(json!({"members": [1]}));
    let api = call(
        &c,
        f,
        Method::POST,
        "/cluster/membership?force=true",
        Some("api-token"),
        shrink,
    )
    .await;
    assert_eq!(api.status, StatusCode::FORBIDDEN);
    assert_eq!(
        c.nodes[0].cluster_info().members.len(),
        3,
        "nothing changed"
    );
    assert!(c.nodes[0].cluster_info().learners.is_empty());

    let admin = call(
        &c,
        f,
        Method::POST,
        "/cluster/learners",
        Some("admin-token"),
        Some(learner),
    )
    .await;
    assert_eq!(admin.status, StatusCode::OK, "{:?}", admin.body);
    assert_eq!(admin.body["learners"].as_object().unwrap().len(), 1);
    let api = call(
        &c,
        f,
        Method::DELETE,
        "/cluster/learners/4",
        Some("api-token"),
        None,
    )
    .await;
    assert_eq!(api.status, StatusCode::FORBIDDEN);
    let admin = call(
        &c,
        f,
        Method::DELETE,
        "/cluster/learners/4",
        Some("admin-token"),
        None,
    )
    .await;
    assert_eq!(admin.status, StatusCode::OK, "{:?}", admin.body);
    assert!(admin.body["learners"].as_object().unwrap().is_empty());

    // The client API takes either token, and nothing without one.
    let state = Some(json!({"data": 1}));
    let put = call(
        &c,
        f,
        Method::PUT,
        "/state/a",
        Some("api-token"),
        state.clone(),
    )
    .await;
    assert_eq!(put.status, StatusCode::CREATED);
    let put = call(
        &c,
        f,
        Method::PUT,
        "/state/b",
        Some("admin-token"),
        state.clone(),
    )
    .await;
    assert_eq!(put.status, StatusCode::CREATED);
    let put = call(&c, f, Method::PUT, "/state/c", Some("wrong"), state).await;
    assert_eq!(put.status, StatusCode::UNAUTHORIZED);

    // Probes are open; metrics need the API token (no --metrics-public).
    // (A follower is ready once it has applied what it knows to be committed, a
    // moment after the writes above: wait for it rather than race it.)
    let health = call(&c, f, Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, StatusCode::OK);
    support::eventually(
        Duration::from_secs(30),
        "/readyz without a token",
        || async {
            let ready = call(&c, f, Method::GET, "/readyz", None, None).await.status;
            assert_ne!(ready, StatusCode::UNAUTHORIZED, "probes need no token");
            ready == StatusCode::OK
        },
    )
    .await;
    let metrics = call(&c, f, Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, StatusCode::UNAUTHORIZED);
    let metrics = call(&c, f, Method::GET, "/metrics", Some("api-token"), None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_and_no_admin_token_membership_is_closed_and_metrics_can_be_public() {
    let api = ApiConfig {
        token: Some("api-token".into()),
        metrics_public: true,
        ..ApiConfig::default()
    };
    let c = Cluster::start_with(api).await;
    let learner = Some(json!({"id": 4, "addr": dead_addr()}));
    let l = c.leader();
    let refused = call(
        &c,
        l,
        Method::POST,
        "/cluster/learners",
        Some("api-token"),
        learner,
    )
    .await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--admin-token"));
    let metrics = call(&c, c.follower(), Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_mistakes_are_4xx_and_learners_come_and_go() {
    let c = Cluster::start().await;
    let f = c.follower();
    let post = |path: &'static str, body: Value| {
        let c = &c;
        async move { c.call(f, Method::POST, path, Some(body)).await }
    };

    let r = c.call(f, Method::DELETE, "/cluster/learners/9", None).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "not_found"));
    let r = c.call(f, Method::DELETE, "/cluster/learners/2", None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "conflict"),
        "a voter"
    );
    let r = c.call(f, Method::DELETE, "/cluster/learners/x", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = post("/cluster/membership", json!({"members": [1, 2, 9]})).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "not_found"));
    let r = post("/cluster/membership", json!({"members": []})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = post("/cluster/membership", json!({"members": [1]})).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "conflict"));
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("?force=true"));
    for addr in [
        "not an address",
        "http://127.0.0.1:7001",
        "127.0.0.1",
        "127.0.0.1:0",
    ] {
        let r = post("/cluster/learners", json!({"id": 4, "addr": addr})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{addr}");
    }
    assert_eq!(c.nodes[0].cluster_info().members.len(), 3);

    // A learner at an address where nothing listens is added without waiting for it.
    let addr = dead_addr();
    let started = Instant::now();
    let r = post("/cluster/learners", json!({"id": 4, "addr": addr})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let r = post("/cluster/learners", json!({"id": 4, "addr": addr})).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the same learner again changes nothing"
    );
    let r = post("/cluster/learners", json!({"id": 4, "addr": dead_addr()})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "a learner does not move");
    let r = post("/cluster/learners", json!({"id": 3, "addr": addr})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "a voter is not a learner");
    let r = c.call(f, Method::DELETE, "/cluster/learners/4", None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(c.nodes[c.leader()].cluster_info().learners.is_empty());

    // Shrinking below three voters is possible, when asked for explicitly.
    let r = post("/cluster/membership?force=true", json!({"members": [1, 2]})).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["members"].as_object().unwrap().len(), 2);
    c.shutdown().await;
}

#[test]
fn help_does_not_print_secrets_from_the_environment() {
    let secrets = [
        ("SLCT_CLUSTER_SECRET", "cluster-secret-value-1"),
        ("SLCT_TOKEN", "api-token-value-2"),
        ("SLCT_ADMIN_TOKEN", "admin-token-value-3"),
        ("SLCT_CALLBACK_SECRET", "callback-secret-value-4"),
    ];
    for command in ["serve", "dev"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_slct"))
            .args([command, "--help"])
            .envs(secrets)
            .output()
            .expect("slct runs");
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        for (name, value) in secrets {
            assert!(help.contains(name), "{command} --help names {name}");
            assert!(
                !help.contains(value),
                "{command} --help shows {name}'s value"
            );
        }
    }
}

/// A learner's body for `POST /cluster/learners`, as JSON text.
fn learner_body() -> String {
    json!({"id": 4, "addr": dead_addr()}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_request_cannot_change_membership() {
    let c = Cluster::start().await;
    for node in [c.follower(), c.leader()] {
        let body = learner_body();
        let evil = [
            ("Origin", "http://evil.example"),
            ("Content-Type", "text/plain"),
        ];
        let r = c
            .exact(node, "POST", "/cluster/learners", &evil, body.as_bytes())
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::FORBIDDEN, "origin_not_allowed")
        );
        let null = [("Origin", "null"), ("Content-Type", "application/json")];
        let r = c
            .exact(node, "POST", "/cluster/learners", &null, body.as_bytes())
            .await;
        assert_eq!(r.code(), "origin_not_allowed");
        // A form (or fetch with a text body) without an Origin: not JSON.
        for headers in [&[("Content-Type", "text/plain")][..], &[]] {
            let r = c
                .exact(node, "POST", "/cluster/learners", headers, body.as_bytes())
                .await;
            assert_eq!(
                (r.status, r.code()),
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
                "{headers:?}"
            );
        }
        let form = [("Content-Type", "application/x-www-form-urlencoded")];
        let r = c.exact(node, "POST", "/chan/c/close", &form, b"").await;
        assert_eq!(r.code(), "unsupported_media_type", "an empty form too");
        let r = c
            .exact(
                node,
                "PUT",
                "/state/s",
                &[("Content-Type", "text/plain")],
                b"{}",
            )
            .await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    assert!(c.nodes[c.leader()].cluster_info().learners.is_empty());
    // The node's own origin (the console's) is answered, through a follower too.
    let f = c.follower();
    let own = format!("http://{}", c.addr(f));
    let same = [
        ("Origin", own.as_str()),
        ("Content-Type", "application/json; charset=utf-8"),
    ];
    let r = c
        .exact(
            f,
            "POST",
            "/cluster/learners",
            &same,
            learner_body().as_bytes(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = c.exact(f, "POST", "/chan/c/close", &[], b"").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "no body needs no content type: {r:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answers_only_the_hosts_and_origins_it_knows() {
    let api = ApiConfig {
        allow_hosts: vec!["slct.example".into()],
        allow_origins: vec!["https://ops.example".into()],
        ..ApiConfig::default()
    };
    let c = Cluster::start_with(api).await;
    for node in [c.follower(), c.leader()] {
        let port = c.addr(node).rsplit(':').next().unwrap().to_owned();
        for host in [
            "evil.example",
            "slct.example.evil.example",
            "127.0.0.1.evil.example",
        ] {
            let host = format!("{host}:{port}");
            let r = c
                .exact(node, "GET", "/states", &[("Host", &host)], b"")
                .await;
            assert_eq!(
                (r.status, r.code()),
                (StatusCode::FORBIDDEN, "host_not_allowed"),
                "{host}"
            );
        }
        for host in ["localhost", "127.0.0.1", "slct.example", "SLCT.example."] {
            let host = format!("{host}:{port}");
            let r = c
                .exact(node, "GET", "/states", &[("Host", &host)], b"")
                .await;
            assert_eq!(r.status, StatusCode::OK, "{host}: {:?}", r.body);
        }
        let listed = [
            ("Origin", "https://ops.example"),
            ("Content-Type", "application/json"),
        ];
        let path = format!("/state/from-ops-{node}");
        let r = c.exact(node, "PUT", &path, &listed, b"{}").await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let other = [("Origin", "https://ops.example.evil")];
        let r = c.exact(node, "GET", "/states", &other, b"").await;
        assert_eq!(r.code(), "origin_not_allowed");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_membership_needs_the_admin_token() {
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut node = std::process::Command::new(env!("CARGO_BIN_EXE_slct"))
        .args([
            "serve",
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--insecure",
        ])
        .args(["--callback-allow", "127.0.0.1"])
        .arg("--data")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let ready = format!("http://{addr}/readyz");
    support::eventually(Duration::from_secs(30), "the node is ready", || async {
        let r = http.get(ready.as_str()).send().await;
        r.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    let body = learner_body();
    let json = [("Content-Type", "application/json")];
    let r =
        support::exact_request(&addr, "POST", "/cluster/learners", &json, body.as_bytes()).await;
    node.kill().unwrap();
    node.wait().unwrap();
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("--admin-token"), "{message}");
}
