//! The rig: three `slct serve` processes, each in its own network namespace on a
//! bridge the rig creates, and every fault as a function of the rig.
//!
//! # Topology
//! ```text
//!   host (the test: clients, nemesis)          switch namespace
//!   {tag}h 10.213.X.254/24  <--veth-->  {tag}hs ─┐
//!                                                ├─ bridge {tag}br
//!   namespace {tag}-n1: {tag}n1 10.213.X.1 <-->  {tag}s1 ─┤
//!   namespace {tag}-n2: {tag}n2 10.213.X.2 <-->  {tag}s2 ─┤
//!   namespace {tag}-n3: {tag}n3 10.213.X.3 <-->  {tag}s3 ─┘
//! ```
//! The tag is `sf` and this process's id, so two runs never share a name, and a run
//! that died without cleaning up (SIGKILL) is recognised by its dead pid and swept by
//! the next one. Everything lives in namespaces the rig made, but for the host end of
//! one veth; deleting the namespaces deletes every veth, route and firewall rule.
//! [`Rig`]'s `Drop` does that, also when a test panics; node processes carry
//! `PR_SET_PDEATHSIG`, so they die with the test even if it is killed.
//!
//! # Faults
//! Network faults only ever touch traffic *between nodes*: the clients (on the host
//! address) always reach every live node, as Jepsen's control node does.
//! - [`Rig::kill`] / [`Rig::start`]: `kill -9` and restart on the same data.
//! - [`Rig::pause`] / [`Rig::resume`]: SIGSTOP and SIGCONT.
//! - [`Rig::isolate`]: drop everything between one node and the others (nftables in
//!   the node's namespace); on the leader, the 2|1 split with the leader in the minority.
//! - [`Rig::mute`]: asymmetric — drop what one node sends to the others, deliver what
//!   they send it.
//! - [`Rig::lossy`]: drop a share of packets between one node and the others, at random
//!   (nftables `numgen random`).
//! - [`Rig::slow`]: a slow link — token-bucket rate limit on both directions of the
//!   node's veth, so packets queue (delay) and overflow (loss). This kernel is built
//!   without `sch_netem` (CONFIG_NET_SCH_NETEM is not set), so a fixed added delay is
//!   not available; queueing behind a 1 Mbit/s bucket is the delay the rig can make.
//! - [`Rig::delay`]: latency on the node's links, through a netfilter queue (see
//!   [`super::delay`]).
//! - [`Rig::skew`]: the node's wall clock moved by whole seconds either way, through
//!   libfaketime preloaded into every node (the monotonic clock stays real, so tokio's
//!   timers are sane); the offset file is re-read every second, so skew changes live.
//! - [`Rig::heal_network`]: removes the network faults of one node.
//! - [`Rig::fill_disk_gradually`], [`Rig::fill_disk`] / [`Rig::free_disk`]: a disk
//!   running full. The node the rig was started with a disk of its own for keeps its
//!   data directory on a tmpfs mounted by the rig (named `{tag}-n{id}`, so a dead run's
//!   is found and unmounted by the next). Filling it gradually makes the tmpfs small
//!   enough for a reserve the node notices (`storage::space`) and writes a file into it
//!   a MiB at a time until a little room is left, below that reserve; filling it at
//!   once shrinks the tmpfs to what it holds, so the next block the node needs is
//!   `ENOSPC`, without writing a byte. Freeing it removes the file and gives the room
//!   back.
//! - [`Rig::inject_eio`]: the next `fdatasync` or `pwrite64` of a node fails with `EIO`
//!   (strace attached to the running process, as `tests/durability.rs` does).
//!
//! # Supervision
//! As Docker's `restart: unless-stopped`, Kubernetes or the systemd unit in `deploy/`
//! would, a thread of the rig watches the nodes: one whose process exits when the rig
//! did not kill it (a crash, a fatal Raft error, SIGTERM from outside) is started again
//! on the same data after a back-off of 0.5 s, doubling with each exit of that node in
//! the last minute up to 8 s; each exit is recorded ([`Exit`]) with its status and the
//! node's last `slct:` line. A node whose last words say its data is `damaged` (the
//! storage's refusal to start on a damaged record or write-ahead log, README
//! "Guarantees") stays down: restarting it would only fail again (no flapping), and
//! nothing but an operator restoring or replacing its data directory helps. `slct
//! serve` exits 1 for every error, so the rig decides by that message, not the code.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::delay::Delay;

/// libfaketime as Debian's `faketime` package installs it.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// Port every node listens on, in its own namespace.
pub const PORT: u16 = 7000;
/// Shared secret on `/raft/*` (nodes off loopback refuse to start without one).
const SECRET: &str = "fault-rig-secret";
/// Prefix of every name the rig makes.
const PREFIX: &str = "sf";

/// Runs a command, panicking with its output if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command, ignoring failure (cleanup).
fn try_run(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs `nft -f -` with `script` inside namespace `ns`.
fn nft(ns: &str, script: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write nft script");
    let out = child.wait_with_output().expect("nft");
    assert!(
        out.status.success(),
        "nft in {ns} failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes what earlier runs left behind when they died before their cleanup: their
/// namespaces (named with their pid) and node processes.
fn sweep_dead_runs() {
    let listing = run("ip", &["netns", "list"]);
    for name in listing.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            try_run("ip", &["netns", "del", name]);
        }
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(source), Some(target)) = (fields.next(), fields.next()) else {
            continue;
        };
        let pid = source
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            try_run("umount", &["-l", target]);
        }
    }
}

/// Size of the tmpfs a node with a disk of its own gets (an upper bound, not memory
/// taken: a tmpfs uses what it holds).
const DISK_BYTES: u64 = 2 << 30;

/// One node: its address inside the rig, data directory and namespace.
#[derive(Clone)]
pub struct NodeProc {
    /// `10.213.X.id:7000`.
    pub addr: String,
    /// The node's IP.
    pub ip: String,
    /// Data directory.
    pub data: PathBuf,
    /// Namespace name.
    pub ns: String,
    /// The libfaketime offset file.
    pub clock: PathBuf,
    /// Where its output goes (appended across restarts).
    pub log: PathBuf,
}

/// A node process that exited without the rig killing it.
#[derive(Clone, Debug)]
pub struct Exit {
    /// The node.
    pub node: u64,
    /// Seconds since the rig started.
    pub at: f64,
    /// How it exited (`exit status: 1`, `signal: 6 (SIGABRT)`).
    pub status: String,
    /// Its last `slct:` line since it started (else its last line).
    pub message: String,
    /// Started again after this back-off; `None`: its data is damaged, left down.
    pub restart_after: Option<Duration>,
}

/// Where a node's process stands.
enum Proc {
    /// Never started, or killed by the rig (a fault): the rig starts it when it heals.
    Stopped,
    /// Running (maybe SIGSTOPped), with how long its log was when it started.
    Running { child: Child, log_from: u64 },
    /// Exited on its own; the supervisor starts it again at `at`.
    Restarting { at: Instant },
    /// Exited because its data is damaged: stays down.
    Retired,
}

/// What the node processes share with the supervisor thread.
struct Procs {
    procs: BTreeMap<u64, Proc>,
    paused: BTreeMap<u64, bool>,
    /// Each node's exits in the last minute (for the back-off).
    recent: BTreeMap<u64, Vec<Instant>>,
    exits: Vec<Exit>,
    /// The largest resident set each node's processes reached (`VmHWM`, KiB).
    peak_rss: BTreeMap<u64, u64>,
}

/// `VmHWM` of process `pid` (KiB): its peak resident set.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How the supervisor polls, and its back-off.
const SUPERVISE_EVERY: Duration = Duration::from_millis(50);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// What every node is started with.
#[derive(Clone)]
struct Launch {
    peers: String,
    snapshot_threshold: u64,
    /// Open-files limits (soft and hard) of some nodes.
    nofile: BTreeMap<u64, u64>,
}

/// Starts node `id`'s process; returns it and how long its log was before.
fn spawn(id: u64, node: &NodeProc, launch: &Launch) -> (Child, u64) {
    std::fs::create_dir_all(&node.data).expect("data directory");
    let log = File::options()
        .create(true)
        .append(true)
        .open(&node.log)
        .expect("log file");
    let log_from = log.metadata().map_or(0, |m| m.len());
    let mut command = Command::new("ip");
    command
        .args([
            "netns",
            "exec",
            &node.ns,
            env!("CARGO_BIN_EXE_slct"),
            "serve",
        ])
        .args(["--id", &id.to_string(), "--listen", &node.addr])
        .arg("--data")
        .arg(&node.data)
        .args(["--peers", &launch.peers, "--cluster-secret", SECRET])
        .args(["--callback-allow", "*"])
        .args([
            "--snapshot-threshold",
            &launch.snapshot_threshold.to_string(),
        ])
        .env("RUST_LOG", "warn,slct=info")
        .env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME_TIMESTAMP_FILE", &node.clock)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("FAKETIME_CACHE_DURATION", "1")
        .stdout(Stdio::from(log.try_clone().expect("log file")))
        .stderr(Stdio::from(log));
    let nofile = launch.nofile.get(&id).copied();
    // SAFETY: setpgid, prctl and setrlimit are async-signal-safe; setpgid puts the child
    // in a process group of its own, prctl only marks the child to die with the thread
    // that starts it (a tokio worker or the supervisor, both living as long as the rig),
    // setrlimit lowers the child's own limit.
    //
    // The group of its own: a node the nemesis has SIGSTOPped must stay stopped until it
    // sends SIGCONT. In the test's group, the node would be killed by the SIGHUP the
    // kernel sends a stopped process's group when the group is orphaned (the shell that
    // started the test exits, as one in the background may); a soak saw exactly that.
    unsafe {
        command.pre_exec(move || {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if let Some(n) = nofile {
                let limit = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
            Ok(())
        });
    }
    (command.spawn().expect("spawn slct"), log_from)
}

/// The last `slct:` line of `log` after byte `from`, else its last line.
fn last_words(log: &Path, from: u64) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
    let lines = || text.lines().rev().filter(|l| !l.trim().is_empty());
    lines()
        .find(|l| l.starts_with("slct:"))
        .or_else(|| lines().next())
        .unwrap_or("(no output)")
        .to_owned()
}

/// One round of the supervisor: records exits, starts what is due.
fn supervise(
    procs: &Mutex<Procs>,
    nodes: &BTreeMap<u64, NodeProc>,
    launch: &Launch,
    began: Instant,
) {
    let mut guard = procs.lock().unwrap_or_else(|e| e.into_inner());
    let p = &mut *guard;
    let now = Instant::now();
    for (id, node) in nodes {
        let state = p.procs.get_mut(id).expect("known node");
        match state {
            Proc::Running { child, log_from } => {
                let Ok(Some(status)) = child.try_wait() else {
                    if let Some(kib) = peak_rss_kib(child.id()) {
                        let peak = p.peak_rss.entry(*id).or_default();
                        *peak = (*peak).max(kib);
                    }
                    continue;
                };
                let message = last_words(&node.log, *log_from);
                let recent = p.recent.entry(*id).or_default();
                recent.retain(|t| now.duration_since(*t) < Duration::from_secs(60));
                recent.push(now);
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << (recent.len() - 1).min(5))
                    .min(MAX_BACKOFF);
                let damaged = message.contains("damaged");
                let exit = Exit {
                    node: *id,
                    at: now.duration_since(began).as_secs_f64(),
                    status: status.to_string(),
                    message,
                    restart_after: (!damaged).then_some(backoff),
                };
                eprintln!(
                    "supervisor {:6.1}s: n{id} exited ({}): {}; {}",
                    exit.at,
                    exit.status,
                    exit.message,
                    match exit.restart_after {
                        Some(after) => format!("starting it again in {after:?}"),
                        None => "its data is damaged: left down".into(),
                    }
                );
                p.exits.push(exit);
                p.paused.insert(*id, false);
                *state = if damaged {
                    Proc::Retired
                } else {
                    Proc::Restarting { at: now + backoff }
                };
            }
            Proc::Restarting { at } if now >= *at => {
                let (child, log_from) = spawn(*id, node, launch);
                *state = Proc::Running { child, log_from };
            }
            _ => {}
        }
    }
}

/// The rig. Dropping it tears everything down.
pub struct Rig {
    tag: String,
    dir: TempDir,
    subnet: String,
    launch: Launch,
    /// The nodes by id.
    pub nodes: BTreeMap<u64, NodeProc>,
    procs: Arc<Mutex<Procs>>,
    stop: Arc<AtomicBool>,
    supervisor: Option<JoinHandle<()>>,
    /// Delays in force, by node.
    delays: Mutex<BTreeMap<u64, Delay>>,
    /// The node whose data directory is a tmpfs of its own ([`Rig::fill_disk`]).
    disk: Option<u64>,
    /// A client with a short timeout, for the rig's own probes.
    pub http: reqwest::Client,
}

impl Rig {
    /// Builds the network, then starts three nodes under supervision; returns once they
    /// agree on a leader.
    pub async fn start(snapshot_threshold: u64) -> Rig {
        Rig::start_with(snapshot_threshold, BTreeMap::new()).await
    }

    /// [`Rig::start`], some nodes with an open-files limit (soft and hard) of their own.
    pub async fn start_with(snapshot_threshold: u64, nofile: BTreeMap<u64, u64>) -> Rig {
        Rig::start_full(snapshot_threshold, nofile, None).await
    }

    /// [`Rig::start_with`], node `disk` (if any) with its data directory on a tmpfs of its
    /// own, which [`Rig::fill_disk`] can fill.
    pub async fn start_full(
        snapshot_threshold: u64,
        nofile: BTreeMap<u64, u64>,
        disk: Option<u64>,
    ) -> Rig {
        check_tools();
        sweep_dead_runs();
        let began = Instant::now();
        let tag = format!("{PREFIX}{}", std::process::id());
        let subnet = free_subnet();
        let dir = tempfile::tempdir().expect("temporary directory");
        let nodes: BTreeMap<u64, NodeProc> = (1..=3u64)
            .map(|id| {
                let ip = format!("{subnet}.{id}");
                let node = NodeProc {
                    addr: format!("{ip}:{PORT}"),
                    ip,
                    data: dir.path().join(format!("n{id}")),
                    ns: format!("{tag}-n{id}"),
                    clock: dir.path().join(format!("n{id}.faketime")),
                    log: dir.path().join(format!("n{id}.log")),
                };
                (id, node)
            })
            .collect();
        let peers = nodes
            .iter()
            .map(|(id, n)| format!("{id}={}", n.addr))
            .collect::<Vec<_>>()
            .join(",");
        let launch = Launch {
            peers,
            snapshot_threshold,
            nofile,
        };
        let procs = Arc::new(Mutex::new(Procs {
            procs: nodes.keys().map(|id| (*id, Proc::Stopped)).collect(),
            paused: nodes.keys().map(|id| (*id, false)).collect(),
            recent: BTreeMap::new(),
            exits: Vec::new(),
            peak_rss: BTreeMap::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let supervisor = {
            let (procs, stop, nodes, launch) =
                (procs.clone(), stop.clone(), nodes.clone(), launch.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    supervise(&procs, &nodes, &launch, began);
                    std::thread::sleep(SUPERVISE_EVERY);
                }
            })
        };
        let mut rig = Rig {
            tag,
            dir,
            subnet,
            launch,
            nodes,
            procs,
            stop,
            supervisor: Some(supervisor),
            delays: Mutex::default(),
            disk: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("http client"),
        };
        rig.build_network();
        if let Some(id) = disk {
            let data = rig.nodes[&id].data.clone();
            std::fs::create_dir_all(&data).expect("data directory");
            let size = format!("size={DISK_BYTES},mode=0700");
            let source = format!("{}-n{id}", rig.tag);
            run(
                "mount",
                &["-t", "tmpfs", "-o", &size, &source, &path(&data)],
            );
            rig.disk = Some(id);
        }
        for id in 1..=3 {
            rig.skew(id, 0);
            rig.start_node(id);
        }
        rig.await_leader(Duration::from_secs(30)).await;
        rig
    }

    fn procs(&self) -> std::sync::MutexGuard<'_, Procs> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every exit the supervisor saw so far.
    pub fn exits(&self) -> Vec<Exit> {
        self.procs().exits.clone()
    }

    /// The largest resident set (KiB) each node's processes reached, as sampled every
    /// 50 ms by the supervisor.
    pub fn peak_rss_kib(&self) -> BTreeMap<u64, u64> {
        self.procs().peak_rss.clone()
    }

    /// Whether node `id` was left down because its data is damaged.
    pub fn is_retired(&self, id: u64) -> bool {
        matches!(self.procs().procs[&id], Proc::Retired)
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.tag)
    }

    fn build_network(&self) {
        let (tag, sw) = (&self.tag, self.switch());
        run("ip", &["netns", "add", &sw]);
        run("ip", &["-n", &sw, "link", "set", "lo", "up"]);
        let bridge = format!("{tag}br");
        run("ip", &["-n", &sw, "link", "add", &bridge, "type", "bridge"]);
        run("ip", &["-n", &sw, "link", "set", &bridge, "up"]);
        // The host's way in.
        let (host, host_peer) = (format!("{tag}h"), format!("{tag}hs"));
        run(
            "ip",
            &[
                "link", "add", &host, "type", "veth", "peer", "name", &host_peer,
            ],
        );
        run("ip", &["link", "set", &host_peer, "netns", &sw]);
        run(
            "ip",
            &[
                "-n", &sw, "link", "set", &host_peer, "master", &bridge, "up",
            ],
        );
        let host_ip = format!("{}.254/24", self.subnet);
        run("ip", &["addr", "add", &host_ip, "dev", &host]);
        run("ip", &["link", "set", &host, "up"]);
        for (id, node) in &self.nodes {
            let (inner, outer) = (format!("{tag}n{id}"), format!("{tag}s{id}"));
            run("ip", &["netns", "add", &node.ns]);
            run("ip", &["-n", &node.ns, "link", "set", "lo", "up"]);
            run(
                "ip",
                &[
                    "link", "add", &inner, "type", "veth", "peer", "name", &outer,
                ],
            );
            run("ip", &["link", "set", &inner, "netns", &node.ns]);
            run("ip", &["link", "set", &outer, "netns", &sw]);
            run(
                "ip",
                &["-n", &sw, "link", "set", &outer, "master", &bridge, "up"],
            );
            let cidr = format!("{}/24", node.ip);
            run("ip", &["-n", &node.ns, "addr", "add", &cidr, "dev", &inner]);
            run("ip", &["-n", &node.ns, "link", "set", &inner, "up"]);
            self.reset_firewall(*id);
        }
    }

    /// Starts node `id` (again) on its data directory; one waiting for its back-off
    /// starts now, one left down for damaged data stays down.
    pub fn start_node(&mut self, id: u64) {
        let node = &self.nodes[&id];
        let mut p = self.procs();
        let state = p.procs.get_mut(&id).expect("known node");
        match state {
            Proc::Running { .. } => panic!("node {id} is running"),
            Proc::Retired => return,
            Proc::Stopped | Proc::Restarting { .. } => {}
        }
        let (child, log_from) = spawn(id, node, &self.launch);
        *state = Proc::Running { child, log_from };
        p.paused.insert(id, false);
    }

    /// `kill -9` node `id` (one waiting for its back-off is not started again).
    pub fn kill(&mut self, id: u64) {
        let mut p = self.procs();
        let state = p.procs.get_mut(&id).expect("known node");
        if matches!(state, Proc::Retired) {
            return;
        }
        if let Proc::Running { mut child, .. } = std::mem::replace(state, Proc::Stopped) {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
        p.paused.insert(id, false);
    }

    /// SIGSTOP node `id` (if it runs).
    pub fn pause(&mut self, id: u64) {
        if self.signal(id, libc::SIGSTOP) {
            self.procs().paused.insert(id, true);
        }
    }

    /// SIGCONT node `id`.
    pub fn resume(&mut self, id: u64) {
        self.signal(id, libc::SIGCONT);
        self.procs().paused.insert(id, false);
    }

    /// SIGTERM node `id`, as an operator or an orchestrator would: the node shuts
    /// down by itself, an exit the supervisor did not cause.
    pub fn terminate(&self, id: u64) {
        self.signal(id, libc::SIGTERM);
    }

    /// Sends `signal` to node `id`'s process; whether it has one.
    fn signal(&self, id: u64, signal: i32) -> bool {
        // Under the lock, so the supervisor cannot reap the process meanwhile.
        let p = self.procs();
        let Proc::Running { child, .. } = &p.procs[&id] else {
            return false;
        };
        // SAFETY: kill(2) on our own child's pid, not yet reaped.
        let rc = unsafe { libc::kill(child.id() as i32, signal) };
        rc == 0
    }

    fn pid(&self, id: u64) -> Option<u32> {
        match &self.procs().procs[&id] {
            Proc::Running { child, .. } => Some(child.id()),
            _ => None,
        }
    }

    /// The scheduler state of node `id`'s process as `/proc/{pid}/stat` shows it
    /// (`T` when stopped by SIGSTOP), if it has one.
    pub fn process_state(&self, id: u64) -> Option<char> {
        let pid = self.pid(id)?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // pid (comm) STATE ...: comm may hold spaces, so read after the last ')'.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .next()?
            .chars()
            .next()
    }

    /// Whether node `id` has a process (paused or not) that has not exited.
    pub fn is_running(&self, id: u64) -> bool {
        self.pid(id).is_some() && self.process_state(id) != Some('Z')
    }

    /// Whether node `id` is stopped by SIGSTOP.
    pub fn is_paused(&self, id: u64) -> bool {
        self.procs().paused[&id]
    }

    /// The IPs of the nodes other than `id`, as an nft set.
    fn others(&self, id: u64) -> String {
        let ips: Vec<&str> = self
            .nodes
            .iter()
            .filter(|(other, _)| **other != id)
            .map(|(_, n)| n.ip.as_str())
            .collect();
        format!("{{ {} }}", ips.join(", "))
    }

    /// Replaces node `id`'s firewall with `input` and `output` rules.
    fn firewall(&self, id: u64, input: &str, output: &str) {
        let table = "inet fault";
        let script = format!(
            "table {table} {{}}\ndelete table {table}\ntable {table} {{\n\
             chain input {{\ntype filter hook input priority 0; policy accept;\n{input}\n}}\n\
             chain output {{\ntype filter hook output priority 0; policy accept;\n{output}\n}}\n\
             }}\n"
        );
        nft(&self.nodes[&id].ns, &script);
    }

    fn reset_firewall(&self, id: u64) {
        self.firewall(id, "", "");
    }

    /// Cuts node `id` off from the other nodes, both ways.
    pub fn isolate(&self, id: u64) {
        let others = self.others(id);
        self.firewall(
            id,
            &format!("ip saddr {others} counter drop"),
            &format!("ip daddr {others} counter drop"),
        );
    }

    /// One direction only: what node `id` sends to the others is lost, what they send
    /// arrives.
    pub fn mute(&self, id: u64) {
        let others = self.others(id);
        self.firewall(id, "", &format!("ip daddr {others} counter drop"));
    }

    /// Drops `percent`% of the packets between node `id` and the others, both ways.
    pub fn lossy(&self, id: u64, percent: u32) {
        let others = self.others(id);
        let lose = format!("numgen random mod 100 < {percent} counter drop");
        self.firewall(
            id,
            &format!("ip saddr {others} {lose}"),
            &format!("ip daddr {others} {lose}"),
        );
    }

    /// A slow link: both directions of node `id`'s veth limited to `kbit` kbit/s, with
    /// up to `latency_ms` of queue (beyond it, packets drop).
    pub fn slow(&self, id: u64, kbit: u32, latency_ms: u32) {
        let (rate, latency) = (format!("{kbit}kbit"), format!("{latency_ms}ms"));
        let tbf = [
            "root", "tbf", "rate", &rate, "burst", "8kb", "latency", &latency,
        ];
        let inner = format!("{}n{id}", self.tag);
        let outer = format!("{}s{id}", self.tag);
        let ns = &self.nodes[&id].ns;
        let mut args = vec!["-n", ns, "qdisc", "replace", "dev", &inner];
        args.extend(tbf);
        run("tc", &args);
        let sw = self.switch();
        let mut args = vec!["-n", &sw, "qdisc", "replace", "dev", &outer];
        args.extend(tbf);
        run("tc", &args);
    }

    /// Delays every packet between node `id` and the others by `delay` ± `jitter`, each
    /// way (see [`super::delay`]).
    pub fn delay(&self, id: u64, delay: Duration, jitter: Duration) {
        let peers: Vec<String> = self
            .nodes
            .iter()
            .filter(|(other, _)| **other != id)
            .map(|(_, n)| n.ip.clone())
            .collect();
        let d = Delay::start(&self.nodes[&id].ns, id as u16, &peers, delay, jitter);
        let old = self.delays.lock().expect("delays").insert(id, d);
        if let Some(old) = old {
            old.stop();
        }
    }

    /// Ends node `id`'s delay; the number of packets it held.
    pub fn undelay(&self, id: u64) -> u64 {
        let d = self.delays.lock().expect("delays").remove(&id);
        d.map_or(0, Delay::stop)
    }

    /// Removes node `id`'s firewall rules (partitions, loss), keeping a slow link.
    pub fn heal_network_rules(&self, id: u64) {
        self.reset_firewall(id);
    }

    /// `tc -s qdisc` of both ends of node `id`'s link (drop and overlimit counters).
    pub fn qdisc_stats(&self, id: u64) -> String {
        let inner = format!("{}n{id}", self.tag);
        let outer = format!("{}s{id}", self.tag);
        let ns = &self.nodes[&id].ns;
        run("tc", &["-n", ns, "-s", "qdisc", "show", "dev", &inner])
            + &run(
                "tc",
                &["-n", &self.switch(), "-s", "qdisc", "show", "dev", &outer],
            )
    }

    /// Log entries between snapshots, as the nodes were started with.
    pub fn snapshot_threshold(&self) -> u64 {
        self.launch.snapshot_threshold
    }

    /// Removes every network fault of node `id`.
    pub fn heal_network(&self, id: u64) {
        self.undelay(id);
        self.reset_firewall(id);
        let inner = format!("{}n{id}", self.tag);
        let outer = format!("{}s{id}", self.tag);
        try_run(
            "tc",
            &[
                "-n",
                &self.nodes[&id].ns,
                "qdisc",
                "del",
                "dev",
                &inner,
                "root",
            ],
        );
        try_run(
            "tc",
            &["-n", &self.switch(), "qdisc", "del", "dev", &outer, "root"],
        );
    }

    /// Sets node `id`'s wall clock to `secs` seconds off the real one (live: the node
    /// reads the offset file at most a second later).
    pub fn skew(&self, id: u64, secs: i64) {
        let spec = if secs >= 0 {
            format!("+{secs}s\n")
        } else {
            format!("{secs}s\n")
        };
        let clock = &self.nodes[&id].clock;
        let tmp = clock.with_extension("tmp");
        std::fs::write(&tmp, spec).expect("write clock offset");
        std::fs::rename(&tmp, clock).expect("replace clock offset");
    }

    /// The node with a disk of its own, if any.
    pub fn disk_node(&self) -> Option<u64> {
        self.disk
    }

    /// Fills node `id`'s disk: its tmpfs shrinks to what it holds now (rounded up to a
    /// page), so the next block it needs is refused with `ENOSPC`. Returns the bytes held.
    /// The node writes meanwhile, and a size below what the tmpfs holds by the time of
    /// the remount is refused, so the reading and the remount are tried again.
    pub fn fill_disk(&self, id: u64) -> u64 {
        assert_eq!(self.disk, Some(id), "node {id} has no disk of its own");
        let data = path(&self.nodes[&id].data);
        for _ in 0..100 {
            let used = run("df", &["--output=used", "-B1", &data]);
            let used: u64 = used
                .lines()
                .nth(1)
                .and_then(|l| l.trim().parse().ok())
                .expect("df's used bytes");
            let size = format!("remount,size={}", used.max(4096));
            let shrunk = Command::new("mount")
                .args(["-o", &size, &data])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if shrunk {
                return used;
            }
        }
        panic!("{data}'s tmpfs could not be shrunk to what it holds: it grew before each remount");
    }

    /// Fills node `id`'s disk gradually until `room` bytes are free, below the node's
    /// reserve: the tmpfs is remounted at a size whose reserve (an eighth, at most
    /// 128 MiB) is above `room` — at least 256 MiB, and twice what it holds and `room`
    /// — then a file grows in it a MiB at a time. Returns the tmpfs's size.
    pub fn fill_disk_gradually(&self, id: u64, room: u64) -> u64 {
        assert_eq!(self.disk, Some(id), "node {id} has no disk of its own");
        let data = path(&self.nodes[&id].data);
        let df = |field: &str| -> u64 {
            let out = run("df", &[&format!("--output={field}"), "-B1", &data]);
            out.lines()
                .nth(1)
                .and_then(|l| l.trim().parse().ok())
                .expect("df's figure")
        };
        let size = (256 << 20).max(2 * (df("used") + room));
        assert!(room < size.min(1 << 30) / 8, "room below the reserve");
        run("mount", &["-o", &format!("remount,size={size}"), &data]);
        let mut filler = std::fs::File::create(self.filler(id)).expect("filler file");
        let chunk = vec![0u8; 1 << 20];
        while df("avail") > room + chunk.len() as u64 {
            std::io::Write::write_all(&mut filler, &chunk).expect("fill the disk");
        }
        size
    }

    /// The file [`Rig::fill_disk_gradually`] fills node `id`'s disk with.
    fn filler(&self, id: u64) -> PathBuf {
        self.nodes[&id].data.join("nemesis-filler")
    }

    /// Gives node `id`'s disk its room back (see [`Rig::fill_disk`]).
    pub fn free_disk(&self, id: u64) {
        if self.disk == Some(id) {
            let _ = std::fs::remove_file(self.filler(id));
            let size = format!("remount,size={DISK_BYTES}");
            run("mount", &["-o", &size, &path(&self.nodes[&id].data)]);
        }
    }

    /// Attaches strace to node `id`'s process so that its next call of `syscall`
    /// (`fdatasync`, `pwrite64`) fails with `EIO`; strace exits with the node. `None` if
    /// the node has no process or strace could not attach.
    pub fn inject_eio(&self, id: u64, syscall: &str) -> Option<Child> {
        let pid = self.pid(id)?;
        let mut strace = Command::new("strace")
            .args(["-f", "-e", &format!("trace={syscall}"), "-e"])
            .arg(format!("inject={syscall}:error=EIO:when=1"))
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("strace is installed (scripts/test.sh installs it)");
        // strace says it attached on its first line; drain the rest, or it blocks on a
        // full pipe.
        let stderr = strace.stderr.take().expect("strace's stderr");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        std::thread::spawn(move || lines.for_each(drop));
        if first.contains("attached") {
            Some(strace)
        } else {
            eprintln!("strace did not attach to n{id}: {first}");
            let _ = strace.kill();
            let _ = strace.wait();
            None
        }
    }

    /// Undoes every fault: network, clocks, pauses, a full disk, and starts nodes that
    /// are down (not one left down for damaged data).
    pub fn heal_all(&mut self) {
        for id in 1..=3 {
            self.free_disk(id);
            self.heal_network(id);
            self.skew(id, 0);
            if self.is_paused(id) {
                self.resume(id);
            }
            let down = matches!(
                self.procs().procs[&id],
                Proc::Stopped | Proc::Restarting { .. }
            );
            if down {
                self.start_node(id);
            }
        }
    }

    /// `http://10.213.X.id:7000{path}`.
    pub fn url(&self, id: u64, path: &str) -> String {
        format!("http://{}{path}", self.nodes[&id].addr)
    }

    /// The base URLs of all nodes, by id.
    pub fn urls(&self) -> BTreeMap<u64, String> {
        (1..=3).map(|id| (id, self.url(id, ""))).collect()
    }

    /// Node `id`'s snapshot directory.
    pub fn snapshot_dir(&self, id: u64) -> PathBuf {
        self.nodes[&id].data.join("snapshots")
    }

    /// Everything node `id` logged.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(&self.nodes[&id].log).unwrap_or_default()
    }

    /// Copies the nodes' logs to `target/tmp/fault-runs/{tag}/` and returns that
    /// directory (the rig's own directory goes with the rig).
    pub fn keep_logs(&self) -> PathBuf {
        let kept = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("fault-runs")
            .join(&self.tag);
        std::fs::create_dir_all(&kept).expect("log directory");
        for id in 1..=3 {
            let name = format!("n{id}.log");
            let _ = std::fs::copy(self.dir.path().join(&name), kept.join(&name));
        }
        kept
    }

    /// Every thread's stack of node `id`'s process (gdb attached for a moment), if it has
    /// one and gdb is installed: evidence of where a node that stopped making progress
    /// waits.
    pub fn stacks(&self, id: u64) -> Option<String> {
        let pid = self.pid(id)?;
        let out = Command::new("gdb")
            .args([
                "-p",
                &pid.to_string(),
                "-batch",
                "-ex",
                "thread apply all bt",
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `GET /cluster` of node `id`, if it answers.
    pub async fn cluster_info(&self, id: u64) -> Option<Value> {
        let response = self.http.get(self.url(id, "/cluster")).send().await.ok()?;
        response.json().await.ok()
    }

    /// The leader as node `id` sees it.
    pub async fn leader_seen_by(&self, id: u64) -> Option<u64> {
        self.cluster_info(id).await?["leader"].as_u64()
    }

    /// Waits until every running, unpaused node names the same leader (itself running
    /// and unpaused) and returns it, or `None` after `timeout`.
    pub async fn try_leader(&self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.agreed_leader().await {
                return Some(leader);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn agreed_leader(&self) -> Option<u64> {
        let live: Vec<u64> = (1..=3)
            .filter(|id| self.is_running(*id) && !self.is_paused(*id))
            .collect();
        let mut leaders = Vec::new();
        for id in &live {
            leaders.push(self.leader_seen_by(*id).await?);
        }
        let first = *leaders.first()?;
        (leaders.iter().all(|l| *l == first) && live.contains(&first)).then_some(first)
    }

    /// Like [`Rig::try_leader`], panicking on timeout with the nodes' logs.
    pub async fn await_leader(&self, timeout: Duration) -> u64 {
        match self.try_leader(timeout).await {
            Some(leader) => leader,
            None => panic!(
                "no agreed leader within {timeout:?}; logs:\n{}",
                (1..=3)
                    .map(|id| format!("--- node {id}\n{}", tail(&self.log(id), 40)))
                    .collect::<String>()
            ),
        }
    }
}

/// A path as a command argument.
fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Fails loudly if a tool the rig needs is missing (scripts/test.sh installs them).
fn check_tools() {
    for tool in ["ip", "nft", "tc", "iptables"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(found, "the fault rig needs `{tool}`: run scripts/test.sh");
    }
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "the fault rig needs libfaketime ({LIBFAKETIME}): run scripts/test.sh"
    );
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(root, "the fault rig makes network namespaces: run as root");
}

/// A /24 in 10.213.0.0/16 that no interface or route of the host uses.
fn free_subnet() -> String {
    let taken = run("ip", &["-4", "route", "show", "table", "all"]) + &run("ip", &["-4", "addr"]);
    let start = std::process::id() % 200;
    (0..200)
        .map(|i| format!("10.213.{}", (start + i) % 200 + 20))
        .find(|subnet| !taken.contains(&format!("{subnet}.")))
        .expect("a free 10.213.x.0/24")
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Delay threads release what they hold before the namespaces go.
        let delays = std::mem::take(&mut *self.delays.lock().unwrap_or_else(|e| e.into_inner()));
        drop(delays);
        if std::thread::panicking() {
            eprintln!("node logs kept in {}", self.keep_logs().display());
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.join();
        }
        let mut p = self.procs();
        for state in p.procs.values_mut() {
            if let Proc::Running { mut child, .. } = std::mem::replace(state, Proc::Stopped) {
                // A stopped process dies of SIGKILL too.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        drop(p);
        if let Some(id) = self.disk {
            try_run("umount", &["-l", &path(&self.nodes[&id].data)]);
        }
        for node in self.nodes.values() {
            try_run("ip", &["netns", "del", &node.ns]);
        }
        try_run("ip", &["netns", "del", &self.switch()]);
        try_run("ip", &["link", "del", &format!("{}h", self.tag)]);
    }
}
