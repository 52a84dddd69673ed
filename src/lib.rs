//! slct: Go's channels and `select`, offered as a durable, replicated HTTP service.
//!
//! # Layout
//! - [`engine`]: the CSP state machine — channels, selects, states, leases and log
//!   time — as a pure, deterministic module over ordered key-value tables.
//! - [`storage`]: the data directory (its lock and format version) and the engines
//!   under it: [`storage::sm`] keeps those tables in sled, committed atomically with the
//!   applied index; every stored value is checksummed ([`storage::seal`]);
//!   [`storage::wal`] is the Raft log's write-ahead log (segments, group commit).
//! - [`raft`]: replication with openraft — log store, state machine, snapshots, and the
//!   `/raft/*` network client and server.
//! - [`node`]: a running replica — the seam between Raft and the HTTP API.
//! - [`api`]: the HTTP API of design.md §3 (routes, extractors, errors, forwarding), and
//!   the web console at `/` ([`api::console`]).
//! - [`callbacks`]: resuming pending states by POSTing them to their callback URLs, a
//!   service of the node started beside its server.
//! - [`server`]: one node's HTTP server (API and Raft routes on one port) and its
//!   callback dispatcher.
//! - [`metrics`]: the node's Prometheus series, recorded by the API and the callbacks.
//! - [`json`]: parsing JSON from strangers (request bodies, callback answers) within
//!   limits; [`clock`]: the wall clock; [`codec`]: the binary encoding of what slct
//!   writes for itself (stored records, Raft entries and messages).
//! - [`cli`]: the `slct` command line.
//! - [`client`]: a typed Rust client of the HTTP API and a [`client::Worker`] that
//!   long-polls states; beside `cli` in the layering, it speaks only the wire format.
//! - [`http_client`]: the HTTP clients slct sends requests with, resolving host names
//!   without the C library (for the static binary in the image).

pub mod api;
pub mod callbacks;
pub mod cli;
pub mod client;
pub mod clock;
pub mod codec;
pub mod engine;
pub mod http_client;
pub mod json;
pub mod metrics;
pub mod node;
pub mod raft;
pub mod server;
pub mod storage;
