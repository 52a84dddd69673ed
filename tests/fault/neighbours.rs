//! Load a neighbour can cause (docs/testing.md, "Fault tests"): idle keep-alive connections and
//! parked long-polls held against the nodes while the workload and the nemesis run.
//!
//! Idle connections are raw TCP: each sends one `GET /healthz`, reads the answer and
//! then sends nothing, as a pooled keep-alive connection does, again every 30 s so the
//! node's `--idle-timeout` (60 s) does not close it. One whose answer is 503
//! `too_many_connections` (a node at its `--max-connections`) counts as refused and is
//! closed; one the node closes (restart, kill) is opened again after a second. Long-polls
//! wait 30 s on a prefix no state has, and are made again when they return.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How much load, where.
#[derive(Clone, Debug)]
pub struct Neighbours {
    /// Idle keep-alive connections held to each node.
    pub idle: BTreeMap<u64, usize>,
    /// Open-files limits (soft and hard) some nodes start with, so that they run out.
    pub nofile: BTreeMap<u64, u64>,
    /// Long-polls parked, spread over the nodes.
    pub polls: usize,
}

/// What the load saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Idle connections answered 200 and held, at most at once, per node.
    pub held_peak: BTreeMap<u64, u64>,
    /// Answers 503 `too_many_connections`, per node.
    pub refused: BTreeMap<u64, u64>,
    /// Connections that could not be made or broke otherwise, per node.
    pub broken: BTreeMap<u64, u64>,
    /// Long-polls that returned (empty, after their wait) and failed.
    pub polls_returned: u64,
    pub polls_failed: u64,
}

#[derive(Default)]
struct Counters {
    held: AtomicU64,
    held_peak: AtomicU64,
    refused: AtomicU64,
    broken: AtomicU64,
}

/// The load, running until `until`.
pub struct Load {
    tasks: Vec<JoinHandle<()>>,
    per_node: BTreeMap<u64, Arc<Counters>>,
    polls_returned: Arc<AtomicU64>,
    polls_failed: Arc<AtomicU64>,
}

impl Load {
    /// Starts the load on the nodes at `addrs` (id → `ip:port`).
    pub fn start(config: &Neighbours, addrs: &BTreeMap<u64, String>, until: Instant) -> Load {
        let mut tasks = Vec::new();
        let mut per_node = BTreeMap::new();
        for (id, count) in &config.idle {
            let counters = Arc::new(Counters::default());
            per_node.insert(*id, counters.clone());
            for _ in 0..*count {
                let (addr, counters) = (addrs[id].clone(), counters.clone());
                tasks.push(tokio::spawn(idle(addr, counters, until)));
            }
        }
        let (returned, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(40))
            .build()
            .expect("http client");
        let ids: Vec<u64> = addrs.keys().copied().collect();
        for i in 0..config.polls {
            let url = format!(
                "http://{}/state/poll?prefix=neighbour-none-&wait=30",
                addrs[&ids[i % ids.len()]]
            );
            let (http, returned, failed) = (http.clone(), returned.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < until {
                    let answer = tokio::time::timeout_at(until, http.get(&url).send()).await;
                    match answer {
                        Err(_) => break,
                        Ok(Ok(r)) if r.status().is_success() => {
                            returned.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }));
        }
        Load {
            tasks,
            per_node,
            polls_returned: returned,
            polls_failed: failed,
        }
    }

    /// Waits for the load to end (at `until`) and tallies it.
    pub async fn finish(self) -> Tally {
        for task in self.tasks {
            let _ = task.await;
        }
        let mut tally = Tally {
            polls_returned: self.polls_returned.load(Ordering::Relaxed),
            polls_failed: self.polls_failed.load(Ordering::Relaxed),
            ..Tally::default()
        };
        for (id, c) in &self.per_node {
            tally
                .held_peak
                .insert(*id, c.held_peak.load(Ordering::Relaxed));
            tally.refused.insert(*id, c.refused.load(Ordering::Relaxed));
            tally.broken.insert(*id, c.broken.load(Ordering::Relaxed));
        }
        tally
    }
}

/// One idle keep-alive connection to `addr`, held until `until`.
async fn idle(addr: String, counters: Arc<Counters>, until: Instant) {
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut buf = vec![0u8; 2048];
    while Instant::now() < until {
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr)).await
        else {
            counters.broken.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        // A node at its cap answers 503 at once and closes, before reading anything.
        let mut first = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut first)).await {
            Err(_) => {}
            Ok(Ok(n)) if String::from_utf8_lossy(&first[..n]).contains("too_many_connections") => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Ok(_) => {
                counters.broken.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        let mut holding = false;
        loop {
            let asked = async {
                stream.write_all(request.as_bytes()).await?;
                stream.read(&mut buf).await
            };
            let answer = tokio::time::timeout(Duration::from_secs(10), asked).await;
            let text = match answer {
                Ok(Ok(n)) if n > 0 => String::from_utf8_lossy(&buf[..n]).into_owned(),
                _ => {
                    counters.broken.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            };
            if text.contains("too_many_connections") {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                break;
            }
            if !text.starts_with("HTTP/1.1 200") {
                counters.broken.fetch_add(1, Ordering::Relaxed);
                break;
            }
            if !holding {
                holding = true;
                let now = counters.held.fetch_add(1, Ordering::Relaxed) + 1;
                counters.held_peak.fetch_max(now, Ordering::Relaxed);
            }
            // Idle: nothing until the next keep-alive, or a close from the node.
            let next = Instant::now() + Duration::from_secs(30);
            let mut peek = [0u8; 1];
            tokio::select! {
                _ = tokio::time::sleep_until(next.min(until)) => {}
                _ = stream.read(&mut peek) => break,
            }
            if Instant::now() >= until {
                break;
            }
        }
        if holding {
            counters.held.fetch_sub(1, Ordering::Relaxed);
        }
        if Instant::now() < until {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
