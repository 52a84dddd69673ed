//! Channels over HTTP on a real three-node cluster: make, info, send in its three
//! modes, receive, close, listing.

mod common;

use std::time::Duration;

use common::{enc, Cluster};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_info_close_and_list() {
    let c = Cluster::start().await;
    let f = c.follower();
    let name = enc("payments/order-42");
    let made = c
        .call(
            f,
            Method::PUT,
            &format!("/chan/{name}"),
            Some(json!({"capacity": 2})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    let same = c
        .call(
            f,
            Method::PUT,
            &format!("/chan/{name}"),
            Some(json!({"capacity": 2})),
        )
        .await;
    assert_eq!(same.status, StatusCode::OK);
    let other = c
        .call(
            f,
            Method::PUT,
            &format!("/chan/{name}"),
            Some(json!({"capacity": 3})),
        )
        .await;
    assert_eq!(
        (other.status, other.code()),
        (StatusCode::CONFLICT, "exists")
    );

    for v in [1, 2] {
        let s = c
            .call(
                f,
                Method::POST,
                &format!("/chan/{name}/send"),
                Some(json!(v)),
            )
            .await;
        assert_eq!(s.status, StatusCode::OK);
        assert_eq!(s.body["status"], "sent");
    }
    let full = c
        .call(
            f,
            Method::POST,
            &format!("/chan/{name}/send?wait=0"),
            Some(json!(3)),
        )
        .await;
    assert_eq!(
        (full.status, full.code()),
        (StatusCode::CONFLICT, "would_block")
    );
    let parked = c
        .call(
            f,
            Method::POST,
            &format!("/chan/{name}/send"),
            Some(json!(3)),
        )
        .await;
    assert_eq!(parked.status, StatusCode::ACCEPTED);
    assert_eq!(parked.body["status"], "parked");

    let info = c.call(f, Method::GET, &format!("/chan/{name}"), None).await;
    assert_eq!(info.status, StatusCode::OK);
    assert_eq!(
        info.body,
        json!({"name": "payments/order-42", "capacity": 2, "len": 2, "closed": false, "senders": 1, "receivers": 0})
    );
    let missing = c.call(f, Method::GET, "/chan/never-used", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let closed = c
        .call(f, Method::POST, &format!("/chan/{name}/close"), None)
        .await;
    assert_eq!(closed.status, StatusCode::OK);
    let twice = c
        .call(f, Method::POST, &format!("/chan/{name}/close"), None)
        .await;
    assert_eq!(
        (twice.status, twice.code()),
        (StatusCode::CONFLICT, "closed")
    );
    let send_closed = c
        .call(
            f,
            Method::POST,
            &format!("/chan/{name}/send"),
            Some(json!(9)),
        )
        .await;
    assert_eq!(
        (send_closed.status, send_closed.code()),
        (StatusCode::CONFLICT, "closed")
    );
    for v in [json!(1), json!(2)] {
        let r = c
            .call(f, Method::POST, &format!("/chan/{name}/recv?wait=1"), None)
            .await;
        assert_eq!(r.body, json!({"data": v, "ok": true}));
    }
    let drained = c
        .call(f, Method::POST, &format!("/chan/{name}/recv?wait=0"), None)
        .await;
    assert_eq!(drained.body, json!({"data": null, "ok": false}));

    let bare = c.raw(f, Method::PUT, "/chan/zz", Vec::new()).await;
    assert_eq!(bare.status, StatusCode::CREATED, "no body: unbuffered");
    assert_eq!(bare.body["capacity"], 0);
    let page = c.call(f, Method::GET, "/chans?limit=1", None).await;
    assert_eq!(page.body["chans"][0]["name"], "payments/order-42");
    let next = page.body["next"].as_str().unwrap().to_owned();
    let page2 = c
        .call(
            f,
            Method::GET,
            &format!("/chans?limit=1&after={}", enc(&next)),
            None,
        )
        .await;
    assert_eq!(page2.body["chans"][0]["name"], "zz");
    assert!(page2.body["next"].is_null());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_send_meets_blocking_recv_and_both_time_out_alone() {
    let c = Cluster::start().await;
    let f = c.follower();
    let sender = {
        let (http, url) = (c.http.clone(), c.urls[f].clone());
        tokio::spawn(async move {
            let r = http
                .post(format!("{url}/chan/rv/send?wait=10"))
                .json(&json!({"k": 1}))
                .send()
                .await
                .unwrap();
            common::answer(r).await
        })
    };
    common::eventually(Duration::from_secs(5), "the sender to park", || async {
        let info = c.call(f, Method::GET, "/chan/rv", None).await;
        info.body["senders"] == 1
    })
    .await;
    let got = c
        .call(c.leader(), Method::POST, "/chan/rv/recv?wait=5", None)
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, json!({"data": {"k": 1}, "ok": true}));
    let sent = sender.await.unwrap();
    assert_eq!(sent.status, StatusCode::OK, "{:?}", sent.body);

    let lonely = c.call(f, Method::POST, "/chan/rv/recv?wait=1", None).await;
    assert_eq!(
        (lonely.status, lonely.code()),
        (StatusCode::REQUEST_TIMEOUT, "timeout")
    );
    let lonely = c
        .call(f, Method::POST, "/chan/rv/send?wait=1", Some(json!(0)))
        .await;
    assert_eq!(
        (lonely.status, lonely.code()),
        (StatusCode::REQUEST_TIMEOUT, "timeout")
    );
    let try_recv = c.call(f, Method::POST, "/chan/rv/recv?wait=0", None).await;
    assert_eq!(
        (try_recv.status, try_recv.code()),
        (StatusCode::CONFLICT, "would_block")
    );
    let info = c.call(f, Method::GET, "/chan/rv", None).await;
    assert_eq!(
        info.status,
        StatusCode::NOT_FOUND,
        "withdrawn waiters leave nothing"
    );

    let receiver = {
        let (http, url) = (c.http.clone(), c.urls[f].clone());
        tokio::spawn(async move {
            let r = http
                .post(format!("{url}/chan/cl/recv?wait=10"))
                .send()
                .await
                .unwrap();
            common::answer(r).await
        })
    };
    common::eventually(Duration::from_secs(5), "the receiver to park", || async {
        c.call(f, Method::GET, "/chan/cl", None).await.body["receivers"] == 1
    })
    .await;
    c.call(f, Method::POST, "/chan/cl/close", None).await;
    let got = receiver.await.unwrap();
    assert_eq!(got.body, json!({"data": null, "ok": false}));
    c.shutdown().await;
}
