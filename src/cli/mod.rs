//! The `slct` command line (design.md §5): `serve` runs one node, `dev` a three-node
//! cluster in one process; client commands talk to a running node over HTTP.
//!
//! Every flag has an `SLCT_*` environment variable, so a container needs no arguments.
//! Shutdown is one signal: Ctrl-C or SIGTERM stops accepting requests, gives in-flight
//! ones [`GRACE`] to finish, then stops Raft and flushes the store. A node whose Raft
//! stops on a fatal error shuts down the same way and the process exits non-zero: a node
//! that can no longer take part in Raft is better restarted (by systemd, Docker or
//! Kubernetes) than left answering 503 forever. What it acknowledged is on disk.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::node::{Node, NodeConfig, NodeId};
use crate::raft::auth::{check_exposure, ClusterKey};
use crate::server::Limits;
use api_args::ApiArgs;

pub mod api_args;
pub mod client;
pub mod output;

/// How long in-flight requests may take to finish after a shutdown signal.
pub const GRACE: Duration = Duration::from_secs(10);

/// Go's channels and `select` as a durable, replicated HTTP service.
#[derive(Debug, Parser)]
#[command(name = "slct", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node of a cluster.
    Serve(ServeArgs),
    /// Run a three-node cluster on 127.0.0.1:7001–7003 in this process.
    Dev(DevArgs),
    /// Create, read, update, delete and list states.
    State(client::StateArgs),
    /// Lease pending states (long-poll).
    Poll(client::PollArgs),
    /// Make, send on, receive from, close and inspect channels.
    Chan(client::ChanArgs),
    /// Show the cluster.
    Cluster(client::ClusterArgs),
}

/// `slct serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// This node's Raft id.
    #[arg(long, env = "SLCT_ID", default_value_t = 1)]
    pub id: NodeId,
    /// Take the id from the host name instead: the number after its last `-`, plus one,
    /// so that a Kubernetes StatefulSet's pod `slct-0` is node 1 (see deploy/k8s/).
    #[arg(long, env = "SLCT_ID_FROM_HOSTNAME", conflicts_with = "id")]
    pub id_from_hostname: bool,
    /// Address to serve the API and Raft on.
    #[arg(long, env = "SLCT_LISTEN", default_value = crate::node::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Data directory.
    #[arg(long, env = "SLCT_DATA", default_value = crate::node::DEFAULT_DATA_DIR)]
    pub data: PathBuf,
    /// Every member as `id=host:port`, comma-separated, this node included. Without it,
    /// a single-node cluster.
    #[arg(long, env = "SLCT_PEERS", value_parser = parse_peers)]
    pub peers: Option<BTreeMap<NodeId, String>>,
    #[command(flatten)]
    pub tuning: Tuning,
    /// API and callback flags.
    #[command(flatten)]
    pub api: api_args::ApiArgs,
}

/// `slct dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory holding the three nodes' data directories `1`, `2` and `3`.
    #[arg(long, env = "SLCT_DATA", default_value = crate::node::DEFAULT_DATA_DIR)]
    pub data: PathBuf,
    #[command(flatten)]
    pub tuning: Tuning,
    /// API and callback flags.
    #[command(flatten)]
    pub api: api_args::ApiArgs,
}

/// Flags shared by `serve` and `dev`.
#[derive(Clone, Debug, Args)]
pub struct Tuning {
    /// Shared secret that authenticates Raft traffic between nodes (`/raft/*`); the
    /// same on every node. Required unless every address is loopback or `--insecure`.
    #[arg(long, env = "SLCT_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Allow non-loopback addresses without `--cluster-secret`: only where the network
    /// between the nodes is isolated by other means.
    #[arg(long, env = "SLCT_INSECURE")]
    pub insecure: bool,
    /// How long a write may wait to be committed before it answers 503
    /// `outcome_unknown` (it may or may not have been applied), e.g. `10s`, `500ms`.
    #[arg(long, env = "SLCT_WRITE_TIMEOUT", default_value = duration_flag(crate::node::DEFAULT_WRITE_TIMEOUT),
          value_parser = parse_duration)]
    pub write_timeout: Duration,
    /// Log entries since the last snapshot that trigger a new one.
    #[arg(long, env = "SLCT_SNAPSHOT_THRESHOLD", default_value_t = crate::node::DEFAULT_SNAPSHOT_THRESHOLD)]
    pub snapshot_threshold: u64,
    /// One log entry per write instead of packing concurrent writes (for measuring).
    #[arg(long, env = "SLCT_NO_GROUP_COMMIT")]
    pub no_group_commit: bool,
    /// Events kept in each state's history (`GET /state/{id}/history`); 0 keeps none.
    #[arg(long, env = "SLCT_HISTORY_LIMIT", default_value_t = crate::node::DEFAULT_HISTORY_LIMIT)]
    pub history_limit: u32,
    /// How often the state machine is flushed to disk while writes are applied, e.g.
    /// `100ms`. Longer: fewer syncs; after a crash the node replays more of its log.
    #[arg(long, env = "SLCT_CHECKPOINT_INTERVAL",
          default_value = duration_flag(crate::storage::sm::checkpoint::DEFAULT_CHECKPOINT_INTERVAL),
          value_parser = parse_duration)]
    pub checkpoint_interval: Duration,
}

/// Runs the command.
pub async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve(args) => {
            let id = if args.id_from_hostname {
                let name = std::fs::read_to_string(HOSTNAME_FILE)
                    .map_err(|e| format!("--id-from-hostname: read {HOSTNAME_FILE}: {e}"))?;
                id_from_hostname(name.trim())?
            } else {
                args.id
            };
            let config = NodeConfig {
                id,
                listen: args.listen,
                data_dir: args.data,
                peers: args.peers.unwrap_or_default(),
                cluster_secret: args.tuning.cluster_secret.clone(),
                snapshot_threshold: args.tuning.snapshot_threshold,
                snapshot_log_bytes: crate::node::DEFAULT_SNAPSHOT_LOG_BYTES,
                group_commit: !args.tuning.no_group_commit,
                history_limit: args.tuning.history_limit,
                checkpoint_interval: args.tuning.checkpoint_interval,
                write_timeout: args.tuning.write_timeout,
            };
            let key = ClusterKey::new(config.cluster_secret.as_deref());
            check_exposure(
                &config.listen,
                config.peers.values(),
                &key,
                args.tuning.insecure,
            )?;
            crate::callbacks::allow::check_exposure(&config.listen, &args.api.callback_allow)?;
            run_nodes(vec![config], &args.api).await
        }
        Command::Dev(args) => run_nodes(dev_configs(&args), &args.api).await,
        Command::State(args) => client::state(args).await,
        Command::Poll(args) => client::poll(args).await,
        Command::Chan(args) => client::chan(args).await,
        Command::Cluster(args) => client::cluster(args).await,
    }
}

/// The three nodes of `slct dev`.
fn dev_configs(args: &DevArgs) -> Vec<NodeConfig> {
    let peers: BTreeMap<NodeId, String> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", 7000 + id)))
        .collect();
    peers
        .iter()
        .map(|(&id, addr)| NodeConfig {
            id,
            listen: addr.parse().expect("a literal socket address"),
            data_dir: args.data.join(id.to_string()),
            peers: peers.clone(),
            cluster_secret: args.tuning.cluster_secret.clone(),
            snapshot_threshold: args.tuning.snapshot_threshold,
            snapshot_log_bytes: crate::node::DEFAULT_SNAPSHOT_LOG_BYTES,
            group_commit: !args.tuning.no_group_commit,
            history_limit: args.tuning.history_limit,
            checkpoint_interval: args.tuning.checkpoint_interval,
            write_timeout: args.tuning.write_timeout,
        })
        .collect()
}

/// Raises the open-files limit to its hard maximum and caps the connections per node
/// below it (see [`crate::server`]), saying so on stderr.
fn fit_connections(limits: &mut Limits, nodes: usize) {
    let open_files = match crate::server::raise_open_files_limit() {
        Ok((before, now)) if before != now => {
            eprintln!("slct: raised the open-files limit from {before} to {now}");
            now
        }
        Ok((_, now)) => now,
        Err(e) => {
            eprintln!("slct: could not raise the open-files limit: {e}");
            rustix::process::getrlimit(rustix::process::Resource::Nofile)
                .current
                .unwrap_or(u64::MAX)
        }
    };
    let within = crate::server::connections_within(open_files, nodes);
    let asked = limits.max_connections;
    if asked != usize::MAX && asked > within {
        eprintln!(
            "slct: --max-connections {asked} does not fit the open-files limit {open_files}; \
             using {within}"
        );
    }
    limits.max_connections = asked.min(within);
    eprintln!(
        "slct: open-files limit {open_files}; at most {} client connections per node",
        limits.max_connections
    );
}

/// Binds, starts and serves every node until Ctrl-C or SIGTERM, then stops them all.
async fn run_nodes(configs: Vec<NodeConfig>, args: &ApiArgs) -> Result<(), String> {
    let api = args.config();
    let mut limits = args.limits();
    fit_connections(&mut limits, configs.len());
    let mut listeners = Vec::new();
    for config in &configs {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("listen on {}: {e}", config.listen))?;
        listeners.push(listener);
    }
    let mut nodes = Vec::new();
    for config in configs {
        let data = config.data_dir.display().to_string();
        let node = Node::start(config)
            .await
            .map_err(|e| format!("start node with data in {data}: {e}"))?;
        nodes.push(node);
    }
    let (stop, stopped) = watch::channel(false);
    let mut servers = Vec::new();
    for (node, listener) in nodes.iter().zip(listeners) {
        let config = node.config();
        eprintln!(
            "slct: node {} listening on http://{} (data in {})",
            config.id,
            config.listen,
            config.data_dir.display()
        );
        let signal = wait_for(stopped.clone());
        servers.push(tokio::spawn(crate::server::serve(
            node.clone(),
            api.clone(),
            limits,
            listener,
            signal,
        )));
    }
    let raft_failed = futures::future::select_all(nodes.iter().map(|n| Box::pin(n.raft_failed())));
    let failure = tokio::select! {
        _ = shutdown_signal() => None,
        (error, index, _) = raft_failed => Some(format!(
            "node {}: raft stopped: {error}; exiting so that a supervisor restarts it",
            nodes[index].config().id
        )),
    };
    eprintln!("slct: shutting down");
    stop.send_replace(true);
    let drained = tokio::time::timeout(GRACE, futures::future::join_all(servers)).await;
    if drained.is_err() {
        eprintln!("slct: requests still running after {GRACE:?}; stopping anyway");
    }
    for node in &nodes {
        node.shutdown().await;
    }
    failure.map_or(Ok(()), Err)
}

/// Completes once `stop` turns true.
async fn wait_for(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Completes on Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("slct: cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                eprintln!("slct: cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

/// Where Linux keeps the host name (a container's or pod's own).
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

/// The id `--id-from-hostname` means for `hostname`: a StatefulSet names its pods
/// `<name>-<ordinal>` from 0, and node ids start at 1, so `slct-0` is 1.
pub fn id_from_hostname(hostname: &str) -> Result<NodeId, String> {
    hostname
        .rsplit_once('-')
        .filter(|(_, ordinal)| ordinal.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|(_, ordinal)| ordinal.parse::<NodeId>().ok())
        .and_then(|ordinal| ordinal.checked_add(1))
        .ok_or_else(|| {
            format!("--id-from-hostname: host name {hostname:?} does not end in -<number>")
        })
}

/// Parses `1=127.0.0.1:7001,2=127.0.0.1:7002`.
fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, String>, String> {
    let mut peers = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not id=host:port"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| format!("{id:?} is not a node id"))?;
        if peers.insert(id, addr.trim().to_owned()).is_some() {
            return Err(format!("node id {id} is listed twice"));
        }
    }
    Ok(peers)
}

/// `duration` as a flag's text (`10s`, `100ms`): how a default kept as a [`Duration`]
/// constant beside what it configures shows in `--help`, and is parsed back.
fn duration_flag(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// Parses a duration with its unit: `500ms`, `10s`, `2m`. A bare number is refused,
/// so that nobody has to guess whether it means seconds or milliseconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} needs a unit: ms, s or m (e.g. 10s)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 10s"))?;
    let duration = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s or m"
            ))
        }
    };
    if duration.is_zero() {
        return Err("the duration must be more than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse() {
        let peers = parse_peers("1=127.0.0.1:7001, 2=h:7002").unwrap();
        assert_eq!(peers[&1], "127.0.0.1:7001");
        assert_eq!(peers[&2], "h:7002");
        assert!(parse_peers("1=a,1=b").is_err());
        assert!(parse_peers("x=a").is_err());
        assert!(parse_peers("1").is_err());
    }

    #[test]
    fn a_pod_ordinal_is_an_id() {
        assert_eq!(id_from_hostname("slct-0"), Ok(1));
        assert_eq!(id_from_hostname("my-slct-12"), Ok(13));
        for bad in ["slct", "slct-", "slct-x", "slct-+1", "slct-0.slct"] {
            assert!(id_from_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn id_and_id_from_hostname_exclude_each_other() {
        assert!(Cli::try_parse_from(["slct", "serve", "--id-from-hostname"]).is_ok());
        let both = ["slct", "serve", "--id", "2", "--id-from-hostname"];
        assert!(Cli::try_parse_from(both).is_err());
    }

    #[test]
    fn durations_carry_their_unit() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["10", "s", "0s", "1h", "-1s", "1.5s", ""] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serve_without_flags_is_the_default_node() {
        let Command::Serve(args) = Cli::try_parse_from(["slct", "serve"]).unwrap().command else {
            panic!("serve");
        };
        let default = NodeConfig::default();
        assert_eq!(args.id, default.id);
        assert_eq!(args.listen, default.listen);
        assert_eq!(args.data, default.data_dir);
        assert_eq!(args.peers.unwrap_or_default(), default.peers);
        assert_eq!(args.tuning.cluster_secret, default.cluster_secret);
        assert_eq!(args.tuning.snapshot_threshold, default.snapshot_threshold);
        assert_eq!(!args.tuning.no_group_commit, default.group_commit);
        assert_eq!(args.tuning.history_limit, default.history_limit);
        assert_eq!(args.tuning.checkpoint_interval, default.checkpoint_interval);
        assert_eq!(args.tuning.write_timeout, default.write_timeout);
        let limits = crate::server::Limits::default();
        assert_eq!(args.api.header_read_timeout, limits.header_read_timeout);
        assert_eq!(args.api.idle_timeout, limits.idle_timeout);
        assert_eq!(duration_flag(Duration::from_millis(100)), "100ms");
        assert_eq!(duration_flag(Duration::from_secs(60)), "60s");
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
