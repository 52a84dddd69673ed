//! The fault rig, workload, nemesis and history checker, in the manner of
//! Jepsen's tests of etcd and NATS.
//!
//! The cluster tests elsewhere kill and pause nodes on loopback and look at a few
//! reads afterwards. Here every node runs in its own network namespace, so the rig can
//! also cut links, drop packets one way, slow a link down and skew a node's clock;
//! clients hammer every node meanwhile, every call is recorded, and after healing a
//! checker reads the whole history to prove nothing was lost, duplicated, reordered or
//! read stale.
//!
//! # Layout
//! - [`rig`]: namespaces, bridge, node processes, and each fault as a function;
//!   [`delay`]: latency through a netfilter queue, as this kernel has no `netem`.
//! - [`nemesis`]: a schedule of faults, each with evidence that it took effect.
//! - [`workload`]: the clients, and the drain after healing.
//! - [`history`]: what is recorded of each call.
//! - [`checker`]: the checks over a history (unit-tested on hand-made histories in
//!   `tests/fault_checker.rs`).
//! - [`run`]: one run from rig-up to report.
//!
//! The short run is `tests/fault_nemesis.rs` (part of `cargo test`); the soak is the
//! ignored test beside it (docs/testing.md, "Fault tests").

#![allow(dead_code)]

pub mod checker;
pub mod delay;
pub mod history;
pub mod neighbours;
pub mod nemesis;
pub mod rig;
pub mod run;
pub mod workload;
