//! Client commands (design.md §5): `slct state|poll|chan|cluster ...` against a running
//! cluster (`--server`, env `SLCT_SERVER`: one node or several, comma-separated),
//! through [`crate::client`].
//!
//! Each command is one call. Its answer is printed to stdout as `-o table` or
//! `-o json` (see [`super::output`]: a table on a terminal, JSON otherwise); an error is
//! printed to stderr and the command fails, so scripts can test `$?`. 503s are retried
//! as the client does (reads, and writes that were certainly not applied).

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use uuid::Uuid;

use super::output::{print, Format, Note};
use crate::client::{Client, ListStates, PollOptions, SendMode, Sent};

/// Where the server is, and how to authenticate.
#[derive(Clone, Debug, Args)]
pub struct ClientArgs {
    /// Base URL of any node, or of several separated by commas (a request that cannot
    /// reach one, or that it cannot serve for want of a leader, goes to the next).
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
    /// Output: `table` for people, `json` for scripts [default: table on a terminal,
    /// json otherwise].
    #[arg(short = 'o', long, env = "SLCT_OUTPUT", value_enum, global = true)]
    pub output: Option<Format>,
    /// `Idempotency-Key` of the write (1 to 128 bytes of visible ASCII): running the
    /// same command with the same key again within the server's window gets the first
    /// answer and changes nothing. Without it, each run is a new request (its own
    /// retries still share a key the client draws).
    #[arg(long, global = true)]
    pub idempotency_key: Option<String>,
}

impl ClientArgs {
    /// The client these flags describe, and the output format.
    fn open(&self) -> Result<(Client, Format), String> {
        let mut builder = Client::builder(&self.server);
        if let Some(token) = &self.token {
            builder = builder.token(token);
        }
        let mut client = builder.build().map_err(|e| e.to_string())?;
        if let Some(key) = &self.idempotency_key {
            client = client.with_idempotency_key(key.clone());
        }
        Ok((client, Format::choose(self.output)))
    }
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
    /// Re-arm a failed state (callback attempts exhausted).
    Retry {
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
    /// Delete every state with an id prefix and/or a status (`DELETE /states`; the
    /// admin token where one is set).
    Purge {
        /// Only ids starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Only this status (waiting, pending, leased, done, failed), or paused.
        #[arg(long)]
        status: Option<String>,
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
    /// List stored channels.
    List {
        /// Only names starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Cursor from a previous page.
        #[arg(long)]
        after: Option<String>,
    },
}

/// `slct cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster as the node asked sees it.
    Status,
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
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "not JSON: {e}; quote strings inside the JSON and the JSON for the shell: \
             '\"text\"', '{{\"data\": 1}}'"
        )
    })
}

/// A lease token given on the command line.
fn token_arg(text: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text.trim()).map_err(|_| format!("--lease {text:?} is not a UUID"))
}

/// The error a failed call ends the command with.
fn failed(e: crate::client::Error) -> String {
    e.to_string()
}

/// `slct state ...`.
pub async fn state(args: StateArgs) -> Result<(), String> {
    let (client, format) = args.server.open()?;
    match args.command {
        StateCommand::Put { id, body, lease } => {
            let body = json_arg(body.as_deref().unwrap_or("{}"))?;
            let state = match lease {
                Some(token) => client.update_state(&id, token_arg(&token)?, &body).await,
                None => client.put_state(&id, &body).await,
            };
            print(format, &state.map_err(failed)?);
        }
        StateCommand::Get { id, stale } => {
            let state = if stale {
                client.get_state_stale(&id).await
            } else {
                client.get_state(&id).await
            };
            print(format, &state.map_err(failed)?);
        }
        StateCommand::Delete { id } => {
            client.delete_state(&id).await.map_err(failed)?;
            let text = format!("deleted {id}");
            print(
                format,
                &Note {
                    json: json!({ "deleted": id }),
                    text,
                },
            );
        }
        StateCommand::Pause { id } => print(format, &client.pause(&id).await.map_err(failed)?),
        StateCommand::Resume { id } => print(format, &client.resume(&id).await.map_err(failed)?),
        StateCommand::Retry { id } => print(format, &client.retry(&id).await.map_err(failed)?),
        StateCommand::History { id, limit, before } => {
            let history = client.history(&id, Some(limit), before).await;
            print(format, &history.map_err(failed)?);
        }
        StateCommand::List {
            prefix,
            status,
            limit,
            after,
            full,
        } => {
            let options = ListStates {
                prefix,
                status,
                limit: Some(limit),
                after,
                full,
                ..ListStates::default()
            };
            print(format, &client.list_states(&options).await.map_err(failed)?);
        }
        StateCommand::Purge { prefix, status } => {
            let mut deleted = 0;
            loop {
                let batch = client.delete_states(&prefix, status.as_deref()).await;
                let batch = batch.map_err(failed)?;
                deleted += batch.deleted;
                if !batch.more {
                    break;
                }
            }
            let text = format!("deleted {deleted} states");
            let json = json!({ "deleted": deleted });
            print(format, &Note { json, text });
        }
    }
    Ok(())
}

/// `slct poll`.
pub async fn poll(p: PollArgs) -> Result<(), String> {
    let (client, format) = p.server.open()?;
    let options = PollOptions {
        prefix: p.prefix,
        wait: p.wait,
        limit: p.limit,
        lease_ms: p.lease_ms,
        min_priority: None,
    };
    print(format, &client.poll(&options).await.map_err(failed)?);
    Ok(())
}

/// `slct chan ...`.
pub async fn chan(args: ChanArgs) -> Result<(), String> {
    let (client, format) = args.server.open()?;
    match args.command {
        ChanCommand::Make { name, capacity } => {
            print(
                format,
                &client.make_chan(&name, capacity).await.map_err(failed)?,
            );
        }
        ChanCommand::Send { name, value, wait } => {
            let mode = match wait {
                None => SendMode::Detached,
                Some(0) => SendMode::Try,
                Some(secs) => SendMode::Wait(secs),
            };
            let sent = client.send(&name, &json_arg(&value)?, mode).await;
            let text = match sent.map_err(failed)? {
                Sent::Sent => "sent",
                Sent::Parked => "parked",
            };
            print(
                format,
                &Note {
                    json: json!({ "status": text }),
                    text: text.into(),
                },
            );
        }
        ChanCommand::Recv { name, wait } => {
            print(format, &client.recv(&name, wait).await.map_err(failed)?);
        }
        ChanCommand::Close { name } => {
            let closed = client.close_chan(&name).await.map_err(failed)?;
            let text = match closed.discarded_count {
                0 => format!("closed {name}"),
                n => format!("closed {name}, discarding {n} parked detached sends"),
            };
            let json = json!({
                "closed": true,
                "discarded": closed.discarded,
                "discarded_count": closed.discarded_count,
            });
            print(format, &Note { json, text });
        }
        ChanCommand::Info { name } => {
            print(format, &client.get_chan(&name).await.map_err(failed)?);
        }
        ChanCommand::List {
            prefix,
            limit,
            after,
        } => {
            let page = client
                .list_chans(&prefix, Some(limit), after.as_deref())
                .await;
            print(format, &page.map_err(failed)?);
        }
    }
    Ok(())
}

/// `slct cluster ...`.
pub async fn cluster(args: ClusterArgs) -> Result<(), String> {
    let (client, format) = args.server.open()?;
    match args.command {
        ClusterCommand::Status => print(format, &client.cluster().await.map_err(failed)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_args() {
        assert_eq!(json_arg("{\"a\": 1}").unwrap()["a"], 1);
        assert!(json_arg("{").is_err());
    }

    #[test]
    fn lease_tokens_are_uuids() {
        assert!(token_arg("not a uuid").is_err());
        assert!(token_arg(&Uuid::new_v4().to_string()).is_ok());
    }
}
