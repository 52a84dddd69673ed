//! The same command log gives the same state everywhere: applied one command at a time
//! to an in-memory store, and in batches to a sled store, every table ends identical —
//! parked operations, their claims and withdrawals, and the withdrawal of everything
//! parked when a new leader term begins included. A state a command replies with is
//! the state it stored.

use proptest::prelude::*;
use serde_json::json;
use slct::engine::types::{Case, Select};
use slct::engine::{
    self, Command, MemStore, Op, ParkedOp, RecvMode, Response, SendMode, Store, Table, Tx,
};
use slct::storage::sm::SledStore;
use uuid::Uuid;

const CHANS: [&str; 3] = ["a", "b", "c"];

fn case() -> impl Strategy<Value = Case> {
    prop_oneof![
        (0..3usize).prop_map(|c| Case::Recv {
            chan: CHANS[c].into()
        }),
        (0..3usize, 0..1000u32).prop_map(|(c, v)| Case::Send {
            chan: CHANS[c].into(),
            data: json!(v).into()
        }),
        (0..100u64).prop_map(|ms| Case::Timer {
            at: 0,
            after_ms: Some(ms)
        }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6u8, prop::collection::vec(prop::collection::vec(case(), 1..4), 1..3)).prop_map(|(s, sels)| Op::CreateState {
            id: format!("s{s}"),
            data: json!({"n": s}).into(),
            selects: sels.into_iter().enumerate().map(|(i, c)| Select::new(format!("g{i}"), c)).collect(),
            callback: None,
            priority: 0,
            max_deliveries: 0,
            retain_ms: 0,
        }),
        2 => (0..3usize, 0..1000u32).prop_map(|(c, v)| Op::Send { chan: CHANS[c].into(), data: json!(v).into(), mode: SendMode::Detached }),
        2 => (0..3usize).prop_map(|c| Op::Recv { chan: CHANS[c].into(), mode: RecvMode::Try }),
        1 => (0..3usize).prop_map(|c| Op::CloseChan { name: CHANS[c].into() }),
        1 => (0..3usize, 0..3u64).prop_map(|(c, cap)| Op::MakeChan { name: CHANS[c].into(), capacity: cap }),
        2 => (0..3u8, 0..6u8, 1..3usize, 1..200u64).prop_map(|(p, min, n, lease_ms)| Op::LeasePending {
            prefix: ["", "s", "s1"][p as usize % 3].into(),
            min_priority: min % 3,
            tokens: (0..n).map(|i| Uuid::from_u128(i as u128 + 1)).collect(),
            lease_ms,
        }),
        1 => (0..6u8).prop_map(|s| Op::DeleteState { id: format!("s{s}") }),
        2 => Just(Op::Tick),
        // Parked HTTP operations: `log` gives each its id and deadline, and points
        // claims and withdrawals at one parked a few commands before.
        2 => (0..3usize).prop_map(|c| Op::Recv { chan: CHANS[c].into(), mode: RecvMode::Park(parked()) }),
        1 => (0..3usize, 0..1000u32).prop_map(|(c, v)| Op::Send { chan: CHANS[c].into(), data: json!(v).into(), mode: SendMode::Park(parked()) }),
        1 => Just(Op::Claim { id: Uuid::nil() }),
        1 => Just(Op::Withdraw { id: Uuid::nil() }),
    ]
}

/// A placeholder that `log` fills in.
fn parked() -> ParkedOp {
    ParkedOp {
        id: Uuid::nil(),
        deadline: 0,
    }
}

/// Commands at non-decreasing times, and the leader term of each: now and then a new
/// term begins, withdrawing what is parked.
fn log() -> impl Strategy<Value = Vec<(Command, u64)>> {
    let command = (
        op(),
        0..30u64,
        any::<u64>(),
        1..100u64,
        1..6u128,
        prop::bool::weighted(0.1),
    );
    prop::collection::vec(command, 1..120).prop_map(|ops| {
        let mut now = 1_700_000_000_000;
        let mut term = 1;
        ops.into_iter()
            .enumerate()
            .map(|(i, (mut op, dt, seed, wait_ms, back, elected))| {
                now += dt;
                term += u64::from(elected);
                let id = Uuid::from_u128(i as u128 + 1);
                let earlier = Uuid::from_u128((i as u128 + 1).saturating_sub(back));
                match &mut op {
                    Op::Recv {
                        mode: RecvMode::Park(p),
                        ..
                    }
                    | Op::Send {
                        mode: SendMode::Park(p),
                        ..
                    } => {
                        p.id = id;
                        p.deadline = now + wait_ms;
                    }
                    Op::Claim { id } | Op::Withdraw { id } => *id = earlier,
                    _ => {}
                }
                let cmd = Command {
                    now,
                    seed,
                    history_limit: 100,
                    op,
                };
                (cmd, term)
            })
            .collect()
    })
}

fn dump<S: Store>(store: &S) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    Table::ALL
        .iter()
        .map(|t| store.scan_from(*t, &[]).map(Result::unwrap).collect())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn the_same_log_gives_identical_tables_in_memory_and_in_sled(log in log(), batch in 1..8usize) {
        let mut mem = MemStore::new();
        let mut replies_mem = Vec::new();
        for (cmd, term) in &log {
            let mut tx = Tx::new(&mem);
            let applied = engine::apply(&mut tx, cmd.clone(), 0, *term).unwrap();
            let writes = tx.into_writes();
            mem.commit(writes);
            // A state in a reply is the state as stored by that command.
            if let Ok(Response::State(state)) = &applied.reply {
                let stored = engine::load_state(&mem, &state.id).unwrap();
                prop_assert_eq!(stored.as_ref(), Some(state.as_ref()));
            }
            replies_mem.push(applied);
        }
        let dir = tempfile::tempdir().unwrap();
        let sled = SledStore::open(dir.path()).unwrap();
        let mut replies_sled = Vec::new();
        for chunk in log.chunks(batch) {
            let mut tx = Tx::new(&sled);
            for (cmd, term) in chunk {
                replies_sled.push(engine::apply(&mut tx, cmd.clone(), 0, *term).unwrap());
            }
            sled.commit(tx.into_writes()).unwrap();
        }
        prop_assert_eq!(replies_mem, replies_sled);
        prop_assert_eq!(dump(&mem), dump(&sled));
    }
}
