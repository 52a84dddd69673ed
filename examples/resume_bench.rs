//! How fast slct resumes processes, against a running
//! three-node cluster. Three rows:
//!
//! 1. **callback ping-pong** — two processes (states) exchange a counter over two
//!    unbuffered channels, resumed only by callbacks to a receiver in this program,
//!    whose handler answers `data` + `selects`. A round is one value each way; rounds
//!    per second, one figure per run.
//! 2. **long-poll wake** — a state waits on a recv; a poller waits on node A; once the
//!    poller is seen asleep (`slct_long_polls_waiting` on the cluster's `/metrics`), a
//!    send through node B completes the select. Latency: from just before the send is
//!    issued to the poller's answer (the send's commit, the wake, the lease's commit,
//!    both HTTP round trips). A is the leader and B a follower unless given.
//! 3. **resume loop** — P processes loop concurrently: each state waits on a recv from
//!    a channel of its own; a producer sends to it; one of W workers long-polls, gets
//!    the state leased, checks the value, and updates it under the lease with a new
//!    recv select (three Raft writes per resume: send, lease, update); the update's 200
//!    makes the producer send again. Resumes/s = updates acknowledged per second in
//!    the measured window. Resume latency = from the producer issuing its send to the
//!    worker's poll answering with the state leased; cycle = from the send to the
//!    update acknowledged. Producers and workers talk to the leader.
//!
//! Beside each row: the load on the machine during it (`others` = CPU used by
//! everything but the servers and this program, in cores, from /proc/stat), and with
//! `--pids` (the three servers' process ids) the servers' CPU per resume or round.
//!
//! ```text
//! benches/resume.sh                      # builds, starts three `slct serve`, runs this
//! # or against a running cluster (e.g. `slct dev`):
//! cargo run --release --bin resume_bench -- --server http://127.0.0.1:7001
//! ```
//!
//! Not a test: it asserts nothing about time. A row with errors says so (INVALID).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// Resumption benchmark (see the module docs).
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Nodes of the cluster, comma-separated: the first that names a leader is used
    /// to find the others.
    #[arg(
        long,
        env = "SLCT_SERVER",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7001,http://127.0.0.1:7002,http://127.0.0.1:7003"
    )]
    server: Vec<String>,
    /// Node A, where the long-poll waits (default: the leader).
    #[arg(long)]
    poll_node: Option<String>,
    /// Node B, through which the waking send goes (default: a follower).
    #[arg(long)]
    send_node: Option<String>,
    /// Rows to run: any of pingpong, wake, loop.
    #[arg(long, value_delimiter = ',', default_value = "pingpong,wake,loop")]
    rows: Vec<String>,
    /// Ping-pong rounds per run.
    #[arg(long, default_value_t = 200)]
    rounds: u64,
    /// Ping-pong runs.
    #[arg(long, default_value_t = 3)]
    pingpong_runs: usize,
    /// Long-poll wakes measured.
    #[arg(long, default_value_t = 200)]
    wakes: usize,
    /// Processes looping in the resume loop.
    #[arg(long, default_value_t = 64)]
    processes: usize,
    /// Workers long-polling in the resume loop.
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// Seconds measured in the resume loop.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of the resume loop before measuring starts.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Process ids of the servers, comma-separated, for their CPU.
    #[arg(long, env = "SLCT_PIDS", value_delimiter = ',')]
    pids: Vec<u32>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let http = reqwest::Client::new();
    let cluster = Cluster::discover(&http, &args.server).await;
    let run = std::process::id();
    println!(
        "cluster: leader {}, followers {}",
        cluster.leader,
        cluster.followers.join(", ")
    );
    let mut invalid = false;
    for row in &args.rows {
        invalid |= match row.as_str() {
            "pingpong" => ping_pong(&http, &args, &cluster, run).await,
            "wake" => wake_latency(&http, &args, &cluster, run).await,
            "loop" => resume_loop(&http, &args, &cluster, run).await,
            other => panic!("unknown row {other:?} (pingpong, wake, loop)"),
        };
    }
    if invalid {
        std::process::exit(1);
    }
}

/// The nodes' base URLs, as `GET /cluster` names them.
struct Cluster {
    leader: String,
    followers: Vec<String>,
}

impl Cluster {
    async fn discover(http: &reqwest::Client, servers: &[String]) -> Cluster {
        for round in 0..300 {
            let server = servers[round % servers.len()].trim_end_matches('/');
            if let Ok(response) = http.get(format!("{server}/cluster")).send().await {
                if let Ok(info) = response.json::<Value>().await {
                    let leader = info["leader"].to_string();
                    let members = info["members"].as_object().cloned().unwrap_or_default();
                    if let Some(addr) = members.get(&leader).and_then(Value::as_str) {
                        let followers = members
                            .iter()
                            .filter(|(id, _)| **id != leader)
                            .filter_map(|(_, a)| a.as_str().map(|a| format!("http://{a}")))
                            .collect();
                        return Cluster {
                            leader: format!("http://{addr}"),
                            followers,
                        };
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no leader at {} after 30 s", servers.join(", "));
    }

    fn all(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.leader).chain(&self.followers)
    }
}

// ---------------------------------------------------------------------------------
// Row 1: callback ping-pong

/// Counts each time a player answers its last step (no more selects), so the
/// benchmark reads the states only at the end rather than polling the leader (which
/// would load the servers it measures).
static FINISHED: AtomicUsize = AtomicUsize::new(0);

/// One player's step: answer the state with `data` and the next select.
async fn play(Json(state): Json<Value>) -> Json<Value> {
    let me = state["id"].as_str().unwrap_or_default();
    let ping = me.ends_with("ping");
    let (inbox, outbox) = if ping { ("a", "b") } else { ("b", "a") };
    let prefix = me.rsplit_once('-').map_or("", |p| p.0);
    let (inbox, outbox) = (format!("{prefix}-{inbox}"), format!("{prefix}-{outbox}"));
    let mut data = state["data"].clone();
    let rounds = data["rounds"].as_u64().unwrap_or(0);
    let result = &state["results"][state["results"].as_array().map_or(0, Vec::len) - 1];
    let selects = if result["op"] == "recv" {
        let n = result["data"].as_u64().unwrap_or(0);
        if n >= 2 * rounds {
            json!([])
        } else {
            data["sent"] = json!(n + 1);
            json!([{"id": "s", "cases": [{"op": "send", "chan": outbox, "data": n + 1}]}])
        }
    } else if data["sent"].as_u64() >= Some(2 * rounds) {
        json!([])
    } else {
        json!([{"id": "r", "cases": [{"op": "recv", "chan": inbox}]}])
    };
    if selects == json!([]) {
        FINISHED.fetch_add(1, Ordering::SeqCst);
    }
    // The answer names its callback again, so it states the whole process.
    Json(json!({"data": data, "selects": selects, "callback": state["callback"]}))
}

/// Runs the ping-pong `pingpong_runs` times; returns true if a run went wrong.
async fn ping_pong(http: &reqwest::Client, args: &Args, cluster: &Cluster, run: u32) -> bool {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/play", listener.local_addr().unwrap());
    tokio::spawn(
        async move { axum::serve(listener, Router::new().route("/play", post(play))).await },
    );
    let a = &cluster.leader;
    let mut rates = Vec::new();
    let mut invalid = false;
    for r in 0..args.pingpong_runs {
        let prefix = format!("rb-{run}-pp{r}");
        let callback = json!({"url": url, "timeout_ms": 5000});
        let rounds = args.rounds;
        let pong = json!({"data": {"rounds": rounds}, "callback": callback,
            "selects": [{"id": "r", "cases": [{"op": "recv", "chan": format!("{prefix}-b")}]}]});
        let ping = json!({"data": {"rounds": rounds, "sent": 1}, "callback": callback,
            "selects": [{"id": "s", "cases": [{"op": "send", "chan": format!("{prefix}-b"), "data": 1}]}]});
        let load = Load::start(&args.pids);
        let started = Instant::now();
        for (who, body) in [("pong", &pong), ("ping", &ping)] {
            let status = http
                .put(format!("{a}/state/{prefix}-{who}"))
                .json(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            invalid |= status != 201;
        }
        let deadline = started + Duration::from_secs(60 + rounds / 10);
        while FINISHED.load(Ordering::SeqCst) < 2 * (r + 1) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut states = Vec::new();
        while Instant::now() < deadline {
            states.clear();
            for who in ["ping", "pong"] {
                let s = http
                    .get(format!("{a}/state/{prefix}-{who}?stale=true"))
                    .send()
                    .await;
                let s = match s {
                    Ok(s) => s.json::<Value>().await.unwrap_or(Value::Null),
                    Err(_) => Value::Null,
                };
                states.push(s);
            }
            if states
                .iter()
                .all(|s| s["status"] == "done" || s["status"] == "failed")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let elapsed = started.elapsed();
        let ok = states.iter().all(|s| s["status"] == "done")
            && states
                .iter()
                .any(|s| s["data"]["sent"] == json!(2 * rounds));
        invalid |= !ok;
        let rate = rounds as f64 / elapsed.as_secs_f64();
        rates.push(rate);
        println!(
            "callback ping-pong run {}: {rounds} rounds in {:.2} s = {rate:.1} rounds/s \
             ({:.2} ms a round){}  [{}]",
            r + 1,
            elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1000.0 / rounds as f64,
            if ok { "" } else { "  INVALID: did not finish" },
            load.finish(rounds as usize, "round"),
        );
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "ROW callback ping-pong: {:.1}–{:.1} rounds/s (median {:.1}) over {} runs of {} rounds{}",
        rates[0],
        rates[rates.len() - 1],
        rates[rates.len() / 2],
        rates.len(),
        args.rounds,
        if invalid { "  INVALID" } else { "" }
    );
    invalid
}

// ---------------------------------------------------------------------------------
// Row 2: long-poll wake latency

/// Long-polls asleep on all nodes, from their `/metrics`.
async fn pollers_asleep(http: &reqwest::Client, cluster: &Cluster) -> u64 {
    let mut sum = 0;
    for node in cluster.all() {
        let Ok(r) = http.get(format!("{node}/metrics")).send().await else {
            continue;
        };
        let text = r.text().await.unwrap_or_default();
        sum += text
            .lines()
            .filter(|l| l.starts_with("slct_long_polls_waiting"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum::<f64>() as u64;
    }
    sum
}

async fn wake_latency(http: &reqwest::Client, args: &Args, cluster: &Cluster, run: u32) -> bool {
    let a = args.poll_node.clone().unwrap_or(cluster.leader.clone());
    let b = args
        .send_node
        .clone()
        .or(cluster.followers.first().cloned())
        .unwrap_or(cluster.leader.clone());
    let mut wakes = Vec::new();
    let mut send_acks = Vec::new();
    let (mut errors, mut unseen) = (0, 0);
    let load = Load::start(&args.pids);
    for i in 0..args.wakes {
        let id = format!("rb-{run}-wake-{i}");
        let chan = format!("rb-{run}-wake-chan-{i}");
        let state = json!({"selects": [{"id": "g", "cases": [{"op": "recv", "chan": chan}]}]});
        let created = http
            .put(format!("{a}/state/{id}"))
            .json(&state)
            .send()
            .await
            .map(|r| r.status().as_u16());
        if created.ok() != Some(201) {
            errors += 1;
            continue;
        }
        let poll_url = format!("{a}/state/poll?prefix={id}&wait=30");
        let poller = tokio::spawn({
            let http = http.clone();
            async move {
                let states: Vec<Value> = match http.get(poll_url).send().await {
                    Ok(r) => r.json().await.unwrap_or_default(),
                    Err(_) => Vec::new(),
                };
                (Instant::now(), states)
            }
        });
        let seen = Instant::now() + Duration::from_secs(2);
        while pollers_asleep(http, cluster).await == 0 {
            if Instant::now() > seen {
                unseen += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let sent = Instant::now();
        let status = http
            .post(format!("{b}/chan/{chan}/send"))
            .json(&json!(i))
            .send()
            .await
            .map(|r| r.status().as_u16());
        send_acks.push(sent.elapsed());
        let (woke, states) = poller.await.unwrap();
        let ok = status.ok() == Some(200)
            && states.len() == 1
            && states[0]["results"][0]["data"] == json!(i);
        if !ok {
            errors += 1;
            continue;
        }
        wakes.push(woke - sent);
        let _ = http.delete(format!("{a}/state/{id}")).send().await;
    }
    let load = load.finish(wakes.len(), "wake");
    let invalid = errors > 0 || wakes.is_empty();
    println!(
        "ROW long-poll wake (send via {b}, poller on {a}): p50 {}, p90 {}, p99 {}, max {} \
         over {} wakes; the send's own answer p50 {}{}{}  [{load}]",
        ms(pct(&mut wakes, 50.0)),
        ms(pct(&mut wakes, 90.0)),
        ms(pct(&mut wakes, 99.0)),
        ms(pct(&mut wakes, 100.0)),
        wakes.len(),
        ms(pct(&mut send_acks, 50.0)),
        if unseen > 0 {
            format!(", {unseen} pollers not seen asleep before the send")
        } else {
            String::new()
        },
        if invalid {
            format!("  INVALID: {errors} errors")
        } else {
            String::new()
        }
    );
    invalid
}

// ---------------------------------------------------------------------------------
// Row 3: many processes resumed in a loop by long-polling workers

/// What the loop's tasks share.
struct Loop {
    prefix: String,
    /// Per process: when its producer issued the send, and the value sent.
    sent: Vec<Mutex<Option<(Instant, u64)>>>,
    /// Per process: rung by the worker whose update made it wait again.
    ready: Vec<Notify>,
    stop: AtomicBool,
    errors: AtomicUsize,
    first_error: Mutex<Option<String>>,
    /// (poll answered, resume latency, cycle latency) of every acknowledged update.
    samples: Mutex<Vec<(Instant, Duration, Duration)>>,
}

impl Loop {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.first_error.lock().unwrap().get_or_insert(what);
    }

    fn id(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }

    fn chan(&self, i: usize) -> String {
        format!("{}{i}-chan", self.prefix)
    }

    fn waiting(&self, i: usize, n: u64) -> Value {
        json!({"data": {"n": n},
            "selects": [{"id": "g", "cases": [{"op": "recv", "chan": self.chan(i)}]}]})
    }
}

async fn produce(http: reqwest::Client, node: String, l: Arc<Loop>, i: usize) {
    let mut n = 0;
    loop {
        l.ready[i].notified().await;
        if l.stop.load(Ordering::Relaxed) {
            return;
        }
        n += 1;
        *l.sent[i].lock().unwrap() = Some((Instant::now(), n));
        let status = http
            .post(format!("{node}/chan/{}/send", l.chan(i)))
            .json(&json!(n))
            .send()
            .await
            .map(|r| r.status().as_u16());
        if status.as_ref().ok() != Some(&200) {
            l.error(format!("send to process {i}: {status:?}"));
        }
    }
}

async fn work(http: reqwest::Client, node: String, l: Arc<Loop>) {
    while !l.stop.load(Ordering::Relaxed) {
        let url = format!("{node}/state/poll?prefix={}&wait=1&limit=1", l.prefix);
        let states: Vec<Value> = match http.get(url).send().await {
            Ok(r) if r.status() == 200 => r.json().await.unwrap_or_default(),
            other => {
                l.error(format!("poll: {:?}", other.map(|r| r.status())));
                continue;
            }
        };
        let polled = Instant::now();
        for state in states {
            resume(&http, &node, &l, &state, polled).await;
        }
    }
}

/// Checks a leased state's value, updates it with a new recv, rings its producer.
async fn resume(http: &reqwest::Client, node: &str, l: &Loop, state: &Value, polled: Instant) {
    let id = state["id"].as_str().unwrap_or_default();
    let Some(i) = id
        .strip_prefix(&l.prefix)
        .and_then(|i| i.parse::<usize>().ok())
    else {
        return l.error(format!("poll returned {id:?}"));
    };
    let Some((sent_at, n)) = *l.sent[i].lock().unwrap() else {
        return l.error(format!("process {i} resumed before any send"));
    };
    if state["results"][0]["data"] != json!(n)
        || state["results"].as_array().map(Vec::len) != Some(1)
    {
        return l.error(format!(
            "process {i}: expected value {n}, got {}",
            state["results"]
        ));
    }
    let token = state["lease"]["token"].as_str().unwrap_or_default();
    let r = http
        .put(format!("{node}/state/{id}"))
        .header("Slct-Lease", token)
        .json(&l.waiting(i, n))
        .send()
        .await
        .map(|r| r.status().as_u16());
    if r.as_ref().ok() != Some(&200) {
        return l.error(format!("update of process {i}: {r:?}"));
    }
    let updated = Instant::now();
    l.samples
        .lock()
        .unwrap()
        .push((polled, polled - sent_at, updated - sent_at));
    l.ready[i].notify_one();
}

async fn resume_loop(http: &reqwest::Client, args: &Args, cluster: &Cluster, run: u32) -> bool {
    let node = cluster.leader.clone();
    let l = Arc::new(Loop {
        prefix: format!("rb-{run}-loop-p"),
        sent: (0..args.processes).map(|_| Mutex::new(None)).collect(),
        ready: (0..args.processes).map(|_| Notify::new()).collect(),
        stop: AtomicBool::new(false),
        errors: AtomicUsize::new(0),
        first_error: Mutex::new(None),
        samples: Mutex::new(Vec::new()),
    });
    for i in 0..args.processes {
        let r = http
            .put(format!("{node}/state/{}", l.id(i)))
            .json(&l.waiting(i, 0))
            .send()
            .await
            .map(|r| r.status().as_u16());
        if r.as_ref().ok() != Some(&201) {
            l.error(format!("create of process {i}: {r:?}"));
        }
    }
    let mut tasks = Vec::new();
    for _ in 0..args.workers {
        tasks.push(tokio::spawn(work(http.clone(), node.clone(), l.clone())));
    }
    for i in 0..args.processes {
        tasks.push(tokio::spawn(produce(
            http.clone(),
            node.clone(),
            l.clone(),
            i,
        )));
        l.ready[i].notify_one();
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let load = Load::start(&args.pids);
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let to = Instant::now();
    let window: Vec<_> = l
        .samples
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.0 >= from && s.0 < to)
        .copied()
        .collect();
    let load = load.finish(window.len(), "resume");
    l.stop.store(true, Ordering::Relaxed);
    for r in &l.ready {
        r.notify_one();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for t in tasks {
        t.abort();
    }
    let mut resumes: Vec<Duration> = window.iter().map(|s| s.1).collect();
    let mut cycles: Vec<Duration> = window.iter().map(|s| s.2).collect();
    let rate = window.len() as f64 / (to - from).as_secs_f64();
    let errors = l.errors.load(Ordering::Relaxed);
    println!(
        "ROW resume loop ({} processes, {} workers, leader {node}): {rate:.0} resumes/s over {} s; \
         resume latency (send issued → poll answered) p50 {}, p99 {}; \
         cycle (send issued → update acknowledged) p50 {}, p99 {}{}  [{load}]",
        args.processes,
        args.workers,
        args.seconds,
        ms(pct(&mut resumes, 50.0)),
        ms(pct(&mut resumes, 99.0)),
        ms(pct(&mut cycles, 50.0)),
        ms(pct(&mut cycles, 99.0)),
        if errors > 0 {
            format!(
                "  INVALID: {errors} errors, first: {}",
                l.first_error.lock().unwrap().clone().unwrap_or_default()
            )
        } else {
            String::new()
        }
    );
    errors > 0 || window.is_empty()
}

// ---------------------------------------------------------------------------------
// Figures and machine load

/// The `p`th percentile (nearest rank) of `v`, sorting it; zero when empty.
fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let rank = ((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// CPU use of the machine, the servers and this program over one row.
struct Load {
    at: Instant,
    busy: u64,
    servers: u64,
    me: u64,
    pids: Vec<u32>,
}

impl Load {
    fn start(pids: &[u32]) -> Load {
        Load {
            at: Instant::now(),
            busy: machine_busy_ticks(),
            servers: pids.iter().map(|p| process_ticks(&p.to_string())).sum(),
            me: process_ticks("self"),
            pids: pids.to_vec(),
        }
    }

    /// "others X cores, servers Y cores (Z µs CPU per UNIT), bench W cores, loadavg".
    fn finish(self, units: usize, unit: &str) -> String {
        let secs = self.at.elapsed().as_secs_f64();
        let hz = 100.0; // USER_HZ: 100 on Linux x86-64 and arm64
        let busy = machine_busy_ticks() - self.busy;
        let servers: u64 = self
            .pids
            .iter()
            .map(|p| process_ticks(&p.to_string()))
            .sum::<u64>()
            - self.servers;
        let me = process_ticks("self") - self.me;
        let others = busy.saturating_sub(servers + me) as f64 / hz / secs;
        let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let loadavg: Vec<&str> = loadavg.split_whitespace().take(3).collect();
        let mut out = format!("machine: others {others:.2} cores");
        if !self.pids.is_empty() {
            out += &format!(", servers {:.2} cores", servers as f64 / hz / secs);
            if units > 0 {
                let per = servers as f64 / hz * 1e6 / units as f64;
                out += &format!(" ({per:.0} µs CPU per {unit})");
            }
        }
        out + &format!(
            ", bench {:.2} cores, loadavg {}",
            me as f64 / hz / secs,
            loadavg.join(" ")
        )
    }
}

/// Busy ticks of all CPUs: user nice system irq softirq steal (/proc/stat).
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| cpu.get(i)).sum()
}

/// utime + stime of a process (/proc/PID/stat), in ticks; zero if it is gone.
fn process_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map_or("", |s| s.1);
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    t(11) + t(12)
}
