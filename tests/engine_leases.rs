//! The rules of design.md §3.2 — leases and updates — and the callback retry life cycle,
//! on the pure engine.

mod support;

use serde_json::json;
use slct::engine::types::Status;
use slct::engine::{Error, Op, Response};
use support::world::*;
use uuid::Uuid;

/// A state with one result (from `a`) and one select still blocked (on `b`), leased.
fn leased_with_one_blocked(w: &mut World) -> slct::engine::types::State {
    w.create(
        "p",
        vec![sel("ga", vec![recv("a")]), sel("gb", vec![recv("b")])],
    );
    w.send("a", json!("first"));
    w.poll(1, 30_000).pop().expect("p is pending")
}

#[test]
fn an_update_consumes_the_results_delivered_under_the_lease() {
    let mut w = World::new();
    let p = leased_with_one_blocked(&mut w);
    assert_eq!(p.results.len(), 1);
    let updated = w.update(&p, written(&p)).unwrap();
    let Response::State(s) = updated else {
        panic!()
    };
    assert!(s.results.is_empty());
    assert_eq!(s.status(), Status::Waiting);
    assert_eq!(s.lease, None, "a successful update ends the lease");
}

#[test]
fn a_still_blocked_select_cannot_be_dropped() {
    let mut w = World::new();
    let p = leased_with_one_blocked(&mut w);
    let err = w.update(&p, vec![]).unwrap_err();
    assert_eq!((err.code(), err.status()), ("invalid_update", 422));
    assert_eq!(w.state("p").results.len(), 1, "nothing changes");
}

#[test]
fn a_still_blocked_select_cannot_change_its_cases() {
    let mut w = World::new();
    let p = leased_with_one_blocked(&mut w);
    let err = w
        .update(&p, vec![sel("gb", vec![recv("other")])])
        .unwrap_err();
    assert_eq!(err.status(), 422);
}

#[test]
fn a_relative_timer_may_be_sent_back_as_first_written() {
    let mut w = World::new();
    w.create(
        "p",
        vec![sel("t", vec![after(60_000)]), sel("a", vec![recv("a")])],
    );
    w.send("a", json!(1));
    let p = w.poll(1, 30_000).pop().unwrap();
    w.now += 5;
    assert!(w.update(&p, vec![sel("t", vec![after(60_000)])]).is_ok());
}

#[test]
fn new_selects_in_an_update_are_registered_and_may_complete_at_once() {
    let mut w = World::new();
    let p = leased_with_one_blocked(&mut w);
    w.make("ready", 1);
    w.send("ready", json!("now"));
    let mut selects = written(&p);
    selects.push(sel("ga", vec![recv("ready")]));
    let Response::State(s) = w.update(&p, selects).unwrap() else {
        panic!()
    };
    assert_eq!(s.results.len(), 1, "the reused id ga completed at once");
    assert_eq!(s.results[0].data, json!("now"));
    assert_eq!(s.status(), Status::Pending);
}

#[test]
fn a_result_that_arrives_during_the_lease_is_kept_and_the_state_is_pending_again() {
    let mut w = World::new();
    let p = leased_with_one_blocked(&mut w);
    w.send("b", json!("during"));
    let applied = w.apply(Op::UpdateState {
        id: "p".into(),
        token: p.lease.as_ref().unwrap().token,
        data: Some(json!({"step": 2}).into()),
        selects: Some(written(&p)),
        callback: None,
        priority: None,
        max_deliveries: None,
        retain_ms: None,
    });
    let Ok(Response::State(s)) = applied.reply else {
        panic!("{:?}", applied.reply)
    };
    assert_eq!(s.results.len(), 1);
    assert_eq!(s.results[0].data, json!("during"));
    assert!(
        s.selects.is_empty(),
        "gb completed during the lease and is not registered again"
    );
    assert_eq!(s.status(), Status::Pending);
    assert_eq!(applied.effects.pending.len(), 1, "pollers hear of it");
}

#[test]
fn an_unknown_or_expired_token_is_lease_lost_and_changes_nothing() {
    let mut w = World::new();
    let p = leased_with_one_blocked(&mut w);
    let unknown = w.err(Op::UpdateState {
        id: "p".into(),
        token: Uuid::new_v4(),
        data: None,
        selects: Some(written(&p)),
        callback: None,
        priority: None,
        max_deliveries: None,
        retain_ms: None,
    });
    assert_eq!((unknown.code(), unknown.status()), ("lease_lost", 409));
    let before = w.state("p");
    w.tick_to(T0 + 30_000);
    assert_eq!(w.update(&p, written(&p)).unwrap_err(), Error::LeaseLost);
    let after = w.state("p");
    assert_eq!(after.results, before.results);
    assert_eq!(
        after.status(),
        Status::Pending,
        "an expired lease makes the state pending again"
    );
}

#[test]
fn an_update_with_no_selects_and_no_results_left_is_done() {
    let mut w = World::new();
    w.create("p", vec![sel("g", vec![default()])]);
    let p = w.poll(1, 1_000).pop().unwrap();
    let Response::State(s) = w.update(&p, vec![]).unwrap() else {
        panic!()
    };
    assert_eq!(s.status(), Status::Done);
}

#[test]
fn a_leased_state_is_not_delivered_twice() {
    let mut w = World::new();
    w.create("p", vec![sel("g", vec![default()])]);
    assert_eq!(w.poll(5, 1_000).len(), 1);
    assert!(w.poll(5, 1_000).is_empty());
}

#[test]
fn polls_lease_the_oldest_pending_state_first() {
    let mut w = World::new();
    for (i, id) in ["c", "a", "b"].iter().enumerate() {
        w.now = T0 + i as u64;
        w.create(id, vec![sel("g", vec![default()])]);
    }
    let order: Vec<_> = w.poll(3, 1_000).into_iter().map(|s| s.id).collect();
    assert_eq!(order, ["c", "a", "b"]);
}

#[test]
fn polls_filter_by_prefix_and_skip_states_with_callbacks() {
    let mut w = World::new();
    w.create("order-1", vec![sel("g", vec![default()])]);
    w.create("job-1", vec![sel("g", vec![default()])]);
    w.ok(Op::CreateState {
        id: "order-2".into(),
        data: json!(null).into(),
        selects: vec![sel("g", vec![default()])],
        callback: Some(slct::engine::types::Callback {
            url: "http://127.0.0.1:9/cb".into(),
            timeout_ms: 100,
        }),
        priority: 0,
        max_deliveries: 0,
        retain_ms: 0,
    });
    assert_eq!(
        slct::engine::poll::candidates(&w.store, "order-", 0, 5).unwrap(),
        ["order-1"]
    );
    let Response::States(got) = w.ok(Op::LeasePending {
        prefix: "order-".into(),
        min_priority: 0,
        tokens: vec![Uuid::new_v4(); 5],
        lease_ms: 1_000,
    }) else {
        panic!()
    };
    assert_eq!(
        got.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["order-1"],
        "only the prefix's polled states; a state with a callback is never polled"
    );
}

#[test]
fn an_expired_lease_is_redelivered_with_a_new_token_at_its_old_place() {
    let mut w = World::new();
    w.create("old", vec![sel("g", vec![default()])]);
    w.now += 1;
    w.create("new", vec![sel("g", vec![default()])]);
    let first = w.poll(1, 500).pop().unwrap();
    assert_eq!(first.id, "old");
    let expired = w.tick_to(w.now + 500);
    assert_eq!(expired.effects.pending[0].id, "old");
    let again = w.poll(1, 500).pop().unwrap();
    assert_eq!(again.id, "old");
    assert_ne!(again.lease.unwrap().token, first.lease.unwrap().token);
}

#[test]
fn a_heartbeat_extends_the_lease_and_a_release_gives_the_state_back() {
    let mut w = World::new();
    w.create("p", vec![sel("g", vec![default()])]);
    let p = w.poll(1, 1_000).pop().unwrap();
    let token = p.lease.unwrap().token;
    w.now += 900;
    let Response::Lease(lease) = w.ok(Op::ExtendLease {
        id: "p".into(),
        token,
        extend_ms: 5_000,
    }) else {
        panic!()
    };
    assert_eq!(lease.expires_at, w.now + 5_000);
    w.tick_to(w.now + 1_000);
    assert_eq!(w.state("p").status(), Status::Leased);
    w.ok(Op::ReleaseLease {
        id: "p".into(),
        token,
    });
    assert_eq!(w.state("p").status(), Status::Pending);
    assert_eq!(
        w.err(Op::ReleaseLease {
            id: "p".into(),
            token
        }),
        Error::LeaseLost
    );
}

#[test]
fn a_callback_is_retried_after_its_backoff_then_fails_and_can_be_rearmed() {
    let mut w = World::new();
    let callback = slct::engine::types::Callback {
        url: "http://127.0.0.1:9/cb".into(),
        timeout_ms: 100,
    };
    let created = w.apply(Op::CreateState {
        id: "p".into(),
        data: json!(null).into(),
        selects: vec![sel("g", vec![default()])],
        callback: Some(callback),
        priority: 0,
        max_deliveries: 0,
        retain_ms: 0,
    });
    assert!(
        created.effects.pending[0].callback,
        "the dispatcher hears of it"
    );
    let mut tokens = std::collections::BTreeSet::new();
    for attempt in 1..=3u32 {
        let s = w.state("p");
        assert_eq!(
            s.status(),
            Status::Leased,
            "leased to the dispatcher as it turned due"
        );
        let token = s.lease.as_ref().unwrap().token;
        assert!(tokens.insert(token), "each attempt has a token of its own");
        assert_eq!(s.attempts, attempt - 1);
        w.ok(Op::CallbackFailed {
            id: "p".into(),
            token,
            error: "HTTP 500".into(),
            max_attempts: 3,
            backoff_ms: 200,
            duration_ms: 12,
        });
        if attempt < 3 {
            assert_eq!(
                w.state("p").status(),
                Status::Leased,
                "held until the retry time"
            );
            assert_eq!(w.tick_to(w.now + 200).effects.pending.len(), 1);
        }
    }
    let failed = w.state("p");
    assert_eq!(
        (failed.status(), failed.last_error.as_deref()),
        (Status::Failed, Some("HTTP 500"))
    );
    let rearmed = w.apply(Op::RetryFailed { id: "p".into() });
    assert!(
        rearmed.effects.pending[0].callback,
        "delivered again at once"
    );
    let Ok(Response::State(s)) = rearmed.reply else {
        panic!()
    };
    assert_eq!((s.status(), s.attempts), (Status::Leased, 0));
    assert_eq!(w.err(Op::RetryFailed { id: "p".into() }).code(), "conflict");
}

#[test]
fn creating_an_existing_state_is_refused() {
    let mut w = World::new();
    w.create("p", vec![]);
    let err = w.err(Op::CreateState {
        id: "p".into(),
        data: json!(null).into(),
        selects: vec![],
        callback: None,
        priority: 0,
        max_deliveries: 0,
        retain_ms: 0,
    });
    assert_eq!((err.code(), err.status()), ("exists", 409));
}

#[test]
fn a_state_delivered_max_deliveries_times_without_an_update_fails_until_retried() {
    let mut w = World::new();
    w.ok(Op::CreateState {
        id: "poison".into(),
        data: json!(null).into(),
        selects: vec![sel("g", vec![default()])],
        callback: None,
        priority: 0,
        max_deliveries: 2,
        retain_ms: 0,
    });
    for delivery in 1..=2 {
        let got = w.poll(1, 100);
        assert_eq!(got.len(), 1, "delivery {delivery}");
        assert_eq!(got[0].deliveries, delivery);
        w.tick_to(w.now + 100);
    }
    let dead = w.state("poison");
    assert_eq!(dead.status(), Status::Failed);
    assert_eq!(dead.last_error.as_deref(), Some("max deliveries reached"));
    assert!(
        w.poll(1, 100).is_empty(),
        "a failed state is delivered to no one"
    );

    let Response::State(retried) = w.ok(Op::RetryFailed {
        id: "poison".into(),
    }) else {
        panic!()
    };
    assert_eq!((retried.status(), retried.deliveries), (Status::Pending, 0));
    // An update starts the count over.
    let leased = w.poll(1, 100).remove(0);
    w.update(&leased, vec![sel("h", vec![recv("never")])])
        .unwrap();
    assert_eq!(w.state("poison").deliveries, 0);
}

#[test]
fn without_a_limit_a_state_is_redelivered_for_ever() {
    let mut w = World::new();
    w.create("p", vec![sel("g", vec![default()])]);
    for delivery in 1..=20 {
        assert_eq!(w.poll(1, 10)[0].deliveries, delivery);
        w.tick_to(w.now + 10);
    }
}
