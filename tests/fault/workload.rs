//! The workload: concurrent clients against every node, every call recorded.
//!
//! Each client is one sequential process (as in Jepsen) that picks a random node for
//! each call:
//! - register clients create, read and delete states `k-0..k-5`, each created with a
//!   select waiting on a short timer, and a register worker polls them (`k-`) when the
//!   timer fires and updates them under the lease with new data and a new timer — or
//!   extends the lease first, gives it back, or abandons it to expire;
//! - HTTP senders send unique values on the channels, detached, blocking or as a try;
//!   half of the detached and try sends carry an `Idempotency-Key` (blocking sends take
//!   none, design.md §3) and are sent again with it while their outcome is unknown;
//!   HTTP receivers receive with and without waiting;
//! - an actor worker keeps states `a-r*` blocked receiving (a recv case and a timer)
//!   and `a-s*` blocked sending unique values, polling them (`a-`) and updating each
//!   with its next select; now and then it deletes a sender and makes it again;
//! - a closer closes channel `x0` part-way through; senders keep trying it.
//!
//! Every value and every state `data` is unique, which the checker relies on. Calls
//! time out after a few seconds (plus their `wait`), making their outcome unknown.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::history::{Call, Op, Outcome, Recorder, SendMode};

/// Channels and their capacities; `x0` is the one that gets closed.
pub const CHANS: [(&str, u64); 4] = [("c0", 0), ("c1", 3), ("c2", 10), ("x0", 2)];
/// Register states at a time.
const KEYS: usize = 6;
/// Register states come in generations of this length (µs of the run), each with ids of
/// its own, so that no id's history outgrows the linearizability search: over a
/// 10-minute soak, one id of a single generation gathered 2,998 operations, and the
/// search gave up on it.
const KEY_GENERATION_US: u64 = 60_000_000;

/// The id prefix of the register states of the current generation: `k-{generation}-`.
fn key_prefix(c: &Client) -> String {
    format!("k-{}-", c.rec.now() / KEY_GENERATION_US)
}
/// How long a call may take beyond its own `wait`.
const TIMEOUT: Duration = Duration::from_secs(3);

/// One sequential client.
pub struct Client {
    process: u32,
    http: reqwest::Client,
    urls: Vec<(u64, String)>,
    rec: Recorder,
    rng: StdRng,
    counter: u64,
}

impl Client {
    /// Client `process` against `urls` (node id, base URL), recording into `rec`.
    pub fn new(process: u32, urls: Vec<(u64, String)>, rec: Recorder, seed: u64) -> Client {
        Client {
            process,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(2)
                .build()
                .expect("http client"),
            urls,
            rec,
            rng: StdRng::seed_from_u64(seed ^ u64::from(process) << 32),
            counter: 0,
        }
    }

    /// A name no other client makes: `{kind}{process}-{n}`.
    fn unique(&mut self, kind: &str) -> String {
        self.counter += 1;
        format!("{kind}{}-{}", self.process, self.counter)
    }

    fn node(&mut self) -> (u64, String) {
        let i = self.rng.gen_range(0..self.urls.len());
        self.urls[i].clone()
    }

    /// Makes `call` on a random node and records it.
    pub async fn call(&mut self, call: Call) -> Outcome {
        let (node, base) = self.node();
        self.call_on(node, &base, call).await
    }

    /// Makes `call` on node `node` at `base` and records it.
    pub async fn call_on(&mut self, node: u64, base: &str, call: Call) -> Outcome {
        let (method, path, body, wait) = request(&call);
        let mut req = self
            .http
            .request(method, format!("{base}{path}"))
            .timeout(TIMEOUT + Duration::from_secs(wait));
        if let Some(body) = body {
            req = req.json(&body);
        }
        if let Call::Send { key: Some(key), .. } = &call {
            req = req.header("Idempotency-Key", key);
        }
        let start = self.rec.now();
        let outcome = outcome(req.send().await).await;
        let end = self.rec.now();
        self.rec.push(Op {
            process: self.process,
            node,
            start,
            end,
            call,
            outcome: outcome.clone(),
        });
        outcome
    }
}

/// Method, path, body and wait (s) of a call.
fn request(call: &Call) -> (Method, String, Option<Value>, u64) {
    match call {
        Call::Create { id, data, selects } => (
            Method::PUT,
            format!("/state/{id}"),
            Some(json!({"data": data, "selects": selects})),
            0,
        ),
        Call::Read { id } => (Method::GET, format!("/state/{id}"), None, 0),
        Call::Update {
            id,
            token,
            data,
            selects,
        } => (
            Method::PUT,
            format!("/state/{id}"),
            Some(json!({"data": data, "selects": selects, "lease": {"token": token}})),
            0,
        ),
        Call::Delete { id } => (Method::DELETE, format!("/state/{id}"), None, 0),
        Call::Poll { prefix, lease_ms } => (
            Method::GET,
            format!("/state/poll?prefix={prefix}&wait=1&limit=2&lease_ms={lease_ms}"),
            None,
            1,
        ),
        Call::Extend { id, token } => (
            Method::POST,
            format!("/state/{id}/lease"),
            Some(json!({"token": token, "extend_ms": 2000})),
            0,
        ),
        Call::Release { id, token } => (
            Method::DELETE,
            format!("/state/{id}/lease?token={token}"),
            None,
            0,
        ),
        Call::Send {
            chan, value, mode, ..
        } => {
            let (query, wait) = match mode {
                SendMode::Detached => (String::new(), 0),
                SendMode::Try => ("?wait=0".to_owned(), 0),
                SendMode::Block(w) => (format!("?wait={w}"), *w),
            };
            (
                Method::POST,
                format!("/chan/{chan}/send{query}"),
                Some(value.clone()),
                wait,
            )
        }
        Call::Recv { chan, wait } => (
            Method::POST,
            format!("/chan/{chan}/recv?wait={wait}"),
            None,
            *wait,
        ),
        Call::Close { chan } => (Method::POST, format!("/chan/{chan}/close"), None, 0),
        Call::ListStates => (Method::GET, "/states?full=true&limit=1000".into(), None, 0),
    }
}

/// Sorts an answer (or its absence) into ok, a definite failure, or unknown.
async fn outcome(sent: Result<reqwest::Response, reqwest::Error>) -> Outcome {
    let response = match sent {
        Ok(response) => response,
        // The connection was never made: nothing reached the server.
        Err(e) if e.is_connect() => {
            return Outcome::Fail {
                status: 0,
                code: "unreachable".into(),
            }
        }
        Err(e) if e.is_timeout() => return Outcome::Unknown("timeout".into()),
        Err(e) => return Outcome::Unknown(format!("transport: {e}")),
    };
    let status = response.status().as_u16();
    let body = match response.bytes().await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        Err(e) if e.is_timeout() => return Outcome::Unknown("timeout reading the answer".into()),
        Err(e) => return Outcome::Unknown(format!("transport: {e}")),
    };
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match status {
        200..=299 => Outcome::Ok { status, body },
        // 507 `disk_full` is refused before it is proposed (docs/design.md, "A full disk").
        400..=499 | 507 => Outcome::Fail { status, code },
        _ => Outcome::Unknown(format!("{status} {code}")),
    }
}

/// A select waiting on a timer `after_ms` from registration.
fn timer_select(id: &str, after_ms: u64) -> Value {
    json!([{"id": id, "cases": [{"op": "timer", "after_ms": after_ms}]}])
}

/// Register client: create, read and delete `k-*`.
pub async fn register_client(mut c: Client, until: Instant) {
    while Instant::now() < until {
        let id = format!("{}{}", key_prefix(&c), c.rng.gen_range(0..KEYS));
        let roll = c.rng.gen_range(0..100);
        let call = if roll < 30 {
            let (data, select) = (c.unique("d"), c.unique("g"));
            let after = c.rng.gen_range(100..1500);
            Call::Create {
                id,
                data: json!({"w": data}),
                selects: timer_select(&select, after),
            }
        } else if roll < 90 {
            Call::Read { id }
        } else {
            Call::Delete { id }
        };
        c.call(call).await;
        pause(&mut c).await;
    }
}

/// Register worker: poll the current generation's `k-*`, then update, extend and update,
/// release or abandon.
pub async fn register_worker(mut c: Client, until: Instant) {
    while Instant::now() < until {
        let lease_ms = if c.rng.gen_bool(0.5) { 800 } else { 2000 };
        let polled = c
            .call(Call::Poll {
                prefix: key_prefix(&c),
                lease_ms,
            })
            .await;
        if polled.ok().is_none() {
            pause(&mut c).await;
        }
        for state in leased(&polled) {
            let (id, token) = state;
            let roll = c.rng.gen_range(0..100);
            if roll < 10 {
                continue; // abandoned: the lease expires
            }
            if roll < 20 {
                c.call(Call::Release { id, token }).await;
                continue;
            }
            if roll < 35 {
                let extend = Call::Extend {
                    id: id.clone(),
                    token: token.clone(),
                };
                c.call(extend).await;
            }
            let (data, select) = (c.unique("d"), c.unique("g"));
            let after = c.rng.gen_range(100..1500);
            let update = Call::Update {
                id,
                token,
                data: json!({"w": data}),
                selects: timer_select(&select, after),
            };
            c.call(update).await;
        }
    }
}

/// (id, token) of each state a poll leased.
fn leased(polled: &Outcome) -> Vec<(String, String)> {
    polled
        .ok()
        .and_then(Value::as_array)
        .map(|states| {
            states
                .iter()
                .filter_map(|s| {
                    Some((
                        s["id"].as_str()?.to_owned(),
                        s["lease"]["token"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A think time of 5–30 ms between calls.
async fn pause(c: &mut Client) {
    let ms = c.rng.gen_range(5..30);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn chan(c: &mut Client) -> String {
    CHANS[c.rng.gen_range(0..CHANS.len())].0.to_owned()
}

/// Attempts of a keyed send, the first included, before its outcome is left unknown.
const KEYED_ATTEMPTS: u32 = 5;

/// HTTP sender: unique values, every way of waiting. Half the sends carry an
/// `Idempotency-Key` (detached or try: a blocking send takes none) and, while the
/// outcome is unknown, are sent again with the same key — to a random node, after a
/// back-off — as a client that must not lose or double a value would.
pub async fn http_sender(mut c: Client, until: Instant) {
    while Instant::now() < until {
        let chan = chan(&mut c);
        let name = c.unique("h");
        let keyed = c.rng.gen_bool(0.5);
        let mode = match c.rng.gen_range(0..if keyed { 2 } else { 3 }) {
            0 => SendMode::Detached,
            1 => SendMode::Try,
            _ => SendMode::Block(c.rng.gen_range(1..3)),
        };
        let send = Call::Send {
            chan,
            key: keyed.then(|| format!("key-{name}")),
            value: json!(name),
            mode,
        };
        let mut outcome = c.call(send.clone()).await;
        let mut attempts = 1;
        // After an unknown outcome, a refused connection or a write refused for a full
        // disk says nothing about the first attempt: keep trying until the server
        // answers.
        while keyed
            && attempts < KEYED_ATTEMPTS
            && Instant::now() < until
            && (outcome.is_unknown()
                || attempts > 1 && matches!(outcome.fail_code(), Some("unreachable" | "disk_full")))
        {
            let ms = c.rng.gen_range(100..300) * u64::from(attempts);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            outcome = c.call(send.clone()).await;
            attempts += 1;
        }
        pause(&mut c).await;
    }
}

/// HTTP receiver: with and without waiting.
pub async fn http_receiver(mut c: Client, until: Instant) {
    while Instant::now() < until {
        let chan = chan(&mut c);
        let wait = c.rng.gen_range(0..3);
        c.call(Call::Recv { chan, wait }).await;
        pause(&mut c).await;
    }
}

/// The actor states: (id, channel, receives?).
const ACTORS: [(&str, &str, bool); 6] = [
    ("a-r0", "c0", true),
    ("a-r1", "c1", true),
    ("a-r2", "c2", true),
    ("a-s0", "c0", false),
    ("a-s1", "c1", false),
    ("a-s2", "x0", false),
];

fn actor_select(c: &mut Client, chan: &str, receives: bool) -> Value {
    let id = c.unique("g");
    if receives {
        json!([{"id": id, "cases": [
            {"op": "recv", "chan": chan},
            {"op": "timer", "after_ms": 3000}
        ]}])
    } else {
        let value = c.unique("s");
        json!([{"id": id, "cases": [{"op": "send", "chan": chan, "data": value}]}])
    }
}

/// Creates actor `index` (tries until created or known to exist).
async fn create_actor(c: &mut Client, index: usize, until: Instant) {
    let (id, chan, receives) = ACTORS[index];
    while Instant::now() < until {
        let selects = actor_select(c, chan, receives);
        let data = json!({"w": c.unique("d")});
        let call = Call::Create {
            id: id.into(),
            data,
            selects,
        };
        match c.call(call).await {
            Outcome::Ok { .. } => return,
            Outcome::Fail { code, .. } if code == "exists" => return,
            _ => pause(c).await,
        }
    }
}

/// Actor worker: keeps the actors blocked, one new select per delivery.
pub async fn actor_worker(mut c: Client, until: Instant) {
    for index in 0..ACTORS.len() {
        create_actor(&mut c, index, until).await;
    }
    while Instant::now() < until {
        let polled = c
            .call(Call::Poll {
                prefix: "a-".into(),
                lease_ms: 3000,
            })
            .await;
        if polled.ok().is_none() {
            pause(&mut c).await;
        }
        for (id, token) in leased(&polled) {
            let Some(index) = ACTORS.iter().position(|a| a.0 == id) else {
                continue;
            };
            let (_, chan, receives) = ACTORS[index];
            if !receives && c.rng.gen_range(0..100) < 8 {
                c.call(Call::Delete { id }).await;
                create_actor(&mut c, index, until).await;
                continue;
            }
            let selects = actor_select(&mut c, chan, receives);
            let data = json!({"w": c.unique("d")});
            let update = Call::Update {
                id,
                token,
                data,
                selects,
            };
            c.call(update).await;
        }
    }
}

/// Closes `x0` at `at`, retrying an unknown outcome.
pub async fn closer(mut c: Client, at: Instant) {
    tokio::time::sleep_until(at).await;
    for _ in 0..10 {
        match c.call(Call::Close { chan: "x0".into() }).await {
            Outcome::Ok { .. } => return,
            Outcome::Fail { code, .. } if code == "closed" => return,
            _ => pause(&mut c).await,
        }
    }
}

/// After healing: takes every value left in every channel (buffered or parked),
/// recorded as receives, through the client's nodes in turn; stops on a channel at
/// `would_block` or a closed, empty one. False if `deadline` came first (a node left
/// down, or no leader): values may be left, and the run must say so rather than wait.
pub async fn drain(c: &mut Client, deadline: Instant) -> bool {
    for (chan, _) in CHANS {
        loop {
            if Instant::now() >= deadline {
                return false;
            }
            let call = Call::Recv {
                chan: chan.into(),
                wait: 0,
            };
            match c.call(call).await {
                Outcome::Ok { body, .. } if body["ok"] == true => {}
                Outcome::Ok { .. } => break,
                Outcome::Fail { code, .. } if code == "would_block" => break,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    true
}
