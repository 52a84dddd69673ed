//! Client commands (DESIGN §5): `slct state|poll|chan|cluster ...` against a running
//! node over HTTP (`--server`, env `SLCT_SERVER`).
//!
//! Each command is one request. The answer's JSON is printed to stdout, pretty; an
//! error answer is printed to stderr and the command fails, so scripts can test `$?`.
//! Names are percent-encoded into the path, so any state id or channel name works.

use std::io::Write;

use clap::{Args, Subcommand};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::Method;
use serde_json::Value;

/// Where the server is, and how to authenticate.
#[derive(Clone, Debug, Args)]
pub struct ClientArgs {
    /// Base URL of any node.
    #[arg(
        long,
        env = "SLCT_SERVER",
        default_value = "http://127.0.0.1:7001",
        global = true
    )]
    pub server: String,
    /// Bearer token, if the server requires one.
    #[arg(long, env = "SLCT_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

/// `slct state`.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// Server and token.
    #[command(flatten)]
    pub server: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: StateCommand,
}

/// `slct chan`.
#[derive(Debug, Args)]
pub struct ChanArgs {
    /// Server and token.
    #[command(flatten)]
    pub server: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: ChanCommand,
}

/// `slct cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Server and token.
    #[command(flatten)]
    pub server: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// `slct state ...`.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Create a state, or update it under a lease (`--lease`).
    Put {
        /// State id.
        id: String,
        /// The body: JSON text, `@file`, or `-` for stdin (default `{}`).
        body: Option<String>,
        /// Lease token (sent as `Slct-Lease`): makes this an update.
        #[arg(long)]
        lease: Option<String>,
    },
    /// Read a state.
    Get {
        /// State id.
        id: String,
        /// Answer from the node asked, without a round to the leader.
        #[arg(long)]
        stale: bool,
    },
    /// Delete a state.
    Delete {
        /// State id.
        id: String,
    },
    /// Pause a state: its selects still complete, but it is delivered to no one.
    Pause {
        /// State id.
        id: String,
    },
    /// Resume a paused state.
    Resume {
        /// State id.
        id: String,
    },
    /// Show a state's history, newest first.
    History {
        /// State id.
        id: String,
        /// Most events.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only events numbered below this (the `next` of a previous page).
        #[arg(long)]
        before: Option<u64>,
    },
    /// List states.
    List {
        /// Only ids starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Only this status (waiting, pending, leased, done, failed), or paused.
        #[arg(long)]
        status: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Cursor from a previous page.
        #[arg(long)]
        after: Option<String>,
        /// Include data.
        #[arg(long)]
        full: bool,
    },
}

/// `slct poll`: lease pending states.
#[derive(Debug, Args)]
pub struct PollArgs {
    /// Server and token.
    #[command(flatten)]
    pub server: ClientArgs,
    /// Only ids starting with this.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Seconds to wait (0 to 300).
    #[arg(long, default_value_t = 30)]
    pub wait: u64,
    /// Most states to lease.
    #[arg(long, default_value_t = 1)]
    pub limit: u32,
    /// Lease duration.
    #[arg(long, default_value_t = 30_000)]
    pub lease_ms: u64,
}

/// `slct chan ...`.
#[derive(Debug, Subcommand)]
pub enum ChanCommand {
    /// Make a channel.
    Make {
        /// Channel name.
        name: String,
        /// Buffer capacity.
        #[arg(long, default_value_t = 0)]
        capacity: u64,
    },
    /// Send a JSON value (detached without `--wait`).
    Send {
        /// Channel name.
        name: String,
        /// The value: JSON text, `@file`, or `-` for stdin.
        value: String,
        /// Seconds to block (0: try-send).
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Receive a value.
    Recv {
        /// Channel name.
        name: String,
        /// Seconds to block (0: try-receive).
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// Close a channel.
    Close {
        /// Channel name.
        name: String,
    },
    /// Show a channel.
    Info {
        /// Channel name.
        name: String,
    },
}

/// `slct cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster as the node asked sees it.
    Status,
}

/// Percent-encodes one path segment.
fn seg(name: &str) -> String {
    utf8_percent_encode(name, NON_ALPHANUMERIC).to_string()
}

/// Percent-encodes a query value.
fn q(value: &str) -> String {
    seg(value)
}

/// JSON text, `@file` or `-` (stdin).
fn json_arg(text: &str) -> Result<Value, String> {
    let text = match text {
        "-" => std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?,
        t if t.starts_with('@') => {
            std::fs::read_to_string(&t[1..]).map_err(|e| format!("{}: {e}", &t[1..]))?
        }
        t => t.to_owned(),
    };
    serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))
}

/// One request.
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    lease: Option<String>,
}

impl Call {
    fn new(method: Method, path: String) -> Self {
        Call {
            method,
            path,
            body: None,
            lease: None,
        }
    }

    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

/// `slct state ...`.
pub async fn state(args: StateArgs) -> Result<(), String> {
    let call = match args.command {
        StateCommand::Put { id, body, lease } => Call {
            lease,
            ..Call::new(Method::PUT, format!("/state/{}", seg(&id)))
                .body(json_arg(body.as_deref().unwrap_or("{}"))?)
        },
        StateCommand::Get { id, stale } => {
            Call::new(Method::GET, format!("/state/{}?stale={stale}", seg(&id)))
        }
        StateCommand::Delete { id } => Call::new(Method::DELETE, format!("/state/{}", seg(&id))),
        StateCommand::Pause { id } => Call::new(Method::POST, format!("/state/{}/pause", seg(&id))),
        StateCommand::Resume { id } => {
            Call::new(Method::POST, format!("/state/{}/resume", seg(&id)))
        }
        StateCommand::History { id, limit, before } => {
            let mut path = format!("/state/{}/history?limit={limit}", seg(&id));
            if let Some(before) = before {
                path.push_str(&format!("&before={before}"));
            }
            Call::new(Method::GET, path)
        }
        StateCommand::List {
            prefix,
            status,
            limit,
            after,
            full,
        } => {
            let mut path = format!("/states?prefix={}&limit={limit}&full={full}", q(&prefix));
            if let Some(status) = status {
                path.push_str(&format!("&status={}", q(&status)));
            }
            if let Some(after) = after {
                path.push_str(&format!("&after={}", q(&after)));
            }
            Call::new(Method::GET, path)
        }
    };
    send(&args.server, call).await
}

/// `slct poll`.
pub async fn poll(p: PollArgs) -> Result<(), String> {
    let path = format!(
        "/state/poll?prefix={}&wait={}&limit={}&lease_ms={}",
        q(&p.prefix),
        p.wait,
        p.limit,
        p.lease_ms
    );
    send(&p.server, Call::new(Method::GET, path)).await
}

/// `slct chan ...`.
pub async fn chan(args: ChanArgs) -> Result<(), String> {
    let call = match args.command {
        ChanCommand::Make { name, capacity } => {
            Call::new(Method::PUT, format!("/chan/{}", seg(&name)))
                .body(serde_json::json!({ "capacity": capacity }))
        }
        ChanCommand::Send { name, value, wait } => {
            let wait = wait.map_or_else(String::new, |w| format!("?wait={w}"));
            Call::new(Method::POST, format!("/chan/{}/send{wait}", seg(&name)))
                .body(json_arg(&value)?)
        }
        ChanCommand::Recv { name, wait } => Call::new(
            Method::POST,
            format!("/chan/{}/recv?wait={wait}", seg(&name)),
        ),
        ChanCommand::Close { name } => {
            Call::new(Method::POST, format!("/chan/{}/close", seg(&name)))
        }
        ChanCommand::Info { name } => Call::new(Method::GET, format!("/chan/{}", seg(&name))),
    };
    send(&args.server, call).await
}

/// `slct cluster ...`.
pub async fn cluster(args: ClusterArgs) -> Result<(), String> {
    match args.command {
        ClusterCommand::Status => {
            send(&args.server, Call::new(Method::GET, "/cluster".into())).await
        }
    }
}

/// Sends the call, prints the answer; fails on a non-2xx status.
async fn send(args: &ClientArgs, call: Call) -> Result<(), String> {
    let url = format!("{}{}", args.server.trim_end_matches('/'), call.path);
    let mut req = reqwest::Client::new().request(call.method, &url);
    if let Some(token) = &args.token {
        req = req.bearer_auth(token);
    }
    if let Some(lease) = &call.lease {
        req = req.header("Slct-Lease", lease);
    }
    if let Some(body) = &call.body {
        req = req.json(body);
    }
    let answer = req.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = answer.status();
    let text = answer.text().await.map_err(|e| format!("{url}: {e}"))?;
    let shown = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    // A closed pipe (`slct ... | head`) is not worth a panic: the output is ignored.
    if status.is_success() {
        if !shown.is_empty() {
            let _ = writeln!(std::io::stdout().lock(), "{shown}");
        }
        Ok(())
    } else {
        let _ = writeln!(std::io::stderr().lock(), "{shown}");
        Err(format!("the server answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_percent_encoded() {
        assert_eq!(seg("payments/order 42"), "payments%2Forder%2042");
    }

    #[test]
    fn json_args() {
        assert_eq!(json_arg("{\"a\": 1}").unwrap()["a"], 1);
        assert!(json_arg("{").is_err());
    }
}
