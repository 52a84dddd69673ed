//! `slct::client` against a real three-node cluster: every call, the error variants
//! the API's codes map to, the token, which 503s are retried, and failover between
//! nodes.

mod support;

use std::time::Duration;

use serde_json::json;
use slct::api::ApiConfig;
use slct::client::{
    Case, Client, Error, ListStates, PollOptions, RawJson, Retry, Select, SendMode, Sent,
    StateBody, Status,
};
use support::Cluster;
use uuid::Uuid;

/// A client of node `i`.
fn client(c: &Cluster, i: usize) -> Client {
    Client::new(c.urls[i].as_str()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_lives_through_the_typed_client() {
    let c = Cluster::start().await;
    let client = client(&c, c.follower());
    // A send value written with spaces and keys out of order: the server compares a
    // blocked send's value as text, so it must come back byte for byte.
    let audit = RawJson::from_text(r#"{"z": 1, "a": [1, 2]}"#).unwrap();
    let body = StateBody::new()
        .data(json!({"step": "awaiting payment"}))
        .select(
            Select::new("main")
                .case(Case::recv("payments/1"))
                .case(Case::timer_after(600_000)),
        )
        .select(Select::new("audit").case(Case::Send {
            chan: "audit".into(),
            data: audit.clone(),
        }));
    let created = client.put_state("order/1", &body).await.unwrap();
    assert_eq!(created.status, Status::Waiting);
    assert_eq!(created.selects.len(), 2);
    let again = client.put_state("order/1", &body).await.unwrap_err();
    assert!(matches!(again, Error::Exists(_)), "{again:?}");

    let page = client
        .list_states(&ListStates {
            prefix: "order/".into(),
            ..ListStates::default()
        })
        .await
        .unwrap();
    assert_eq!(page.states.len(), 1);
    assert_eq!(page.states[0].data, None, "summaries carry no data");
    assert_eq!(client.get_chan("audit").await.unwrap().senders, 1);

    let sent = client
        .send("payments/1", &json!({"amount": 42}), SendMode::Detached)
        .await
        .unwrap();
    assert_eq!(sent, Sent::Sent);
    let options = PollOptions {
        prefix: "order/".into(),
        wait: 5,
        ..PollOptions::default()
    };
    let leased = client.poll(&options).await.unwrap().remove(0);
    let lease = leased.lease.clone().expect("a leased state has a lease");
    assert_eq!(leased.results[0].data, json!({"amount": 42}));
    assert_eq!(leased.results[0].select, "main");
    let extended = client
        .extend_lease("order/1", lease.token, 60_000)
        .await
        .unwrap();
    assert!(extended.expires_at >= lease.expires_at);

    let stranger = client
        .update_state("order/1", Uuid::new_v4(), &StateBody::new())
        .await
        .unwrap_err();
    assert!(matches!(stranger, Error::LeaseLost(_)), "{stranger:?}");
    let dropped = client
        .update_state("order/1", lease.token, &StateBody::new().selects(vec![]))
        .await
        .unwrap_err();
    assert!(
        matches!(&dropped, Error::Unprocessable { code, .. } if code == "invalid_update"),
        "{dropped:?}"
    );
    let mut selects = leased.selects.clone();
    selects.push(Select::new("next").case(Case::recv("payments/2")));
    let update = StateBody::new()
        .data(json!({"step": "paid"}))
        .selects(selects);
    let updated = client
        .update_state("order/1", lease.token, &update)
        .await
        .unwrap();
    assert_eq!(updated.status, Status::Waiting);
    assert!(updated.results.is_empty());
    let audit_case = &updated
        .selects
        .iter()
        .find(|s| s.id == "audit")
        .unwrap()
        .cases[0];
    assert!(matches!(audit_case, Case::Send { data, .. } if *data == audit));

    let history = client.history("order/1", Some(100), None).await.unwrap();
    assert!(history.events.iter().any(|e| e.event == "leased"));
    assert!(history.events.iter().any(|e| e.event == "updated"));
    assert!(client.pause("order/1").await.unwrap().paused);
    assert!(!client.resume("order/1").await.unwrap().paused);
    let not_failed = client.retry("order/1").await.unwrap_err();
    assert!(matches!(not_failed, Error::Conflict(_)), "{not_failed:?}");
    client.delete_state("order/1").await.unwrap();
    let gone = client.get_state("order/1").await.unwrap_err();
    assert!(matches!(gone, Error::NotFound(_)), "{gone:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_answer_with_go_errors() {
    let c = Cluster::start().await;
    let client = client(&c, c.follower());
    let made = client.make_chan("buf", 1).await.unwrap();
    assert_eq!((made.capacity, made.len), (1, 0));
    client.make_chan("buf", 1).await.unwrap();
    let other = client.make_chan("buf", 2).await.unwrap_err();
    assert!(matches!(other, Error::Exists(_)), "{other:?}");

    assert_eq!(
        client.send("buf", &json!(1), SendMode::Try).await.unwrap(),
        Sent::Sent
    );
    let full = client
        .send("buf", &json!(2), SendMode::Try)
        .await
        .unwrap_err();
    assert!(matches!(full, Error::WouldBlock(_)), "{full:?}");
    let timed_out = client
        .send("buf", &json!(2), SendMode::Wait(1))
        .await
        .unwrap_err();
    assert!(matches!(timed_out, Error::Timeout(_)), "{timed_out:?}");
    assert_eq!(
        client
            .send("buf", &json!(3), SendMode::Detached)
            .await
            .unwrap(),
        Sent::Parked
    );
    let listed = client.list_chans("bu", None, None).await.unwrap();
    assert_eq!(listed.chans[0].name, "buf");
    assert_eq!(listed.chans[0].senders, 1);

    assert_eq!(client.recv("buf", 1).await.unwrap().data, json!(1));
    client.close_chan("buf").await.unwrap();
    let twice = client.close_chan("buf").await.unwrap_err();
    assert!(matches!(twice, Error::Closed(_)), "{twice:?}");
    let on_closed = client
        .send("buf", &json!(4), SendMode::Try)
        .await
        .unwrap_err();
    assert!(matches!(on_closed, Error::Closed(_)), "{on_closed:?}");
    // The parked value moved into the buffer; a receive drains it, then sees closed.
    assert_eq!(client.recv("buf", 0).await.unwrap().data, json!(3));
    let drained = client.recv("buf", 0).await.unwrap();
    assert!(!drained.ok);

    let empty = client.recv("empty", 0).await.unwrap_err();
    assert!(matches!(empty, Error::WouldBlock(_)), "{empty:?}");
    let missing = client.get_chan("nothing here").await.unwrap_err();
    assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");

    let cluster = client.cluster().await.unwrap();
    assert_eq!(cluster.members.len(), 3);
    assert!(cluster.leader.is_some());
    client.health().await.unwrap();
    client.ready().await.unwrap();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_sent_as_a_bearer() {
    let api = ApiConfig {
        token: Some("api-token".into()),
        admin_token: Some("admin-token".into()),
        ..ApiConfig::default()
    };
    let c = Cluster::start_with(api).await;
    let url = c.urls[c.follower()].as_str();
    let none = Client::new(url).unwrap();
    let denied = none.get_state("x").await.unwrap_err();
    assert!(matches!(denied, Error::Unauthorized(_)), "{denied:?}");
    let user = Client::builder(url).token("api-token").build().unwrap();
    let missing = user.get_state("x").await.unwrap_err();
    assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");
    let not_admin = user.change_membership(&[1, 2, 3], false).await.unwrap_err();
    assert!(matches!(not_admin, Error::Forbidden(_)), "{not_admin:?}");
    let admin = Client::builder(url).token("admin-token").build().unwrap();
    let same = admin.change_membership(&[1, 2, 3], false).await.unwrap();
    assert_eq!(same.members.len(), 3);
    c.shutdown().await;
}

/// How many requests `node` answered with this method, route and status.
async fn answered(c: &Cluster, node: usize, method: &str, route: &str, status: u16) -> u64 {
    let text = c
        .http
        .get(format!("{}/metrics", c.urls[node]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let labels = [
        format!("method=\"{method}\""),
        format!("route=\"{route}\""),
        format!("status=\"{status}\""),
    ];
    text.lines()
        .filter(|l| l.starts_with("slct_http_requests_total{"))
        .filter(|l| labels.iter().all(|label| l.contains(label.as_str())))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_of_unknown_outcome_are_retried_writes_with_their_key() {
    let c = Cluster::start_tuned(ApiConfig::default(), |config| {
        config.write_timeout = Duration::from_millis(500)
    })
    .await;
    let leader = c.leader();
    let retry = Retry {
        attempts: 3,
        max_wait: Duration::from_millis(50),
    };
    let client = Client::builder(c.urls[leader].as_str())
        .retry(retry)
        .build()
        .unwrap();
    client.put_state("before", &StateBody::new()).await.unwrap();
    for i in 0..3 {
        if i != leader {
            c.stop_node(i).await;
        }
    }

    let write = client
        .put_state("after", &StateBody::new())
        .await
        .unwrap_err();
    assert_eq!(write.code(), "outcome_unknown", "{write:?}");
    assert!(write.outcome_unknown() && !write.nothing_applied());
    assert!(
        matches!(
            write,
            Error::Unavailable {
                retry_after: Some(_),
                ..
            }
        ),
        "{write:?}"
    );
    // The write carried an Idempotency-Key the client drew, so it was sent again (with
    // that key) on each try: a repeat that got through would have had the first reply.
    assert_eq!(answered(&c, leader, "PUT", "/state/{id}", 503).await, 3);
    // A blocking receive takes no key and is not repeated on an unknown outcome.
    let recv = client.recv("nobody", 1).await.unwrap_err();
    assert!(recv.outcome_unknown(), "{recv:?}");
    assert_eq!(
        answered(&c, leader, "POST", "/chan/{name}/recv", 503).await,
        1
    );

    let read = client.get_state("before").await.unwrap_err();
    assert!(matches!(read, Error::Unavailable { .. }), "{read:?}");
    assert_eq!(answered(&c, leader, "GET", "/state/{id}", 503).await, 3);
    c.stop_node(leader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_several_nodes_skips_a_dead_one_and_rides_out_the_loss_of_the_leader() {
    let c = Cluster::start().await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let leader = c.leader();
    // The dead node first, then the leader: after the leader stops, the client's
    // requests meet a refused connection twice before a node that can answer.
    let mut servers = vec![dead.clone(), c.urls[leader].clone()];
    servers.extend((0..3).filter(|&i| i != leader).map(|i| c.urls[i].clone()));
    let client = Client::builder_for(servers).build().unwrap();
    client
        .put_state(
            "ride",
            &StateBody::new().select(Select::new("g").case(Case::recv("ride/in"))),
        )
        .await
        .unwrap();

    c.stop_node(leader).await;
    // A write with an idempotency key is retried like a read: on a refused connection
    // and on any 503, node after node, until a new leader answers.
    let keyed = client.with_idempotency_key("ride-in-1");
    assert_eq!(
        keyed
            .send("ride/in", &json!(1), SendMode::Detached)
            .await
            .unwrap(),
        Sent::Sent
    );
    // Once a node has answered, the client (and its clones) stay with it.
    assert_eq!(
        client.get_state("ride").await.unwrap().status,
        Status::Pending
    );
    client.put_state("ride-2", &StateBody::new()).await.unwrap();

    let alone = Client::builder(dead.as_str())
        .retry(Retry {
            attempts: 2,
            max_wait: Duration::from_millis(10),
        })
        .build()
        .unwrap();
    let refused = alone.get_state("ride").await.unwrap_err();
    assert!(matches!(refused, Error::Transport(_)), "{refused:?}");
    assert!(refused.nothing_applied() && !refused.outcome_unknown());
    c.shutdown().await;
}
