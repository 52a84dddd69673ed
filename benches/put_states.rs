//! State-create throughput and latency against a running cluster (not a timed test).
//!
//! `benches/cluster.sh` runs it against fresh clusters with and without group commit.
//! By hand: start a cluster (`slct dev`, optionally with `--no-group-commit`), then
//! `cargo bench --bench put_states -- [SECONDS] [CLIENTS...]` (default `5 1 64`), with
//! `SLCT_SERVER` (default `http://127.0.0.1:7001`) naming any node. Requests go to the
//! leader, so the figures are the Raft path, not forwarding. Each client creates fresh
//! states (`PUT /state/{id}`, small JSON data, no selects) one after another.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let seconds: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut clients: Vec<usize> = args.iter().skip(1).filter_map(|s| s.parse().ok()).collect();
    if clients.is_empty() {
        clients = vec![1, 64];
    }
    let server = std::env::var("SLCT_SERVER").unwrap_or_else(|_| "http://127.0.0.1:7001".into());
    let http = reqwest::Client::new();
    let leader = leader_of(&http, &server).await;
    println!("leader: {leader}");
    let run = uuid::Uuid::new_v4().simple().to_string();
    for (round, n) in clients.into_iter().enumerate() {
        let run = format!("{run}-{round}");
        let (count, mut latencies) = measure(&http, &leader, &run, n, seconds).await;
        latencies.sort();
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "clients={n:<3} puts/s={:<8.0} p50={:?} p99={:?} p99.9={:?} max={:?} \
             over-100ms={} slowest={:?} ({count} creates in {seconds}s)",
            count as f64 / seconds as f64,
            pct(0.50),
            pct(0.99),
            pct(0.999),
            latencies[latencies.len() - 1],
            latencies
                .iter()
                .filter(|l| **l > Duration::from_millis(100))
                .count(),
            latencies
                .iter()
                .rev()
                .take(6)
                .map(|l| l.as_millis())
                .collect::<Vec<_>>(),
        );
    }
}

/// The leader's base URL, from `GET /cluster` on `server`.
async fn leader_of(http: &reqwest::Client, server: &str) -> String {
    for _ in 0..100 {
        if let Ok(response) = http.get(format!("{server}/cluster")).send().await {
            if let Ok(info) = response.json::<Value>().await {
                let leader = info["leader"].to_string();
                if let Some(addr) = info["members"][&leader].as_str() {
                    return format!("http://{addr}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader at {server}");
}

/// Runs `n` clients for `seconds`; returns the number of creates and their latencies.
async fn measure(
    http: &reqwest::Client,
    leader: &str,
    run: &str,
    n: usize,
    seconds: u64,
) -> (usize, Vec<Duration>) {
    let end = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..n)
        .map(|client| {
            let (http, leader) = (http.clone(), leader.to_owned());
            let prefix = format!("bench-{run}-{client}");
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while Instant::now() < end {
                    i += 1;
                    let started = Instant::now();
                    let response = http
                        .put(format!("{leader}/state/{prefix}-{i}"))
                        .json(&json!({ "data": { "client": client, "i": i } }))
                        .send()
                        .await
                        .expect("PUT /state");
                    assert_eq!(response.status(), 201, "create");
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client"));
    }
    (all.len(), all)
}
