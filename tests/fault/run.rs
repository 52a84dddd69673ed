//! One nemesis run: rig up, workload and nemesis side by side, heal, drain, wait for
//! the replicas to agree, check the history, print what was checked.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::checker::linear::describe;
use super::checker::{self, Report};
use super::history::{Call, Op, Outcome, Recorder};
use super::neighbours::{Load, Neighbours, Tally};
use super::nemesis::{Fault, Nemesis, Record};
use super::rig::{Exit, Rig};
use super::workload::{self, Client, CHANS};

/// How to run.
pub struct Config {
    /// How long the workload and nemesis run.
    pub duration: Duration,
    /// Faults in order (the nemesis stops when they run out).
    pub schedule: Vec<Fault>,
    /// How long each fault is held (ms range).
    pub hold_ms: (u64, u64),
    /// Clock skew of the skew faults (s).
    pub skew_secs: i64,
    /// `--snapshot-threshold` of the nodes.
    pub snapshot_threshold: u64,
    /// Seed of every random choice (clients and nemesis).
    pub seed: u64,
    /// Load from neighbours held meanwhile, if any (`super::neighbours`).
    pub neighbours: Option<Neighbours>,
    /// The node with a disk of its own, which [`Fault::DiskFull`] fills, if any.
    pub disk: Option<u64>,
}

/// What a run found.
pub struct Finding {
    /// The checks' findings.
    pub report: Report,
    /// The faults applied.
    pub faults: Vec<Record>,
    /// The history.
    pub ops: Vec<Op>,
    /// Node processes that exited without the nemesis killing them.
    pub exits: Vec<Exit>,
    /// What the neighbours' load saw, if there was one.
    pub load: Option<Tally>,
    /// The largest resident set (KiB) of each node.
    pub peak_rss_kib: BTreeMap<u64, u64>,
    /// p50, p99 and max (ms) of the register calls that succeeded.
    pub latency_ms: (f64, f64, f64),
}

/// Runs once and prints a summary; the caller asserts on the report.
pub async fn run(config: Config) -> Finding {
    let began = Instant::now();
    let watchdog = Watchdog::start(config.duration + overrun(config.duration), config.seed);
    let nofile = config
        .neighbours
        .as_ref()
        .map(|n| n.nofile.clone())
        .unwrap_or_default();
    let rig = Rig::start_full(config.snapshot_threshold, nofile, config.disk).await;
    let setup = began.elapsed();
    watchdog.phase("making the channels");
    make_channels(&rig).await;
    watchdog.phase("workload and nemesis");
    let rec = Recorder::new();
    let until = Instant::now() + config.duration;
    let load = config.neighbours.as_ref().map(|n| {
        let addrs = rig
            .nodes
            .iter()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        Load::start(n, &addrs, until)
    });
    let tasks = spawn_workload(&rig, &rec, &config, until);
    let rng = StdRng::seed_from_u64(config.seed);
    let mut nemesis = Nemesis::new(rig, rng, config.hold_ms, config.skew_secs);
    let faults = nemesis.run(&config.schedule, until).await;
    for task in tasks {
        task.await.expect("workload task");
    }
    let load = match load {
        Some(load) => Some(load.finish().await),
        None => None,
    };
    let workload_done = began.elapsed();
    let rig = nemesis.rig;
    watchdog.phase("drain and agreement after healing");
    let agreement = settle(&rig, &rec, config.seed).await;

    let ops = rec.ops();
    watchdog.phase("the checks");
    let check_began = Instant::now();
    let mut report = checker::check(&ops);
    match agreement {
        Ok(line) => report.checked.push(line),
        Err(line) => report.violation(line),
    }
    node_failures(&rig, &mut report);
    let check_time = check_began.elapsed();
    let exits = rig.exits();
    print_summary(&ops, &faults, &exits, &report);
    let latency_ms = register_latency(&ops);
    let peak_rss_kib = rig.peak_rss_kib();
    eprintln!(
        "register calls that succeeded: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; peak RSS \
         of the nodes (MiB): {:?}",
        latency_ms.0,
        latency_ms.1,
        latency_ms.2,
        peak_rss_kib
            .iter()
            .map(|(id, kib)| (*id, kib / 1024))
            .collect::<BTreeMap<_, _>>()
    );
    if let Some(load) = &load {
        eprintln!("neighbours: {load:?}");
    }
    eprintln!(
        "timings: setup {:.1}s, workload+nemesis until {:.1}s, heal+drain+agree until {:.1}s, \
         checks {:.1}s, total {:.1}s",
        setup.as_secs_f64(),
        workload_done.as_secs_f64(),
        (began.elapsed() - check_time).as_secs_f64(),
        check_time.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    if !report.valid() {
        keep_evidence(&rig, &ops).await;
    }
    Finding {
        report,
        faults,
        ops,
        exits,
        load,
        peak_rss_kib,
        latency_ms,
    }
}

/// How long a run may take beyond its workload's duration: setup, drain and agreement
/// (under two minutes on a loaded 2-core machine so far) and the checks, which grow
/// with the history (489 s after a 60-minute soak).
fn overrun(duration: Duration) -> Duration {
    Duration::from_secs(8 * 60) + duration / 3
}

/// Ends the test binary when a run is still going `limit` after it began, naming the
/// phase it is stuck in: a hung run must fail CI with a reason rather than hold it
/// until the job's time limit (the nodes die with the binary, `PR_SET_PDEATHSIG`).
struct Watchdog {
    done: Arc<AtomicBool>,
    phase: Arc<Mutex<&'static str>>,
}

impl Watchdog {
    fn start(limit: Duration, seed: u64) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(Mutex::new("setting up the rig"));
        let (stop, at) = (done.clone(), phase.clone());
        std::thread::spawn(move || {
            let until = std::time::Instant::now() + limit;
            while std::time::Instant::now() < until {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            let phase = *at.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!(
                "a nemesis run (seed {seed}) is still in {phase} {} s after it began: \
                 ending the test binary",
                limit.as_secs()
            );
            std::process::exit(101);
        });
        Watchdog { done, phase }
    }

    fn phase(&self, phase: &'static str) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// p50, p99 and max (ms) of the creates, reads, updates and deletes that succeeded
/// (calls that wait by design, polls and channel operations, are left out).
fn register_latency(ops: &[Op]) -> (f64, f64, f64) {
    let mut ms: Vec<f64> = ops
        .iter()
        .filter(|op| {
            matches!(
                op.call,
                Call::Create { .. } | Call::Read { .. } | Call::Update { .. } | Call::Delete { .. }
            ) && op.outcome.ok().is_some()
        })
        .map(|op| (op.end - op.start) as f64 / 1000.0)
        .collect();
    if ms.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), at(1.0))
}

/// Starts the clients (see [`workload`]); each stops at `until`.
fn spawn_workload(
    rig: &Rig,
    rec: &Recorder,
    config: &Config,
    until: Instant,
) -> Vec<tokio::task::JoinHandle<()>> {
    let urls: Vec<(u64, String)> = rig.urls().into_iter().collect();
    let client = |p: u32| Client::new(p, urls.clone(), rec.clone(), config.seed);
    let close_at = Instant::now() + config.duration.mul_f64(0.6);
    vec![
        tokio::spawn(workload::register_client(client(0), until)),
        tokio::spawn(workload::register_client(client(1), until)),
        tokio::spawn(workload::register_worker(client(2), until)),
        tokio::spawn(workload::http_sender(client(3), until)),
        tokio::spawn(workload::http_sender(client(4), until)),
        tokio::spawn(workload::http_receiver(client(5), until)),
        tokio::spawn(workload::http_receiver(client(6), until)),
        tokio::spawn(workload::actor_worker(client(7), until)),
        tokio::spawn(workload::closer(client(8), close_at)),
    ]
}

/// How long the drain after healing may take.
const DRAIN_WITHIN: Duration = Duration::from_secs(60);

/// After healing: drains the channels (recorded), waits for the
/// replicas to agree, and records their agreed listing as the history's last op.
async fn settle(rig: &Rig, rec: &Recorder, seed: u64) -> Result<String, String> {
    let Some(leader) = rig.try_leader(Duration::from_secs(30)).await else {
        return Err(
            "after healing, the live nodes did not agree on a leader within 30 s (values \
             left in channels were not drained; the final listing is missing)"
                .into(),
        );
    };
    // Through every node (a follower forwards to the leader), so one that exits
    // meanwhile does not stall the drain.
    let urls = rig.urls().into_iter().collect();
    let mut drainer = Client::new(90, urls, rec.clone(), seed);
    let drained = workload::drain(&mut drainer, Instant::now() + DRAIN_WITHIN).await;
    let (agreement, listing) = converge(rig).await;
    rec.push(Op {
        process: 91,
        node: leader,
        start: rec.now(),
        end: rec.now(),
        call: Call::ListStates,
        outcome: Outcome::Ok {
            status: 200,
            body: json!({ "states": listing }),
        },
    });
    if !drained {
        return Err(format!(
            "the channels were not drained within {} s after healing (leader n{leader} at \
             the start); values may be left in them",
            DRAIN_WITHIN.as_secs()
        ));
    }
    agreement
}

/// A violation for every node whose log shows a panic or a failed start — but for a
/// start refused because the disk is full ([`Fault::DiskFull`]), which is what it should
/// do then.
fn node_failures(rig: &Rig, report: &mut Report) {
    for id in 1..=3 {
        let log = rig.log(id);
        for (sign, what) in [
            ("panicked at", "panicked"),
            ("slct: start node", "cannot start"),
        ] {
            let failure = log.match_indices(sign).find_map(|(at, _)| {
                let line = log[at..].lines().next().unwrap_or_default();
                if line.contains("No space left on device") {
                    return None;
                }
                let end = log[at..]
                    .char_indices()
                    .nth(600)
                    .map_or(log.len(), |(i, _)| at + i);
                Some(&log[at..end])
            });
            if let Some(excerpt) = failure {
                report.violation(format!("node {id} {what}: {excerpt}"));
            }
        }
    }
}

/// Keeps the node logs, the history, and each live node's `GET /cluster` and thread
/// stacks under `target/tmp/fault-runs/`.
async fn keep_evidence(rig: &Rig, ops: &[Op]) {
    let kept = rig.keep_logs();
    for id in 1..=3 {
        if let Some(info) = rig.cluster_info(id).await {
            let _ = std::fs::write(kept.join(format!("n{id}.cluster.json")), info.to_string());
        }
        if let Some(stacks) = rig.stacks(id) {
            let _ = std::fs::write(kept.join(format!("n{id}.stacks.txt")), stacks);
        }
    }
    let history: String = ops
        .iter()
        .enumerate()
        .map(|(i, op)| format!("#{i} {}\n", describe(op)))
        .collect();
    std::fs::write(kept.join("history.txt"), history).expect("write history");
    eprintln!("node logs and history kept in {}", kept.display());
}

/// Makes the channels with their capacities (retrying while there is no leader).
async fn make_channels(rig: &Rig) {
    for (name, capacity) in CHANS {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let leader = rig.await_leader(Duration::from_secs(20)).await;
            let url = rig.url(leader, &format!("/chan/{name}"));
            let made = rig
                .http
                .put(url)
                .json(&json!({ "capacity": capacity }))
                .send()
                .await
                .ok()
                .map(|r| r.status());
            if matches!(made, Some(StatusCode::OK | StatusCode::CREATED)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "cannot make channel {name}: {made:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Every page of a stale listing of node `id`.
async fn listing(rig: &Rig, id: u64, what: &str) -> Option<Vec<Value>> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = rig.url(id, &format!("/{what}?stale=true&full=true&limit=1000"));
        if let Some(a) = &after {
            url.push_str(&format!("&after={}", percent(a)));
        }
        let page: Value = rig.http.get(url).send().await.ok()?.json().await.ok()?;
        all.extend(page[what].as_array()?.iter().cloned());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return Some(all),
        }
    }
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `last_applied` of every node.
async fn applied(rig: &Rig) -> Option<BTreeMap<u64, u64>> {
    let mut all = BTreeMap::new();
    for id in 1..=3 {
        all.insert(id, rig.cluster_info(id).await?["last_applied"].as_u64()?);
    }
    Some(all)
}

/// Waits (up to 60 s) until all replicas have the same `last_applied`, unchanged across
/// reading their listings, and identical listings of states and channels. The line
/// for the report, or why agreement was not reached; and the agreed state listing.
async fn converge(rig: &Rig) -> (Result<String, String>, Vec<Value>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(before) = applied(rig).await else {
            continue;
        };
        let index = before[&1];
        if before.values().any(|a| *a != index) {
            last = format!("last_applied differs: {before:?}");
            continue;
        }
        let mut states = Vec::new();
        let mut chans = Vec::new();
        for id in 1..=3 {
            states.push(listing(rig, id, "states").await);
            chans.push(listing(rig, id, "chans").await);
        }
        if applied(rig).await.as_ref() != Some(&before) {
            last = "still applying".into();
            continue;
        }
        let (Some(s1), Some(c1)) = (&states[0], &chans[0]) else {
            continue;
        };
        if states.iter().all(|s| s.as_ref() == Some(s1))
            && chans.iter().all(|c| c.as_ref() == Some(c1))
        {
            let line = format!(
                "replicas agree: all at last_applied {index}, identical listings of {} states \
                 and {} channels",
                s1.len(),
                c1.len()
            );
            return (Ok(line), s1.clone());
        }
        last = format!("listings differ at last_applied {index}");
    }
    let listing = listing(rig, 1, "states").await.unwrap_or_default();
    (
        Err(format!("replicas did not agree within 60 s: {last}")),
        listing,
    )
}

/// Prints the history's size by kind and outcome, the faults, the exits the rig's
/// supervisor saw, and the report.
fn print_summary(ops: &[Op], faults: &[Record], exits: &[Exit], report: &Report) {
    let mut by_kind: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    for op in ops {
        let kind = format!("{:?}", op.call);
        let kind = kind.split([' ', '{']).next().unwrap_or_default().to_owned();
        let slot = match op.outcome {
            Outcome::Ok { .. } => 0,
            Outcome::Fail { .. } => 1,
            Outcome::Unknown(_) => 2,
        };
        by_kind.entry(kind).or_default()[slot] += 1;
    }
    let mut unknown: BTreeMap<String, usize> = BTreeMap::new();
    for op in ops {
        if let Outcome::Unknown(why) = &op.outcome {
            let why = why.split(':').next().unwrap_or_default().to_owned();
            *unknown.entry(why).or_default() += 1;
        }
    }
    eprintln!("history: {} operations (ok / failed / unknown):", ops.len());
    for (kind, [ok, fail, unknown]) in &by_kind {
        eprintln!("  {kind:<10} {ok:>6} / {fail:>6} / {unknown:>6}");
    }
    eprintln!("  unknown outcomes by cause: {unknown:?}");
    let verified = faults.iter().filter(|f| f.verified).count();
    eprintln!(
        "faults: {} injected, {verified} with evidence they took effect:",
        faults.len()
    );
    for f in faults {
        let mark = if f.verified { "ok " } else { "?? " };
        eprintln!("  {mark}{:?}: {}", f.fault, f.effect);
    }
    let restarted = exits.iter().filter(|e| e.restart_after.is_some()).count();
    eprintln!(
        "supervisor: {} exits not by kill -9 (on their own, or on a disk fault), {restarted} \
         restarted, {} left down (damaged data):",
        exits.len(),
        exits.len() - restarted
    );
    for e in exits {
        eprintln!("  {:6.1}s n{} {}: {}", e.at, e.node, e.status, e.message);
    }
    eprintln!("checks:\n{report}");
}
