//! The apply path trusts no command: a replica applies what the log says, so a buggy or
//! hostile entry must not be able to stop time, make a lease that never ends, or reach
//! into the engine's own bookkeeping. Each scenario runs on the pure engine.

mod support;

use serde_json::json;
use slct::engine::types::{Case, Select};
use slct::engine::validate::{MAX_LEASE_MS, MAX_PARKED_PER_CHAN};
use slct::engine::{Error, Op, ParkedOp, RecvMode, MAX_CLOCK_JUMP_MS};
use support::world::*;
use uuid::Uuid;

#[test]
fn a_command_whose_time_jumps_far_ahead_changes_nothing() {
    let mut w = World::new();
    w.create("p", vec![sel("g", vec![recv("c"), after(60_000)])]);
    w.now = T0 + MAX_CLOCK_JUMP_MS + 1;
    let refused = w.apply(Op::Tick);
    assert!(
        matches!(refused.reply, Err(Error::ClockJump(_))),
        "{:?}",
        refused.reply
    );
    assert!(refused.effects.is_empty());
    assert!(w.state("p").results.is_empty(), "the timer did not fire");
    w.now = u64::MAX;
    assert!(matches!(w.apply(Op::Tick).reply, Err(Error::ClockJump(_))));
    w.now = T0 + MAX_CLOCK_JUMP_MS;
    assert!(
        w.apply(Op::Tick).reply.is_ok(),
        "a step within the bound is time passing"
    );
    assert_eq!(w.state("p").results[0].op, "timer");
}

#[test]
fn queue_positions_in_a_command_are_ignored() {
    let mut w = World::new();
    w.create("victim", vec![sel("g", vec![recv("c")])]);
    let mut forged = Select::new("g", vec![recv("c")]);
    forged.queued = vec![(0, 0)];
    w.create("forger", vec![forged]);
    w.apply(Op::DeleteState {
        id: "forger".into(),
    });
    assert_eq!(
        w.chan("c").map(|c| c.receivers),
        Some(1),
        "deleting the forger did not take the victim out of the queue"
    );
    w.send("c", json!("v"));
    assert_eq!(w.state("victim").results[0].data, json!("v"));
}

#[test]
fn leases_and_parked_operations_cannot_be_made_endless() {
    let mut w = World::new();
    w.create("p", vec![sel("g", vec![default()])]);
    let too_long = w.err(Op::LeasePending {
        prefix: String::new(),
        min_priority: 0,
        tokens: vec![Uuid::new_v4()],
        lease_ms: MAX_LEASE_MS + 1,
    });
    assert_eq!(too_long.code(), "invalid");
    let leased = w.poll(1, 1_000).pop().unwrap();
    let token = leased.lease.unwrap().token;
    let extend = |extend_ms| Op::ExtendLease {
        id: "p".into(),
        token,
        extend_ms,
    };
    assert_eq!(w.err(extend(u64::MAX)).code(), "invalid");
    assert!(w.apply(extend(MAX_LEASE_MS)).reply.is_ok());
    let forever = ParkedOp {
        id: Uuid::new_v4(),
        deadline: u64::MAX,
    };
    let parked = w.err(Op::Recv {
        chan: "c".into(),
        mode: RecvMode::Park(forever),
    });
    assert_eq!(parked.code(), "invalid");
}

#[test]
fn a_channel_holds_a_bounded_number_of_parked_http_operations() {
    let mut w = World::new();
    let park = |w: &mut World| {
        w.apply(Op::Recv {
            chan: "c".into(),
            mode: RecvMode::Park(ParkedOp {
                id: Uuid::new_v4(),
                deadline: w.now + 60_000,
            }),
        })
        .reply
    };
    for _ in 0..MAX_PARKED_PER_CHAN {
        assert!(park(&mut w).is_ok());
    }
    let refused = park(&mut w).unwrap_err();
    assert_eq!(
        (refused.code(), refused.status()),
        ("too_many_waiters", 429)
    );
    w.create("s", vec![sel("g", vec![Case::Recv { chan: "c".into() }])]);
    assert_eq!(
        w.chan("c").unwrap().receivers,
        MAX_PARKED_PER_CHAN + 1,
        "selects of states are not capped"
    );
    w.send("c", json!(1));
    assert!(
        park(&mut w).is_ok(),
        "a completed operation frees its place"
    );
}
