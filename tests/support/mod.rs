//! What the integration tests share, one module a concern: `cluster` (real nodes on
//! loopback, in this process or as processes of the built binary), `http` (answers and
//! byte-exact requests), `strace` (a node's system calls traced, failed or stalled),
//! `wait` (the one way to await a condition) and `world` (engine scenarios on an
//! in-memory store). Each test file takes it with `mod support;` and
//! uses what it needs, so the rest is dead code to that file.

#![allow(dead_code, unused_imports)]

mod cluster;
mod http;
pub mod strace;
mod wait;
pub mod world;

pub use cluster::{Builder, Cluster};
pub use http::{answer, enc, exact_request, Answer};
pub use wait::eventually;
