//! Engine benchmark on sled: how fast blocked selects register and rendezvous complete,
//! and how much memory a million waiting selects need.
//!
//! `cargo bench --bench engine [-- SELECTS PAIRS BATCH CACHE_MIB]` (defaults 1000000
//! 100000 1000 256).
//! Commands are applied in batches, as the Raft state machine applies log entries, each
//! batch committed to the store, with a node's checkpoint task running beside them on
//! a thread of its own (counted in the CPU per command). Reports the apply rate and the CPU time per
//! command (the figure to compare on a busy machine), per-batch latency
//! percentiles, the writes a command stages (keys and bytes, and the share of the
//! history table: a state's newest events are in its own record;
//! `SLCT_BENCH_HISTORY=0` turns history off), the bytes on disk per blocked select and
//! the process's peak resident memory (VmHWM).

use std::time::{Duration, Instant};

use serde_json::json;
use slct::engine::types::{Case, Select};
use slct::engine::{self, Command, Op, Table, Tx};
use slct::storage::sm::checkpoint::{Checkpoints, DEFAULT_CHECKPOINT_INTERVAL};
use slct::storage::sm::SledStore;

/// The node's allocator (`src/main.rs`), so the figures are what a node's apply costs:
/// sled copies a leaf on every write, and glibc's malloc made that a third of the time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let selects = args.first().copied().unwrap_or(1_000_000);
    let pairs = args.get(1).copied().unwrap_or(100_000);
    let batch = args.get(2).copied().unwrap_or(1_000) as usize;
    let cache_mib = args.get(3).copied().unwrap_or(256);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open_with_cache(dir.path(), cache_mib << 20).expect("open sled");
    let checkpoints = Checkpoints::open(store.clone(), None).expect("checkpoints");
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = checkpoints
        .clone()
        .run(DEFAULT_CHECKPOINT_INTERVAL, shutdown);
    let checkpointing = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(task);
    });
    println!("sled page cache: {cache_mib} MiB");
    let mut now = 1_700_000_000_000u64;

    let blocked = (0..selects).map(|i| Op::CreateState {
        id: format!("waiting-{i:08}"),
        data: json!({"order": i}).into(),
        selects: vec![Select::new(
            "g",
            vec![
                Case::Recv {
                    chan: format!("payment-{i}"),
                },
                Case::Timer {
                    at: 0,
                    after_ms: Some(86_400_000),
                },
            ],
        )],
        callback: None,
        priority: 0,
        max_deliveries: 0,
        retain_ms: 0,
    });
    run(
        "blocked selects",
        (&store, &checkpoints),
        &mut now,
        blocked,
        batch,
    );
    store.flush_durable().expect("flush");
    let disk = disk_bytes(dir.path());
    println!(
        "  peak RSS after {selects} blocked selects: {} MiB; data on disk: {} MiB = {:.0} \
         bytes per blocked select",
        peak_rss_mib(),
        disk >> 20,
        disk as f64 / selects as f64
    );

    let rendezvous = (0..pairs).flat_map(|i| {
        let chan = format!("rv-{i}");
        let one = |id: String, case: Case| Op::CreateState {
            id,
            data: json!(null).into(),
            selects: vec![Select::new("g", vec![case])],
            callback: None,
            priority: 0,
            max_deliveries: 0,
            retain_ms: 0,
        };
        [
            one(format!("rx-{i:08}"), Case::Recv { chan: chan.clone() }),
            one(
                format!("tx-{i:08}"),
                Case::Send {
                    chan,
                    data: json!(i).into(),
                },
            ),
        ]
    });
    let elapsed = run(
        "rendezvous states (2 per pair)",
        (&store, &checkpoints),
        &mut now,
        rendezvous,
        batch,
    );
    println!(
        "  {:.0} rendezvous pairs/s",
        pairs as f64 / elapsed.as_secs_f64()
    );
    println!("  peak RSS at the end: {} MiB", peak_rss_mib());
    stop.send_replace(true);
    checkpointing.join().expect("checkpoint task");
}

/// Applies `ops` in batches to `store`, telling `checkpoints` what was applied, as
/// the state machine does; prints rate and batch latency percentiles.
fn run(
    name: &str,
    (store, checkpoints): (&SledStore, &Checkpoints),
    now: &mut u64,
    ops: impl Iterator<Item = Op>,
    batch: usize,
) -> Duration {
    let start = Instant::now();
    let cpu_start = cpu_time();
    let mut latencies = Vec::new();
    let mut count = 0u64;
    let (mut keys, mut bytes, mut history_keys, mut history_bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut ops = ops.peekable();
    while ops.peek().is_some() {
        let t = Instant::now();
        let mut tx = Tx::new(store);
        for op in ops.by_ref().take(batch) {
            *now += 1;
            let cmd = Command {
                now: *now,
                seed: count,
                history_limit: history_limit(),
                op,
            };
            let applied = engine::apply(&mut tx, cmd, 0, 1).expect("apply");
            assert!(applied.reply.is_ok(), "{:?}", applied.reply);
            count += 1;
        }
        let writes = tx.into_writes();
        for (table, staged) in Table::ALL.iter().zip(&writes) {
            let size: u64 = staged
                .iter()
                .map(|(k, v)| (k.len() + v.as_ref().map_or(0, Vec::len)) as u64)
                .sum();
            keys += staged.len() as u64;
            bytes += size;
            if *table == Table::History {
                history_keys += staged.len() as u64;
                history_bytes += size;
            }
        }
        store.commit(writes).expect("commit");
        checkpoints.applied(Some(*now));
        latencies.push(t.elapsed());
    }
    store.flush_durable().expect("checkpoint");
    let elapsed = start.elapsed();
    let cpu = cpu_time() - cpu_start;
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "{name}: {count} commands in {:.1} s = {:.0} commands/s; batch of {batch}: p50 {:?} p99 {:?} max {:?}",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        latencies.last().unwrap()
    );
    println!(
        "  CPU per command (every thread): {:.1} µs",
        cpu.as_secs_f64() * 1e6 / count as f64
    );
    let per = |n: u64| n as f64 / count as f64;
    println!(
        "  staged per command: {:.1} keys, {:.0} bytes; of which the history table {:.1} keys, {:.0} bytes",
        per(keys),
        per(bytes),
        per(history_keys),
        per(history_bytes)
    );
    elapsed
}

/// Bytes of the files under `dir` (sled's data file and its blobs), after a flush.
fn disk_bytes(dir: &std::path::Path) -> u64 {
    let files = std::fs::read_dir(dir).expect("read data dir");
    files
        .filter_map(|f| f.ok())
        .map(|f| match f.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&f.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// CPU time of the whole process so far, user and system (`/proc/self/stat`, in
/// clock ticks of 10 ms): what an apply costs whatever else the machine runs.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are the
    // 12th and 13th.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// Events kept per state: `SLCT_BENCH_HISTORY` (default 100, the node's default).
fn history_limit() -> u32 {
    std::env::var("SLCT_BENCH_HISTORY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}
