//! Measures how fast slct resumes processes, against a running cluster:
//!
//! - long-poll wake latency: a poller waits on node A; a send on node B completes a
//!   select; the time from just before the send to the poller's answer;
//! - callback ping-pong: two processes exchanging a counter over unbuffered channels,
//!   resumed only by callbacks (a receiver in this process); rounds per second.
//!
//! ```text
//! slct dev &            # or any three-node cluster
//! cargo run --release --example resume_bench -- http://127.0.0.1:7001 http://127.0.0.1:7002
//! ```

use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

const WAKES: usize = 50;
const ROUNDS: u64 = 200;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = args
        .first()
        .cloned()
        .unwrap_or("http://127.0.0.1:7001".into());
    let b = args.get(1).cloned().unwrap_or_else(|| a.clone());
    let http = reqwest::Client::new();
    let run = std::process::id();
    wake_latency(&http, &a, &b, run).await;
    ping_pong(&http, &a, run).await;
}

async fn wake_latency(http: &reqwest::Client, a: &str, b: &str, run: u32) {
    let mut samples = Vec::new();
    for i in 0..WAKES {
        let id = format!("bench-{run}-wake-{i}");
        let chan = format!("bench-{run}-wake-chan-{i}");
        let state = json!({"selects": [{"id": "g", "cases": [{"op": "recv", "chan": chan}]}]});
        http.put(format!("{a}/state/{id}"))
            .json(&state)
            .send()
            .await
            .unwrap();
        let poll_url = format!("{a}/state/poll?prefix={id}&wait=30");
        let poller = tokio::spawn({
            let http = http.clone();
            async move {
                let r = http.get(poll_url).send().await.unwrap();
                let states: Vec<Value> = r.json().await.unwrap();
                (Instant::now(), states.len())
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = Instant::now();
        http.post(format!("{b}/chan/{chan}/send"))
            .json(&json!(i))
            .send()
            .await
            .unwrap();
        let (woke, n) = poller.await.unwrap();
        assert_eq!(n, 1);
        samples.push(woke - sent);
    }
    samples.sort();
    let pct = |p: usize| samples[(samples.len() - 1) * p / 100];
    println!(
        "long-poll wake latency over {WAKES} wakes (send on {b}, poll on {a}): p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        pct(50),
        pct(90),
        pct(99),
        samples[samples.len() - 1]
    );
}

/// One player's step (see tests/api_callbacks.rs for the same game, commented).
async fn play(Json(state): Json<Value>) -> Json<Value> {
    let me = state["id"].as_str().unwrap_or_default();
    let ping = me.ends_with("ping");
    let (inbox, outbox) = if ping { ("a", "b") } else { ("b", "a") };
    let prefix = me.rsplit_once('-').map_or("", |p| p.0);
    let (inbox, outbox) = (format!("{prefix}-{inbox}"), format!("{prefix}-{outbox}"));
    let mut data = state["data"].clone();
    let result = &state["results"][state["results"].as_array().map_or(0, Vec::len) - 1];
    let selects = if result["op"] == "recv" {
        let n = result["data"].as_u64().unwrap_or(0);
        if n >= 2 * ROUNDS {
            json!([])
        } else {
            data["sent"] = json!(n + 1);
            json!([{"id": "s", "cases": [{"op": "send", "chan": outbox, "data": n + 1}]}])
        }
    } else if data["sent"].as_u64() >= Some(2 * ROUNDS) {
        json!([])
    } else {
        json!([{"id": "r", "cases": [{"op": "recv", "chan": inbox}]}])
    };
    Json(json!({"data": data, "selects": selects, "callback": state["callback"]}))
}

async fn ping_pong(http: &reqwest::Client, a: &str, run: u32) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/play", listener.local_addr().unwrap());
    tokio::spawn(
        async move { axum::serve(listener, Router::new().route("/play", post(play))).await },
    );
    let prefix = format!("bench-{run}-pp");
    let callback = json!({"url": url, "timeout_ms": 5000});
    let pong = json!({"data": {}, "callback": callback,
        "selects": [{"id": "r", "cases": [{"op": "recv", "chan": format!("{prefix}-b")}]}]});
    let ping = json!({"data": {"sent": 1}, "callback": callback,
        "selects": [{"id": "s", "cases": [{"op": "send", "chan": format!("{prefix}-b"), "data": 1}]}]});
    let started = Instant::now();
    http.put(format!("{a}/state/{prefix}-pong"))
        .json(&pong)
        .send()
        .await
        .unwrap();
    http.put(format!("{a}/state/{prefix}-ping"))
        .json(&ping)
        .send()
        .await
        .unwrap();
    loop {
        let mut done = 0;
        for who in ["ping", "pong"] {
            let s: Value = http
                .get(format!("{a}/state/{prefix}-{who}?stale=true"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            done += usize::from(s["status"] == "done");
        }
        if done == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    println!(
        "callback ping-pong: {ROUNDS} rounds in {elapsed:?} = {:.1} rounds/s ({:.1} ms a round)",
        ROUNDS as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / ROUNDS as f64
    );
}
