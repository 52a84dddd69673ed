//! The same command log gives the same state everywhere: applied one command at a time
//! to an in-memory store, and in batches to a sled store, every table ends identical.

use proptest::prelude::*;
use serde_json::json;
use slct::engine::types::{Case, Select};
use slct::engine::{self, Command, MemStore, Op, RecvMode, SendMode, Store, Table, Tx};
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
    ]
}

fn log() -> impl Strategy<Value = Vec<Command>> {
    prop::collection::vec((op(), 0..30u64, any::<u64>()), 1..120).prop_map(|ops| {
        let mut now = 1_700_000_000_000;
        ops.into_iter()
            .map(|(op, dt, seed)| {
                now += dt;
                Command {
                    now,
                    seed,
                    history_limit: 100,
                    op,
                }
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
        for cmd in &log {
            let mut tx = Tx::new(&mem);
            replies_mem.push(engine::apply(&mut tx, cmd, 0).unwrap());
            let writes = tx.into_writes();
            mem.commit(writes);
        }
        let dir = tempfile::tempdir().unwrap();
        let sled = SledStore::open(dir.path()).unwrap();
        let mut replies_sled = Vec::new();
        for chunk in log.chunks(batch) {
            let mut tx = Tx::new(&sled);
            for cmd in chunk {
                replies_sled.push(engine::apply(&mut tx, cmd, 0).unwrap());
            }
            sled.commit(tx.into_writes()).unwrap();
        }
        prop_assert_eq!(replies_mem, replies_sled);
        prop_assert_eq!(dump(&mem), dump(&sled));
    }
}
