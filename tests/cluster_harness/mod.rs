//! Real `slct serve` processes on loopback ports, for tests that kill nodes with `kill -9`.
//!
//! Every node is the built binary as a child process with its own data directory under
//! one temporary directory; its output goes to `node.log` there. Waiting is always by
//! polling a condition against a deadline ([`eventually`]).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

/// Polls `check` every 50 ms until it yields a value, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free loopback port (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// One node: its address, data directory and process (if running).
pub struct Proc {
    pub addr: String,
    pub data: PathBuf,
    child: Option<Child>,
}

/// A cluster of `slct serve` processes.
pub struct Cluster {
    _dir: TempDir,
    peers: String,
    extra: Vec<String>,
    /// `RUST_LOG` of every node; `None`: the binary's default filter.
    rust_log: Option<String>,
    /// `ulimit -n` for every node (soft and hard), if set.
    open_files: Option<u64>,
    pub nodes: BTreeMap<u64, Proc>,
    pub http: reqwest::Client,
}

impl Cluster {
    /// Starts nodes `1..=n` with `extra` flags, logging at `warn,slct=info`.
    pub fn start(n: u64, extra: &[&str]) -> Cluster {
        Cluster::start_logging(n, extra, Some("warn,slct=info"))
    }

    /// Starts nodes `1..=n` with `extra` flags and `RUST_LOG=rust_log` (`None`: unset,
    /// the binary's default filter).
    pub fn start_logging(n: u64, extra: &[&str], rust_log: Option<&str>) -> Cluster {
        Cluster::launch(n, extra, rust_log, None)
    }

    /// Starts nodes `1..=n` with `extra` flags, logging at `warn,slct=info`, each with
    /// an open-files limit (soft and hard: the node cannot raise it) of `open_files`.
    pub fn start_limited(n: u64, extra: &[&str], open_files: u64) -> Cluster {
        Cluster::launch(n, extra, Some("warn,slct=info"), Some(open_files))
    }

    fn launch(n: u64, extra: &[&str], rust_log: Option<&str>, open_files: Option<u64>) -> Cluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let nodes: BTreeMap<u64, Proc> = (1..=n)
            .map(|id| {
                let proc = Proc {
                    addr: format!("127.0.0.1:{}", free_port()),
                    data: dir.path().join(id.to_string()),
                    child: None,
                };
                (id, proc)
            })
            .collect();
        let peers = nodes
            .iter()
            .map(|(id, p)| format!("{id}={}", p.addr))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            _dir: dir,
            peers,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            rust_log: rust_log.map(str::to_owned),
            open_files,
            nodes,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("http client"),
        };
        for id in 1..=n {
            cluster.spawn(id);
        }
        cluster
    }

    /// Starts node `id` (again) on its address and data.
    pub fn spawn(&mut self, id: u64) {
        let proc = self.nodes.get_mut(&id).expect("known node");
        assert!(proc.child.is_none(), "node {id} is running");
        std::fs::create_dir_all(&proc.data).expect("data directory");
        let log = File::options()
            .create(true)
            .append(true)
            .open(proc.data.with_extension("log"))
            .expect("log file");
        let mut command = match self.open_files {
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", r#"ulimit -n "$0" && exec "$@""#, &n.to_string()]);
                sh.arg(env!("CARGO_BIN_EXE_slct"));
                sh
            }
            None => Command::new(env!("CARGO_BIN_EXE_slct")),
        };
        match &self.rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        let child = command
            .arg("serve")
            .args(["--id", &id.to_string(), "--listen", &proc.addr])
            .arg("--data")
            .arg(&proc.data)
            .args(["--peers", &self.peers])
            .args(&self.extra)
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn slct");
        proc.child = Some(child);
    }

    /// `kill -9` node `id`.
    pub fn kill(&mut self, id: u64) {
        let proc = self.nodes.get_mut(&id).expect("known node");
        let mut child = proc.child.take().expect("node is running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// Waits until node `id`'s process exits on its own and returns its exit status;
    /// panics if it is still running after `timeout`.
    pub async fn exit_status(&mut self, id: u64, timeout: Duration) -> std::process::ExitStatus {
        let proc = self.nodes.get_mut(&id).expect("known node");
        let child = proc.child.as_mut().expect("node was started");
        let what = format!("node {id} exits");
        let status = eventually(&what, timeout, || {
            let exited = child.try_wait().expect("wait for the node");
            async move { exited }
        })
        .await;
        proc.child = None;
        status
    }

    /// Sends `signal` (such as `STOP` or `CONT`) to node `id`'s process.
    pub fn signal(&self, id: u64, signal: &str) {
        let child = self.nodes[&id].child.as_ref().expect("node is running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} node {id}");
    }

    /// The process id of node `id`.
    pub fn pid(&self, id: u64) -> u32 {
        self.nodes[&id]
            .child
            .as_ref()
            .expect("node is running")
            .id()
    }

    /// Ids of the running nodes.
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, p)| p.child.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Everything node `id` logged so far.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.nodes[&id].data.with_extension("log")).unwrap_or_default()
    }

    /// `http://addr` of node `id`.
    pub fn url(&self, id: u64, path: &str) -> String {
        format!("http://{}{path}", self.nodes[&id].addr)
    }

    /// `GET /cluster` of node `id`, if it answers.
    pub async fn cluster_info(&self, id: u64) -> Option<Value> {
        let response = self.http.get(self.url(id, "/cluster")).send().await.ok()?;
        response.json().await.ok()
    }

    /// Waits until every running node names the same leader, a running node, and returns it.
    pub async fn leader(&self) -> u64 {
        eventually(
            "all running nodes agree on a leader",
            Duration::from_secs(20),
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

    /// A running node other than `not`.
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
        eventually(&what, Duration::from_secs(30), || self.stale_state(on, id)).await
    }

    /// Creates state `id` holding `data` through a node that answers, retrying while the
    /// cluster has no leader. Panics if the state is never created.
    pub async fn create(&self, id: &str, data: Value) {
        let body = json!({ "data": data });
        eventually(&format!("create {id}"), Duration::from_secs(30), || async {
            for via in self.running() {
                match self.put_state(via, id, &body).await {
                    Some(201) => return Some(()),
                    // Created by an attempt whose answer was lost.
                    Some(409) => return Some(()),
                    _ => {}
                }
            }
            None
        })
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for proc in self.nodes.values_mut() {
            if let Some(mut child) = proc.child.take() {
                // A stopped process dies of SIGKILL too; no need to continue it first.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
