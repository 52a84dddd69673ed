//! A real cluster on 127.0.0.1 ephemeral ports: nodes started in this process (the
//! library's `Node`, served by `slct::server::serve` as the binary serves it), or `slct serve` processes of the
//! built binary for tests that `kill -9`, pause or restart a node.
//!
//! Either way node id `i + 1` answers at `urls[i]`, so the HTTP helpers ([`Cluster::call`]
//! and friends) take an index. The controls of processes ([`Cluster::kill`],
//! [`Cluster::spawn`], [`Cluster::log`], …) take the node id, as `GET /cluster` names
//! nodes. Each node's data lives under one temporary directory, removed on drop; a
//! process's output goes to `{id}.log` beside its data. Processes may each have a small
//! disk of their own ([`Builder::tmpfs`]): a tmpfs mounted on the data directory
//! (tests run as root), unmounted on drop.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use slct::api::ApiConfig;
use slct::node::{Node, NodeConfig};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::http::{answer, exact_request, Answer};
use super::wait::{eventually, within};

/// How a [`Cluster`] is to be started: [`Cluster::build`], then [`Builder::start`] (in
/// this process) or [`Builder::binary`] (processes).
pub struct Builder {
    voters: u64,
    joining: u64,
    strangers: Vec<String>,
    secret: Option<String>,
    api: ApiConfig,
    tune: Box<dyn Fn(&mut NodeConfig)>,
    flags: Vec<String>,
    rust_log: Option<String>,
    open_files: Option<u64>,
    tmpfs: Option<u64>,
}

impl Builder {
    /// Each process's data directory on a tmpfs of `bytes` of its own (processes only).
    pub fn tmpfs(mut self, bytes: u64) -> Self {
        self.tmpfs = Some(bytes);
        self
    }

    /// Members that form the cluster (3 unless set).
    pub fn nodes(mut self, voters: u64) -> Self {
        self.voters = voters;
        self
    }

    /// Nodes started beside the members that list every node as a peer but are not
    /// members yet, so they wait to be added (in this process only).
    pub fn joining(mut self, joining: u64) -> Self {
        self.joining = joining;
        self
    }

    /// A member at `addr` that this harness does not run (such as a stand-in that
    /// answers errors), with the next id after the nodes it runs (in this process only).
    pub fn stranger(mut self, addr: String) -> Self {
        self.strangers.push(addr);
        self
    }

    /// The shared secret on `/raft/*`.
    pub fn secret(mut self, secret: &str) -> Self {
        self.secret = Some(secret.to_owned());
        self
    }

    /// The API's settings, tokens among them (in this process only; processes take
    /// [`Builder::flags`]).
    pub fn api(mut self, api: ApiConfig) -> Self {
        self.api = api;
        self
    }

    /// Adjusts each node's configuration after the harness has filled it in (in this
    /// process only).
    pub fn tune(mut self, tune: impl Fn(&mut NodeConfig) + 'static) -> Self {
        self.tune = Box::new(tune);
        self
    }

    /// Flags every `slct serve` gets besides its id, address, data and peers.
    pub fn flags(mut self, flags: &[&str]) -> Self {
        self.flags = flags.iter().map(|s| s.to_string()).collect();
        self
    }

    /// `RUST_LOG` of every process (`None`: unset, the binary's default filter;
    /// `warn,slct=info` unless set).
    pub fn rust_log(mut self, filter: Option<&str>) -> Self {
        self.rust_log = filter.map(str::to_owned);
        self
    }

    /// An open-files limit (soft and hard: the node cannot raise it) for every process.
    pub fn open_files(mut self, limit: u64) -> Self {
        self.open_files = Some(limit);
        self
    }

    /// Starts the nodes in this process, each served by `slct::server::serve` on its own
    /// socket, and returns once every member knows the leader and is ready.
    pub async fn start(self) -> Cluster {
        assert!(
            self.tmpfs.is_none(),
            "a tmpfs of their own is for processes"
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut listeners = Vec::new();
        let mut peers = BTreeMap::new();
        for id in 1..=self.voters + self.joining {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            peers.insert(id, listener.local_addr().expect("address").to_string());
            listeners.push(listener);
        }
        for addr in &self.strangers {
            peers.insert(peers.len() as u64 + 1, addr.clone());
        }
        let configs = peers.iter().take(listeners.len()).map(|(&id, addr)| {
            let mut members = peers.clone();
            if id <= self.voters {
                members.retain(|member, _| !self.is_joining(*member));
            }
            if members.len() == 1 {
                members.clear();
            }
            let mut config = NodeConfig {
                id,
                listen: addr.parse().expect("an address"),
                data_dir: dir.path().join(id.to_string()),
                peers: members,
                cluster_secret: self.secret.clone(),
                ..NodeConfig::default()
            };
            (self.tune)(&mut config);
            config
        });
        let nodes: Vec<Node> = futures::future::join_all(configs.map(Node::start))
            .await
            .into_iter()
            .map(|started| started.expect("start node"))
            .collect();
        let mut stops = Vec::new();
        for (node, listener) in nodes.iter().zip(listeners) {
            let (stop, mut stopped) = watch::channel(false);
            stops.push(stop);
            tokio::spawn(slct::server::serve(
                node.clone(),
                self.api.clone(),
                slct::server::Limits::default(),
                listener,
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            ));
        }
        let cluster = Cluster {
            urls: urls(peers.values().take(nodes.len())),
            http: client(Duration::from_secs(60)),
            nodes,
            stops,
            procs: BTreeMap::new(),
            launch: Launch::default(),
            mounts: Vec::new(),
            _dir: dir,
        };
        let voters = &cluster.nodes[..self.voters as usize];
        eventually(Duration::from_secs(20), "a leader known to all", || async {
            for n in voters {
                if n.leader().is_none() || !n.is_ready().await {
                    return false;
                }
            }
            true
        })
        .await;
        cluster
    }

    fn is_joining(&self, id: u64) -> bool {
        id > self.voters && id <= self.voters + self.joining
    }

    /// Starts the nodes as `slct serve` processes of the built binary; returns at once
    /// (see [`Cluster::await_leader`]).
    pub fn binary(self) -> Cluster {
        assert!(
            self.joining == 0 && self.strangers.is_empty(),
            "processes are all members"
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let procs: BTreeMap<u64, Proc> = (1..=self.voters)
            .map(|id| {
                let proc = Proc {
                    addr: format!("127.0.0.1:{}", free_port()),
                    data: dir.path().join(id.to_string()),
                    child: None,
                };
                (id, proc)
            })
            .collect();
        let peers = procs
            .iter()
            .map(|(id, p)| format!("{id}={}", p.addr))
            .collect::<Vec<_>>()
            .join(",");
        let mut mounts = Vec::new();
        if let Some(bytes) = self.tmpfs {
            for proc in procs.values() {
                std::fs::create_dir_all(&proc.data).expect("data directory");
                let size = format!("size={bytes},mode=0700");
                let status = Command::new("mount")
                    .args(["-t", "tmpfs", "-o", &size, "slct-test"])
                    .arg(&proc.data)
                    .status()
                    .expect("mount");
                assert!(
                    status.success(),
                    "mount a tmpfs on {:?} (as root)",
                    proc.data
                );
                mounts.push(proc.data.clone());
            }
        }
        let mut flags = self.flags;
        if let Some(secret) = self.secret {
            flags.extend(["--cluster-secret".to_owned(), secret]);
        }
        let mut cluster = Cluster {
            urls: urls(procs.values().map(|p| &p.addr)),
            http: client(Duration::from_secs(5)),
            nodes: Vec::new(),
            stops: Vec::new(),
            procs,
            launch: Launch {
                peers,
                flags,
                rust_log: self.rust_log,
                open_files: self.open_files,
            },
            mounts,
            _dir: dir,
        };
        for id in 1..=self.voters {
            cluster.spawn(id);
        }
        cluster
    }
}

/// `http://addr` of each address.
fn urls<'a>(addrs: impl Iterator<Item = &'a String>) -> Vec<String> {
    addrs.map(|a| format!("http://{a}")).collect()
}

/// An HTTP client whose requests give up after `timeout`.
fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("http client")
}

/// A free loopback port (bound, read, released), for a process to listen on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// How every process of a cluster is started.
#[derive(Default)]
struct Launch {
    /// `--peers`.
    peers: String,
    flags: Vec<String>,
    rust_log: Option<String>,
    open_files: Option<u64>,
}

/// One node process: its address, data directory and process (if running).
struct Proc {
    addr: String,
    data: PathBuf,
    child: Option<Child>,
}

/// A running cluster (see the module's doc).
pub struct Cluster {
    /// The nodes in this process, index 0 is node id 1; empty for processes.
    pub nodes: Vec<Node>,
    /// `http://127.0.0.1:port` of each node, index 0 is node id 1.
    pub urls: Vec<String>,
    /// HTTP client: requests give up after 60 s in this process (long-polls wait up to
    /// 30 s), after 5 s against processes (one may be paused).
    pub http: reqwest::Client,
    stops: Vec<watch::Sender<bool>>,
    procs: BTreeMap<u64, Proc>,
    launch: Launch,
    /// Data directories on a tmpfs of their own, unmounted on drop.
    mounts: Vec<PathBuf>,
    _dir: TempDir,
}

impl Cluster {
    /// A cluster to start: three members, default API settings, no secret. Raises this
    /// process's open-files limit to its hard maximum, as `slct serve` does: nodes in
    /// this process and the test's own connections share its descriptors, and a user's
    /// default soft limit (1,024) is below what some tests open.
    pub fn build() -> Builder {
        slct::server::raise_open_files_limit().expect("raise the open-files limit");
        Builder {
            voters: 3,
            joining: 0,
            strangers: Vec::new(),
            secret: None,
            api: ApiConfig::default(),
            tune: Box::new(|_| {}),
            flags: Vec::new(),
            rust_log: Some("warn,slct=info".to_owned()),
            open_files: None,
            tmpfs: None,
        }
    }

    /// Three nodes in this process with default API settings.
    pub async fn start() -> Cluster {
        Cluster::build().start().await
    }

    /// Three nodes in this process serving the API with `api`.
    pub async fn start_with(api: ApiConfig) -> Cluster {
        Cluster::build().api(api).start().await
    }

    /// Three nodes in this process serving the API with `api`, each node's
    /// configuration adjusted by `tune`.
    pub async fn start_tuned(api: ApiConfig, tune: impl Fn(&mut NodeConfig) + 'static) -> Cluster {
        Cluster::build().api(api).tune(tune).start().await
    }

    /// `n` processes of the built binary with `flags`.
    pub fn binary(n: u64, flags: &[&str]) -> Cluster {
        Cluster::build().nodes(n).flags(flags).binary()
    }

    /// Index of the leader among the nodes in this process.
    pub fn leader(&self) -> usize {
        self.nodes
            .iter()
            .position(Node::is_leader)
            .expect("a leader")
    }

    /// Index of a follower among the nodes in this process.
    pub fn follower(&self) -> usize {
        (self.leader() + 1) % self.nodes.len()
    }

    /// Waits until a node in this process leads, and returns it.
    pub async fn leader_node(&self) -> Node {
        eventually(Duration::from_secs(20), "a leader", || async {
            self.nodes.iter().find(|n| n.is_leader()).cloned()
        })
        .await
    }

    /// A request to node `i`.
    pub async fn call(&self, i: usize, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.urls[i], path));
        if let Some(body) = body {
            req = req.json(&body);
        }
        answer(req.send().await.expect("the node answers")).await
    }

    /// A request to node `i` with a raw body.
    pub async fn raw(&self, i: usize, method: Method, path: &str, body: Vec<u8>) -> Answer {
        let req = self
            .http
            .request(method, format!("{}{}", self.urls[i], path))
            .header("content-type", "application/json")
            .body(body);
        answer(req.send().await.expect("the node answers")).await
    }

    /// `127.0.0.1:port` of node `i`.
    pub fn addr(&self, i: usize) -> &str {
        self.urls[i].trim_start_matches("http://")
    }

    /// Sends `method target` to node `i` on a connection of its own, byte for byte
    /// (reqwest would rewrite a target such as `/state/..`), with `Host` the node's
    /// address unless `headers` has one, and returns the answer.
    pub async fn exact(
        &self,
        i: usize,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        exact_request(self.addr(i), method, target, headers, body).await
    }

    /// Stops node `i` in this process: its server, then Raft.
    pub async fn stop_node(&self, i: usize) {
        self.stops[i].send_replace(true);
        self.nodes[i].shutdown().await;
    }

    /// Stops serving and stops the nodes in this process.
    pub async fn shutdown(self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i).await;
        }
    }

    fn proc(&self, id: u64) -> &Proc {
        self.procs
            .get(&id)
            .unwrap_or_else(|| panic!("node {id} is not a process of this cluster"))
    }

    fn proc_mut(&mut self, id: u64) -> &mut Proc {
        self.procs
            .get_mut(&id)
            .unwrap_or_else(|| panic!("node {id} is not a process of this cluster"))
    }

    /// Starts process `id` (again) on its address and data.
    pub fn spawn(&mut self, id: u64) {
        let launch = &self.launch;
        let proc = self
            .procs
            .get_mut(&id)
            .unwrap_or_else(|| panic!("node {id} is not a process of this cluster"));
        assert!(proc.child.is_none(), "node {id} is running");
        std::fs::create_dir_all(&proc.data).expect("data directory");
        let log = File::options()
            .create(true)
            .append(true)
            .open(proc.data.with_extension("log"))
            .expect("log file");
        let mut command = match launch.open_files {
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", r#"ulimit -n "$0" && exec "$@""#, &n.to_string()]);
                sh.arg(env!("CARGO_BIN_EXE_slct"));
                sh
            }
            None => Command::new(env!("CARGO_BIN_EXE_slct")),
        };
        match &launch.rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        let child = command
            .arg("serve")
            .args(["--id", &id.to_string(), "--listen", &proc.addr])
            .arg("--data")
            .arg(&proc.data)
            .args(["--peers", &launch.peers])
            .args(&launch.flags)
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn slct");
        proc.child = Some(child);
    }

    /// `kill -9` process `id`.
    pub fn kill(&mut self, id: u64) {
        let mut child = self.proc_mut(id).child.take().expect("node is running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// Waits until process `id` exits on its own and returns its exit status; panics if
    /// it is still running after `timeout`.
    pub async fn exit_status(&mut self, id: u64, timeout: Duration) -> std::process::ExitStatus {
        let proc = self.proc_mut(id);
        let child = proc.child.as_mut().expect("node was started");
        let what = format!("node {id} exits");
        let status = eventually(timeout, &what, || {
            let exited = child.try_wait().expect("wait for the node");
            async move { exited }
        })
        .await;
        proc.child = None;
        status
    }

    /// Sends `signal` (such as `STOP` or `CONT`) to process `id`.
    pub fn signal(&self, id: u64, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid(id).to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} node {id}");
    }

    /// The process id of node `id`.
    pub fn pid(&self, id: u64) -> u32 {
        self.proc(id).child.as_ref().expect("node is running").id()
    }

    /// Ids of the running processes.
    pub fn running(&self) -> Vec<u64> {
        self.procs
            .iter()
            .filter(|(_, p)| p.child.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Process `id`'s data directory.
    pub fn data(&self, id: u64) -> &Path {
        &self.proc(id).data
    }

    /// Everything process `id` logged so far.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.proc(id).data.with_extension("log")).unwrap_or_default()
    }

    /// `http://addr{path}` of node `id`.
    pub fn url(&self, id: u64, path: &str) -> String {
        format!("{}{path}", self.urls[id as usize - 1])
    }

    /// `GET /cluster` of node `id`, if it answers.
    pub async fn cluster_info(&self, id: u64) -> Option<Value> {
        let response = self.http.get(self.url(id, "/cluster")).send().await.ok()?;
        response.json().await.ok()
    }

    /// `GET {path}` on node `id`, which must answer 200 with JSON: the body.
    pub async fn get_json(&self, id: u64, path: &str) -> Value {
        let response = self
            .http
            .get(self.url(id, path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} on node {id}: {e}"));
        assert_eq!(response.status(), 200, "GET {path} on node {id}");
        response
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path} on node {id}: not JSON: {e}"))
    }

    /// Waits until every running process names the same leader, a running one, and
    /// returns its id.
    pub async fn await_leader(&self) -> u64 {
        // Generous: a fresh cluster of binaries on a machine loaded by other test
        // binaries once took more than 20 s (CI, durability.rs); the wait ends as soon as
        // they agree.
        eventually(
            Duration::from_secs(60),
            "all running nodes agree on a leader",
            || async {
                let mut leaders = Vec::new();
                for id in self.running() {
                    leaders.push(self.cluster_info(id).await?["leader"].as_u64()?);
                }
                let first = *leaders.first()?;
                let agreed = leaders.iter().all(|l| *l == first);
                (agreed && self.running().contains(&first)).then_some(first)
            },
        )
        .await
    }

    /// Waits until every running process has applied the same log index, and returns
    /// that index.
    pub async fn await_same_applied(&self) -> u64 {
        eventually(
            Duration::from_secs(30),
            "every node applies the same log",
            || async {
                let mut seen = Vec::new();
                for id in self.running() {
                    seen.push(self.cluster_info(id).await?["last_applied"].as_u64()?);
                }
                seen.windows(2).all(|w| w[0] == w[1]).then_some(seen[0])
            },
        )
        .await
    }

    /// A running process other than `not`.
    pub fn other_than(&self, not: u64) -> u64 {
        *self
            .running()
            .iter()
            .find(|id| **id != not)
            .expect("another node")
    }

    /// `PUT /state/{id}` through node `via`; the status, or `None` if the request failed.
    pub async fn put_state(&self, via: u64, id: &str, body: &Value) -> Option<u16> {
        let response = self
            .http
            .put(self.url(via, &format!("/state/{id}")))
            .json(body)
            .send()
            .await
            .ok()?;
        Some(response.status().as_u16())
    }

    /// `GET /state/{id}?stale=true` on node `on`: the state if that replica has it.
    pub async fn stale_state(&self, on: u64, id: &str) -> Option<Value> {
        let url = self.url(on, &format!("/state/{id}?stale=true"));
        let response = self.http.get(url).send().await.ok()?;
        if response.status() != 200 {
            return None;
        }
        response.json().await.ok()
    }

    /// Waits until node `on` has state `id` (read locally) and returns it.
    pub async fn await_state(&self, on: u64, id: &str) -> Value {
        let what = format!("node {on} has state {id}");
        eventually(Duration::from_secs(30), &what, || self.stale_state(on, id)).await
    }

    /// Creates state `id` holding `data` through a running process that answers,
    /// retrying while the cluster has no leader. Panics if the state is never created,
    /// with each node's last answers and the end of each process's log.
    pub async fn create(&self, id: &str, data: Value) {
        let body = json!({ "data": data });
        let last = std::sync::Mutex::new(BTreeMap::new());
        let created = within(Duration::from_secs(30), || async {
            for via in self.running() {
                let status = self.put_state(via, id, &body).await;
                // 409: created by an attempt whose answer was lost.
                if matches!(status, Some(201 | 409)) {
                    return true;
                }
                last.lock().unwrap().insert(via, status);
            }
            false
        })
        .await;
        if created.is_some() {
            return;
        }
        let logs: String = self
            .procs
            .keys()
            .map(|&node| {
                let log = self.log(node);
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                format!("\n--- the end of node {node}'s log:\n{tail}")
            })
            .collect();
        let last = last.into_inner().unwrap();
        panic!("timed out after 30s creating {id}; last answers (None: no answer) {last:?}{logs}")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for proc in self.procs.values_mut() {
            if let Some(mut child) = proc.child.take() {
                // A stopped process dies of SIGKILL too; no need to continue it first.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for mount in &self.mounts {
            let _ = Command::new("umount").arg("-l").arg(mount).status();
        }
    }
}
