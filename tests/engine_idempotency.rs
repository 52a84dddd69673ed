//! Idempotent writes on the pure engine (design.md §3): a keyed write is applied once
//! per key within its window; a repeat gets the first reply, another request under the
//! key is refused, and the key is free again once the window has passed in log time.

mod support;

use serde_json::json;
use slct::engine::{Data, MemStore, Op, Response, SendMode, Table};
use support::world::*;

const WINDOW_MS: u64 = 1_000;

fn keyed(key: &str, op: Op) -> Op {
    let digest = format!("{op:?}").into_bytes();
    Op::Keyed {
        key: key.into(),
        digest,
        window_ms: WINDOW_MS,
        op: Box::new(op),
    }
}

fn send(chan: &str, v: u64) -> Op {
    Op::Send {
        chan: chan.into(),
        data: Data::from(json!(v)),
        mode: SendMode::Detached,
    }
}

fn create(id: &str) -> Op {
    Op::CreateState {
        id: id.into(),
        data: Data::from(json!({"n": 1})),
        selects: vec![sel("g", vec![recv("never")])],
        callback: None,
        priority: 0,
        max_deliveries: 0,
        retain_ms: 0,
    }
}

#[test]
fn a_repeat_gets_the_first_reply_and_applies_nothing() {
    let mut w = World::new();
    let Response::State(first) = w.ok(keyed("k1", create("p"))) else {
        panic!()
    };
    let events = slct::engine::history::read(&w.store, "p", None, 100).unwrap();
    w.now += 10;
    let Response::State(again) = w.ok(keyed("k1", create("p"))) else {
        panic!("a repeat gets the first reply, not `exists`")
    };
    assert_eq!(again, first);
    assert_eq!(
        slct::engine::history::read(&w.store, "p", None, 100).unwrap(),
        events
    );

    // A detached send, repeated: one value in the channel.
    assert_eq!(w.ok(keyed("k2", send("c", 7))), Response::Parked);
    assert_eq!(w.ok(keyed("k2", send("c", 7))), Response::Parked);
    assert_eq!(w.chan("c").unwrap().senders, 1);
}

#[test]
fn another_request_under_a_used_key_is_refused_and_changes_nothing() {
    let mut w = World::new();
    w.ok(keyed("k", send("c", 1)));
    let before = w.store.clone();
    let e = w.err(keyed("k", send("c", 2)));
    assert_eq!((e.code(), e.status()), ("idempotency_key_reused", 422));
    assert!(e.to_string().contains("send"), "{e}");
    let e = w.err(keyed("k", create("p")));
    assert_eq!(e.code(), "idempotency_key_reused");
    assert!(!w.exists("p"));
    assert_eq!(chan_entries(&w.store), chan_entries(&before));
}

#[test]
fn errors_are_replayed_too_and_keys_are_checked() {
    let mut w = World::new();
    w.ok(create("p"));
    let e = w.err(keyed("k", create("p")));
    assert_eq!(e.code(), "exists");
    w.ok(Op::DeleteState { id: "p".into() });
    let again = w.err(keyed("k", create("p")));
    assert_eq!(
        again.code(),
        "exists",
        "the first reply, though it would now succeed"
    );
    let long = "k".repeat(129);
    assert_eq!(w.err(keyed(&long, send("c", 1))).code(), "invalid");
    assert_eq!(w.err(keyed("bad\nkey", send("c", 1))).code(), "invalid");
}

#[test]
fn the_key_is_forgotten_when_its_window_has_passed_in_log_time() {
    let mut w = World::new();
    w.ok(keyed("k", send("c", 1)));
    w.tick_to(w.now + WINDOW_MS - 1);
    w.ok(keyed("k", send("c", 1)));
    assert_eq!(w.chan("c").unwrap().senders, 1, "still within the window");
    assert_eq!(w.store.len(Table::Idempotency), 1);
    w.tick_to(w.now + 1);
    assert_eq!(w.store.len(Table::Idempotency), 0, "the tick collected it");
    assert_eq!(w.store.len(Table::IdempotencyExpiry), 0);
    w.ok(keyed("k", send("c", 1)));
    assert_eq!(
        w.chan("c").unwrap().senders,
        2,
        "applied again after the window"
    );
}

fn chan_entries(store: &MemStore) -> usize {
    store.len(Table::Senders) + store.len(Table::Chans)
}
