//! The nemesis: faults one after another over a run, each held a few seconds and
//! healed, each with evidence that it took effect.
//!
//! A schedule is a list of [`Fault`]s; [`all_faults`] has every kind once, and the
//! soak runs one shuffle of it after another. Each fault returns a [`Record`] saying what was
//! done to which node and what showed it bit: a new leader elected, a node not
//! answering, firewall or qdisc drop counters, the leader's log time off the real clock,
//! a snapshot transfer caught mid-way by `kill -9`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::rig::{run, Exit, Rig};

/// When a snapshot crash kills the node.
#[derive(Clone, Copy, Debug)]
pub enum Moment {
    /// While the snapshot's bytes cross its link (before the chunk has fully arrived).
    OnTheWire,
    /// While the node installs the snapshot it received.
    Installing,
}

/// Bytes through a node's link (both directions, both ends) after which a snapshot is
/// taken to be on the wire: far more than the appends and heartbeats of the moment.
const WIRE_BYTES: u64 = 48 * 1024;

/// No fault starts closer than this to the end of the run.
const LAST_START: Duration = Duration::from_secs(3);
/// Bytes [`Fault::DiskFull`] leaves free: below the reserve of the tmpfs it fills (at
/// least 32 MiB, `storage::space`), above what the node may still write with client
/// writes refused in a hold (the log's next 8 MiB segment, checkpoints).
const DISK_ROOM: u64 = 24 << 20;

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` a node (the leader half the time), restart it later.
    Kill,
    /// SIGSTOP the leader, SIGCONT later.
    PauseLeader,
    /// Cut one follower off from the others.
    IsolateFollower,
    /// Split 2|1 with the leader in the minority.
    IsolateLeader,
    /// The leader's outgoing packets to the others are lost; incoming arrive.
    MuteLeader,
    /// 30% packet loss between one node and the others.
    Lossy,
    /// A slow link (rate-limited, queueing) on the leader.
    SlowLeader,
    /// 120 ± 40 ms latency each way and 5% loss on the leader's links.
    DelayLeader,
    /// 25 ± 5 ms latency each way at every node (about 100 ms round trips).
    DelayAll,
    /// The leader's clock minutes ahead.
    SkewLeaderAhead,
    /// A follower's clock minutes behind, then the leader cut off so another leads.
    SkewBehindThenElect,
    /// A follower kept behind until it needs a snapshot, then `kill -9` while the
    /// snapshot's bytes are on the wire to it.
    CrashInSnapshot,
    /// A follower killed until it needs a snapshot and restarted over a slow link, then
    /// `kill -9` again while it installs the snapshot it received (the node must restart:
    /// see "Snapshot installs" in `src/raft/log_store.rs`).
    CrashInSnapshotInstall,
    /// The next `fdatasync` or `pwrite64` of a node (the leader half the time) fails with
    /// `EIO`: the node must exit naming the error, and the supervisor starts it again.
    DiskEio,
    /// The disk of the node that has one of its own fills gradually to below its
    /// reserve ([`Rig::fill_disk_gradually`]) for a while, then has room again: writes
    /// through every node must be refused 507 `disk_full` meanwhile, the node must not
    /// exit, and writes must go on once there is room.
    DiskFull,
    /// That disk is full at once ([`Rig::fill_disk`]: no byte free) for a while, then
    /// has room again: the node may meet `ENOSPC` before it notices (then it exits and
    /// the supervisor starts it again once there is room) or refuse writes first (507s,
    /// no exit); either way it must catch up.
    DiskFullAtOnce,
}

/// Every fault once.
pub fn all_faults() -> Vec<Fault> {
    use Fault::*;
    vec![
        Kill,
        PauseLeader,
        IsolateFollower,
        IsolateLeader,
        MuteLeader,
        Lossy,
        SlowLeader,
        DelayLeader,
        DelayAll,
        CrashInSnapshot,
        SkewBehindThenElect,
        SkewLeaderAhead,
    ]
}

/// What one fault did.
#[derive(Debug)]
pub struct Record {
    /// The fault.
    pub fault: Fault,
    /// Seconds into the run it began and ended.
    pub span: (f64, f64),
    /// What was done and what showed it took effect.
    pub effect: String,
    /// Whether that evidence was seen.
    pub verified: bool,
}

/// Wall-clock Unix ms of the host.
fn host_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The nemesis's own client for probes (not part of the history).
pub struct Nemesis {
    /// The rig.
    pub rig: Rig,
    rng: StdRng,
    began: std::time::Instant,
    hold: (u64, u64),
    probes: u64,
    /// How far clocks are skewed (s).
    pub skew_secs: i64,
}

impl Nemesis {
    /// A nemesis over `rig`, holding each fault `hold` ms (a range).
    pub fn new(rig: Rig, rng: StdRng, hold: (u64, u64), skew_secs: i64) -> Nemesis {
        Nemesis {
            rig,
            rng,
            began: std::time::Instant::now(),
            hold,
            probes: 0,
            skew_secs,
        }
    }

    fn secs(&self) -> f64 {
        self.began.elapsed().as_secs_f64()
    }

    async fn hold(&mut self) {
        let ms = self.rng.gen_range(self.hold.0..=self.hold.1);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    async fn leader(&self) -> Option<u64> {
        self.rig.try_leader(Duration::from_secs(10)).await
    }

    fn follower_of(&mut self, leader: u64) -> u64 {
        let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
        *others.choose(&mut self.rng).expect("two followers")
    }

    /// Waits up to `timeout` for a leader other than `old` that both other nodes name.
    async fn new_leader_without(&self, old: u64, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        let others: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
        while Instant::now() < deadline {
            let a = self.rig.leader_seen_by(others[0]).await;
            let b = self.rig.leader_seen_by(others[1]).await;
            if let (Some(a), Some(b)) = (a, b) {
                if a == b && a != old {
                    return Some(a);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Creates a probe state through node `id`, else through any node that answers,
    /// trying for up to 3 s; its log time (`created_at`).
    async fn probe(&mut self, id: u64) -> Option<u64> {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut via = id;
        while Instant::now() < deadline {
            if let Some(at) = self.probe_once(via).await {
                return Some(at);
            }
            via = via % 3 + 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// One probe write through node `id`.
    async fn probe_once(&mut self, id: u64) -> Option<u64> {
        self.probe_with(id, 0).await
    }

    /// Creates a fresh probe state through node `id` carrying `pad` bytes of data (none
    /// when 0); the answer, `None` without one.
    async fn probe_write(&mut self, id: u64, pad: usize) -> Option<reqwest::Response> {
        self.probes += 1;
        let url = self.rig.url(id, &format!("/state/p-{}", self.probes));
        let data = match pad {
            0 => json!({ "n": self.probes }),
            _ => json!({ "n": self.probes, "pad": "x".repeat(pad) }),
        };
        let body = json!({ "data": data });
        self.rig.http.put(url).json(&body).send().await.ok()
    }

    /// One probe write through node `id`: its status and error code, `None` without an
    /// answer.
    async fn probe_answer(&mut self, id: u64) -> Option<(u16, String)> {
        let response = self.probe_write(id, 0).await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Some((
            status,
            body["error"]["code"].as_str().unwrap_or("").to_owned(),
        ))
    }

    /// One probe write through each node: whether every answer was 507 `disk_full`.
    async fn refused_everywhere(&mut self) -> bool {
        let mut refused = true;
        for id in 1..=3 {
            let answer = self.probe_answer(id).await;
            refused &= answer.is_some_and(|(status, code)| status == 507 && code == "disk_full");
        }
        refused
    }

    /// One probe write through node `id` carrying `pad` bytes of data.
    async fn probe_with(&mut self, id: u64, pad: usize) -> Option<u64> {
        let response = self.probe_write(id, pad).await?;
        let body: Value = response.json().await.ok()?;
        body["created_at"].as_u64()
    }

    /// Packets dropped by node `id`'s firewall so far.
    fn firewall_drops(&self, id: u64) -> u64 {
        let ns = &self.rig.nodes[&id].ns;
        let listing = run(
            "ip",
            &["netns", "exec", ns, "nft", "list", "table", "inet", "fault"],
        );
        counted(&listing, "packets ")
    }

    /// Applies `fault`, holds it, heals it.
    pub async fn apply(&mut self, fault: Fault) -> Record {
        let start = self.secs();
        let (effect, verified) = match fault {
            Fault::Kill => self.kill().await,
            Fault::PauseLeader => self.pause_leader().await,
            Fault::IsolateFollower => self.isolate_follower().await,
            Fault::IsolateLeader => self.isolate_leader().await,
            Fault::MuteLeader => self.mute_leader().await,
            Fault::Lossy => self.lossy().await,
            Fault::SlowLeader => self.slow_leader().await,
            Fault::DelayLeader => self.delay_leader().await,
            Fault::DelayAll => self.delay_all().await,
            Fault::SkewLeaderAhead => self.skew_leader_ahead().await,
            Fault::SkewBehindThenElect => self.skew_behind_then_elect().await,
            Fault::CrashInSnapshot => self.crash_in_snapshot(Moment::OnTheWire).await,
            Fault::CrashInSnapshotInstall => self.crash_in_snapshot(Moment::Installing).await,
            Fault::DiskEio => self.disk_eio().await,
            Fault::DiskFull => self.disk_full().await,
            Fault::DiskFullAtOnce => self.disk_full_at_once().await,
        };
        Record {
            fault,
            span: (start, self.secs()),
            effect,
            verified,
        }
    }

    async fn kill(&mut self) -> (String, bool) {
        let leader = self.leader().await;
        let target = match leader {
            Some(l) if self.rng.gen_bool(0.5) => l,
            _ => self.rng.gen_range(1..=3),
        };
        self.rig.kill(target);
        let down = self.rig.cluster_info(target).await.is_none();
        self.hold().await;
        self.rig.start_node(target);
        let back = self.rig.try_leader(Duration::from_secs(15)).await.is_some();
        let role = if leader == Some(target) {
            " (leader)"
        } else {
            ""
        };
        (
            format!("kill -9 n{target}{role}; unreachable: {down}; restarted, cluster agreed again: {back}"),
            down && back,
        )
    }

    async fn pause_leader(&mut self) -> (String, bool) {
        let Some(leader) = self.leader().await else {
            return ("no leader to pause".into(), false);
        };
        self.rig.pause(leader);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = self.rig.process_state(leader);
        let silent = self.rig.cluster_info(leader).await.is_none();
        let new = self
            .new_leader_without(leader, Duration::from_secs(5))
            .await;
        self.hold().await;
        self.rig.resume(leader);
        (
            format!(
                "SIGSTOP leader n{leader}; process state {state:?}, silent: {silent}; others \
                 elected {new:?}; SIGCONT"
            ),
            state == Some('T') && silent && new.is_some(),
        )
    }

    async fn isolate_follower(&mut self) -> (String, bool) {
        let Some(leader) = self.leader().await else {
            return ("no leader".into(), false);
        };
        let target = self.follower_of(leader);
        self.rig.isolate(target);
        self.hold().await;
        let drops = self.firewall_drops(target);
        self.rig.heal_network(target);
        (
            format!("isolated follower n{target}; {drops} packets dropped"),
            drops > 0,
        )
    }

    async fn isolate_leader(&mut self) -> (String, bool) {
        let Some(leader) = self.leader().await else {
            return ("no leader".into(), false);
        };
        self.rig.isolate(leader);
        let new = self
            .new_leader_without(leader, Duration::from_secs(5))
            .await;
        self.hold().await;
        let drops = self.firewall_drops(leader);
        self.rig.heal_network(leader);
        (
            format!(
                "split 2|1, leader n{leader} in the minority; majority elected {new:?}; \
                 {drops} packets dropped"
            ),
            new.is_some() && drops > 0,
        )
    }

    async fn mute_leader(&mut self) -> (String, bool) {
        let Some(leader) = self.leader().await else {
            return ("no leader".into(), false);
        };
        self.rig.mute(leader);
        let new = self
            .new_leader_without(leader, Duration::from_secs(5))
            .await;
        self.hold().await;
        let drops = self.firewall_drops(leader);
        self.rig.heal_network(leader);
        (
            format!(
                "one-way loss: leader n{leader}'s packets to the others dropped; others \
                 elected {new:?}; {drops} packets dropped"
            ),
            new.is_some() && drops > 0,
        )
    }

    async fn lossy(&mut self) -> (String, bool) {
        let target = self.rng.gen_range(1..=3);
        self.rig.lossy(target, 30);
        self.hold().await;
        let drops = self.firewall_drops(target);
        self.rig.heal_network(target);
        (
            format!("30% packet loss on n{target}'s links; {drops} packets dropped"),
            drops > 0,
        )
    }

    async fn slow_leader(&mut self) -> (String, bool) {
        let Some(leader) = self.leader().await else {
            return ("no leader".into(), false);
        };
        self.rig.slow(leader, 500, 200);
        self.hold().await;
        let stats = self.rig.qdisc_stats(leader);
        self.rig.heal_network(leader);
        let throttled = counted(&stats, "overlimits ") > 0 || counted(&stats, "dropped ") > 0;
        (
            format!(
                "slow link on leader n{leader} (500 kbit/s, 200 ms queue); {}",
                stats.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
            throttled,
        )
    }

    async fn delay_leader(&mut self) -> (String, bool) {
        let Some(leader) = self.leader().await else {
            return ("no leader".into(), false);
        };
        let quick = self.timed_probe(leader).await;
        self.rig.lossy(leader, 5);
        self.rig.delay(
            leader,
            Duration::from_millis(120),
            Duration::from_millis(40),
        );
        let slow = self.timed_probe(leader).await;
        self.hold().await;
        let held = self.rig.undelay(leader);
        let drops = self.firewall_drops(leader);
        self.rig.heal_network(leader);
        let ms = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{} ms", d.as_millis()));
        (
            format!(
                "120 ± 40 ms each way and 5% loss on leader n{leader}'s links; {held} packets \
                 delayed, {drops} dropped; a write took {} before, {} during",
                ms(quick),
                ms(slow)
            ),
            held > 0,
        )
    }

    async fn delay_all(&mut self) -> (String, bool) {
        let leader = self.leader().await.unwrap_or(1);
        for id in 1..=3 {
            self.rig
                .delay(id, Duration::from_millis(25), Duration::from_millis(5));
        }
        let slow = self.timed_probe(leader).await;
        self.hold().await;
        let held: u64 = (1..=3).map(|id| self.rig.undelay(id)).sum();
        let took = slow.map_or("failed".into(), |d| format!("took {} ms", d.as_millis()));
        (
            format!(
                "25 ± 5 ms each way at every node (round trips about 100 ms); {held} packets \
                 delayed; a write {took}"
            ),
            held > 0,
        )
    }

    /// How long a probe write through node `id` takes, if it succeeds.
    async fn timed_probe(&mut self, id: u64) -> Option<Duration> {
        let start = Instant::now();
        self.probe_once(id).await?;
        Some(start.elapsed())
    }

    async fn skew_leader_ahead(&mut self) -> (String, bool) {
        let Some(leader) = self.leader().await else {
            return ("no leader".into(), false);
        };
        let secs = self.skew_secs;
        self.rig.skew(leader, secs);
        // libfaketime re-reads the offset within a second: probe until it shows.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut ahead = 0i64;
        while Instant::now() < deadline {
            if let Some(at) = self.probe(leader).await {
                ahead = at as i64 - host_ms() as i64;
                if ahead > secs * 1000 / 2 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.hold().await;
        self.rig.skew(leader, 0);
        (
            format!(
                "leader n{leader}'s clock +{secs} s; a write through it carried log time \
                 {:.1} s ahead of the host clock",
                ahead as f64 / 1000.0
            ),
            ahead > secs * 1000 / 2,
        )
    }

    async fn skew_behind_then_elect(&mut self) -> (String, bool) {
        let Some(leader) = self.leader().await else {
            return ("no leader".into(), false);
        };
        let target = self.follower_of(leader);
        let secs = self.skew_secs;
        self.rig.skew(target, -secs);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let before = self.probe(leader).await;
        // Cut the leader off until someone else leads; with luck the skewed node.
        self.rig.isolate(leader);
        let new = self
            .new_leader_without(leader, Duration::from_secs(5))
            .await;
        let after = match new {
            Some(n) => self.probe(n).await,
            None => None,
        };
        self.hold().await;
        self.rig.heal_network(leader);
        self.rig.skew(target, 0);
        let forward = matches!((before, after), (Some(b), Some(a)) if a >= b);
        (
            format!(
                "n{target}'s clock -{secs} s; leader n{leader} cut off; new leader {new:?} \
                 (skewed one leads: {}); log time before {before:?}, after {after:?}",
                new == Some(target)
            ),
            new.is_some() && forward,
        )
    }

    async fn crash_in_snapshot(&mut self, moment: Moment) -> (String, bool) {
        let Some(leader) = self.leader().await else {
            return ("no leader".into(), false);
        };
        let target = self.follower_of(leader);
        let applied = |info: Option<Value>| info.and_then(|i| i["last_applied"].as_u64());
        let installs = |rig: &Rig| rig.log(target).matches("installed snapshot").count();
        let installed_before = installs(&self.rig);
        let behind = applied(self.rig.cluster_info(target).await).unwrap_or(0);
        // To catch the install, the follower is down while the others move on: the
        // leader's appends to it then fail at once, and the leader purges its log. An
        // isolated follower's appends hang instead, and openraft keeps the log they need,
        // so once healed it mostly catches up from the log, with no snapshot to install.
        let (cut_off, back) = match moment {
            Moment::OnTheWire => {
                self.rig.isolate(target);
                ("isolated", "healed over a slow link")
            }
            Moment::Installing => {
                self.rig.kill(target);
                ("killed", "restarted at full speed")
            }
        };
        let gap = self.rig.snapshot_threshold() * 3;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut ahead = behind;
        while Instant::now() < deadline && ahead <= behind + gap {
            // A kilobyte each, so the snapshot takes a while on the wire.
            let via = self.rig.leader_seen_by(leader).await.unwrap_or(leader);
            self.probe_with(via, 1024).await;
            ahead = applied(self.rig.cluster_info(via).await).unwrap_or(ahead);
        }
        match moment {
            // A slow link so the transfer takes a while, then let it through.
            Moment::OnTheWire => {
                self.rig.slow(target, 1000, 2000);
                self.rig.heal_network_rules(target);
            }
            // At full speed: over the slow link, 1 MiB chunks of a growing snapshot
            // took longer than the watch.
            Moment::Installing => self.rig.start_node(target),
        }
        let caught = self
            .watch_transfer(target, moment, Duration::from_secs(10))
            .await;
        self.rig.kill(target);
        self.rig.heal_network(target);
        self.rig.start_node(target);
        // It must catch up afterwards: to where the others were when it was killed.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut caught_up = None;
        while Instant::now() < deadline && caught_up.is_none() {
            let mine = applied(self.rig.cluster_info(target).await).unwrap_or(0);
            if mine >= ahead {
                caught_up = Some(mine);
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let installed = installs(&self.rig) - installed_before;
        (
            format!(
                "n{target} {cut_off} at applied index {behind} while the others went on to \
                 {ahead}; {back}; kill -9 during the transfer: {}; restarted, \
                 reached index {ahead}: {}; snapshots installed meanwhile: {installed}",
                caught
                    .as_deref()
                    .unwrap_or("no transfer file seen (killed anyway)"),
                caught_up.map_or("no".into(), |m| format!("yes ({m})"))
            ),
            caught.is_some() && caught_up.is_some() && installed > 0,
        )
    }

    /// The exits of node `id` the supervisor recorded after the first `from` exits.
    fn exits_of(&self, id: u64, from: usize) -> Vec<Exit> {
        let exits = self.rig.exits();
        exits
            .get(from..)
            .unwrap_or_default()
            .iter()
            .filter(|e| e.node == id)
            .cloned()
            .collect()
    }

    /// Waits up to `timeout` until node `id` runs again and its `last_applied` reaches
    /// `index`; the index it reached.
    async fn caught_up(&self, id: u64, index: u64, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let info = self.rig.cluster_info(id).await;
            if let Some(mine) = info.and_then(|i| i["last_applied"].as_u64()) {
                if mine >= index {
                    return Some(mine);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// The highest `last_applied` among the nodes other than `id` that answer.
    async fn applied_by_others(&self, id: u64) -> u64 {
        let mut top = 0;
        for other in (1..=3).filter(|o| *o != id) {
            let info = self.rig.cluster_info(other).await;
            top = top.max(info.and_then(|i| i["last_applied"].as_u64()).unwrap_or(0));
        }
        top
    }

    async fn disk_eio(&mut self) -> (String, bool) {
        let leader = self.leader().await;
        let target = match leader {
            Some(l) if self.rng.gen_bool(0.5) => l,
            _ => self.rng.gen_range(1..=3),
        };
        let syscall = if self.rng.gen_bool(0.5) {
            "fdatasync"
        } else {
            "pwrite64"
        };
        let from = self.rig.exits().len();
        let Some(mut strace) = self.rig.inject_eio(target, syscall) else {
            return (format!("strace could not attach to n{target}"), false);
        };
        // The workload keeps writing, so the node soon makes the call that fails.
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut exit = None;
        while exit.is_none() && Instant::now() < deadline {
            exit = self.exits_of(target, from).into_iter().next();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if exit.is_none() {
            // SAFETY: kill(2) on our own child, not yet reaped: strace detaches on SIGINT.
            unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
        }
        let _ = strace.wait();
        let index = self.applied_by_others(target).await;
        let back = self.caught_up(target, index, Duration::from_secs(30)).await;
        let role = if leader == Some(target) {
            " (leader)"
        } else {
            ""
        };
        let named = exit
            .as_ref()
            .is_some_and(|e| e.message.contains("Input/output error"));
        (
            format!(
                "EIO on n{target}{role}'s next {syscall}; {}; started again by the \
                 supervisor and caught up to index {index}: {}",
                exit.as_ref()
                    .map_or("it did not exit within 15 s".into(), |e| format!(
                        "it exited ({}): {}",
                        e.status, e.message
                    )),
                back.map_or("no".into(), |m| format!("yes ({m})"))
            ),
            named && back.is_some(),
        )
    }

    /// [`Fault::DiskFull`]: the evidence is 507s through every node, no exit, and writes
    /// through every node once the room is back.
    async fn disk_full(&mut self) -> (String, bool) {
        let Some(target) = self.rig.disk_node() else {
            return ("no node has a disk of its own".into(), false);
        };
        let leader = self.leader().await;
        let from = self.rig.exits().len();
        let size = self.rig.fill_disk_gradually(target, DISK_ROOM);
        // The node notices within its watch's 100 ms, the leader on its next answer.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut refused = self.refused_everywhere().await;
        while !refused && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            refused = self.refused_everywhere().await;
        }
        self.hold().await;
        let still_refused = self.refused_everywhere().await;
        let exits = self.exits_of(target, from);
        self.rig.free_disk(target);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut resumed = Vec::new();
        for id in 1..=3 {
            while Instant::now() < deadline {
                if let Some((200..=299, _)) = self.probe_answer(id).await {
                    resumed.push(id);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let exits = exits.into_iter().chain(self.exits_of(target, from)).count();
        let role = if leader == Some(target) {
            " (leader)"
        } else {
            ""
        };
        (
            format!(
                "n{target}{role}'s disk filled gradually to {} KiB free of {} MiB; writes \
                 through every node refused 507 disk_full: {refused}, still at the end of \
                 the hold: {still_refused}; exits: {exits}; room given back, writes went on \
                 through {resumed:?}",
                DISK_ROOM / 1024,
                size >> 20
            ),
            refused && still_refused && exits == 0 && resumed.len() == 3,
        )
    }

    /// [`Fault::DiskFullAtOnce`]: the evidence is an exit naming `ENOSPC` or 507s through
    /// every node, and the node caught up once the room is back.
    async fn disk_full_at_once(&mut self) -> (String, bool) {
        let Some(target) = self.rig.disk_node() else {
            return ("no node has a disk of its own".into(), false);
        };
        let leader = self.leader().await;
        let from = self.rig.exits().len();
        let full = |rig: &Rig| rig.log(target).matches("No space left on device").count();
        let full_before = full(&self.rig);
        let held = self.rig.fill_disk(target);
        // Until the node meets the full disk (a write that needs a new block; 1 KiB
        // probes through the others push the log on) or writes are refused.
        let other = (1..=3).find(|id| *id != target).expect("another node");
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut refused = false;
        while full(&self.rig) == full_before && !refused && Instant::now() < deadline {
            self.probe_with(other, 1024).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            refused = self.refused_everywhere().await;
        }
        self.hold().await;
        let enospc = full(&self.rig) - full_before;
        let exits = self.exits_of(target, from);
        self.rig.free_disk(target);
        // Down by now if it exited: the supervisor starts it within its back-off.
        let index = self.applied_by_others(target).await;
        let back = self.caught_up(target, index, Duration::from_secs(30)).await;
        let role = if leader == Some(target) {
            " (leader)"
        } else {
            ""
        };
        (
            format!(
                "n{target}{role}'s disk full at once at {} KiB; {enospc} log lines name \
                 ENOSPC; writes through every node refused 507 disk_full: {refused}; exits \
                 meanwhile: {}; room given back, n{target} caught up to index {index}: {}",
                held / 1024,
                if exits.is_empty() {
                    "none".to_owned()
                } else {
                    exits
                        .iter()
                        .map(|e| format!("{} ({})", e.message, e.status))
                        .collect::<Vec<_>>()
                        .join("; ")
                },
                back.map_or("no".into(), |m| format!("yes ({m})"))
            ),
            (enospc > 0 || refused) && back.is_some(),
        )
    }

    /// Polls every 2 ms until node `id` is at `moment` of a snapshot transfer; what
    /// showed it, or `None` after `timeout`.
    async fn watch_transfer(&self, id: u64, moment: Moment, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let dir = self.rig.snapshot_dir(id);
        let sent = |rig: &Rig| counted(&rig.qdisc_stats(id), "Sent ");
        let before = sent(&self.rig);
        while Instant::now() < deadline {
            let files: Vec<String> = std::fs::read_dir(&dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            let seen = |prefix: &str| files.iter().find(|f| f.starts_with(prefix)).cloned();
            match moment {
                Moment::OnTheWire => {
                    let moved = sent(&self.rig).saturating_sub(before);
                    if moved > WIRE_BYTES {
                        return Some(format!("{moved} bytes through its link, no file yet"));
                    }
                    if let Some(file) = seen("recv") {
                        return Some(format!("{file} (all bytes had arrived)"));
                    }
                }
                Moment::Installing => {
                    if let Some(file) = seen("install") {
                        return Some(file);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        None
    }

    /// Runs the faults of `schedule` in order until it ends or `until` is less than
    /// [`LAST_START`] away; then heals everything.
    pub async fn run(&mut self, schedule: &[Fault], until: Instant) -> Vec<Record> {
        let mut records = Vec::new();
        for &fault in schedule {
            if Instant::now() + LAST_START > until {
                break;
            }
            let record = self.apply(fault).await;
            eprintln!(
                "nemesis {:6.1}s–{:6.1}s {:?}: {}",
                record.span.0, record.span.1, record.fault, record.effect
            );
            records.push(record);
            let gap = self.rng.gen_range(500..1500);
            tokio::time::sleep(Duration::from_millis(gap)).await;
        }
        self.rig.heal_all();
        records
    }
}

/// The sum of the numbers that follow `word` in `text` (nft and tc counters).
fn counted(text: &str, word: &str) -> u64 {
    text.split(word)
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

/// Shuffles `faults` with `rng`.
pub fn shuffled(faults: &[Fault], rng: &mut StdRng) -> Vec<Fault> {
    let mut faults = faults.to_vec();
    faults.shuffle(rng);
    faults
}
