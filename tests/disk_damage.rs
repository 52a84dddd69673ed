//! A node whose data file was damaged while it was down refuses to start, naming the
//! file, and the other two nodes keep taking writes (README "Guarantees").
//!
//! Each test runs three real `slct serve` processes, stops one follower with `kill -9`,
//! damages its data and starts it again. The damage: one flipped byte in a state-machine
//! record of the sled data file (`<data>/sm/db`) that the last durable flush covers, one
//! flipped byte in a Raft log record of the write-ahead log (`<data>/wal/*.wal`), or the
//! sled data file cut short inside the record of its last durable flush. sled 0.34 alone
//! would either panic in recovery or, worse, open the file without the writes after the
//! damage (see `src/storage/marker.rs`); the write-ahead log checks every record's
//! CRC-32C (`src/storage/wal/mod.rs`). What damage is and is not found: docs/storage.md,
//! "Damage".

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use slct::storage::marker::{encode_generation, GENERATION_KEY};
use slct::storage::seal;
use slct::storage::sm::SLED_SEGMENT_BYTES;
use support::{eventually, Cluster};

/// States created before the damage, so the data file holds many records.
const STATES: usize = 200;

/// A cluster that took `STATES` writes, with a follower that has them all and was then
/// killed; returns the cluster and the follower.
async fn cluster_with_a_stopped_follower() -> (Cluster, u64) {
    let cluster = Cluster::binary(3, &[]);
    let leader = cluster.await_leader().await;
    for i in 0..STATES {
        let data = json!({ "mark": format!("STATEMARK-{i:05}") });
        cluster.create(&format!("s{i:05}"), data).await;
    }
    let follower = cluster.other_than(leader);
    cluster
        .await_state(follower, &format!("s{:05}", STATES - 1))
        .await;
    // The follower's state machine is made durable by checkpoints. Killing it before
    // one covered the last marked state would let sled drop the damaged record, and
    // the node would rightly replay it from its log rather than refuse. A checkpoint
    // that was running when the last mark was applied may have read the applied index
    // before it; the one after it did not: so wait for two more, writing meanwhile so
    // that there is something to checkpoint.
    let marker = marker_file(&cluster, follower);
    let before = flush_generation(&marker);
    let mut tick = 0;
    eventually(
        Duration::from_secs(60),
        "two checkpoints on the follower after the last mark",
        || {
            tick += 1;
            let (cluster, marker, id) = (&cluster, marker.clone(), format!("tick-{tick}"));
            async move {
                cluster.create(&id, json!("x")).await;
                (flush_generation(&marker) >= before + 2).then_some(())
            }
        },
    )
    .await;
    (cluster, follower)
}

/// The follower's flush-generation marker (`src/storage/marker.rs`).
fn marker_file(cluster: &Cluster, id: u64) -> PathBuf {
    cluster
        .data(id)
        .join(slct::storage::SM_DIR)
        .join(slct::storage::marker::MARKER_FILE)
}

/// The flush generation the marker file records (`src/storage/marker.rs`; 0 if none).
fn flush_generation(marker: &Path) -> u64 {
    let bytes = std::fs::read(marker).unwrap_or_default();
    bytes
        .get(..8)
        .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()))
}

fn data_file(cluster: &Cluster, id: u64) -> PathBuf {
    cluster.data(id).join(slct::storage::SM_DIR).join("db")
}

/// The write-ahead log segment in `wal` that holds `needle`, if one does.
fn log_segment_holding(wal: &Path, needle: &[u8]) -> Option<PathBuf> {
    std::fs::read_dir(wal).ok()?.find_map(|entry| {
        let path = entry.ok()?.path();
        let holds = path.extension().is_some_and(|e| e == "wal")
            && std::fs::read(&path)
                .ok()?
                .windows(needle.len())
                .any(|w| w == needle);
        holds.then_some(path)
    })
}

/// Flips one bit in the last place `needle` occurs in the file.
fn flip_last(file: &Path, needle: &[u8]) {
    let mut bytes = std::fs::read(file).expect("read the data file");
    let at = last_before(&bytes, bytes.len(), needle)
        .unwrap_or_else(|| panic!("{} not in {}", show(needle), file.display()));
    bytes[at + needle.len() - 1] ^= 0x01;
    std::fs::write(file, bytes).expect("write the data file");
}

/// Flips one bit in the last copy of `needle` in sled's data file `file` that lies before
/// the record of flush generation `generation` (the one the marker records), so in a
/// record that this flush made durable and that sled's recovery must read to reach it.
///
/// sled rewrites a page (consolidating it, or splitting it as it grows) into a new record
/// at its log's end, old values and all. A rewrite made while the last flush was on its
/// way lands after that flush's generation record, and damage there looks to sled like a
/// write torn by a crash: its recovery drops the record and all after it, none of which
/// any checkpoint vouched for, and the node rightly starts (docs/storage.md, "Damage").
/// The last copy in the file was such a rewrite in 5 runs of 20. Within one of sled's
/// log segments the file's order is the log's; sled reuses freed segments, lowest first,
/// so across segments it is not: hence the data file must be within one.
fn flip_in_a_flushed_record(file: &Path, needle: &[u8], generation: u64) {
    let mut bytes = std::fs::read(file).expect("read the data file");
    let flushed = generation_record(&bytes, file, generation).start;
    let at = last_before(&bytes, flushed, needle).unwrap_or_else(|| {
        panic!(
            "{} not in {} before flush generation {generation}",
            show(needle),
            file.display()
        )
    });
    bytes[at + needle.len() - 1] ^= 0x01;
    std::fs::write(file, bytes).expect("write the data file");
}

/// Where in `bytes`, the contents of sled's data file `file`, the record of flush
/// generation `generation` lies: its first copy, the one that flush wrote (sled may copy
/// it into later rewrites of its page). Within one of sled's log segments the file's
/// order is the log's, so everything before it was written before that flush finished
/// and everything after it, after (see [`flip_in_a_flushed_record`]).
fn generation_record(bytes: &[u8], file: &Path, generation: u64) -> std::ops::Range<usize> {
    assert!(
        bytes.len() <= SLED_SEGMENT_BYTES,
        "{} holds more than one of sled's log segments ({} bytes)",
        file.display(),
        bytes.len()
    );
    let record = seal::seal(GENERATION_KEY, &encode_generation(generation));
    let start = bytes
        .windows(record.len())
        .position(|w| w == record)
        .unwrap_or_else(|| panic!("flush generation {generation} not in {}", file.display()));
    start..start + record.len()
}

/// Where the last copy of `needle` that ends by `end` starts in `bytes`.
fn last_before(bytes: &[u8], end: usize, needle: &[u8]) -> Option<usize> {
    bytes[..end]
        .windows(needle.len())
        .rposition(|w| w == needle)
}

fn show(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// Restarts `victim` and checks that it exits non-zero naming its data file, and that the
/// other two nodes still take writes.
async fn refuses_to_start_and_the_rest_continue(mut cluster: Cluster, victim: u64, file: &Path) {
    cluster.spawn(victim);
    let status = cluster.exit_status(victim, Duration::from_secs(30)).await;
    let log = cluster.log(victim);
    assert!(
        !status.success(),
        "node {victim} exited with {status}: {log}"
    );
    assert!(
        log.contains(&file.display().to_string()),
        "the error names {}: {log}",
        file.display()
    );
    let refusal = log.lines().rev().find(|l| l.starts_with("slct:"));
    println!("node {victim}: {}", refusal.unwrap_or_default());
    let leader = cluster.await_leader().await;
    assert_ne!(leader, victim);
    cluster.create("after-damage", json!("ok")).await;
    for id in cluster.running() {
        let state = cluster.await_state(id, "after-damage").await;
        assert_eq!(state["data"], json!("ok"));
    }
    let answer = cluster
        .http
        .get(cluster.url(victim, "/state/s00000?stale=true"))
        .send()
        .await;
    assert!(answer.is_err(), "the damaged node answers nothing");
}

/// Damage in any record of sled's data file that the last durable flush covers is
/// refused: here the newest such copy of the last state's data (the record the follower
/// wrote when it applied the entry, or a later rewrite of its page), a record sled's
/// recovery must read and cannot read past, so the database comes up without the flush
/// generation the marker records.
#[tokio::test]
async fn a_flipped_byte_in_a_state_machine_record_is_refused() {
    let (mut cluster, victim) = cluster_with_a_stopped_follower().await;
    cluster.kill(victim);
    let needle = format!("STATEMARK-{:05}", STATES - 1);
    let file = data_file(&cluster, victim);
    let generation = flush_generation(&marker_file(&cluster, victim));
    flip_in_a_flushed_record(&file, needle.as_bytes(), generation);
    refuses_to_start_and_the_rest_continue(cluster, victim, &file).await;
}

#[tokio::test]
async fn a_flipped_byte_in_a_log_record_is_refused() {
    let (mut cluster, victim) = cluster_with_a_stopped_follower().await;
    // Creating a state that exists is refused when applied (409), so its data is in the
    // log and nowhere in the state machine.
    let leader = cluster.await_leader().await;
    let body = json!({ "data": "LOGONLY-payload" });
    assert_eq!(cluster.put_state(leader, "s00000", &body).await, Some(409));
    let wal = cluster.data(victim).join(slct::storage::WAL_DIR);
    let file = eventually(
        Duration::from_secs(30),
        "the follower logged the refused write",
        || {
            let logged = log_segment_holding(&wal, b"LOGONLY-payload");
            async move { logged }
        },
    )
    .await;
    // A record after it, so the damage is not at the very end of the log, where it
    // would look like a write torn by a crash.
    cluster.create("after-the-refused-write", json!("x")).await;
    cluster.await_state(victim, "after-the-refused-write").await;
    cluster.kill(victim);
    flip_last(&file, b"LOGONLY-payload");
    refuses_to_start_and_the_rest_continue(cluster, victim, &file).await;
}

/// A data file cut one byte into the record of the flush generation the marker records
/// (so without that record's last byte and everything after it) is refused: sled's
/// recovery takes the cut record for a write torn by a crash and drops it, so the
/// database comes up without that generation. No earlier copy of it exists to fall back
/// on: the cut is at its first.
#[tokio::test]
async fn a_data_file_cut_short_is_refused() {
    let (mut cluster, victim) = cluster_with_a_stopped_follower().await;
    cluster.kill(victim);
    let file = data_file(&cluster, victim);
    let generation = flush_generation(&marker_file(&cluster, victim));
    let bytes = std::fs::read(&file).expect("read the data file");
    let cut = generation_record(&bytes, &file, generation).end - 1;
    std::fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_len(cut as u64))
        .expect("cut the data file");
    refuses_to_start_and_the_rest_continue(cluster, victim, &file).await;
}
