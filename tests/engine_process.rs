//! Process control (design.md §3.6) on the pure engine: pausing keeps a state's selects
//! working but delivers it to no one, priorities order polls, and each state keeps a
//! bounded history of what happened to it.

mod support;

use serde_json::json;
use slct::engine::history::{self, What};
use slct::engine::types::{Callback, Status};
use slct::engine::{Data, Op, Response};
use support::world::*;
use uuid::Uuid;

fn pause(w: &mut World, id: &str) {
    w.ok(Op::Pause { id: id.into() });
}

fn create_with(w: &mut World, id: &str, priority: u8, callback: Option<Callback>) {
    w.ok(Op::CreateState {
        id: id.into(),
        data: Data::null(),
        selects: vec![sel("g", vec![default()])],
        callback,
        priority,
        max_deliveries: 0,
        retain_ms: 0,
    });
}

fn ids(states: &[slct::engine::types::State]) -> Vec<&str> {
    states.iter().map(|s| s.id.as_str()).collect()
}

#[test]
fn a_paused_state_still_receives_what_is_sent_to_it() {
    let mut w = World::new();
    w.create("p", vec![sel("g", vec![recv("c"), after(1_000)])]);
    pause(&mut w, "p");
    assert_eq!(w.send("c", json!("v")), Response::Sent, "not refused");
    let p = w.state("p");
    assert!(p.paused);
    assert_eq!(
        (p.status(), &p.results[0].data),
        (Status::Pending, &Data::from(json!("v")))
    );
}

#[test]
fn a_paused_state_with_results_is_not_polled_until_resumed() {
    let mut w = World::new();
    w.create("p", vec![sel("g", vec![default()])]);
    pause(&mut w, "p");
    assert!(w.poll(1, 1_000).is_empty());
    let asked = w.ok(Op::LeasePending {
        prefix: "p".into(),
        min_priority: 0,
        tokens: vec![Uuid::new_v4()],
        lease_ms: 1_000,
    });
    assert_eq!(
        asked,
        Response::States(vec![]),
        "not even by its own prefix"
    );
    let resumed = w.apply(Op::Resume { id: "p".into() });
    assert_eq!(
        resumed.effects.pending[0].id, "p",
        "pollers hear of it at once"
    );
    assert_eq!(ids(&w.poll(1, 1_000)), ["p"]);
}

fn callback() -> Callback {
    Callback {
        url: "http://127.0.0.1:9/cb".into(),
        timeout_ms: 100,
    }
}

#[test]
fn a_paused_state_gets_no_callback_and_its_lease_runs_out_normally() {
    let mut w = World::new();
    w.ok(Op::CreateState {
        id: "cb".into(),
        data: Data::null(),
        selects: vec![sel("g", vec![recv("c")])],
        callback: Some(callback()),
        priority: 0,
        max_deliveries: 0,
        retain_ms: 0,
    });
    pause(&mut w, "cb");
    let sent = w.apply(Op::Send {
        chan: "c".into(),
        data: json!(1).into(),
        mode: slct::engine::SendMode::Detached,
    });
    assert!(
        sent.effects.pending.is_empty(),
        "the dispatcher does not hear of it"
    );
    assert_eq!(
        w.state("cb").status(),
        Status::Pending,
        "not leased to the dispatcher"
    );
    let resumed = w.apply(Op::Resume { id: "cb".into() });
    assert!(resumed.effects.pending[0].callback);
    assert_eq!(
        w.state("cb").status(),
        Status::Leased,
        "delivered on resume"
    );
    w.create("q", vec![sel("g", vec![default()])]);
    let leased = w.poll(1, 500).pop().unwrap();
    pause(&mut w, "q");
    assert_eq!(w.state("q").status(), Status::Leased, "the lease is kept");
    w.tick_to(w.now + 500);
    assert_eq!(
        w.state("q").status(),
        Status::Pending,
        "and lapses as usual"
    );
    assert!(w.poll(1, 500).is_empty());
    assert!(leased.lease.is_some());
}

#[test]
fn pause_and_resume_are_idempotent_and_failed_states_can_be_paused() {
    let mut w = World::new();
    w.create("p", vec![sel("g", vec![recv("c")])]);
    let before = w.state("p").version;
    pause(&mut w, "p");
    pause(&mut w, "p");
    assert_eq!(w.state("p").version, before + 1);
    w.ok(Op::Resume { id: "p".into() });
    w.ok(Op::Resume { id: "p".into() });
    assert!(!w.state("p").paused);
    assert_eq!(w.err(Op::Pause { id: "none".into() }).code(), "not_found");

    create_with(&mut w, "f", 0, Some(callback()));
    let token = w.state("f").lease.unwrap().token;
    w.ok(Op::CallbackFailed {
        id: "f".into(),
        token,
        error: "HTTP 500".into(),
        max_attempts: 1,
        backoff_ms: 100,
        duration_ms: 12,
    });
    assert_eq!(w.state("f").status(), Status::Failed);
    pause(&mut w, "f");
    w.ok(Op::RetryFailed { id: "f".into() });
    assert_eq!(
        w.state("f").status(),
        Status::Pending,
        "retried, still paused"
    );
    w.ok(Op::Resume { id: "f".into() });
    assert_eq!(
        w.state("f").status(),
        Status::Leased,
        "delivered after resume"
    );
}

#[test]
fn polls_hand_out_the_highest_priority_first_then_the_oldest() {
    let mut w = World::new();
    create_with(&mut w, "low-old", 0, None);
    w.now += 1;
    create_with(&mut w, "high-new", 9, None);
    w.now += 1;
    create_with(&mut w, "mid", 5, None);
    w.now += 1;
    create_with(&mut w, "high-newer", 9, None);
    assert_eq!(
        ids(&w.poll(4, 1_000)),
        ["high-new", "high-newer", "mid", "low-old"]
    );
    let invalid = w.err(Op::CreateState {
        id: "x".into(),
        data: Data::null(),
        selects: vec![],
        callback: None,
        priority: 10,
        max_deliveries: 0,
        retain_ms: 0,
    });
    assert_eq!(invalid.code(), "invalid");
}

#[test]
fn a_stream_of_urgent_work_starves_the_backlog_unless_a_worker_polls_its_own() {
    let mut w = World::new();
    create_with(&mut w, "job-backlog", 0, None);
    for i in 0..20 {
        w.now += 1;
        create_with(&mut w, &format!("job-urgent-{i}"), 9, None);
        let got = w.poll(1, 60_000);
        assert_ne!(ids(&got), ["job-backlog"], "urgent work goes first");
    }
    w.apply(Op::Tick);
    let own = slct::engine::poll::candidates(&w.store, "job-backlog", 0, 1).unwrap();
    assert_eq!(
        own,
        ["job-backlog"],
        "a worker polling its own prefix gets it"
    );
    let urgent_only = slct::engine::poll::candidates(&w.store, "", 1, 5).unwrap();
    assert!(urgent_only.is_empty(), "min_priority skips the backlog");
}

#[test]
fn history_records_what_happened_with_log_time_and_index() {
    let mut w = World::new();
    w.create("p", vec![sel("g", vec![recv("c")])]);
    w.send("c", json!({"amount": 42}));
    let leased = w.poll(1, 1_000).pop().unwrap();
    w.update(&leased, vec![]).unwrap();
    pause(&mut w, "p");
    let events = history::read(&w.store, "p", None, 100).unwrap();
    let kinds: Vec<&What> = events.iter().rev().map(|e| &e.what).collect();
    assert!(matches!(kinds[0], What::Created));
    assert!(matches!(kinds[1], What::SelectRegistered { select } if select == "g"));
    assert!(
        matches!(kinds[2], What::CaseCompleted { op, size, ok: true, .. } if op == "recv" && *size == 13)
    );
    assert!(matches!(kinds[3], What::Leased { to, .. } if to == "poller"));
    assert!(matches!(kinds[4], What::Updated { .. }));
    assert!(matches!(kinds.last().unwrap(), What::Paused));
    assert!(
        events.windows(2).all(|p| p[0].seq > p[1].seq),
        "newest first"
    );
    assert!(events
        .windows(2)
        .all(|p| p[0].index >= p[1].index && p[0].at >= p[1].at));
}

#[test]
fn history_keeps_the_last_events_and_goes_with_the_state() {
    let mut w = World::new();
    w.history_limit = 3;
    w.create("p", vec![sel("g", vec![recv("c")])]);
    for _ in 0..5 {
        pause(&mut w, "p");
        w.ok(Op::Resume { id: "p".into() });
    }
    let events = history::read(&w.store, "p", None, 100).unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[0].seq, 12,
        "created, registered, then ten pauses and resumes"
    );
    let page = history::read(&w.store, "p", Some(events[1].seq), 100).unwrap();
    assert_eq!(page.len(), 1);
    w.ok(Op::DeleteState { id: "p".into() });
    assert!(history::read(&w.store, "p", None, 100).unwrap().is_empty());
    w.history_limit = 0;
    w.create("q", vec![]);
    assert!(
        history::read(&w.store, "q", None, 100).unwrap().is_empty(),
        "0: off"
    );
}
