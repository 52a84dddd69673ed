//! slct: Go's channels and `select`, offered as a durable, replicated HTTP service.
//!
//! # Layout
//! - [`engine`]: the CSP state machine — channels, selects, states, leases and log
//!   time — as a pure, deterministic module over ordered key-value tables.
//! - [`store`]: those tables in sled, committed atomically with the applied index.
//! - [`node`]: a running replica — the seam between Raft and the HTTP API.
//! - [`api`]: the HTTP API of DESIGN §3 (routes, extractors, errors, forwarding).
//! - [`callbacks`]: resuming pending states by POSTing them to their callback URLs.

pub mod api;
pub mod callbacks;
pub mod engine;
pub mod node;
pub mod store;
