//! A real three-node cluster on 127.0.0.1 ephemeral ports, in this process, spoken to
//! over HTTP; and helpers to await conditions with deadlines.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use slct::api::ApiConfig;
use slct::node::{Node, NodeConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A running cluster.
pub struct Cluster {
    /// The nodes, index 0 is node id 1.
    pub nodes: Vec<Node>,
    /// `http://127.0.0.1:port` of each node.
    pub urls: Vec<String>,
    /// HTTP client.
    pub http: reqwest::Client,
    stops: Vec<watch::Sender<bool>>,
    _dirs: Vec<tempfile::TempDir>,
}

/// One answer: status and JSON body (null if empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Body.
    pub body: Value,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Cluster {
    /// Three nodes with default API settings.
    pub async fn start() -> Cluster {
        Self::start_with(ApiConfig::default()).await
    }

    /// Three nodes, each serving the API with `api`; returns once a leader is known
    /// to all.
    pub async fn start_with(api: ApiConfig) -> Cluster {
        Self::start_tuned(api, |_| {}).await
    }

    /// Three nodes serving the API with `api`, each node's configuration adjusted by
    /// `tune`; returns once a leader is known to all.
    pub async fn start_tuned(api: ApiConfig, tune: impl Fn(&mut NodeConfig)) -> Cluster {
        let mut listeners = Vec::new();
        let mut peers = BTreeMap::new();
        for id in 1..=3u64 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            peers.insert(id, listener.local_addr().unwrap().to_string());
            listeners.push(listener);
        }
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let configs = peers.iter().zip(&dirs).map(|((&id, addr), dir)| {
            let mut config = NodeConfig {
                id,
                listen: addr.parse().unwrap(),
                data_dir: dir.path().to_path_buf(),
                peers: peers.clone(),
                ..NodeConfig::default()
            };
            tune(&mut config);
            config
        });
        let nodes: Vec<Node> = futures::future::join_all(configs.map(Node::start))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let mut stops = Vec::new();
        for (node, listener) in nodes.iter().zip(listeners) {
            let (stop, mut stopped) = watch::channel(false);
            stops.push(stop);
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            tokio::spawn(slct::server::serve(
                node.clone(),
                api.clone(),
                slct::server::Limits::default(),
                listener,
                shutdown,
            ));
        }
        let cluster = Cluster {
            urls: peers.values().map(|a| format!("http://{a}")).collect(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            nodes,
            stops,
            _dirs: dirs,
        };
        eventually(Duration::from_secs(20), "a leader known to all", || async {
            for n in &cluster.nodes {
                if n.leader().is_none() || !n.is_ready().await {
                    return false;
                }
            }
            true
        })
        .await;
        cluster
    }

    /// Index of the leader.
    pub fn leader(&self) -> usize {
        self.nodes
            .iter()
            .position(Node::is_leader)
            .expect("a leader")
    }

    /// Index of a follower.
    pub fn follower(&self) -> usize {
        (self.leader() + 1) % self.nodes.len()
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

    /// `http://127.0.0.1:port` of node `i` without the scheme.
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

    /// Stops node `i`: its server, then Raft.
    pub async fn stop_node(&self, i: usize) {
        self.stops[i].send_replace(true);
        self.nodes[i].shutdown().await;
    }

    /// Stops serving and stops the nodes.
    pub async fn shutdown(self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i).await;
        }
    }
}

/// Sends `method target` to `addr` byte for byte on a new connection (see
/// [`Cluster::exact`]) and reads the answer until the node closes the connection.
pub async fn exact_request(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("send");
    stream.write_all(body).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut raw))
        .await
        .expect("an answer within 60 s")
        .expect("read the answer");
    parse_answer(&raw)
}

/// Parses an HTTP/1.1 answer with a `Content-Length` body (or none).
fn parse_answer(raw: &[u8]) -> Answer {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let code: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = reqwest::header::HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            if let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()),
                reqwest::header::HeaderValue::from_str(v.trim()),
            ) {
                headers.append(k, v);
            }
        }
    }
    let body = serde_json::from_slice(&raw[split + 4..]).unwrap_or(Value::Null);
    Answer {
        status: StatusCode::from_u16(code).expect("a status code"),
        body,
        headers,
    }
}

/// Reads an answer.
pub async fn answer(r: reqwest::Response) -> Answer {
    let status = r.status();
    let headers = r.headers().clone();
    let bytes = r.bytes().await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        body,
        headers,
    }
}

/// Polls `cond` until it holds, failing after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Percent-encodes a path segment.
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
