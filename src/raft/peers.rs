//! Whether each peer answers, as this node's Raft RPCs find it: one log line when a
//! peer goes and one when it comes back, and when it was last heard from.
//!
//! openraft retries an unreachable peer every heartbeat and logs every failure; on a
//! cluster with a dead node that is five ERROR lines a second, which buries everything
//! else an operator would look for. So openraft's own log is off by default (`main.rs`)
//! and [`PeerHealth`] says it once: a WARN at the first failed RPC to a peer that was
//! answering, an INFO with the count of failures and the time it was away at its first
//! answer after that. The same record gives `GET /cluster` its `last_heard` (see
//! docs/design.md, "Cluster view").
//!
//! It also keeps whether each peer said, on its last answer, that its disk is low on
//! space ([`super::network::DISK_LOW_HEADER`]): a leader refuses client writes while a
//! voter it hears from says so (docs/design.md, "A full disk").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One peer's record.
#[derive(Default)]
struct Peer {
    /// Unix ms of the last RPC it answered (with any Raft result, even a refusal).
    last_heard_ms: Option<u64>,
    /// Since when, and how many RPCs in a row, it has not answered.
    down: Option<(Instant, u64)>,
    /// Whether its last answer said its disk is low on space.
    disk_low: bool,
}

/// The answering record of every peer this node sends RPCs to. Cheap to clone.
#[derive(Clone)]
pub struct PeerHealth {
    /// This node's id, in every line (`slct dev` runs three nodes in one process).
    me: u64,
    peers: Arc<Mutex<BTreeMap<u64, Peer>>>,
}

impl PeerHealth {
    /// The record of node `me`, with no peer heard from yet.
    pub fn new(me: u64) -> Self {
        PeerHealth {
            me,
            peers: Arc::default(),
        }
    }

    /// Peer `id` at `addr` answered an RPC.
    pub fn answered(&self, id: u64, addr: &str) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let peer = peers.entry(id).or_default();
        peer.last_heard_ms = Some(crate::clock::now_ms());
        if let Some((since, failures)) = peer.down.take() {
            tracing::info!(
                "node {} hears peer {id} ({addr}) again, after {failures} failed RPC(s) in {:.1}s",
                self.me,
                since.elapsed().as_secs_f64()
            );
        }
    }

    /// An RPC to peer `id` at `addr` got no answer, for `error`.
    pub fn failed(&self, id: u64, addr: &str, error: &dyn std::fmt::Display) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let peer = peers.entry(id).or_default();
        match &mut peer.down {
            Some((_, failures)) => *failures += 1,
            None => {
                peer.down = Some((Instant::now(), 1));
                tracing::warn!(
                    "node {} finds peer {id} ({addr}) does not answer: {error}; retrying \
                     without logging each failure",
                    self.me
                );
            }
        }
    }

    /// Peer `id` at `addr` answered, saying whether its disk is low on space; a change
    /// is logged.
    pub fn disk(&self, id: u64, addr: &str, low: bool) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let peer = peers.entry(id).or_default();
        if std::mem::replace(&mut peer.disk_low, low) == low {
            return;
        }
        if low {
            tracing::warn!(
                "node {} hears peer {id} ({addr}) is low on disk space; client writes are \
                 refused while it is",
                self.me
            );
        } else {
            tracing::info!(
                "node {} hears peer {id} ({addr}) has disk space again",
                self.me
            );
        }
    }

    /// The peers whose last answer said their disk is low, but for those that have not
    /// answered since (a peer that does not answer stores nothing either).
    pub fn low_on_disk(&self) -> Vec<u64> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers
            .iter()
            .filter(|(_, peer)| peer.disk_low && peer.down.is_none())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Unix ms at which each peer last answered an RPC of this node's; peers never
    /// heard from are absent.
    pub fn last_heard(&self) -> BTreeMap<u64, u64> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers
            .iter()
            .filter_map(|(id, peer)| Some((*id, peer.last_heard_ms?)))
            .collect()
    }

    /// Whether peer `id` failed its last RPC (has not answered since).
    pub fn is_down(&self, id: u64) -> bool {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.get(&id).is_some_and(|peer| peer.down.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_down_from_its_first_failure_until_it_answers() {
        let health = PeerHealth::new(1);
        assert!(!health.is_down(2));
        assert!(health.last_heard().is_empty());
        health.answered(2, "a:1");
        let heard = health.last_heard()[&2];
        for _ in 0..5 {
            health.failed(2, "a:1", &"refused");
        }
        assert!(health.is_down(2));
        assert_eq!(health.last_heard()[&2], heard, "failures are not hearing");
        health.answered(2, "a:1");
        assert!(!health.is_down(2));
    }

    #[test]
    fn a_peer_low_on_disk_counts_while_it_answers() {
        let health = PeerHealth::new(1);
        health.answered(2, "a:1");
        health.disk(2, "a:1", true);
        health.disk(3, "b:1", false);
        assert_eq!(health.low_on_disk(), [2]);
        health.failed(2, "a:1", &"refused");
        assert!(
            health.low_on_disk().is_empty(),
            "a silent peer holds nothing back"
        );
        health.answered(2, "a:1");
        health.disk(2, "a:1", false);
        assert!(health.low_on_disk().is_empty());
    }
}
