//! No input, however malformed, gets a 5xx or hurts a node: a table of bad requests,
//! each with the 4xx and error code it must get; plus auth, cluster routes and metrics.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use slct::api::ApiConfig;
use support::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_4xx_and_code() {
    let c = Cluster::start_with(ApiConfig {
        max_body: 4096,
        ..ApiConfig::default()
    })
    .await;
    let ok = c
        .call(
            0,
            Method::PUT,
            "/state/exists",
            Some(json!({"selects": [{"id": "g", "cases": [{"op": "recv", "chan": "q"}]}]})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    let big = format!("{{\"data\": \"{}\"}}", "x".repeat(5000));
    let long_id = "i".repeat(257);
    let cases: Vec<(Method, String, &[u8], u16, &str)> = vec![
        (
            Method::PUT,
            "/state/a".into(),
            b"{\"data\": ",
            400,
            "invalid_json",
        ),
        (Method::PUT, "/state/a".into(), b"", 400, "invalid_json"),
        (
            Method::PUT,
            "/state/a".into(),
            b"[1, 2]",
            400,
            "invalid_json",
        ),
        (
            Method::PUT,
            "/state/a".into(),
            deep.as_bytes(),
            400,
            "too_deep",
        ),
        (
            Method::PUT,
            "/state/a".into(),
            big.as_bytes(),
            413,
            "too_large",
        ),
        (
            Method::PUT,
            "/state/a".into(),
            br#"{"selects": [{"id": "g", "cases": [{"op": "jump"}]}]}"#,
            400,
            "invalid",
        ),
        (
            Method::PUT,
            "/state/a".into(),
            br#"{"selects": [{"id": "g", "cases": [{"Op": 9}]}]}"#,
            400,
            "invalid",
        ),
        (
            Method::PUT,
            "/state/a".into(),
            br#"{"selects": [{"cases": []}]}"#,
            400,
            "invalid",
        ),
        (
            Method::PUT,
            "/state/a".into(),
            br#"{"selects": [{"id": "g", "cases": [{"op": "default"}, {"op": "default"}]}]}"#,
            400,
            "invalid",
        ),
        (
            Method::PUT,
            "/state/a".into(),
            br#"{"callback": {"url": "ftp://x"}}"#,
            400,
            "invalid",
        ),
        (
            Method::PUT,
            "/state/a".into(),
            br#"{"lease": {"token": "not-a-uuid"}}"#,
            400,
            "invalid",
        ),
        (
            Method::PUT,
            "/state/exists".into(),
            br#"{"lease": {"token": "00000000-0000-0000-0000-000000000000"}}"#,
            409,
            "lease_lost",
        ),
        (
            Method::PUT,
            format!("/state/{long_id}"),
            b"{}",
            400,
            "invalid",
        ),
        (Method::PUT, "/state/a%01b".into(), b"{}", 400, "invalid"),
        (Method::PUT, "/state/%FF".into(), b"{}", 400, "invalid"),
        (
            Method::GET,
            "/state/poll?wait=301".into(),
            b"",
            400,
            "invalid",
        ),
        (
            Method::GET,
            "/state/poll?wait=-1".into(),
            b"",
            400,
            "invalid",
        ),
        (
            Method::GET,
            "/state/poll?limit=0".into(),
            b"",
            400,
            "invalid",
        ),
        (
            Method::GET,
            "/state/poll?lease_ms=0".into(),
            b"",
            400,
            "invalid",
        ),
        (
            Method::GET,
            "/state/x?stale=maybe".into(),
            b"",
            400,
            "invalid",
        ),
        (Method::GET, "/states?limit=abc".into(), b"", 400, "invalid"),
        (
            Method::GET,
            "/states?status=sleepy".into(),
            b"",
            400,
            "invalid",
        ),
        (
            Method::DELETE,
            "/state/exists/lease".into(),
            b"",
            400,
            "invalid",
        ),
        (
            Method::DELETE,
            "/state/exists/lease?token=zzz".into(),
            b"",
            400,
            "invalid",
        ),
        (
            Method::POST,
            "/state/exists/lease".into(),
            br#"{"token": "zzz"}"#,
            400,
            "invalid",
        ),
        (
            Method::POST,
            "/state/exists/lease".into(),
            br#"{"extend_ms": 5}"#,
            400,
            "invalid_json",
        ),
        (
            Method::POST,
            "/state/nope/retry".into(),
            b"",
            404,
            "not_found",
        ),
        (
            Method::PUT,
            "/chan/c".into(),
            br#"{"capacity": -1}"#,
            400,
            "invalid",
        ),
        (
            Method::PUT,
            "/chan/c".into(),
            br#"{"capacity": "big"}"#,
            400,
            "invalid_json",
        ),
        (
            Method::POST,
            "/chan/c/send?wait=x".into(),
            b"1",
            400,
            "invalid",
        ),
        (
            Method::POST,
            "/chan/c/send".into(),
            b"",
            400,
            "invalid_json",
        ),
        (
            Method::POST,
            "/chan/c/recv?wait=1000".into(),
            b"",
            400,
            "invalid",
        ),
        (Method::GET, "/chans?limit=5000".into(), b"", 400, "invalid"),
        (
            Method::POST,
            "/cluster/membership".into(),
            br#"{"members": []}"#,
            400,
            "invalid",
        ),
        (
            Method::POST,
            "/cluster/learners".into(),
            br#"{"id": "x"}"#,
            400,
            "invalid_json",
        ),
        (
            Method::PATCH,
            "/state/a".into(),
            b"",
            405,
            "method_not_allowed",
        ),
        (Method::GET, "/nowhere".into(), b"", 404, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        for node in [c.leader(), c.follower()] {
            let r = c.raw(node, method.clone(), &path, body.to_vec()).await;
            assert_eq!(
                (r.status.as_u16(), r.code()),
                (status, code),
                "{method} {path} on node {node}: {:?}",
                r.body
            );
            assert!(r.body["error"]["message"].is_string());
        }
    }
    for node in 0..3 {
        let health = c.call(node, Method::GET, "/healthz", None).await;
        assert_eq!(health.status, StatusCode::OK);
        // Still ready after all that (once it has applied what it knows is committed).
        support::eventually(
            std::time::Duration::from_secs(30),
            "the node ready",
            || async { c.call(node, Method::GET, "/readyz", None).await.status == StatusCode::OK },
        )
        .await;
    }
    let absent = c.call(0, Method::GET, "/state/a", None).await;
    assert_eq!(
        absent.status,
        StatusCode::NOT_FOUND,
        "no bad request changed anything"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_cluster_routes_and_metrics() {
    let c = Cluster::start_with(ApiConfig {
        token: Some("t0ken".into()),
        ..ApiConfig::default()
    })
    .await;
    let f = c.follower();
    let denied = c.call(f, Method::GET, "/states", None).await;
    assert_eq!(
        (denied.status, denied.code()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let wrong = c
        .http
        .get(format!("{}/states", c.urls[f]))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let allowed = c
        .http
        .put(format!("{}/state/authed", c.urls[f]))
        .bearer_auth("t0ken")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.status(),
        StatusCode::CREATED,
        "forwarded with its token"
    );

    assert_eq!(
        c.call(f, Method::GET, "/healthz", None).await.status,
        StatusCode::OK
    );
    let cluster = c
        .http
        .get(format!("{}/cluster", c.urls[f]))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    let cluster = support::answer(cluster).await.body;
    assert_eq!(cluster["id"], (f + 1) as u64);
    assert_eq!(cluster["state"], "Follower");
    assert_eq!(cluster["members"].as_object().unwrap().len(), 3);
    assert_eq!(cluster["leader"], (c.leader() + 1) as u64);

    let metrics = c.call(c.leader(), Method::GET, "/metrics", None).await;
    assert_eq!(
        metrics.status,
        StatusCode::UNAUTHORIZED,
        "metrics need the token"
    );
    let metrics = c
        .http
        .get(format!("{}/metrics", c.urls[c.leader()]))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    for series in [
        "slct_http_requests_total{",
        "route=\"/state/{id}\"",
        "slct_http_request_duration_seconds_bucket{",
        "slct_raft_term ",
        "slct_raft_is_leader 1",
        "slct_states{kind=\"all\"} 1",
        "slct_queued{kind=\"senders\"} 0",
        "slct_long_polls 0",
    ] {
        assert!(text.contains(series), "{series} missing from\n{text}");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_and_no_quorum() {
    let c = Cluster::start().await;
    let same = c
        .call(
            c.follower(),
            Method::POST,
            "/cluster/membership",
            Some(json!({"members": [1, 2, 3]})),
        )
        .await;
    assert_eq!(same.status, StatusCode::OK, "{:?}", same.body);
    assert_eq!(same.body["members"].as_object().unwrap().len(), 3);

    let leader = c.leader();
    let survivor = (leader + 1) % 3;
    c.stop_node(leader).await;
    c.stop_node((leader + 2) % 3).await;
    let put = c
        .call(survivor, Method::PUT, "/state/q", Some(json!({})))
        .await;
    assert_eq!(
        put.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        put.body
    );
    assert!(
        ["no_leader", "leader_unreachable"].contains(&put.code()),
        "{:?}",
        put.body
    );
    assert_eq!(put.headers["retry-after"], "1");
    support::eventually(
        std::time::Duration::from_secs(10),
        "readyz to say 503",
        || async {
            let r = c.call(survivor, Method::GET, "/readyz", None).await;
            r.status == StatusCode::SERVICE_UNAVAILABLE && r.code() == "not_ready"
        },
    )
    .await;
    let health = c.call(survivor, Method::GET, "/healthz", None).await;
    assert_eq!(health.status, StatusCode::OK);
    let stale = c
        .call(survivor, Method::GET, "/states?stale=true", None)
        .await;
    assert_eq!(stale.status, StatusCode::OK, "stale reads need no leader");
    c.stop_node(survivor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_every_route_is_never_a_5xx() {
    let c = Cluster::start().await;
    let bodies: [&[u8]; 6] = [
        b"",
        b"null",
        b"\xff\xfe\x00garbage",
        b"{\"selects\": {\"id\": 1}}",
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]",
        b"{\"token\": 12, \"capacity\": 1.5, \"members\": \"x\", \"id\": -1}",
    ];
    // `wait=0` keeps receives and polls from blocking for their default 30 s.
    let queries = [
        "?wait=0",
        "?wait=abc",
        "?limit=-5&after=%FF&wait=0",
        "?stale=true&full=yes&wait=0",
        "?token=&prefix=%00&wait=0",
    ];
    for (method, path) in slct::api::served_routes() {
        if path == "/cluster/learners" {
            continue; // a valid-looking learner would make the leader dial it
        }
        let path = path.replace("{id}", "g%20x").replace("{name}", "c%2Fh");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        for body in bodies {
            for query in queries {
                for node in [c.leader(), c.follower()] {
                    let r = c
                        .raw(
                            node,
                            method.clone(),
                            &format!("{path}{query}"),
                            body.to_vec(),
                        )
                        .await;
                    let s = r.status.as_u16();
                    assert!(
                        s < 500 || s == 503,
                        "{method} {path}{query} -> {s}: {:?}",
                        r.body
                    );
                    if s >= 400 {
                        assert!(
                            r.body["error"]["code"].is_string(),
                            "{method} {path}{query}: {:?}",
                            r.body
                        );
                    }
                }
            }
        }
    }
    // Right after the burst a follower may still be applying what was committed:
    // every node must become ready again, not crash or stall.
    for node in 0..3 {
        support::eventually(
            std::time::Duration::from_secs(10),
            "every node ready after the garbage",
            || async { c.call(node, Method::GET, "/readyz", None).await.status == StatusCode::OK },
        )
        .await;
    }
    c.shutdown().await;
}
