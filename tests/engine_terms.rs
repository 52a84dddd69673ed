//! Parked HTTP operations belong to the leader term that parked them (design.md §3.3):
//! the first command of a later term withdraws every one of them — their handlers, on a
//! node that no longer leads, can neither claim nor withdraw through the new leader —
//! and puts the values offered to receives back at the head of their channels, in the
//! order they were sent, before the command does its own work. Run on the pure engine
//! over an in-memory store; `World::term` stands for the term of the Raft entry.

mod support;

use serde_json::json;
use slct::engine::types::Status;
use slct::engine::{Op, OpOutcome, ParkedOp, RecvMode, Response, SendMode};
use support::world::*;
use uuid::Uuid;

/// A parked HTTP receive on channel `c` that waits a minute.
fn park_recv_c(id: Uuid) -> Op {
    park_recv("c", id, T0 + 60_000)
}

/// Three receives parked in term 1 on a buffered channel, the first two offered "v1"
/// and "v2"; returns their ids.
fn offered_in_term_one(w: &mut World) -> [Uuid; 3] {
    w.make("c", 10);
    let ids = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    for id in ids {
        assert_eq!(w.ok(park_recv_c(id)), Response::Parked);
    }
    assert_eq!(
        w.apply(try_send("c", "v1")).effects.ops,
        [(ids[0], OpOutcome::Offered)]
    );
    assert_eq!(
        w.apply(try_send("c", "v2")).effects.ops,
        [(ids[1], OpOutcome::Offered)]
    );
    ids
}

#[test]
fn the_first_command_of_a_new_term_puts_offered_values_back_in_order_before_its_own_work() {
    let mut w = World::new();
    let ids = offered_in_term_one(&mut w);
    w.term = 2;
    let first = w.apply(try_send("c", "v3"));
    assert_eq!(first.reply, Ok(Response::Sent));
    let expired: Vec<_> = ids.iter().map(|id| (*id, OpOutcome::Expired)).collect();
    assert_eq!(
        first.effects.ops, expired,
        "every parked receive, none offered v3"
    );
    let c = w.chan("c").unwrap();
    assert_eq!((c.len, c.receivers), (3, 0));
    for v in ["v1", "v2", "v3"] {
        assert_eq!(w.try_recv("c"), Ok(received(v)));
    }
    for id in ids {
        assert_eq!(w.err(Op::Claim { id }).code(), "not_found");
        assert_eq!(w.err(Op::Withdraw { id }).code(), "not_found");
    }
}

#[test]
fn commands_of_the_same_term_leave_parked_operations_alone() {
    let mut w = World::new();
    let ids = offered_in_term_one(&mut w);
    let tick = w.tick_to(T0 + 1_000);
    assert!(tick.effects.ops.is_empty(), "{:?}", tick.effects);
    assert_eq!(w.ok(Op::Claim { id: ids[1] }), received("v2"));
    assert_eq!(w.ok(Op::Claim { id: ids[0] }), received("v1"));
    assert_eq!(w.chan("c").unwrap().receivers, 1);
    // A term whose first command is refused (log time jumping too far) has not begun.
    w.term = 2;
    w.now = T0 + 10 * 3_600_000;
    assert_eq!(w.err(Op::Tick).code(), "clock_jump");
    assert_eq!(w.chan("c").unwrap().receivers, 1);
}

#[test]
fn values_put_back_at_a_new_term_go_to_blocked_selects_first_then_to_the_buffer_head() {
    let mut w = World::new();
    let ids = offered_in_term_one(&mut w);
    // The third receive is withdrawn (its caller hung up), so the select queues next.
    w.ok(Op::Withdraw { id: ids[2] });
    let r = w.create("r", vec![sel("g", vec![recv("c")])]);
    assert_eq!(
        r.status(),
        Status::Waiting,
        "the values are offered, not in c"
    );
    w.term = 2;
    let tick = w.tick_to(T0 + 1_000);
    let expired: Vec<_> = ids[..2]
        .iter()
        .map(|id| (*id, OpOutcome::Expired))
        .collect();
    assert_eq!(tick.effects.ops, expired);
    let r = w.state("r");
    assert_eq!(r.status(), Status::Pending);
    assert_eq!(
        r.results[0].data,
        json!("v1"),
        "the first value to the first receiver"
    );
    assert_eq!(w.ok(try_send("c", "v3")), Response::Sent);
    assert_eq!(w.try_recv("c"), Ok(received("v2")));
    assert_eq!(w.try_recv("c"), Ok(received("v3")));
}

#[test]
fn a_new_term_withdraws_parked_sends_and_receives_nobody_was_offered_anything() {
    let mut w = World::new();
    let (send, recv) = (Uuid::new_v4(), Uuid::new_v4());
    let park_send = Op::Send {
        chan: "s".into(),
        data: json!("never").into(),
        mode: SendMode::Park(ParkedOp {
            id: send,
            deadline: T0 + 60_000,
        }),
    };
    assert_eq!(w.ok(park_send), Response::Parked);
    assert_eq!(w.ok(park_recv_c(recv)), Response::Parked);
    let mut ids = [send, recv];
    ids.sort();
    w.term = 3;
    let tick = w.tick_to(T0 + 1);
    let mut expired: Vec<_> = tick.effects.ops.iter().map(|(id, _)| *id).collect();
    expired.sort();
    assert_eq!(expired, ids);
    assert!(tick
        .effects
        .ops
        .iter()
        .all(|(_, o)| *o == OpOutcome::Expired));
    assert_eq!(w.chan("s"), None, "the parked send left with its value");
    assert_eq!(w.chan("c"), None);
    assert_eq!(
        w.err(Op::Recv {
            chan: "s".into(),
            mode: RecvMode::Try
        })
        .code(),
        "would_block"
    );
}

/// Two receives parked on the implicit channel `c`, offered "v1" and "v2" in that order;
/// nothing of `c` is left stored.
fn two_receives_offered_v1_and_v2() -> World {
    let mut w = World::new();
    for _ in 0..2 {
        w.ok(park_recv_c(Uuid::new_v4()));
    }
    w.ok(try_send("c", "v1"));
    w.ok(try_send("c", "v2"));
    assert_eq!(w.chan("c"), None);
    w
}

#[test]
fn values_put_back_at_a_new_term_keep_their_order_on_a_channel_that_was_never_made() {
    // Once both values are offered, nothing of `c` is left in its queues or buffer: the
    // implicit channel is not stored, and its positions start over.
    let mut w = two_receives_offered_v1_and_v2();
    w.term = 2;
    w.tick_to(T0 + 1);
    assert_eq!(w.chan("c").unwrap().len, 2);
    assert_eq!(w.try_recv("c"), Ok(received("v1")));
    assert_eq!(w.try_recv("c"), Ok(received("v2")));
}

#[test]
fn values_put_back_at_a_new_term_go_in_front_of_a_buffer_with_too_few_positions_before_its_head() {
    // After "v1" and "v2" are offered the implicit `c` is not stored; made anew, it
    // numbers its buffer from 0 again, and once "x" is received the head "v3" is at
    // position 1: one free position in front of it, two values to put there.
    let mut w = two_receives_offered_v1_and_v2();
    w.make("c", 10);
    w.ok(try_send("c", "x"));
    w.ok(try_send("c", "v3"));
    assert_eq!(w.try_recv("c"), Ok(received("x")));
    w.term = 2;
    w.ok(try_send("c", "v4"));
    for v in ["v1", "v2", "v3", "v4"] {
        assert_eq!(w.try_recv("c"), Ok(received(v)));
    }
}

#[test]
fn values_put_back_at_a_new_term_keep_their_order_across_a_channel_that_started_over() {
    // "v1" is offered to the only receive parked on the implicit `c`, which is then not
    // stored; the next receive parks on `c` anew, at the same queue position, and is
    // offered "v2". Its id sorts first, so an order by queue position and then by id
    // would put "v2" back in front of "v1".
    let mut w = World::new();
    let (first, second) = (Uuid::from_u128(2), Uuid::from_u128(1));
    w.ok(park_recv_c(first));
    w.ok(try_send("c", "v1"));
    assert_eq!(w.chan("c"), None);
    w.ok(park_recv_c(second));
    assert_eq!(
        w.apply(try_send("c", "v2")).effects.ops,
        [(second, OpOutcome::Offered)]
    );
    w.term = 2;
    w.tick_to(T0 + 1);
    assert_eq!(w.try_recv("c"), Ok(received("v1")));
    assert_eq!(w.try_recv("c"), Ok(received("v2")));
}

#[test]
fn withdraw_parked_withdraws_like_a_new_term_within_the_term() {
    // A leader restarted into its old term proposes it first: the same withdrawals as a
    // new term's first command, though the term does not change.
    let mut w = World::new();
    let ids = offered_in_term_one(&mut w);
    let applied = w.apply(Op::WithdrawParked);
    assert_eq!(applied.reply, Ok(Response::Done));
    let mut expired: Vec<_> = applied.effects.ops.iter().map(|(id, _)| *id).collect();
    expired.sort();
    let mut all = ids.to_vec();
    all.sort();
    assert_eq!(expired, all);
    assert_eq!(w.ok(try_send("c", "v3")), Response::Sent);
    for v in ["v1", "v2", "v3"] {
        assert_eq!(w.try_recv("c"), Ok(received(v)));
    }
}
