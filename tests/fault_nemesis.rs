//! Nemesis runs against three `slct serve` processes in network namespaces: the short
//! run on every `cargo test`, focused runs of one kind of fault (a crash while
//! installing a snapshot, disk errors), and the soak (`#[ignore]`, docs/testing.md
//! "Fault tests").
//!
//! Both print the history's size, the faults with their evidence, and every check with
//! what it covered; they fail on any violation.

mod fault;

use std::collections::BTreeMap;
use std::time::Duration;

use fault::neighbours::{Load, Neighbours};
use fault::nemesis::{all_faults, shuffled, Fault};
use fault::rig::Rig;
use fault::run::{run, Config};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// One rig at a time: every rig makes the same bridge, namespaces and addresses, and
/// the tests of this file would otherwise run side by side.
static ONE_RIG: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A seed from `SLCT_FAULT_SEED`, else the clock (printed, so a run can be repeated).
fn seed() -> u64 {
    let seed = std::env::var("SLCT_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    eprintln!("SLCT_FAULT_SEED={seed}");
    seed
}

/// Every fault once, in a random order, over 60 s of workload.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_nemesis_run_loses_nothing() {
    let _rig = ONE_RIG.lock().await;
    let seed = seed();
    // A leader whose clock runs ahead pushes log time ahead, and log time then stands
    // still until the real clocks catch up (timers and leases wait): that fault last.
    let mut schedule = shuffled(&all_faults(), &mut StdRng::seed_from_u64(seed));
    schedule.retain(|f| *f != Fault::SkewLeaderAhead);
    schedule.push(Fault::SkewLeaderAhead);
    let finding = run(Config {
        duration: Duration::from_secs(60),
        schedule,
        hold_ms: (1000, 1800),
        skew_secs: 120,
        snapshot_threshold: 100,
        seed,
        neighbours: None,
        disk: None,
    })
    .await;
    assert!(
        finding.report.valid(),
        "the history shows anomalies (seed {seed}):\n{}",
        finding.report
    );
}

/// The soak: every fault (with the crash while installing a snapshot), reshuffled each
/// round, for `SLCT_SOAK_SECS` (default 600).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a 10-minute soak: cargo test --features system-tests --test fault_nemesis -- --ignored --nocapture"]
async fn soak() {
    let _rig = ONE_RIG.lock().await;
    let seed = seed();
    let secs = std::env::var("SLCT_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let mut rng = StdRng::seed_from_u64(seed);
    let rounds = (secs / 30 + 1) as usize;
    let mut every = all_faults();
    every.extend([
        Fault::CrashInSnapshotInstall,
        Fault::DiskEio,
        Fault::DiskFull,
        Fault::DiskFullAtOnce,
    ]);
    // `SLCT_FAULT_SKIP=CrashInSnapshotInstall,DelayAll` leaves faults out (by name).
    let skip = std::env::var("SLCT_FAULT_SKIP").unwrap_or_default();
    every.retain(|f| !skip.split(',').any(|name| name.trim() == format!("{f:?}")));
    eprintln!("faults: {every:?}");
    let schedule = (0..rounds)
        .flat_map(|_| shuffled(&every, &mut rng))
        .collect();
    let finding = run(Config {
        duration: Duration::from_secs(secs),
        schedule,
        hold_ms: (2000, 5000),
        skew_secs: 300,
        snapshot_threshold: 200,
        seed,
        neighbours: None,
        disk: Some(3),
    })
    .await;
    assert!(
        finding.report.valid(),
        "the history shows anomalies (seed {seed}):\n{}",
        finding.report
    );
}

/// Disk errors while nodes run, three of each: the next `fdatasync` or `pwrite64` of a
/// node failing with `EIO` (strace), and node 3's disk full for a few seconds (its data
/// directory on a tmpfs of its own), twice filled gradually and once shrunk at once to
/// what it holds. On `EIO` a node must exit naming the error rather than acknowledge
/// what it could not store; the supervisor starts it again; it catches up; the other
/// two go on meanwhile. A disk filled gradually must refuse writes through every node
/// with 507 `disk_full` and not stop the node, and writes go on once it has room; one
/// full at once may do that or stop the node until it has room. The checks find nothing
/// lost, doubled or stale. Each fault must show it bit, and no node may be left down as
/// damaged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disk_errors_while_running_lose_nothing() {
    let _rig = ONE_RIG.lock().await;
    let seed = seed();
    use Fault::{DiskEio, DiskFull, DiskFullAtOnce};
    let finding = run(Config {
        duration: Duration::from_secs(60),
        schedule: vec![
            DiskFull,
            DiskEio,
            DiskFullAtOnce,
            DiskEio,
            DiskFull,
            DiskEio,
        ],
        hold_ms: (2000, 3000),
        skew_secs: 0,
        snapshot_threshold: 100,
        seed,
        neighbours: None,
        disk: Some(3),
    })
    .await;
    assert!(
        finding.report.valid(),
        "the history shows anomalies (seed {seed}):\n{}",
        finding.report
    );
    let missed: Vec<_> = finding.faults.iter().filter(|f| !f.verified).collect();
    assert!(
        missed.is_empty() && finding.faults.len() >= 4,
        "faults without evidence (seed {seed}): {missed:?}"
    );
    // A start refused on the full disk must not leave the node unable to start once
    // there is room: none may be left down as damaged (sled's unfinished snapshot,
    // `storage::sm`, did that in a soak).
    let refused = finding
        .exits
        .iter()
        .filter(|e| e.message.contains("start node") && e.message.contains("No space left"))
        .count();
    eprintln!("starts refused on the full disk: {refused}");
    assert!(
        finding.exits.iter().all(|e| e.restart_after.is_some()),
        "a node was left down (seed {seed}): {:?}",
        finding.exits
    );
}

/// `kill -9` of a follower while it installs a snapshot from the leader, six times over;
/// the node must restart and catch up, and nothing may be lost. At least two of the
/// kills must land while the install copies the snapshot into place (the nemesis
/// watches the snapshot directory every 2 ms): 6 of 6 did in the runs so far.
///
/// openraft tells a follower, in one step, to install a snapshot and to purge its log
/// up to it. Before `log_store`'s "Snapshot installs" rule, a kill between the two left a
/// node whose purge point was durable but whose install was not: it never restarted
/// ("try to get log at index N but got None"). With that rule turned off, this test
/// fails at the first kill: the node panics on restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_while_installing_snapshot_restarts() {
    let _rig = ONE_RIG.lock().await;
    let seed = seed();
    let finding = run(Config {
        duration: Duration::from_secs(40),
        schedule: vec![Fault::CrashInSnapshotInstall; 6],
        hold_ms: (1000, 1500),
        skew_secs: 0,
        snapshot_threshold: 100,
        seed,
        neighbours: None,
        disk: None,
    })
    .await;
    assert!(
        finding.report.valid(),
        "the history shows anomalies (seed {seed}):\n{}",
        finding.report
    );
    // Each kill that saw the install's copy under way hit the window the fix is for.
    let in_the_window = finding.faults.iter().filter(|f| f.verified).count();
    assert!(
        in_the_window >= 2,
        "only {in_the_window} of {} kills landed during an install (seed {seed})",
        finding.faults.len()
    );
}

/// Not a check but a measurement, kept to show a limit (and its fix, when it comes):
/// the commit latency of writes while every link between nodes carries a delay. openraft
/// gives every AppendEntries request `heartbeat_interval` (100 ms here) to answer,
/// so once the round trip between nodes nears 100 ms nothing commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: cargo test --features system-tests --test fault_nemesis latency -- --ignored --nocapture"]
async fn commit_latency_under_link_delay() {
    let _rig = ONE_RIG.lock().await;
    use fault::rig::Rig;
    use serde_json::json;
    use std::time::Instant;

    let rig = Rig::start(10_000).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");
    for (step, one_way_ms) in [0u64, 10, 20, 25, 30, 0].into_iter().enumerate() {
        let leader = rig.await_leader(Duration::from_secs(30)).await;
        for id in 1..=3 {
            if one_way_ms > 0 {
                rig.delay(id, Duration::from_millis(one_way_ms), Duration::ZERO);
            }
        }
        let mut writes = Vec::new();
        for i in 0..5 {
            let start = Instant::now();
            let url = rig.url(leader, &format!("/state/latency-{step}-{i}"));
            let sent = http.put(url).json(&json!({"data": i})).send().await;
            let status = sent.map_or("timeout".to_owned(), |r| r.status().as_u16().to_string());
            writes.push(format!("{status} in {} ms", start.elapsed().as_millis()));
        }
        let held: u64 = (1..=3).map(|id| rig.undelay(id)).sum();
        eprintln!(
            "{one_way_ms:>3} ms each way at every node (round trip {:>3} ms), {held} packets \
             held: {}",
            one_way_ms * 4,
            writes.join(", ")
        );
    }
}

/// The rig's supervisor (`tests/fault/rig.rs`, "Supervision"): a node that exits by
/// itself (SIGTERM, so it shuts down cleanly) is started again after a back-off and the
/// exit is recorded; a node with a damaged record in its write-ahead log exits naming
/// the damage and stays down, also through `heal_all`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn supervisor_restarts_an_exited_node_and_leaves_a_damaged_one_down() {
    let _rig = ONE_RIG.lock().await;
    let mut rig = Rig::start(100).await;
    let leader = rig.await_leader(Duration::from_secs(30)).await;
    let victim = leader % 3 + 1;
    for i in 0..50 {
        let url = rig.url(leader, &format!("/state/s-{i}"));
        let body = serde_json::json!({ "data": { "mark": format!("SUPERVISEMARK-{i:05}") } });
        let response = rig.http.put(url).json(&body).send().await.expect("create");
        assert!(response.status().is_success(), "create s-{i}");
    }

    rig.terminate(victim);
    let back = eventually(Duration::from_secs(30), || async {
        let exits = rig.exits();
        (exits.len() == 1 && rig.cluster_info(victim).await.is_some()).then_some(exits)
    })
    .await
    .expect("the node exited and was started again");
    assert_eq!(back[0].node, victim);
    assert!(back[0].restart_after.is_some(), "{back:?}");
    eprintln!("exit: {:?}", back[0]);

    // Damage while it is down: one flipped bit in the last marked state's record in its
    // write-ahead log (as `tests/disk_damage.rs` does), with a record after it so the
    // damage does not look like a write torn at the log's end.
    let url = rig.url(leader, "/state/after-the-marks");
    let body = serde_json::json!({ "data": "x" });
    let response = rig.http.put(url).json(&body).send().await.expect("create");
    assert!(response.status().is_success(), "create after-the-marks");
    let seen = rig.url(victim, "/state/after-the-marks?stale=true");
    eventually(Duration::from_secs(30), || async {
        let response = rig.http.get(&seen).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await
    .expect("the restarted node caught up");
    rig.kill(victim);
    let wal = rig.nodes[&victim].data.join(slct::storage::WAL_DIR);
    let needle = b"SUPERVISEMARK-00049";
    let (file, mut bytes) = std::fs::read_dir(&wal)
        .expect("the write-ahead log")
        .flatten()
        .filter_map(|entry| Some((entry.path(), std::fs::read(entry.path()).ok()?)))
        .find(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .expect("a log segment holding the last marked state");
    let at = bytes
        .windows(needle.len())
        .rposition(|w| w == needle)
        .expect("the needle");
    bytes[at + needle.len() - 1] ^= 0x01;
    std::fs::write(&file, bytes).expect("write the log segment");
    rig.start_node(victim);
    let exits = eventually(Duration::from_secs(30), || async {
        let exits = rig.exits();
        (exits.len() == 2).then_some(exits)
    })
    .await
    .expect("the damaged node exited");
    eprintln!("exit: {:?}", exits[1]);
    assert!(exits[1].message.contains("damaged"), "{exits:?}");
    assert_eq!(exits[1].restart_after, None);
    assert!(rig.is_retired(victim));
    rig.heal_all();
    // Left down: no restart within several of the longest back-offs' worth of polls.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!rig.is_running(victim));
    assert_eq!(rig.exits().len(), 2, "{:?}", rig.exits());
}

/// openraft restores a node whose committed vote is its own as leader of that old term.
/// Under openraft 0.9 such a node, cut off, took writes; when the newer leader's snapshot
/// then reached past its log, those entries vanished with no answer, and
/// `node::batcher` held its two in-flight slots for them, so the node, once leader
/// again, wrote nothing while reads worked (the disk-error run found it; design.md §3,
/// "Group commit"). openraft 0.10 refuses writes on a leader that no quorum has
/// acknowledged within its lease. Here: kill the leader, move the others on past a
/// snapshot and purge, restart it cut off so it leads its old term, check that it
/// refuses two writes (503 `no_quorum`) with nothing added to its log, reconnect it,
/// make it lead again, and write through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_led_its_old_term_after_restart_writes_once_it_leads_again() {
    let _rig = ONE_RIG.lock().await;
    let mut rig = Rig::start(100).await;
    let writes = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client");
    let old = rig.await_leader(Duration::from_secs(30)).await;
    rig.kill(old);
    let new = rig.await_leader(Duration::from_secs(30)).await;
    // Snapshots every 100 entries, the log purged behind them: far past `old`'s log.
    for i in 0..300 {
        let url = rig.url(new, &format!("/state/w-{i}"));
        let response = writes
            .put(url)
            .json(&serde_json::json!({"data": i}))
            .send()
            .await;
        assert!(
            response.is_ok_and(|r| r.status().is_success()),
            "write w-{i}"
        );
    }

    rig.isolate(old);
    rig.start_node(old);
    eventually(Duration::from_secs(30), || async {
        let me = rig.cluster_info(old).await?;
        (me["state"] == "Leader").then_some(())
    })
    .await
    .expect("restarted with its own committed vote, it leads its old term at once");
    // Cut off, it has no lease: it refuses writes before proposing them.
    let before = cluster_number(&rig, old, "last_log_index").await;
    for n in 0..2 {
        let url = rig.url(old, &format!("/state/stranded-{n}"));
        let response = writes
            .put(url)
            .json(&serde_json::json!({"data": n}))
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 503, "write {n} on the cut-off leader");
        let body: serde_json::Value = response.json().await.expect("JSON error");
        assert_eq!(body["error"]["code"], "no_quorum", "{body}");
    }
    assert_eq!(
        cluster_number(&rig, old, "last_log_index").await,
        before,
        "nothing added to the cut-off node's log"
    );
    rig.heal_network(old);
    eventually(Duration::from_secs(30), || async {
        let caught_up = cluster_number(&rig, old, "last_applied").await? >= 300;
        (caught_up && rig.leader_seen_by(old).await? == new).then_some(())
    })
    .await
    .expect("reconnected, it follows the new leader and installs its snapshot");

    // Kill whoever leads until `old` wins an election.
    let mut leader = rig.await_leader(Duration::from_secs(30)).await;
    for _ in 0..20 {
        if leader == old {
            break;
        }
        let applied = cluster_number(&rig, leader, "last_applied")
            .await
            .unwrap_or(0);
        rig.kill(leader);
        let next = rig.await_leader(Duration::from_secs(30)).await;
        rig.start_node(leader);
        eventually(Duration::from_secs(30), || async {
            (cluster_number(&rig, leader, "last_applied").await? >= applied).then_some(())
        })
        .await
        .expect("the killed leader restarts and catches up");
        leader = next;
    }
    assert_eq!(leader, old, "the node never won an election in 20 tries");
    for i in 0..5 {
        let url = rig.url(old, &format!("/state/after-{i}"));
        let response = writes
            .put(url)
            .json(&serde_json::json!({"data": i}))
            .send()
            .await;
        let status = response.map(|r| r.status().as_u16());
        assert!(
            matches!(status, Ok(200 | 201)),
            "a write through the node that leads again: {status:?}"
        );
    }
}

/// A number from node `id`'s `GET /cluster`, if it answers.
async fn cluster_number(rig: &Rig, id: u64, field: &str) -> Option<u64> {
    rig.cluster_info(id).await?[field].as_u64()
}

/// Polls `check` every 100 ms until it gives a value or `timeout` passes.
async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Load a neighbour can cause, under the short run's faults: 5,000 idle keep-alive
/// connections to node 1 and 2,000 long-polls parked across the cluster. The checks
/// must pass, node 1 must hold nearly all the idle connections, and no node may use more
/// than 1 GiB. Prints the p99 of the register calls and each node's peak RSS
/// (docs/testing.md, "Fault tests").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "about 70 s and 7,000 sockets: cargo test --features system-tests --test fault_nemesis neighbour -- --ignored --nocapture"]
async fn neighbour_load_under_faults() {
    let _rig = ONE_RIG.lock().await;
    let seed = seed();
    let mut schedule = shuffled(&all_faults(), &mut StdRng::seed_from_u64(seed));
    schedule.retain(|f| *f != Fault::SkewLeaderAhead);
    schedule.push(Fault::SkewLeaderAhead);
    let neighbours = Neighbours {
        idle: [(1, 5000)].into_iter().collect(),
        nofile: BTreeMap::new(),
        polls: 2000,
    };
    let finding = run(Config {
        duration: Duration::from_secs(60),
        schedule,
        hold_ms: (1000, 1800),
        skew_secs: 120,
        snapshot_threshold: 100,
        seed,
        neighbours: Some(neighbours),
        disk: None,
    })
    .await;
    assert!(
        finding.report.valid(),
        "the history shows anomalies (seed {seed}):\n{}",
        finding.report
    );
    let load = finding.load.expect("the load's tally");
    assert!(load.held_peak[&1] >= 4500, "{load:?}");
    for (id, kib) in &finding.peak_rss_kib {
        assert!(*kib < 1 << 20, "node {id} reached {} MiB", kib / 1024);
    }
}

/// A node out of descriptors refuses clearly and goes on: node 3, started with an
/// open-files limit of 1,024 (so `--max-connections` 768), gets 1,200 idle connections.
/// Those beyond its cap are answered 503 `too_many_connections`; it does not exit, and
/// once they are gone it answers and takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_out_of_descriptors_refuses_and_goes_on() {
    let _rig = ONE_RIG.lock().await;
    let rig = Rig::start_with(100, [(3, 1024)].into_iter().collect()).await;
    let addrs = rig
        .nodes
        .iter()
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect();
    let neighbours = Neighbours {
        idle: [(3, 1200)].into_iter().collect(),
        nofile: BTreeMap::new(),
        polls: 0,
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let tally = Load::start(&neighbours, &addrs, until).finish().await;
    eprintln!("node 3 with 1,024 descriptors and 1,200 idle connections: {tally:?}");
    assert!(tally.refused[&3] > 0, "{tally:?}");
    assert!(tally.held_peak[&3] > 0, "{tally:?}");
    assert!(rig.exits().is_empty(), "{:?}", rig.exits());
    let url = rig.url(3, "/state/after-the-load");
    let body = serde_json::json!({ "data": "x" });
    let wrote = eventually(Duration::from_secs(30), || async {
        let response = rig.http.put(&url).json(&body).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    assert!(wrote.is_some(), "node 3 took no write after the load");
}
