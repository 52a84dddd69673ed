//! The history checker on hand-made histories: each anomaly it exists to find — a lost
//! value, a duplicate (also of a send retried under an `Idempotency-Key`), keyed answers
//! that disagree, an invented value, a refused send that got through, broken FIFO,
//! a stale read, overlapping leases, an early timer, log time going back — must fail
//! it, and the honest version of each history must pass. Each rule by which the
//! linearizability search prunes calls of unknown outcome gets a history showing a
//! violation stays visible under it.

mod fault;

use fault::checker::{self, Report};
use fault::history::{Call, Op, Outcome, SendMode};
use serde_json::{json, Value};

/// Builds histories: each op gets the next slot of time unless given one.
#[derive(Default)]
struct History {
    ops: Vec<Op>,
}

impl History {
    fn at(&mut self, start: u64, end: u64, call: Call, outcome: Outcome) -> &mut Self {
        self.ops.push(Op {
            process: 0,
            node: 1,
            start,
            end,
            call,
            outcome,
        });
        self
    }

    fn check(&self) -> Report {
        checker::check(&self.ops)
    }
}

fn ok(status: u16, body: Value) -> Outcome {
    Outcome::Ok { status, body }
}

fn fail(status: u16, code: &str) -> Outcome {
    Outcome::Fail {
        status,
        code: code.into(),
    }
}

fn send(chan: &str, value: &str, mode: SendMode) -> Call {
    Call::Send {
        chan: chan.into(),
        value: json!(value),
        mode,
        key: None,
    }
}

/// A detached send of `value` under `Idempotency-Key: key-{value}`.
fn keyed_send(chan: &str, value: &str) -> Call {
    Call::Send {
        chan: chan.into(),
        value: json!(value),
        mode: SendMode::Detached,
        key: Some(format!("key-{value}")),
    }
}

fn recv(chan: &str) -> Call {
    Call::Recv {
        chan: chan.into(),
        wait: 1,
    }
}

fn got(value: &str) -> Outcome {
    ok(200, json!({"data": value, "ok": true}))
}

fn violations_about(report: &Report, needle: &str) -> usize {
    report
        .violations
        .iter()
        .filter(|v| v.contains(needle))
        .count()
}

fn assert_valid(report: &Report) {
    assert!(report.valid(), "expected no violation:\n{report}");
}

#[test]
fn acknowledged_values_received_once_pass() {
    let mut h = History::default();
    h.at(
        0,
        1,
        send("c", "v1", SendMode::Detached),
        ok(202, json!({})),
    )
    .at(
        2,
        3,
        send("c", "v2", SendMode::Block(1)),
        ok(200, json!({})),
    )
    .at(4, 5, recv("c"), got("v1"))
    .at(6, 7, recv("c"), got("v2"));
    assert_valid(&h.check());
}

#[test]
fn a_lost_value_fails() {
    let mut h = History::default();
    h.at(
        0,
        1,
        send("c", "v1", SendMode::Detached),
        ok(202, json!({})),
    )
    .at(
        2,
        3,
        send("c", "v2", SendMode::Detached),
        ok(200, json!({})),
    )
    .at(4, 5, recv("c"), got("v2"));
    let report = h.check();
    assert_eq!(violations_about(&report, "never received"), 1, "{report}");
}

#[test]
fn a_value_may_go_missing_only_with_an_unknown_receive_on_its_channel() {
    let mut h = History::default();
    h.at(
        0,
        1,
        send("c", "v1", SendMode::Detached),
        ok(202, json!({})),
    )
    .at(2, 9, recv("c"), Outcome::Unknown("timeout".into()));
    assert_valid(&h.check());
    // An unknown receive on another channel does not excuse it.
    let mut h = History::default();
    h.at(
        0,
        1,
        send("c", "v1", SendMode::Detached),
        ok(202, json!({})),
    )
    .at(2, 9, recv("d"), Outcome::Unknown("timeout".into()));
    assert_eq!(violations_about(&h.check(), "never received"), 1);
}

#[test]
fn a_duplicate_fails() {
    let mut h = History::default();
    h.at(
        0,
        1,
        send("c", "v1", SendMode::Detached),
        ok(200, json!({})),
    )
    .at(2, 3, recv("c"), got("v1"))
    .at(4, 5, recv("c"), got("v1"));
    let report = h.check();
    assert_eq!(violations_about(&report, "received 2 times"), 1, "{report}");
}

#[test]
fn a_duplicate_across_a_state_and_http_fails() {
    let mut h = History::default();
    let selects = json!([{"id": "g1", "cases": [{"op": "recv", "chan": "c"}]}]);
    let state = json!({
        "id": "a-r0", "created_at": 5, "updated_at": 5, "data": {"w": 1}, "selects": [],
        "results": [{"seq": 1, "select": "g1", "case": 0, "op": "recv", "chan": "c",
                     "data": "v1", "ok": true, "at": 5}]
    });
    h.at(
        0,
        1,
        send("c", "v1", SendMode::Detached),
        ok(200, json!({})),
    )
    .at(
        0,
        1,
        Call::Create {
            id: "a-r0".into(),
            data: json!({"w": 1}),
            selects,
        },
        ok(201, state.clone()),
    )
    .at(2, 3, recv("c"), got("v1"))
    .at(4, 5, Call::Read { id: "a-r0".into() }, ok(200, state));
    assert_eq!(violations_about(&h.check(), "received 2 times"), 1);
}

#[test]
fn a_keyed_send_retried_and_received_once_passes_and_is_counted() {
    let mut h = History::default();
    h.at(
        0,
        3,
        keyed_send("c", "v1"),
        Outcome::Unknown("timeout".into()),
    )
    .at(4, 5, keyed_send("c", "v1"), fail(0, "unreachable"))
    .at(6, 7, keyed_send("c", "v1"), ok(200, json!({})))
    .at(8, 9, recv("c"), got("v1"));
    let report = h.check();
    assert_valid(&report);
    let line = report
        .checked
        .iter()
        .find(|l| l.starts_with("keyed sends"))
        .expect("the keyed sends' line");
    assert!(
        line.contains("1 values sent under an Idempotency-Key, 1 of them sent again")
            && line.contains("(2 retries; in the end 1 acknowledged")
            && line.contains("1 acknowledged keyed values received exactly once, 0 more"),
        "{line}"
    );
}

#[test]
fn a_keyed_send_refused_for_a_full_disk_on_retry_is_no_answer() {
    // 507 disk_full is refused before the key is looked up: it says nothing of the first
    // attempt, which the later answer shows was applied.
    let mut h = History::default();
    h.at(
        0,
        3,
        keyed_send("c", "v1"),
        Outcome::Unknown("timeout".into()),
    )
    .at(4, 5, keyed_send("c", "v1"), fail(507, "disk_full"))
    .at(6, 7, keyed_send("c", "v1"), ok(200, json!({})))
    .at(8, 9, recv("c"), got("v1"));
    assert_valid(&h.check());
}

#[test]
fn a_send_refused_for_a_full_disk_must_not_arrive() {
    let mut h = History::default();
    h.at(
        0,
        1,
        send("c", "v1", SendMode::Detached),
        fail(507, "disk_full"),
    )
    .at(2, 3, recv("c"), got("v1"));
    let report = h.check();
    assert_eq!(
        violations_about(&report, "its send was refused"),
        1,
        "{report}"
    );
}

#[test]
fn a_keyed_send_retried_and_received_twice_fails() {
    let mut h = History::default();
    h.at(
        0,
        3,
        keyed_send("c", "v1"),
        Outcome::Unknown("timeout".into()),
    )
    .at(4, 5, keyed_send("c", "v1"), ok(200, json!({})))
    .at(6, 7, recv("c"), got("v1"))
    .at(8, 9, recv("c"), got("v1"));
    let report = h.check();
    let needle = "v1 (sent under Idempotency-Key key-v1, 2 attempts) was received 2 times";
    assert_eq!(violations_about(&report, needle), 1, "{report}");
}

#[test]
fn a_keyed_send_whose_retry_was_refused_must_not_arrive() {
    // The retry's refusal is the reply of the key's one application: the first attempt,
    // of unknown outcome, did not send the value either.
    let mut h = History::default();
    h.at(
        0,
        3,
        keyed_send("c", "v1"),
        Outcome::Unknown("timeout".into()),
    )
    .at(4, 5, keyed_send("c", "v1"), fail(409, "would_block"))
    .at(6, 7, recv("c"), got("v1"));
    let report = h.check();
    assert_eq!(
        violations_about(&report, "its send was refused"),
        1,
        "{report}"
    );
}

#[test]
fn answers_under_one_key_that_disagree_fail() {
    let mut h = History::default();
    h.at(0, 1, keyed_send("c", "v1"), ok(202, json!({})))
        .at(2, 3, keyed_send("c", "v1"), ok(200, json!({})))
        .at(4, 5, keyed_send("c", "v2"), ok(200, json!({})))
        .at(6, 7, keyed_send("c", "v2"), fail(409, "would_block"))
        .at(8, 9, recv("c"), got("v1"))
        .at(10, 11, recv("c"), got("v2"));
    let report = h.check();
    assert_eq!(
        violations_about(&report, "answers under Idempotency-Key"),
        2,
        "{report}"
    );
}

#[test]
fn an_invented_value_fails() {
    let mut h = History::default();
    h.at(0, 1, recv("c"), got("never-sent"));
    assert_eq!(violations_about(&h.check(), "never sent"), 1);
}

#[test]
fn a_withdrawn_send_that_arrives_fails() {
    let mut h = History::default();
    h.at(
        0,
        1,
        send("c", "v1", SendMode::Block(1)),
        fail(408, "timeout"),
    )
    .at(2, 3, recv("c"), got("v1"));
    assert_eq!(violations_about(&h.check(), "refused"), 1);
}

#[test]
fn a_value_put_back_by_a_withdrawn_receive_counts_as_sent_when_it_was_withdrawn() {
    // v1 went at once (200) to a parked receive that then timed out (408): it was put
    // back at the head of the channel then, so v2, sent before that, may come first.
    let mut h = History::default();
    h.at(0, 10, recv("c"), fail(408, "timeout"))
        .at(
            1,
            2,
            send("c", "v1", SendMode::Detached),
            ok(200, json!({})),
        )
        .at(
            3,
            4,
            send("c", "v2", SendMode::Detached),
            ok(202, json!({})),
        )
        .at(5, 6, recv("c"), got("v2"))
        .at(11, 12, recv("c"), got("v1"));
    assert_valid(&h.check());
    // A value sent after the withdrawal is behind v1 again: taking it first is a violation.
    let mut h = History::default();
    h.at(0, 10, recv("c"), fail(408, "timeout"))
        .at(
            1,
            2,
            send("c", "v1", SendMode::Detached),
            ok(200, json!({})),
        )
        .at(
            11,
            12,
            send("c", "v2", SendMode::Detached),
            ok(202, json!({})),
        )
        .at(13, 14, recv("c"), got("v2"))
        .at(15, 16, recv("c"), got("v1"));
    assert_eq!(violations_about(&h.check(), "FIFO"), 1);
}

/// Sends "v1" at once (200) during `receive`, then "v2" (202) at `v2_at`, and receives v2
/// before v1 after both.
fn v1_put_back_behind_v2(receive: (u64, u64, Call, Outcome), v2_at: u64) -> History {
    let mut h = History::default();
    let (start, end, call, outcome) = receive;
    h.at(start, end, call, outcome)
        .at(10, 11, send("c", "v1", SendMode::Try), ok(200, json!({})))
        .at(
            v2_at,
            v2_at + 1,
            send("c", "v2", SendMode::Detached),
            ok(202, json!({})),
        )
        .at(100, 101, recv("c"), got("v2"))
        .at(102, 103, recv("c"), got("v1"));
    h
}

#[test]
fn a_receive_of_unknown_outcome_excuses_a_put_back_value_only_until_it_ended() {
    // Its caller gave up at 20: its node withdrew it no later than that, or the next
    // leader did before any send of its term.
    let during = (5, 20, recv("c"), unknown());
    assert_valid(&v1_put_back_behind_v2(during.clone(), 12).check());
    let report = v1_put_back_behind_v2(during, 21).check();
    assert_eq!(violations_about(&report, "FIFO"), 1, "{report}");
}

#[test]
fn a_receive_that_ended_before_the_send_began_excuses_nothing() {
    // The history of a receive parked on a leader that was then paused: its caller gave
    // up at 8, and v1, sent to the next leader, must not have been offered to it.
    let before = (0, 8, recv("c"), unknown());
    let report = v1_put_back_behind_v2(before, 12).check();
    assert_eq!(violations_about(&report, "FIFO"), 1, "{report}");
    let answered = (0, 8, recv("c"), fail(408, "timeout"));
    let report = v1_put_back_behind_v2(answered, 12).check();
    assert_eq!(violations_about(&report, "FIFO"), 1, "{report}");
}

#[test]
fn a_try_receive_excuses_nothing() {
    let try_recv = Call::Recv {
        chan: "c".into(),
        wait: 0,
    };
    let report = v1_put_back_behind_v2((5, 20, try_recv, fail(409, "would_block")), 12).check();
    assert_eq!(violations_about(&report, "FIFO"), 1, "{report}");
}

#[test]
fn fifo_broken_fails() {
    let mut h = History::default();
    h.at(
        0,
        1,
        send("c", "v1", SendMode::Detached),
        ok(202, json!({})),
    )
    .at(
        2,
        3,
        send("c", "v2", SendMode::Detached),
        ok(202, json!({})),
    )
    .at(4, 5, recv("c"), got("v2"))
    .at(6, 7, recv("c"), got("v1"));
    let report = h.check();
    assert_eq!(violations_about(&report, "FIFO"), 1, "{report}");
    // Overlapping receives may take them in either order.
    let mut h = History::default();
    h.at(
        0,
        1,
        send("c", "v1", SendMode::Detached),
        ok(202, json!({})),
    )
    .at(
        2,
        3,
        send("c", "v2", SendMode::Detached),
        ok(202, json!({})),
    )
    .at(4, 8, recv("c"), got("v2"))
    .at(5, 7, recv("c"), got("v1"));
    assert_valid(&h.check());
}

fn create(id: &str, w: u64, created_at: u64) -> (Call, Outcome) {
    let data = json!({"w": w});
    let state = json!({"id": id, "data": data, "created_at": created_at,
                       "updated_at": created_at, "selects": [], "results": []});
    (
        Call::Create {
            id: id.into(),
            data,
            selects: json!([]),
        },
        ok(201, state),
    )
}

fn read(id: &str, w: u64) -> (Call, Outcome) {
    let state = json!({"id": id, "data": {"w": w}, "created_at": 1, "updated_at": 1,
                       "selects": [], "results": []});
    (Call::Read { id: id.into() }, ok(200, state))
}

fn update(id: &str, token: &str, w: u64, at: u64) -> (Call, Outcome) {
    let data = json!({"w": w});
    let state = json!({"id": id, "data": data, "created_at": 1, "updated_at": at,
                       "selects": [], "results": []});
    (
        Call::Update {
            id: id.into(),
            token: token.into(),
            data,
            selects: json!([]),
        },
        ok(200, state),
    )
}

#[test]
fn a_stale_read_fails() {
    let mut h = History::default();
    let (c, o) = create("k-0", 1, 1);
    h.at(0, 1, c, o);
    let (c, o) = update("k-0", "t", 2, 3);
    h.at(2, 3, c, o);
    let (c, o) = read("k-0", 1);
    h.at(4, 5, c, o);
    let report = h.check();
    assert_eq!(violations_about(&report, "not linearizable"), 1, "{report}");
    // Read concurrently with the update, the old value is fine.
    let mut h = History::default();
    let (c, o) = create("k-0", 1, 1);
    h.at(0, 1, c, o);
    let (c, o) = update("k-0", "t", 2, 3);
    h.at(2, 6, c, o);
    let (c, o) = read("k-0", 1);
    h.at(4, 5, c, o);
    assert_valid(&h.check());
}

#[test]
fn a_read_of_a_deleted_state_fails() {
    let mut h = History::default();
    let (c, o) = create("k-0", 1, 1);
    h.at(0, 1, c, o).at(
        2,
        3,
        Call::Delete { id: "k-0".into() },
        ok(204, Value::Null),
    );
    let (c, o) = read("k-0", 1);
    h.at(4, 5, c, o);
    assert_eq!(violations_about(&h.check(), "not linearizable"), 1);
}

fn unknown() -> Outcome {
    Outcome::Unknown("timeout".into())
}

fn linear_line(report: &Report) -> &str {
    report
        .checked
        .iter()
        .find(|line| line.starts_with("linearizability"))
        .expect("a linearizability line")
}

/// Pruning rule 1: a read of unknown outcome is dropped; a stale read beside it still
/// fails.
#[test]
fn an_unknown_read_is_dropped_and_a_stale_read_still_fails() {
    let mut h = History::default();
    let (c, o) = create("k-0", 1, 1);
    h.at(0, 1, c, o);
    let (c, o) = update("k-0", "t", 2, 3);
    h.at(2, 3, c, o);
    h.at(4, 9, Call::Read { id: "k-0".into() }, unknown());
    let report = h.check();
    assert_valid(&report);
    assert!(
        linear_line(&report).contains("pruned 1 unknown reads"),
        "{report}"
    );
    let (c, o) = read("k-0", 1);
    h.at(5, 6, c, o);
    let report = h.check();
    assert_eq!(violations_about(&report, "not linearizable"), 1, "{report}");
}

/// Pruning rule 2: an update of unknown outcome whose value no read returned is taken
/// as never applied; a stale read after a later update still fails, and reading the
/// old value with nothing after it passes.
#[test]
fn an_unknown_update_nobody_read_is_dropped_and_a_stale_read_still_fails() {
    let mut h = History::default();
    let (c, o) = create("k-0", 1, 1);
    h.at(0, 1, c, o);
    let (c, _) = update("k-0", "t", 2, 3);
    h.at(2, 3, c, unknown());
    let (c, o) = read("k-0", 1);
    h.at(10, 11, c, o);
    let report = h.check();
    assert_valid(&report);
    assert!(
        linear_line(&report).contains("1 unknown updates nobody read"),
        "{report}"
    );
    let mut h = History::default();
    let (c, o) = create("k-0", 1, 1);
    h.at(0, 1, c, o);
    let (c, _) = update("k-0", "t", 2, 3);
    h.at(2, 3, c, unknown());
    let (c, o) = update("k-0", "t", 3, 5);
    h.at(4, 5, c, o);
    let (c, o) = read("k-0", 1);
    h.at(6, 7, c, o);
    let report = h.check();
    assert_eq!(violations_about(&report, "not linearizable"), 1, "{report}");
}

/// Pruning rule 3: an update of unknown outcome whose value a read returned was
/// applied before that read; the old value read after it fails.
#[test]
fn an_unknown_write_someone_read_is_applied_and_the_old_value_back_fails() {
    let mut h = History::default();
    let (c, o) = create("k-0", 1, 1);
    h.at(0, 1, c, o);
    let (c, _) = update("k-0", "t", 2, 3);
    h.at(2, 3, c, unknown());
    let (c, o) = read("k-0", 2);
    h.at(10, 11, c, o);
    let report = h.check();
    assert_valid(&report);
    assert!(
        linear_line(&report).contains("1 unknown writes someone read"),
        "{report}"
    );
    let (c, o) = read("k-0", 1);
    h.at(12, 13, c, o);
    let report = h.check();
    assert_eq!(violations_about(&report, "not linearizable"), 1, "{report}");
}

/// Quiescent points: the history is searched piece by piece, each piece from every
/// value the one before may leave (two concurrent updates leave either).
#[test]
fn pieces_between_quiescent_points_carry_every_possible_value() {
    let mut h = History::default();
    let (c, o) = create("k-0", 1, 1);
    h.at(0, 1, c, o);
    let (c, o) = update("k-0", "t", 2, 3);
    h.at(2, 5, c, o);
    let (c, o) = update("k-0", "t", 3, 4);
    h.at(3, 6, c, o);
    let (c, o) = read("k-0", 2);
    h.at(8, 9, c, o);
    let report = h.check();
    assert_valid(&report);
    assert!(linear_line(&report).contains("3 pieces"), "{report}");
    let (c, o) = read("k-0", 3);
    h.at(10, 11, c, o);
    let report = h.check();
    assert_eq!(violations_about(&report, "not linearizable"), 1, "{report}");
}

fn polled(id: &str, token: &str, granted_at: u64, expires_at: u64) -> (Call, Outcome) {
    let state = json!({"id": id, "data": {"w": 1}, "created_at": 1, "updated_at": granted_at,
                       "selects": [], "results": [],
                       "lease": {"token": token, "granted_at": granted_at,
                                 "expires_at": expires_at}});
    (
        Call::Poll {
            prefix: "a-".into(),
            lease_ms: 1000,
        },
        ok(200, json!([state])),
    )
}

#[test]
fn overlapping_leases_fail() {
    let mut h = History::default();
    let (c, o) = polled("a-0", "t1", 100, 1100);
    h.at(0, 1, c, o);
    let (c, o) = polled("a-0", "t2", 600, 1600);
    h.at(2, 3, c, o);
    let report = h.check();
    assert_eq!(violations_about(&report, "overlap"), 1, "{report}");
}

#[test]
fn a_lease_after_expiry_or_update_passes() {
    let mut h = History::default();
    let (c, o) = polled("a-0", "t1", 100, 1100);
    h.at(0, 1, c, o);
    let (c, o) = polled("a-0", "t2", 1100, 2100);
    h.at(2, 3, c, o);
    let (c, o) = update("a-0", "t2", 5, 1500);
    h.at(4, 5, c, o);
    let (c, o) = polled("a-0", "t3", 1500, 2500);
    h.at(6, 7, c, o);
    assert_valid(&h.check());
}

fn with_timer(at: u64, fired_at: Option<u64>) -> Value {
    let (selects, results) = match fired_at {
        None => (
            json!([{"id": "g1", "cases": [{"op": "timer", "at": at, "after_ms": 500}]}]),
            json!([]),
        ),
        Some(t) => (
            json!([]),
            json!([{"seq": 1, "select": "g1", "case": 0, "op": "timer", "data": null,
                    "ok": true, "at": t}]),
        ),
    };
    json!({"id": "k-0", "data": {"w": 1}, "created_at": 1, "updated_at": 1,
           "selects": selects, "results": results})
}

#[test]
fn an_early_timer_fails() {
    let create = Call::Create {
        id: "k-0".into(),
        data: json!({"w": 1}),
        selects: json!([{"id": "g1", "cases": [{"op": "timer", "after_ms": 500}]}]),
    };
    let mut h = History::default();
    h.at(0, 1, create.clone(), ok(201, with_timer(1500, None)))
        .at(
            2,
            3,
            Call::Read { id: "k-0".into() },
            ok(200, with_timer(1500, Some(1499))),
        );
    let report = h.check();
    assert_eq!(
        violations_about(&report, "before its deadline"),
        1,
        "{report}"
    );
    let mut h = History::default();
    h.at(0, 1, create, ok(201, with_timer(1500, None))).at(
        2,
        3,
        Call::Read { id: "k-0".into() },
        ok(200, with_timer(1500, Some(1500))),
    );
    assert_valid(&h.check());
}

#[test]
fn log_time_going_back_fails() {
    let mut h = History::default();
    let (c, o) = create("k-0", 1, 5000);
    h.at(0, 1, c, o);
    let (c, o) = create("k-1", 2, 4000);
    h.at(2, 3, c, o);
    let report = h.check();
    assert_eq!(
        violations_about(&report, "log time went back"),
        1,
        "{report}"
    );
}

#[test]
fn an_overdue_timer_in_the_final_listing_fails() {
    let mut blocked = with_timer(1500, None);
    blocked["updated_at"] = json!(1000);
    let later = json!({"id": "k-1", "data": {"w": 2}, "created_at": 2000,
                       "updated_at": 2000, "selects": [], "results": []});
    let mut h = History::default();
    h.at(
        0,
        1,
        Call::ListStates,
        ok(200, json!({"states": [blocked, later]})),
    );
    let report = h.check();
    assert_eq!(
        violations_about(&report, "still waits on a timer"),
        1,
        "{report}"
    );
}
