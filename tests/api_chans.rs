//! Channels over HTTP on a real three-node cluster: make, info, send in its three
//! modes, receive, close, listing.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{enc, Cluster};

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
        json!({"name": "payments/order-42", "capacity": 2, "len": 2, "closed": false, "senders": 1, "receivers": 0, "discarded": 0})
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
            support::answer(r).await
        })
    };
    support::eventually(Duration::from_secs(30), "the sender to park", || async {
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
            support::answer(r).await
        })
    };
    support::eventually(Duration::from_secs(30), "the receiver to park", || async {
        c.call(f, Method::GET, "/chan/cl", None).await.body["receivers"] == 1
    })
    .await;
    c.call(f, Method::POST, "/chan/cl/close", None).await;
    let got = receiver.await.unwrap();
    assert_eq!(got.body, json!({"data": null, "ok": false}));
    c.shutdown().await;
}

/// A parked receive over a raw connection to node `i`: returns the open socket once the
/// receiver stands in the channel's queue.
async fn parked_receiver(c: &Cluster, i: usize, chan: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = c.urls[i].trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /chan/{chan}/recv?wait=60 HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    support::eventually(Duration::from_secs(10), "the receiver to park", || async {
        let info = c
            .call(c.leader(), Method::GET, &format!("/chan/{chan}"), None)
            .await;
        info.body["receivers"] == 1
    })
    .await;
    socket
}

/// A receiver that parks and hangs up, followed at once by a try-send: the withdrawal
/// wins, so a send answered "sent" was not handed to the departed receiver — its value
/// is received by the next receiver. Through the leader and through a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_sent_to_a_receiver_that_hung_up_is_received_by_the_next() {
    let c = Cluster::start().await;
    let (mut sent, mut would_block) = (0, 0);
    for round in 0..30 {
        let node = if round % 2 == 0 {
            c.follower()
        } else {
            c.leader()
        };
        let chan = format!("gone-{round}");
        let socket = parked_receiver(&c, node, &chan).await;
        drop(socket);
        let send = c
            .call(
                c.leader(),
                Method::POST,
                &format!("/chan/{chan}/send?wait=0"),
                Some(json!(round)),
            )
            .await;
        match (send.status, send.code()) {
            (StatusCode::OK, _) => sent += 1,
            (StatusCode::CONFLICT, "would_block") => {
                would_block += 1;
                continue;
            }
            other => panic!("try-send answered {other:?}: {:?}", send.body),
        }
        let got = c
            .call(
                node,
                Method::POST,
                &format!("/chan/{chan}/recv?wait=10"),
                None,
            )
            .await;
        assert_eq!(
            (got.status, &got.body),
            (StatusCode::OK, &json!({"data": round, "ok": true})),
            "round {round}: the value answered \"sent\" must reach the next receiver"
        );
    }
    eprintln!("{sent} sends met a receiver that hung up, {would_block} found it withdrawn");
    // A receiver that stays takes the value offered to it.
    let (http, url) = (c.http.clone(), c.urls[c.follower()].clone());
    let receiver = tokio::spawn(async move {
        support::answer(
            http.post(format!("{url}/chan/stays/recv?wait=30"))
                .send()
                .await
                .unwrap(),
        )
        .await
    });
    support::eventually(Duration::from_secs(10), "the receiver to park", || async {
        c.call(c.leader(), Method::GET, "/chan/stays", None)
            .await
            .body["receivers"]
            == 1
    })
    .await;
    let send = c
        .call(
            c.leader(),
            Method::POST,
            "/chan/stays/send?wait=0",
            Some(json!("v")),
        )
        .await;
    assert_eq!(send.status, StatusCode::OK);
    let got = receiver.await.unwrap();
    assert_eq!(
        (got.status, got.body),
        (StatusCode::OK, json!({"data": "v", "ok": true}))
    );
    c.shutdown().await;
}
