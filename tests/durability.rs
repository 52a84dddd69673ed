//! Every acknowledged byte reaches the disk, shown on real `slct serve` processes by
//! tracing their sync calls with strace: each write is in a synced segment of the
//! leader's write-ahead log before it is acknowledged, with one `fdatasync` and no
//! flush of the state machine on the way; a failed sync stops the node; and the
//! state machine is made durable by checkpoints, which sync sled's data file and the
//! blob files that hold pages too large for its log segments; a node killed in the
//! middle of a checkpoint forgets nothing it acknowledged. A single value fits a
//! segment (8 MiB, `storage::sm` module docs), but a leaf of sled's tree holds up to 16
//! of them and is rewritten whole now and then: a dozen 300 KiB values in a row make
//! leaves above the blob threshold.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::strace::{attach, stop_tracing};
use support::Cluster;

/// Attaches `strace` to every thread of process `pid`, logging `fsync`, `fdatasync`
/// and `sync_file_range` with the path of each descriptor to `out`; returns once
/// attached (strace attaches to every thread before it says so, and follows the
/// threads made after).
fn trace_syncs(pid: u32, out: &std::path::Path) -> std::process::Child {
    let mut strace = Command::new("strace");
    strace
        .args([
            "-f",
            "-y",
            "-e",
            "trace=fsync,fdatasync,sync_file_range",
            "-o",
        ])
        .arg(out)
        .args(["-p", &pid.to_string()]);
    attach(strace)
}

/// At one connection, every write waits for its own sync of the write-ahead log on the
/// leader — one `fdatasync` of a segment file per write, no more — and the state
/// machine is not made durable on the way: no `fsync`/`fdatasync` of `sm/`
/// (checkpoints are an hour apart here, so any would be on the write path). sled 0.34
/// itself still calls `sync_file_range` on its data file as it writes out a commit's
/// log buffer (which only starts writeback, without a cache flush); the test prints
/// how many.
#[tokio::test]
async fn each_write_is_in_a_synced_log_segment_before_it_is_acknowledged() {
    let cluster = Cluster::binary(3, &["--checkpoint-interval", "60m"]);
    let leader = cluster.await_leader().await;
    cluster.create("warm-up", json!("x")).await;
    let data = cluster.data(leader).to_path_buf();
    let trace = data.with_extension("strace");
    let strace = trace_syncs(cluster.pid(leader), &trace);
    const WRITES: usize = 20;
    for i in 0..WRITES {
        let body = json!({ "data": i });
        let status = cluster.put_state(leader, &format!("w{i:02}"), &body).await;
        assert_eq!(status, Some(201));
    }
    stop_tracing(strace);
    let syncs = std::fs::read_to_string(&trace).expect("strace output");
    let wal = data.join(slct::storage::WAL_DIR);
    let wal_syncs = syncs
        .lines()
        .filter(|l| l.contains("fdatasync(") && l.contains(&format!("<{}/", wal.display())))
        .count();
    // The warm-up's own sync may land after strace attached.
    assert!(
        (WRITES..=WRITES + 1).contains(&wal_syncs),
        "{wal_syncs} syncs of the write-ahead log for {WRITES} writes\n{syncs}"
    );
    let sm = format!("<{}/", data.join(slct::storage::SM_DIR).display());
    let sm_syncs: Vec<&str> = syncs
        .lines()
        .filter(|l| l.contains(&sm) && (l.contains("fsync(") || l.contains("fdatasync(")))
        .collect();
    assert!(
        sm_syncs.is_empty(),
        "the state machine was synced on the write path: {sm_syncs:#?}"
    );
    let ranges = syncs
        .lines()
        .filter(|l| l.contains(&sm) && l.contains("sync_file_range("))
        .count();
    eprintln!(
        "{WRITES} writes at one connection, on the leader: {wal_syncs} fdatasync of the \
         write-ahead log, 0 fsync/fdatasync of sm/, {ranges} sync_file_range of sm/ by sled"
    );
}

/// A large value is kept in a file of its own under `sm/values/`, and the node syncs
/// that file and the directory before the state machine's commit refers to it
/// (`src/storage/sm/values.rs`, "Durability"): a checkpoint of sled then never points
/// at a value that is not on disk. Every replica applies the writes to its own state
/// machine, so a follower is traced: strace stops the traced node at each of its system
/// calls, and slowing the leader that much on a loaded machine costs it the leadership
/// now and then. Writes are retried through any node until one is acknowledged.
#[tokio::test]
async fn large_values_are_in_files_synced_before_they_are_applied() {
    const STATES: usize = 12;
    const VALUE: usize = 300 << 10;
    let cluster = Cluster::binary(3, &[]);
    let traced = cluster.other_than(cluster.await_leader().await);
    let data = cluster.data(traced).to_path_buf();
    let trace = data.with_extension("strace");
    let strace = trace_syncs(cluster.pid(traced), &trace);

    let big = json!("v".repeat(VALUE));
    for i in 0..STATES {
        cluster.create(&format!("big-{i:02}"), big.clone()).await;
    }
    let values = data
        .join(slct::storage::SM_DIR)
        .join(slct::storage::sm::values::VALUES_DIR);
    // The follower applies what the leader acknowledged a moment later.
    let files = support::eventually(
        Duration::from_secs(30),
        "the traced follower keeps every large value in a file",
        || {
            let files: Vec<String> = std::fs::read_dir(&values)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .filter(|e| e.metadata().is_ok_and(|m| m.len() >= VALUE as u64))
                .map(|e| e.file_name().into_string().unwrap())
                .collect();
            async move { (files.len() >= STATES).then_some(files) }
        },
    )
    .await;
    stop_tracing(strace);

    let syncs = std::fs::read_to_string(&trace).expect("strace output");
    let values = values.to_str().unwrap();
    let data_synced: Vec<&str> = synced_by(&syncs, "fdatasync");
    for file in &files {
        let path = format!("{values}/{file}");
        assert!(
            data_synced.contains(&path.as_str()),
            "the value file {path} was never fdatasynced:\n{syncs}"
        );
    }
    assert!(
        synced_by(&syncs, "fsync").contains(&values),
        "the values directory was never fsynced:\n{syncs}"
    );
}

/// The path of the file or directory of every `call` (`fsync`, `fdatasync`) in
/// strace's output (`-y` prints it after the descriptor: `fsync(21</data/sm/values>) =
/// 0`). While one thread waits in a sync, another traced thread's call splits it into
/// `fsync(21</data/sm/values> <unfinished ...>` and a later `<... fsync resumed>) = 0`
/// (the checkpoint thread's syncs overlap the write-ahead log's), so a call is read
/// from its opening line alone.
fn synced_by<'a>(trace: &'a str, call: &str) -> Vec<&'a str> {
    let opening = format!(" {call}(");
    trace
        .lines()
        .filter_map(|line| {
            let call = line.split_once(opening.as_str())?.1;
            let path = call.split_once('<')?.1;
            Some(path.split_once('>')?.0)
        })
        .collect()
}

/// An `fdatasync` that fails (EIO, injected into the leader by strace) stops the node
/// for good: it acknowledges no write from then on, exits non-zero naming the error,
/// and restarts cleanly from what is on disk. The write-ahead log never retries a
/// failed sync (`src/storage/wal/sync.rs`): only the first one fails here, so a retry
/// would "succeed" over pages the kernel may have dropped. The failing sync is held
/// for 300 ms first: the leader's sync overlaps replication, so the two followers
/// commit the entry meanwhile, and the leader must still not acknowledge it.
#[tokio::test]
async fn a_failed_fdatasync_stops_the_node_which_restarts_cleanly() {
    let mut cluster = Cluster::binary(3, &[]);
    let leader = cluster.await_leader().await;
    cluster.create("before", json!("ok")).await;

    let mut inject = Command::new("strace");
    inject
        .args(["-f", "-e", "trace=fdatasync", "-e"])
        .arg("inject=fdatasync:error=EIO:delay_enter=300000:when=1")
        .args(["-p", &cluster.pid(leader).to_string()]);
    let mut strace = attach(inject);

    let body = json!({ "data": "after the failed sync" });
    for i in 0..5 {
        let status = cluster
            .put_state(leader, &format!("during-{i}"), &body)
            .await;
        assert!(
            !matches!(status, Some(200..=299)),
            "write {i} acknowledged after the failed fdatasync: {status:?}"
        );
    }
    let status = cluster.exit_status(leader, Duration::from_secs(30)).await;
    strace.wait().expect("strace exits with the node");
    let log = cluster.log(leader);
    assert!(
        !status.success(),
        "node {leader} exited with {status}: {log}"
    );
    assert!(
        log.contains("write-ahead log: fdatasync") && log.contains("Input/output error"),
        "the node names the failed fdatasync: {log}"
    );
    let refusal = log.lines().rev().find(|l| l.starts_with("slct:"));
    println!("node {leader}: {status}, {}", refusal.unwrap_or_default());

    let new_leader = cluster.await_leader().await;
    assert_ne!(new_leader, leader);
    cluster.create("after", json!("ok")).await;
    cluster.spawn(leader);
    let state = cluster.await_state(leader, "after").await;
    assert_eq!(state["data"], json!("ok"));
    let state = cluster.await_state(leader, "before").await;
    assert_eq!(state["data"], json!("ok"));
}

/// `kill -9` while a checkpoint is under way, a dozen times, on the leader and on
/// followers, under a steady write load, with checkpoints every 5 ms and the log purged
/// behind snapshots every 100 entries: each node restarts from what its state machine
/// holds and replays the rest of its log, so every acknowledged write is on every node
/// afterwards, and the replicas agree. A kill lands during a checkpoint when a thread of
/// the node was seen in the `fdatasync` of sled's data file (only checkpoints sync
/// `sm/`, see the first test) just before it: at least half of them must.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_during_checkpoints_lose_no_acknowledged_write() {
    const ROUNDS: usize = 12;
    let mut cluster = Cluster::binary(
        3,
        &[
            "--checkpoint-interval",
            "5ms",
            "--snapshot-threshold",
            "100",
        ],
    );
    cluster.await_leader().await;
    let urls: Vec<String> = cluster
        .running()
        .iter()
        .map(|id| cluster.url(*id, ""))
        .collect();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let writers: Vec<_> = (0..2)
        .map(|writer| tokio::spawn(write_until(writer, urls.clone(), stopped.clone())))
        .collect();

    let mut in_checkpoint = 0;
    for round in 0..ROUNDS {
        let leader = cluster.await_leader().await;
        let victim = if round % 2 == 0 {
            leader
        } else {
            cluster.other_than(leader)
        };
        let pid = cluster.pid(victim);
        let data_file = cluster.data(victim).join(slct::storage::SM_DIR).join("db");
        let caught = tokio::task::spawn_blocking(move || kill_in_checkpoint(pid, &data_file))
            .await
            .expect("watcher");
        in_checkpoint += usize::from(caught);
        cluster.kill(victim);
        cluster
            .create(&format!("after-{round}"), json!(round))
            .await;
        cluster.spawn(victim);
        cluster.await_state(victim, &format!("after-{round}")).await;
    }
    stop.send_replace(true);
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await.expect("writer"));
    }

    let applied = cluster.await_same_applied().await;
    let mut replicas = Vec::new();
    for id in cluster.running() {
        replicas.push(all_states(&cluster, id).await);
    }
    assert!(
        replicas.windows(2).all(|w| w[0] == w[1]),
        "the replicas differ at index {applied}"
    );
    let data: std::collections::HashMap<&str, &serde_json::Value> = replicas[0]
        .iter()
        .map(|s| (s["id"].as_str().expect("id"), &s["data"]))
        .collect();
    for (id, n) in &acked {
        let found = data.get(id.as_str()).copied();
        assert_eq!(found, Some(&json!(n)), "acknowledged {id}");
    }
    println!(
        "{} acknowledged writes, all on every node; {in_checkpoint} of {ROUNDS} kills \
         during a checkpoint's fdatasync; replicas agree at index {applied}",
        acked.len()
    );
    assert!(
        in_checkpoint >= ROUNDS / 2,
        "only {in_checkpoint} of {ROUNDS} kills landed during a checkpoint"
    );
}

/// Creates states `w{writer}-{n}` holding `n`, one after another through each node in
/// turn, until `stop`; returns those acknowledged (201) with their `n`.
async fn write_until(
    writer: usize,
    urls: Vec<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<(String, u64)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");
    let mut acked = Vec::new();
    for n in 0u64.. {
        if *stop.borrow() {
            break;
        }
        let id = format!("w{writer}-{n}");
        let url = format!("{}/state/{id}", urls[n as usize % urls.len()]);
        let sent = http.put(url).json(&json!({ "data": n })).send().await;
        if sent.is_ok_and(|r| r.status() == 201) {
            acked.push((id, n));
        }
    }
    acked
}

/// Every state on node `on` (read locally), with its data, in id order.
async fn all_states(cluster: &Cluster, on: u64) -> Vec<serde_json::Value> {
    let mut states = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = "/states?limit=1000&full=true&stale=true".to_owned();
        if let Some(after) = &after {
            path.push_str(&format!("&after={after}"));
        }
        let page = cluster.get_json(on, &path).await;
        states.extend(page["states"].as_array().expect("states").iter().cloned());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return states,
        }
    }
}

/// Watches the threads of process `pid` (every 200 µs, for up to 10 s) and sends it
/// SIGKILL as soon as one is in `fdatasync` of `data_file`, or at the end; whether it
/// was caught in that call.
fn kill_in_checkpoint(pid: u32, data_file: &std::path::Path) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let caught = loop {
        if syncing(pid, data_file) {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    // SAFETY: a plain kill(2) of a child this test started and has not reaped.
    let killed = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    assert_eq!(killed, 0, "kill -9 {pid}");
    caught
}

/// Whether a thread of process `pid` is in `fdatasync` of `file`, from
/// `/proc/{pid}/task/*/syscall`: the call's number, then its arguments (the first is
/// the descriptor).
fn syncing(pid: u32, file: &std::path::Path) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        let Ok(call) = std::fs::read_to_string(task.path().join("syscall")) else {
            return false;
        };
        let mut fields = call.split_whitespace();
        if fields.next() != Some(&libc::SYS_fdatasync.to_string()) {
            return false;
        }
        let fd = fields
            .next()
            .and_then(|fd| u64::from_str_radix(fd.trim_start_matches("0x"), 16).ok());
        fd.and_then(|fd| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok())
            .is_some_and(|path| path == file)
    })
}
