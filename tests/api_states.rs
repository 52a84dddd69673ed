//! States, leases and the long-poll on a real three-node cluster over HTTP.

mod support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{enc, eventually, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_read_update_delete_through_any_node() {
    let c = Cluster::start().await;
    let (l, f) = (c.leader(), c.follower());
    let id = enc("orders/42 ü");
    let body = json!({"data": {"step": 1}, "selects": [{"id": "g1", "cases": [{"op": "recv", "chan": "pay"}]}]});

    let created = c
        .call(f, Method::PUT, &format!("/state/{id}"), Some(body.clone()))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["id"], "orders/42 ü");
    assert_eq!(created.body["status"], "waiting");
    assert_eq!(created.body["data"]["step"], 1);

    let again = c
        .call(l, Method::PUT, &format!("/state/{id}"), Some(body))
        .await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::CONFLICT, "exists")
    );

    let read = c.call(f, Method::GET, &format!("/state/{id}"), None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["selects"][0]["id"], "g1");
    eventually(
        Duration::from_secs(30),
        "stale read on a follower",
        || async {
            c.call(f, Method::GET, &format!("/state/{id}?stale=true"), None)
                .await
                .status
                == StatusCode::OK
        },
    )
    .await;

    let missing = c.call(f, Method::GET, "/state/nope", None).await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );

    let list = c
        .call(
            f,
            Method::GET,
            "/states?prefix=orders%2F&status=waiting",
            None,
        )
        .await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["states"].as_array().unwrap().len(), 1);
    assert!(
        list.body["states"][0].get("data").is_none(),
        "summaries carry no data"
    );
    assert!(list.body["next"].is_null());

    let deleted = c
        .call(f, Method::DELETE, &format!("/state/{id}"), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = c
        .call(l, Method::DELETE, &format!("/state/{id}"), None)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_with_a_cursor() {
    let c = Cluster::start().await;
    for i in 0..5 {
        let r = c
            .call(
                0,
                Method::PUT,
                &format!("/state/p{i}"),
                Some(json!({"data": i})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut path = "/states?prefix=p&limit=2&full=true".to_owned();
    loop {
        let page = c.call(1, Method::GET, &path, None).await;
        assert_eq!(page.status, StatusCode::OK);
        for s in page.body["states"].as_array().unwrap() {
            assert!(s.get("data").is_some());
            seen.push(s["id"].as_str().unwrap().to_owned());
        }
        match page.body["next"].as_str() {
            Some(next) => path = format!("/states?prefix=p&limit=2&full=true&after={}", enc(next)),
            None => break,
        }
    }
    assert_eq!(seen, ["p0", "p1", "p2", "p3", "p4"]);
    let done = c.call(2, Method::GET, "/states?status=done", None).await;
    assert_eq!(done.body["states"].as_array().unwrap().len(), 5);
    c.shutdown().await;
}

/// A state that receives from `chan`.
fn waiting_on(chan: &str) -> serde_json::Value {
    json!({"data": "d", "selects": [{"id": "g1", "cases": [{"op": "recv", "chan": chan}]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_poller_is_woken_within_a_second() {
    let c = Cluster::start().await;
    let f = c.follower();
    let r = c
        .call(0, Method::PUT, "/state/w1", Some(waiting_on("wake")))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let poller = {
        let (http, url) = (c.http.clone(), c.urls[f].clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let r = http
                .get(format!("{url}/state/poll?prefix=w&wait=20"))
                .send()
                .await
                .unwrap();
            let answer = support::answer(r).await;
            (answer, started.elapsed())
        })
    };
    eventually(Duration::from_secs(10), "the poller to wait", || async {
        let m = c
            .http
            .get(format!("{}/metrics", c.urls[c.leader()]))
            .send()
            .await
            .unwrap();
        m.text()
            .await
            .unwrap()
            .contains("slct_long_polls_waiting 1")
    })
    .await;
    let sent_at = Instant::now();
    let send = c
        .call(f, Method::POST, "/chan/wake/send", Some(json!("hello")))
        .await;
    assert_eq!(send.status, StatusCode::OK, "{:?}", send.body);
    let (answer, _) = poller.await.unwrap();
    let woke_after = sent_at.elapsed();
    assert_eq!(answer.status, StatusCode::OK);
    let states = answer.body.as_array().unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0]["id"], "w1");
    assert_eq!(states[0]["results"][0]["data"], "hello");
    assert!(states[0]["lease"]["token"].is_string());
    assert!(
        woke_after < Duration::from_secs(1),
        "woke after {woke_after:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_exclusive_expire_and_redeliver() {
    let c = Cluster::start().await;
    let f = c.follower();
    c.call(0, Method::PUT, "/state/x1", Some(waiting_on("lx")))
        .await;
    c.call(0, Method::POST, "/chan/lx/send", Some(json!(1)))
        .await;

    let first = c
        .call(
            f,
            Method::GET,
            "/state/poll?prefix=x&wait=5&lease_ms=1000",
            None,
        )
        .await;
    assert_eq!(first.body.as_array().unwrap().len(), 1);
    let token1 = first.body[0]["lease"]["token"].as_str().unwrap().to_owned();
    let none = c
        .call(f, Method::GET, "/state/poll?prefix=x&wait=0", None)
        .await;
    assert_eq!(none.status, StatusCode::OK);
    assert_eq!(
        none.body,
        json!([]),
        "a leased state is not delivered twice"
    );

    let again = Instant::now();
    let second = c
        .call(f, Method::GET, "/state/poll?prefix=x&wait=10", None)
        .await;
    assert_eq!(
        second.body.as_array().unwrap().len(),
        1,
        "redelivered after expiry"
    );
    assert!(again.elapsed() < Duration::from_secs(5));
    let token2 = second.body[0]["lease"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(token1, token2);

    let stale = c
        .call(
            f,
            Method::PUT,
            "/state/x1",
            Some(json!({"lease": {"token": token1}, "selects": []})),
        )
        .await;
    assert_eq!(
        (stale.status, stale.code()),
        (StatusCode::CONFLICT, "lease_lost")
    );

    let extended = c
        .call(
            f,
            Method::POST,
            "/state/x1/lease",
            Some(json!({"token": token2, "extend_ms": 60000})),
        )
        .await;
    assert_eq!(extended.status, StatusCode::OK);
    assert!(extended.body["expires_at"].as_u64().unwrap() > 0);
    let lost = c
        .call(
            f,
            Method::POST,
            "/state/x1/lease",
            Some(json!({"token": token1})),
        )
        .await;
    assert_eq!(
        (lost.status, lost.code()),
        (StatusCode::CONFLICT, "lease_lost")
    );

    let released = c
        .call(
            f,
            Method::DELETE,
            &format!("/state/x1/lease?token={token2}"),
            None,
        )
        .await;
    assert_eq!(released.status, StatusCode::NO_CONTENT);
    let third = c
        .call(f, Method::GET, "/state/poll?prefix=x&wait=5", None)
        .await;
    let token3 = third.body[0]["lease"]["token"].as_str().unwrap().to_owned();

    let updated = c
        .call(
            f,
            Method::PUT,
            "/state/x1",
            Some(json!({"data": "next", "selects": [{"id": "g2", "cases": [{"op": "recv", "chan": "ly"}]}]})),
        )
        .await;
    assert_eq!(
        (updated.status, updated.code()),
        (StatusCode::CONFLICT, "exists")
    );
    let updated = c
        .http
        .put(format!("{}/state/x1", c.urls[f]))
        .header("Slct-Lease", &token3)
        .json(&json!({"data": "next", "selects": [{"id": "g2", "cases": [{"op": "recv", "chan": "ly"}]}]}))
        .send()
        .await
        .unwrap();
    let updated = support::answer(updated).await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert_eq!(updated.body["status"], "waiting");
    assert_eq!(updated.body["results"], json!([]));
    assert_eq!(updated.body["data"], "next");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_blocked_select_is_refused() {
    let c = Cluster::start().await;
    let two = json!({"selects": [
        {"id": "a", "cases": [{"op": "recv", "chan": "ca"}]},
        {"id": "b", "cases": [{"op": "recv", "chan": "cb"}]}
    ]});
    c.call(0, Method::PUT, "/state/d1", Some(two)).await;
    c.call(0, Method::POST, "/chan/ca/send", Some(json!("v")))
        .await;
    let polled = c
        .call(1, Method::GET, "/state/poll?prefix=d1&wait=5", None)
        .await;
    let token = polled.body[0]["lease"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let dropped = c
        .call(
            1,
            Method::PUT,
            "/state/d1",
            Some(json!({"lease": {"token": token}, "selects": []})),
        )
        .await;
    assert_eq!(
        (dropped.status, dropped.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_update")
    );
    let kept = json!({"lease": {"token": token}, "selects": [{"id": "b", "cases": [{"op": "recv", "chan": "cb"}]}]});
    let ok = c.call(1, Method::PUT, "/state/d1", Some(kept)).await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    let bad = c
        .call(
            1,
            Method::PUT,
            "/state/d1",
            Some(json!({"lease": {"token": "not-a-uuid"}})),
        )
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::BAD_REQUEST, "invalid")
    );
    let not_failed = c.call(1, Method::POST, "/state/d1/retry", None).await;
    assert_eq!(
        (not_failed.status, not_failed.code()),
        (StatusCode::CONFLICT, "conflict")
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_readme_example_is_accepted() {
    let c = Cluster::start().await;
    let seed = r#"{
        "Selects": [{
            "ID": "1",
            "Cases": [
                {"Op": 1, "Chan": "chan1 id"},
                {"Op": 3, "Chan": "15600421234"},
                {"Op": 2, "Chan": "chan2 id", "Data": "hello world"}
            ]
        }],
        "Data": "... updated process state ...",
        "Results": [],
        "Callback": {"Type": 1, "URI": "http://127.0.0.1:9/callback"}
    }"#;
    let r = c
        .raw(
            c.follower(),
            Method::PUT,
            "/state/seed",
            seed.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["data"], "... updated process state ...");
    assert_eq!(r.body["callback"]["url"], "http://127.0.0.1:9/callback");
    let cases = &r.body["selects"][0]["cases"];
    assert_eq!(cases[0], json!({"op": "recv", "chan": "chan1 id"}));
    assert_eq!(cases[1]["at"], 15_600_421_234_000u64);
    assert_eq!(
        cases[2],
        json!({"op": "send", "chan": "chan2 id", "data": "hello world"})
    );
    c.shutdown().await;
}

/// Long-polls on node `i` in the background.
fn spawn_poll(c: &Cluster, i: usize, query: &str) -> tokio::task::JoinHandle<support::Answer> {
    let (http, url) = (c.http.clone(), format!("{}/state/poll?{query}", c.urls[i]));
    tokio::spawn(async move { support::answer(http.get(url).send().await.unwrap()).await })
}

async fn pollers_waiting(c: &Cluster, n: usize) {
    let series = format!("slct_long_polls_waiting {n}");
    eventually(Duration::from_secs(10), &series, || async {
        let m = c
            .http
            .get(format!("{}/metrics", c.urls[c.leader()]))
            .send()
            .await
            .unwrap();
        m.text().await.unwrap().contains(&series)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_pollers_are_served_in_arrival_order() {
    let c = Cluster::start().await;
    for id in ["f1", "f2"] {
        c.call(
            0,
            Method::PUT,
            &format!("/state/{id}"),
            Some(waiting_on(id)),
        )
        .await;
    }
    let first = spawn_poll(&c, c.follower(), "prefix=f&wait=20");
    pollers_waiting(&c, 1).await;
    let second = spawn_poll(&c, c.leader(), "prefix=f&wait=20");
    pollers_waiting(&c, 2).await;
    c.call(0, Method::POST, "/chan/f2/send", Some(json!(2)))
        .await;
    let got = first.await.unwrap();
    assert_eq!(
        got.body[0]["id"], "f2",
        "the longest-waiting poller goes first"
    );
    pollers_waiting(&c, 1).await;
    c.call(0, Method::POST, "/chan/f1/send", Some(json!(1)))
        .await;
    let got = second.await.unwrap();
    assert_eq!(got.body[0]["id"], "f1");
    let timed_out = c
        .call(1, Method::GET, "/state/poll?prefix=f&wait=1", None)
        .await;
    assert_eq!(
        (timed_out.status, timed_out.body.clone()),
        (StatusCode::OK, json!([]))
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pollers_never_share_a_state() {
    let c = Cluster::start().await;
    let pollers: Vec<_> = (0..8)
        .map(|i| spawn_poll(&c, i % 3, "prefix=cc&wait=4"))
        .collect();
    pollers_waiting(&c, 8).await;
    for i in 0..5 {
        c.call(
            i % 3,
            Method::PUT,
            &format!("/state/cc{i}"),
            Some(json!({"selects": [{"id": "g", "cases": [{"op": "default"}]}]})),
        )
        .await;
    }
    let mut delivered = Vec::new();
    for p in pollers {
        let answer = p.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        for s in answer.body.as_array().unwrap() {
            delivered.push(s["id"].as_str().unwrap().to_owned());
        }
    }
    delivered.sort();
    assert_eq!(
        delivered,
        ["cc0", "cc1", "cc2", "cc3", "cc4"],
        "each state exactly once"
    );
    c.shutdown().await;
}

/// `GET /state/poll` is the long-poll, a route of its own, so `poll` is not a state id:
/// creating it is 400 and the long-poll is never shadowed by a state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_is_a_reserved_state_id() {
    let c = Cluster::start().await;
    for (node, path) in [
        (c.leader(), "/state/poll"),
        (c.follower(), "/state/poll"),
        (c.follower(), "/state/%70oll"),
    ] {
        let created = c
            .call(node, Method::PUT, path, Some(json!({"data": 1})))
            .await;
        assert_eq!(
            (created.status, created.code()),
            (StatusCode::BAD_REQUEST, "invalid"),
            "{:?}",
            created.body
        );
        assert!(created.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reserved"));
    }
    let polled = c
        .call(c.follower(), Method::GET, "/state/poll?wait=0", None)
        .await;
    assert_eq!(polled.status, StatusCode::OK);
    assert_eq!(polled.body, json!([]));
    let bad = c
        .call(
            c.follower(),
            Method::GET,
            "/state/poll?wait=0&limit=0",
            None,
        )
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::BAD_REQUEST, "invalid")
    );
    let listed = c
        .call(c.leader(), Method::GET, "/states?prefix=poll", None)
        .await;
    assert_eq!(listed.body["states"], json!([]));
    // Ids that merely start with the reserved one are ordinary.
    let polls = c
        .call(
            c.leader(),
            Method::PUT,
            "/state/polls",
            Some(json!({"data": 1})),
        )
        .await;
    assert_eq!(polls.status, StatusCode::CREATED);
    let read = c
        .call(c.follower(), Method::GET, "/state/polls", None)
        .await;
    assert_eq!(read.status, StatusCode::OK);
    c.shutdown().await;
}

/// A page is bounded in bytes as well as count: ten states of 600 KB listed with
/// `full=true&limit=1000` come in pages of at most 4 MiB (one item always fits), and
/// following `next` lists them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_listing_of_large_states_comes_in_pages_bounded_in_bytes() {
    let c = Cluster::start().await;
    let big = "x".repeat(600_000);
    for i in 0..10 {
        let put = c
            .call(
                c.leader(),
                Method::PUT,
                &format!("/state/big-{i}"),
                Some(json!({"data": big})),
            )
            .await;
        assert_eq!(put.status, StatusCode::CREATED);
    }
    let (mut seen, mut pages) = (Vec::new(), 0);
    let mut path = "/states?prefix=big-&full=true&limit=1000".to_owned();
    loop {
        let r = c
            .http
            .get(format!("{}{path}", c.urls[c.follower()]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let bytes = r.bytes().await.unwrap();
        assert!(
            bytes.len() <= slct::engine::list::MAX_PAGE_BYTES + 700_000,
            "{} bytes",
            bytes.len()
        );
        let page: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        pages += 1;
        for s in page["states"].as_array().unwrap() {
            assert_eq!(s["data"].as_str().map(str::len), Some(600_000));
            seen.push(s["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => {
                path = format!(
                    "/states?prefix=big-&full=true&limit=1000&after={}",
                    enc(next)
                )
            }
            None => break,
        }
    }
    let all: Vec<String> = (0..10).map(|i| format!("big-{i}")).collect();
    assert_eq!(seen, all);
    assert!(pages >= 2, "{pages} page(s)");
    c.shutdown().await;
}

/// A filter without an index of its own does bounded work per page: past
/// `MAX_SCAN` examined states a page comes back short — here empty — with a cursor,
/// and following it finds the one match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selective_filter_does_bounded_work_per_page() {
    use futures::StreamExt;
    let c = Cluster::start().await;
    let n = slct::engine::list::MAX_SCAN + 50;
    let (http, url) = (c.http.clone(), c.urls[c.leader()].clone());
    let created = futures::stream::iter(0..n)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let priority = if i == n - 1 { 9 } else { 0 };
                let body = json!({"data": i, "priority": priority,
                    "selects": [{"id": "g", "cases": [{"op": "recv", "chan": "never"}]}]});
                // Three nodes on this test's two threads beside 64 writers: on a loaded
                // machine a heartbeat can come late and an election answer some writes
                // 503. A client tries again (through this node, which forwards to
                // whoever leads); 409 means an earlier try was applied after all.
                for _ in 0..50 {
                    let sent = http.put(format!("{url}/state/w-{i:05}")).json(&body).send();
                    match sent.await.map(|r| r.status()) {
                        Ok(StatusCode::CREATED | StatusCode::CONFLICT) => return true,
                        Ok(s) if s != StatusCode::SERVICE_UNAVAILABLE => panic!("create: {s}"),
                        _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                    }
                }
                false
            }
        })
        .buffer_unordered(64)
        .filter(|created| futures::future::ready(*created))
        .count()
        .await;
    assert_eq!(created, n);
    let first = c
        .call(
            c.leader(),
            Method::GET,
            "/states?status=waiting&min_priority=9",
            None,
        )
        .await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        first.body["states"],
        json!([]),
        "the first page stops at its work budget"
    );
    let next = first.body["next"].as_str().expect("a cursor").to_owned();
    let second = c
        .call(
            c.leader(),
            Method::GET,
            &format!("/states?status=waiting&min_priority=9&after={}", enc(&next)),
            None,
        )
        .await;
    let ids: Vec<&str> = second.body["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [format!("w-{:05}", n - 1)]);
    assert!(second.body["next"].is_null());
    c.shutdown().await;
}
