//! Disk space of large values on a real three-node cluster over HTTP: each value lies
//! once in a file of its own, which the snapshot shares (a hard link) and which goes
//! once the value is received, from the snapshot too; a log holding many bytes in few
//! entries is snapshotted and purged on every node.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use slct::api::ApiConfig;
use slct::node::Node;
use support::{eventually, Cluster};

/// Values sent, and their size: each above the size kept in a file of its own.
const VALUES: usize = 10;
const VALUE_BYTES: usize = 100_000;
/// Bytes of log that trigger a snapshot in this test: a fraction of what is sent.
const LOG_BYTES: u64 = 256 << 10;

fn value(i: usize) -> Value {
    let mut s = format!("value {i} ");
    while s.len() < VALUE_BYTES {
        s.push((b'a' + (s.len() % 26) as u8) as char);
    }
    json!(s)
}

fn value_files(node: &Node) -> usize {
    let dir = node.config().data_dir.join(slct::storage::SM_DIR);
    std::fs::read_dir(dir.join(slct::storage::sm::values::VALUES_DIR))
        .expect("the values directory")
        .count()
}

/// The hard-link count of each value file the node's snapshot links to.
fn snapshot_links(node: &Node) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    let dir = node.config().data_dir.join(slct::storage::SNAPSHOTS_DIR);
    std::fs::read_dir(dir.join(slct::raft::snapshot_files::FILES_DIR))
        .map(|entries| {
            entries
                .map(|e| e.expect("entry").metadata().expect("metadata").nlink())
                .collect()
        })
        .unwrap_or_default()
}

fn snapshot_bytes(node: &Node) -> u64 {
    let dir = node.config().data_dir.join(slct::storage::SNAPSHOTS_DIR);
    slct::raft::state_machine::snapshot_bytes(&dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_are_kept_once_and_the_log_is_purged_by_size() {
    let c = Cluster::start_tuned(ApiConfig::default(), |config| {
        config.snapshot_log_bytes = LOG_BYTES;
    })
    .await;
    let l = c.leader();
    let made = c.call(l, Method::PUT, "/chan/big", None).await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    for i in 0..VALUES {
        let sent = c
            .call(l, Method::POST, "/chan/big/send", Some(value(i)))
            .await;
        assert_eq!(sent.status, StatusCode::ACCEPTED, "{:?}", sent.body);
    }

    // Far fewer entries than `snapshot_threshold` (10,000), but more bytes than
    // LOG_BYTES: every node snapshots and purges its log until it holds less than
    // LOG_BYTES or the snapshot's size — and so at most half of what was sent, each
    // snapshot having freed what it covers. Each value is in one file.
    let sent = (VALUES * VALUE_BYTES) as u64;
    for node in &c.nodes {
        eventually(
            Duration::from_secs(60),
            "the log purged by size",
            || async {
                let (log, snapshot) = (node.log_bytes(), snapshot_bytes(node));
                snapshot > 0 && log < LOG_BYTES.max(snapshot) && log < sent / 2
            },
        )
        .await;
        eventually(Duration::from_secs(30), "a file per value", || async {
            value_files(node) == VALUES
        })
        .await;
        // The snapshot holds the values that were waiting when it was built (at least
        // one: LOG_BYTES is under three values) by their files: the same file under
        // two names, the store's and the snapshot's, and no copy in its tables file.
        let links = snapshot_links(node);
        assert!(!links.is_empty(), "the snapshot refers to value files");
        assert!(
            links.iter().all(|n| *n == 2),
            "shared, not copied: {links:?}"
        );
        assert!(
            snapshot_bytes(node) < VALUE_BYTES as u64,
            "no value in the tables"
        );
    }

    // Nothing was lost to the purge, and a received value's file goes.
    for i in 0..VALUES {
        let got = c.call(l, Method::POST, "/chan/big/recv?wait=0", None).await;
        assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);
        assert_eq!(got.body["data"], value(i), "value {i} in order");
    }
    for node in &c.nodes {
        eventually(Duration::from_secs(30), "the files deleted", || async {
            value_files(node) == 0
        })
        .await;
        // Held by the snapshot alone, they go with the next one (`node::log_size`).
        eventually(
            Duration::from_secs(30),
            "the snapshot's links gone",
            || async { snapshot_links(node).is_empty() },
        )
        .await;
    }
    c.shutdown().await;
}
