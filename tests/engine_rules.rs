//! One scenario per rule of design.md §2 (Go's select semantics), each named for the
//! behaviour it shows, run on the pure engine over an in-memory store.

mod support;

use serde_json::json;
use slct::engine::types::Status;
use slct::engine::{Data, Error, Op, OpOutcome, Response, Table};
use support::world::*;

// --- Rule 1: ready cases -----------------------------------------------------------

#[test]
fn recv_is_ready_when_the_buffer_holds_a_value() {
    let mut w = World::new();
    w.make("jobs", 1);
    assert_eq!(w.send("jobs", json!("a")), Response::Sent);
    let s = w.create("p", vec![sel("g1", vec![recv("jobs")])]);
    assert_eq!(s.status(), Status::Pending);
    assert_eq!(s.results[0].data, json!("a"));
    assert!(s.results[0].ok);
}

#[test]
fn unbuffered_rendezvous_completes_both_selects_in_one_command() {
    let mut w = World::new();
    let r = w.create("receiver", vec![sel("g", vec![recv("c")])]);
    assert_eq!(r.status(), Status::Waiting);
    let s = w.create("sender", vec![sel("g", vec![send("c", json!(42))])]);
    assert_eq!(s.status(), Status::Pending);
    assert_eq!((s.results[0].op.as_str(), s.results[0].ok), ("send", true));
    let r = w.state("receiver");
    assert_eq!(r.results[0].data, json!(42));
    assert_eq!(r.results[0].at, s.results[0].at);
    assert_eq!(
        w.chan("c"),
        None,
        "an implicit, empty channel stores nothing"
    );
}

#[test]
fn recv_from_a_closed_channel_is_ready_with_ok_false() {
    let mut w = World::new();
    w.close("c").unwrap();
    let s = w.create("p", vec![sel("g", vec![recv("c")])]);
    let result = &s.results[0];
    assert_eq!((result.ok, &result.data), (false, &Data::from(json!(null))));
}

#[test]
fn send_is_ready_when_a_receiver_is_blocked() {
    let mut w = World::new();
    w.create("r", vec![sel("g", vec![recv("c")])]);
    assert_eq!(w.send("c", json!("v")), Response::Sent);
    assert_eq!(w.state("r").results[0].data, json!("v"));
}

#[test]
fn send_is_ready_while_the_buffer_has_room_and_blocks_when_full() {
    let mut w = World::new();
    w.make("c", 2);
    let s = w.create(
        "p",
        vec![
            sel("a", vec![send("c", json!(1))]),
            sel("b", vec![send("c", json!(2))]),
        ],
    );
    assert_eq!(s.results.len(), 2);
    let full = w.create("q", vec![sel("g", vec![send("c", json!(3))])]);
    assert_eq!(full.status(), Status::Waiting);
    assert_eq!(w.chan("c").unwrap().len, 2);
    assert_eq!(w.chan("c").unwrap().senders, 1);
}

#[test]
fn send_on_a_closed_channel_completes_with_gos_error() {
    let mut w = World::new();
    w.close("c").unwrap();
    let s = w.create("p", vec![sel("g", vec![send("c", json!(1))])]);
    let result = &s.results[0];
    assert!(!result.ok);
    assert_eq!(result.error.as_deref(), Some("send on closed channel"));
}

#[test]
fn a_timer_whose_deadline_has_passed_is_ready_at_registration() {
    let mut w = World::new();
    let s = w.create("p", vec![sel("g", vec![recv("never"), timer_at(T0 - 1)])]);
    assert_eq!((s.results[0].op.as_str(), s.results[0].case), ("timer", 1));
    assert_eq!(w.chan("never"), None, "a completed select is in no queue");
}

// --- Rule 2: uniform, deterministic choice -----------------------------------------

#[test]
fn the_choice_among_ready_cases_is_uniform() {
    let mut counts = [0u32; 3];
    for seed in 0..3000 {
        let mut w = World::new();
        w.seed = seed * 7919;
        for ch in ["a", "b", "c"] {
            w.make(ch, 1);
            w.send(ch, json!(ch));
        }
        let s = w.create("p", vec![sel("g", vec![recv("a"), recv("b"), recv("c")])]);
        counts[s.results[0].case] += 1;
    }
    assert!(
        counts.iter().all(|&n| (880..1120).contains(&n)),
        "{counts:?}"
    );
}

#[test]
fn the_same_seed_makes_the_same_choice() {
    let run = |seed| {
        let mut w = World::new();
        w.seed = seed;
        for ch in ["a", "b", "c", "d"] {
            w.make(ch, 1);
            w.send(ch, json!(ch));
        }
        w.create(
            "p",
            vec![sel("g", vec![recv("a"), recv("b"), recv("c"), recv("d")])],
        )
        .results[0]
            .case
    };
    for seed in 0..50 {
        assert_eq!(run(seed), run(seed));
    }
}

// --- Rule 3: completion, FIFO ------------------------------------------------------

#[test]
fn a_receive_from_a_full_buffer_refills_it_from_the_first_blocked_sender() {
    let mut w = World::new();
    w.make("c", 1);
    w.send("c", json!("buffered"));
    w.create("s1", vec![sel("g", vec![send("c", json!("first"))])]);
    w.create("s2", vec![sel("g", vec![send("c", json!("second"))])]);
    let r = w.create("r", vec![sel("g", vec![recv("c")])]);
    assert_eq!(r.results[0].data, json!("buffered"));
    assert_eq!(
        w.state("s1").status(),
        Status::Pending,
        "first sender moved into the buffer"
    );
    assert_eq!(w.state("s2").status(), Status::Waiting);
    assert_eq!(
        w.try_recv("c").unwrap(),
        Response::Received {
            data: json!("first").into(),
            ok: true
        }
    );
}

#[test]
fn blocked_senders_are_served_first_in_first_out() {
    let mut w = World::new();
    for i in 0..5 {
        w.create(&format!("s{i}"), vec![sel("g", vec![send("c", json!(i))])]);
    }
    for i in 0..5 {
        assert_eq!(
            w.try_recv("c").unwrap(),
            Response::Received {
                data: json!(i).into(),
                ok: true
            }
        );
        assert_eq!(w.state(&format!("s{i}")).status(), Status::Pending);
    }
}

#[test]
fn blocked_receivers_are_served_first_in_first_out() {
    let mut w = World::new();
    for i in 0..5 {
        w.create(&format!("r{i}"), vec![sel("g", vec![recv("c")])]);
    }
    for i in 0..5 {
        w.send("c", json!(i));
        assert_eq!(w.state(&format!("r{i}")).results[0].data, json!(i));
    }
}

/// The head of a queue may wait in its channel's record (design.md §4, keys per
/// command); the order must not change when the head leaves from the middle of things.
#[test]
fn receivers_stay_in_order_when_the_first_leaves_through_another_case() {
    let mut w = World::new();
    w.create("r0", vec![sel("g", vec![recv("c"), recv("other")])]);
    assert_eq!(
        w.store.len(Table::Receivers),
        0,
        "a lone waiter is kept in each channel's record"
    );
    w.create("r1", vec![sel("g", vec![recv("c")])]);
    w.create("r2", vec![sel("g", vec![recv("c")])]);
    w.send("other", json!("elsewhere"));
    assert_eq!(w.state("r0").results[0].data, json!("elsewhere"));
    assert_eq!(w.chan("c").unwrap().receivers, 2);
    w.create("r3", vec![sel("g", vec![recv("c")])]);
    for i in 1..=3 {
        w.send("c", json!(i));
        assert_eq!(w.state(&format!("r{i}")).results[0].data, json!(i));
    }
    assert_eq!(w.chan("c"), None);
    assert_eq!(w.store.len(Table::Receivers), 0);
}

#[test]
fn a_detached_send_parks_until_a_receiver_takes_it() {
    let mut w = World::new();
    assert_eq!(w.send("c", json!("later")), Response::Parked);
    assert_eq!(w.chan("c").unwrap().senders, 1);
    assert_eq!(
        w.store.len(Table::Senders),
        1,
        "a value waits in the queue's table, never in the channel's record"
    );
    let r = w.create("r", vec![sel("g", vec![recv("c")])]);
    assert_eq!(r.results[0].data, json!("later"));
    assert_eq!(w.chan("c"), None);
}

// --- Rule 4: default ---------------------------------------------------------------

#[test]
fn default_is_taken_only_when_no_case_is_ready() {
    let mut w = World::new();
    let s = w.create("p", vec![sel("g", vec![recv("c"), default()])]);
    assert_eq!(
        (s.results[0].op.as_str(), s.results[0].case),
        ("default", 1)
    );
    assert_eq!(
        w.chan("c"),
        None,
        "a select that took default is queued nowhere"
    );
    w.make("b", 1);
    w.send("b", json!(1));
    let s = w.create("q", vec![sel("g", vec![default(), recv("b")])]);
    assert_eq!(s.results[0].op, "recv");
}

// --- Rule 5: blocking on every channel, leaving every queue ------------------------

#[test]
fn a_blocked_select_waits_on_every_channel_and_leaves_them_all_when_one_completes() {
    let mut w = World::new();
    w.create(
        "p",
        vec![sel(
            "g",
            vec![recv("a"), recv("b"), send("c", json!(1)), after(60_000)],
        )],
    );
    assert_eq!(w.chan("a").unwrap().receivers, 1);
    assert_eq!(w.chan("b").unwrap().receivers, 1);
    assert_eq!(w.chan("c").unwrap().senders, 1);
    w.send("b", json!("hit"));
    let p = w.state("p");
    assert_eq!(
        (p.results[0].case, &p.results[0].data),
        (1, &Data::from(json!("hit")))
    );
    assert!(p.selects.is_empty());
    assert_eq!((w.chan("a"), w.chan("b"), w.chan("c")), (None, None, None));
    let fired = w.tick_to(T0 + 60_000);
    assert!(
        fired.effects.pending.is_empty(),
        "the withdrawn timer does not fire"
    );
}

#[test]
fn a_timer_withdraws_its_select_from_every_channel() {
    let mut w = World::new();
    w.create("p", vec![sel("g", vec![recv("a"), after(100)])]);
    w.tick_to(T0 + 100);
    assert_eq!(w.state("p").results[0].op, "timer");
    assert_eq!(w.chan("a"), None);
    assert_eq!(
        w.send("a", json!(1)),
        Response::Parked,
        "nobody waits on a any more"
    );
}

// --- Rule 6: close -----------------------------------------------------------------

#[test]
fn close_completes_every_blocked_receiver_with_ok_false() {
    let mut w = World::new();
    w.create("r1", vec![sel("g", vec![recv("c")])]);
    w.create("r2", vec![sel("g", vec![recv("c")])]);
    w.close("c").unwrap();
    for id in ["r1", "r2"] {
        let r = &w.state(id).results[0];
        assert_eq!((r.ok, &r.data), (false, &Data::from(json!(null))));
    }
}

#[test]
fn close_fails_every_blocked_sender() {
    let mut w = World::new();
    w.create("s", vec![sel("g", vec![send("c", json!(1))])]);
    w.send("c", json!(2));
    w.close("c").unwrap();
    let r = &w.state("s").results[0];
    assert_eq!(
        (r.ok, r.error.as_deref()),
        (false, Some("send on closed channel"))
    );
    assert_eq!(w.chan("c").unwrap().senders, 0);
}

#[test]
fn closing_a_closed_channel_is_a_conflict() {
    let mut w = World::new();
    w.close("c").unwrap();
    assert_eq!(w.close("c"), Err(Error::Closed("c".into())));
    assert_eq!(Error::Closed("c".into()).status(), 409);
}

#[test]
fn receivers_drain_a_closed_channels_buffer_before_seeing_ok_false() {
    let mut w = World::new();
    w.make("c", 3);
    w.send("c", json!(1));
    w.send("c", json!(2));
    w.close("c").unwrap();
    let got: Vec<_> = (0..3).map(|_| w.try_recv("c").unwrap()).collect();
    assert_eq!(
        got,
        vec![
            Response::Received {
                data: json!(1).into(),
                ok: true
            },
            Response::Received {
                data: json!(2).into(),
                ok: true
            },
            Response::Received {
                data: json!(null).into(),
                ok: false
            },
        ]
    );
}

// --- Rule 7: no self-match; two selects of one state may match ---------------------

#[test]
fn a_select_never_matches_itself() {
    let mut w = World::new();
    let s = w.create("p", vec![sel("g", vec![send("c", json!(1)), recv("c")])]);
    assert_eq!(s.status(), Status::Waiting);
    let c = w.chan("c").unwrap();
    assert_eq!((c.senders, c.receivers), (1, 1));
}

#[test]
fn two_selects_of_one_state_may_match_each_other() {
    let mut w = World::new();
    let s = w.create(
        "p",
        vec![
            sel("rx", vec![recv("c")]),
            sel("tx", vec![send("c", json!("hi"))]),
        ],
    );
    assert!(s.selects.is_empty());
    let rx = s.results.iter().find(|r| r.select == "rx").unwrap();
    assert_eq!(rx.data, json!("hi"));
}

// --- Time --------------------------------------------------------------------------

#[test]
fn timers_fire_at_their_deadline_and_never_before() {
    let mut w = World::new();
    w.create("p", vec![sel("g", vec![after(1_000)])]);
    w.tick_to(T0 + 999);
    assert_eq!(w.state("p").status(), Status::Waiting);
    let fired = w.tick_to(T0 + 1_000);
    assert_eq!(fired.effects.pending.len(), 1);
    assert_eq!(w.state("p").results[0].at, T0 + 1_000);
}

#[test]
fn a_timer_due_before_a_command_fires_before_the_command_looks() {
    let mut w = World::new();
    w.create("p", vec![sel("g", vec![recv("c"), after(10)])]);
    w.now = T0 + 50;
    assert_eq!(
        w.send("c", json!(1)),
        Response::Parked,
        "the select already left by its timer"
    );
    assert_eq!(w.state("p").results[0].op, "timer");
}

#[test]
fn log_time_never_goes_back() {
    let mut w = World::new();
    w.tick_to(T0 + 5_000);
    w.now = T0;
    let s = w.create("p", vec![sel("g", vec![default()])]);
    assert_eq!(s.created_at, T0 + 5_000);
}

#[test]
fn completion_makes_a_state_pending_but_a_leased_state_stays_leased() {
    let mut w = World::new();
    w.create(
        "p",
        vec![sel("a", vec![recv("a")]), sel("b", vec![recv("b")])],
    );
    w.send("a", json!(1));
    assert_eq!(w.state("p").status(), Status::Pending);
    let leased = w.poll(1, 30_000);
    assert_eq!(leased[0].status(), Status::Leased);
    let effects = w
        .apply(Op::Send {
            chan: "b".into(),
            data: json!(2).into(),
            mode: slct::engine::SendMode::Detached,
        })
        .effects;
    assert!(effects.pending.is_empty(), "no new delivery while leased");
    assert_eq!(w.state("p").status(), Status::Leased);
    assert_eq!(w.state("p").results.len(), 2);
}

#[test]
fn deleting_a_state_withdraws_its_selects_from_every_queue() {
    let mut w = World::new();
    w.create(
        "p",
        vec![sel("g", vec![recv("a"), send("b", json!(1)), after(10)])],
    );
    w.ok(Op::DeleteState { id: "p".into() });
    assert!(!w.exists("p"));
    assert_eq!((w.chan("a"), w.chan("b")), (None, None));
    assert!(w.tick_to(T0 + 10).effects.is_empty());
    assert!(w.store.is_empty_but_meta());
}

// --- Channels as HTTP callers use them --------------------------------------------

#[test]
fn make_is_idempotent_for_the_same_capacity_only() {
    let mut w = World::new();
    assert!(matches!(
        w.make("c", 3),
        Response::Chan { created: true, .. }
    ));
    assert!(matches!(
        w.make("c", 3),
        Response::Chan { created: false, .. }
    ));
    let err = w.err(Op::MakeChan {
        name: "c".into(),
        capacity: 4,
    });
    assert_eq!(err.code(), "exists");
    assert_eq!(
        w.chan("c").unwrap().capacity,
        3,
        "an explicit channel is kept even empty"
    );
}

#[test]
fn try_operations_would_block_instead_of_parking() {
    let mut w = World::new();
    assert_eq!(w.try_recv("c"), Err(Error::WouldBlock));
    let err = w.err(Op::Send {
        chan: "c".into(),
        data: json!(1).into(),
        mode: slct::engine::SendMode::Try,
    });
    assert_eq!(err, Error::WouldBlock);
    assert_eq!(w.chan("c"), None);
}

#[test]
fn a_send_on_a_closed_channel_from_http_is_refused() {
    let mut w = World::new();
    w.close("c").unwrap();
    let err = w.err(Op::Send {
        chan: "c".into(),
        data: json!(1).into(),
        mode: slct::engine::SendMode::Detached,
    });
    assert_eq!((err.code(), err.status()), ("closed", 409));
}

#[test]
fn a_parked_receive_is_offered_a_value_claims_it_or_expires_at_its_deadline() {
    let mut w = World::new();
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    assert_eq!(w.ok(park_recv("c", a, T0 + 1_000)), Response::Parked);
    assert_eq!(w.ok(park_recv("c", b, T0 + 1_000)), Response::Parked);
    let sent = w.apply(try_send("c", "x"));
    assert_eq!(sent.reply, Ok(Response::Sent));
    assert_eq!(sent.effects.ops, vec![(a, OpOutcome::Offered)]);
    assert_eq!(
        w.chan("c").unwrap().receivers,
        1,
        "the offered receive left the queue"
    );
    assert_eq!(
        w.ok(Op::Claim { id: a }),
        Response::Received {
            data: json!("x").into(),
            ok: true
        }
    );
    assert_eq!(w.err(Op::Claim { id: a }).code(), "not_found");
    assert_eq!(
        w.err(Op::Claim { id: b }).code(),
        "not_found",
        "b has no value"
    );
    let expired = w.tick_to(T0 + 1_000);
    assert_eq!(expired.effects.ops, vec![(b, OpOutcome::Expired)]);
    assert_eq!(w.chan("c"), None);
    assert_eq!(w.err(Op::Withdraw { id: b }).code(), "not_found");
}

#[test]
fn withdrawing_a_receive_puts_its_offered_value_back_at_the_head_of_the_channel() {
    let mut w = World::new();
    w.make("c", 2);
    let a = uuid::Uuid::new_v4();
    w.ok(park_recv("c", a, T0 + 60_000));
    assert_eq!(w.ok(try_send("c", "first")), Response::Sent);
    // The receiver hung up; later sends fill the buffer before its withdrawal lands.
    assert_eq!(w.ok(try_send("c", "second")), Response::Sent);
    assert_eq!(w.ok(try_send("c", "third")), Response::Sent);
    let withdrawn = w.apply(Op::Withdraw { id: a });
    assert_eq!(withdrawn.reply, Ok(Response::Done));
    assert_eq!(withdrawn.effects.ops, vec![(a, OpOutcome::Expired)]);
    assert_eq!(
        w.chan("c").unwrap().len,
        3,
        "past its capacity of 2 for a while"
    );
    assert_eq!(w.err(try_send("c", "fourth")).code(), "would_block");
    for v in ["first", "second", "third"] {
        assert_eq!(w.try_recv("c"), Ok(received(v)));
    }
    assert_eq!(w.err(Op::Claim { id: a }).code(), "not_found");
}

#[test]
fn a_value_put_back_goes_in_front_of_a_buffer_whose_positions_started_over() {
    // Once "first" is offered, nothing of the implicit channel `c` is stored; made anew,
    // it numbers its buffer from 0 again, so "second" is the head at position 0.
    let mut w = World::new();
    let a = uuid::Uuid::new_v4();
    w.ok(park_recv("c", a, T0 + 60_000));
    assert_eq!(w.ok(try_send("c", "first")), Response::Sent);
    assert_eq!(w.chan("c"), None);
    w.make("c", 3);
    assert_eq!(w.ok(try_send("c", "second")), Response::Sent);
    assert_eq!(w.ok(Op::Withdraw { id: a }), Response::Done);
    assert_eq!(w.ok(try_send("c", "third")), Response::Sent);
    for v in ["first", "second", "third"] {
        assert_eq!(w.try_recv("c"), Ok(received(v)));
    }
}

#[test]
fn an_offered_value_whose_receiver_expires_goes_to_the_next_blocked_receiver() {
    let mut w = World::new();
    let a = uuid::Uuid::new_v4();
    w.ok(park_recv("c", a, T0 + 1_000));
    assert_eq!(w.ok(try_send("c", "v")), Response::Sent);
    let r = w.create("r", vec![sel("g", vec![recv("c")])]);
    assert_eq!(
        r.status(),
        Status::Waiting,
        "the value is offered, not in the channel"
    );
    w.tick_to(T0 + 1_000);
    let r = w.state("r");
    assert_eq!(r.status(), Status::Pending);
    assert_eq!(r.results[0].data, json!("v"));
    assert_eq!(w.chan("c"), None);
}

#[test]
fn an_offered_value_survives_a_close_and_is_drained_before_ok_false() {
    let mut w = World::new();
    let a = uuid::Uuid::new_v4();
    w.ok(park_recv("c", a, T0 + 60_000));
    assert_eq!(w.ok(try_send("c", "v")), Response::Sent);
    w.close("c").unwrap();
    w.ok(Op::Withdraw { id: a });
    assert_eq!(w.try_recv("c"), Ok(received("v")));
    assert_eq!(
        w.try_recv("c"),
        Ok(Response::Received {
            data: Data::null(),
            ok: false
        })
    );
}
