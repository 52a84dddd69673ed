//! Group commit: concurrent writes packed into one log entry.
//!
//! Every [`Node::write`](super::Node::write) sends its op here. The batcher takes the
//! first op that arrives, waits for a free in-flight slot, then takes every other op
//! already queued (up to [`MAX_BATCH`]), stamps each with leader time and a seed, and
//! proposes them as ONE entry. While an entry is committing, new writes queue up and go
//! together in the next one, so a thousand concurrent writers pay for a handful of log
//! flushes instead of a thousand. Each caller gets its own slot of the entry's replies.
//!
//! Proposals leave the batcher in order (`client_write_ff` is awaited here; only the
//! replies are awaited in spawned tasks), so the `now` stamps are non-decreasing in log
//! order as well — though the engine never lets log time go back regardless.
//!
//! # What a failed write means
//! openraft refuses a proposal before appending it when this node does not lead
//! ([`NodeError::NotLeader`], safe to retry on the leader) or leads without a lease: no
//! quorum has acknowledged it within the election timeout, as after a restart or when
//! cut off ([`NodeError::NoQuorum`], nothing proposed). An entry that this node appended
//! and then discarded, adopting another leader's log, may still commit through a node
//! that holds it: [`NodeError::Discarded`], outcome unknown. An entry that a new leader
//! commits is still answered here once this node applies it. [`NodeError::ShuttingDown`]
//! after proposing also leaves the outcome open.
//!
//! An applied entry is answered once this node's own copy of it is durable, too
//! (`crate::raft::log_store`, "Answering writes"): two followers may commit it while
//! this node's sync runs. If that sync fails, the node stops, and the callers get
//! [`NodeError::ShuttingDown`]: nothing is acknowledged on the strength of a failed sync.
//!
//! With group commit off, every op is its own entry and entries are not limited in
//! flight: the baseline that shows what batching buys.
//!
//! # Slots in flight
//! A slot is given back when its entry's replies come, or as soon as this node stops
//! leading the term it proposed in, whichever is first: a deposed leader's entries are
//! answered only once the new leader's log reaches this node (applied, or discarded),
//! which a partition can put off for as long as it lasts, and a slot held for them
//! would stop every later write on this node (design.md §3, "Group commit"). Their
//! callers time out with the outcome unknown, which it is to them; the task waiting for
//! such replies ends when its callers are gone.
//!
//! A batch also stops growing before its commands pass [`MAX_ENTRY_BYTES`], so no entry
//! outgrows what a follower accepts; a caller that gave up before its op was proposed
//! (a write timeout, a client gone) is dropped from the batch, so it never applies.
//!
//! # Leader time (design.md §2)
//! `now` is the maximum of this node's wall clock, the last `now` it proposed and the
//! applied log clock, so log time never goes back, not even when a leader whose clock
//! is behind takes over. It is at most [`MAX_CLOCK_JUMP_MS`] past the applied log clock
//! (the engine refuses more): after a long outage log time catches up in such steps,
//! which the ticker drives.

use std::sync::Arc;

use openraft::errors::{ClientWriteError, ForwardReason, ForwardToLeader, RaftError};
use openraft::impls::ProgressResponder;
use tokio::sync::oneshot::error::TryRecvError;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use super::{not_leader, NodeError};
use crate::clock::now_ms;
use crate::engine::types::Millis;
use crate::engine::{Applied, Command, Op, MAX_CLOCK_JUMP_MS};
use crate::raft::log_store::Synced;
use crate::raft::state_machine::Progress;
use crate::raft::{Batch, Raft, TypeConfig, MAX_ENTRY_BYTES};

/// Most ops in one entry.
pub const MAX_BATCH: usize = 256;
/// Entries proposed and not yet answered, with group commit on. One more than one lets
/// the next entry's leader flush overlap the previous entry's replication.
const MAX_IN_FLIGHT: usize = 2;

/// A write waiting for its entry.
pub struct Proposal {
    /// What to apply.
    pub op: Op,
    /// Its encoded size, which bounds the batch.
    pub size: usize,
    /// Where the applied result goes.
    pub reply: oneshot::Sender<Result<Applied, NodeError>>,
}

/// How the batcher proposes.
pub struct Settings {
    /// Pack concurrent writes into one entry (`--group-commit`).
    pub group_commit: bool,
    /// Stamped on every command (`--history-limit`).
    pub history_limit: u32,
    /// The term this node led before it restarted, if its committed vote was its own:
    /// openraft restarts it as leader of that term, and the operations its previous
    /// process parked have no handler left. No new term begins to withdraw them
    /// (`Ctx::enter_term`), so the first entry this node proposes in that term starts with
    /// [`Op::WithdrawParked`], proposed again until it is applied: the restored leader
    /// refuses writes until a quorum acknowledges it (design.md §3.3).
    pub restarted_leading: Option<u64>,
    /// How far this node's log is durable: an entry is answered once it is durable here.
    pub synced: Synced,
}

/// The batcher task: runs until `proposals` closes or `shutdown` fires. `leading` is
/// the term this node leads, if it leads ([`super::Node::leadership`]).
pub async fn run(
    raft: Raft,
    mut proposals: mpsc::Receiver<Proposal>,
    leading: watch::Receiver<Option<u64>>,
    progress: watch::Receiver<Progress>,
    settings: Settings,
    mut shutdown: watch::Receiver<bool>,
) {
    let Settings {
        group_commit,
        history_limit,
        restarted_leading: mut take_over,
        synced,
    } = settings;
    // The answer to the restarted term's withdrawal, once proposed.
    let mut withdrawal: Option<oneshot::Receiver<Result<Applied, NodeError>>> = None;
    let in_flight = group_commit.then(|| Arc::new(Semaphore::new(MAX_IN_FLIGHT)));
    let mut clock = LeaderClock::default();
    // An op that did not fit the last batch: it leads the next one.
    let mut batch_overflow: Option<Proposal> = None;
    loop {
        let first = match batch_overflow.take() {
            Some(first) => first,
            None => tokio::select! {
                first = proposals.recv() => match first {
                    Some(first) => first,
                    None => return,
                },
                _ = shutdown.changed() => return,
            },
        };
        let permit = match &in_flight {
            Some(slots) => match slots.clone().acquire_owned().await {
                Ok(permit) => Some(permit),
                Err(_) => return,
            },
            None => None,
        };
        let mut bytes = first.size;
        let mut batch = vec![first];
        while group_commit && batch.len() < MAX_BATCH {
            match proposals.try_recv() {
                Ok(next) if bytes + next.size > MAX_ENTRY_BYTES => {
                    batch_overflow = Some(next);
                    break;
                }
                Ok(next) => {
                    bytes += next.size;
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        batch.retain(|p| !p.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let term = *leading.borrow();
        if let Some(answer) = withdrawal.as_mut() {
            match answer.try_recv() {
                Err(TryRecvError::Empty) => {}
                Ok(Ok(_)) => take_over = None,
                // Refused or lost: proposed again below.
                Ok(Err(_)) | Err(TryRecvError::Closed) => withdrawal = None,
            }
        }
        if take_over.is_some() && term.is_some() && withdrawal.is_none() {
            if term == take_over {
                let (reply, answer) = oneshot::channel();
                withdrawal = Some(answer);
                let op = Op::WithdrawParked;
                batch.insert(0, Proposal { op, size: 0, reply });
            } else {
                // A later term withdraws them anyway.
                take_over = None;
            }
        }
        let now = clock.now(progress.borrow().clock);
        let (commands, mut replies): (Vec<Command>, Vec<_>) = batch
            .into_iter()
            .map(|p| {
                let seed = rand::random();
                (
                    Command {
                        now,
                        seed,
                        history_limit,
                        op: p.op,
                    },
                    p.reply,
                )
            })
            .unzip();
        let (responder, applied) = ProgressResponder::complete_only();
        match raft
            .client_write_ff(Batch::new(commands), Some(responder))
            .await
        {
            Ok(()) => {
                let leading = leading.clone();
                let mut synced = synced.clone();
                tokio::spawn(async move {
                    let Some(result) =
                        replies_or_gone(applied, &mut replies, permit, leading, term).await
                    else {
                        return;
                    };
                    let result = match result {
                        Ok(Ok(response)) if synced.through(response.log_id.index).await => {
                            Ok(response.data)
                        }
                        Ok(Ok(_)) => Err(NodeError::ShuttingDown),
                        Ok(Err(e)) => Err(write_error(e)),
                        Err(_) => Err(NodeError::ShuttingDown),
                    };
                    answer(replies, result);
                });
            }
            Err(fatal) => answer(replies, Err(fatal_error(fatal))),
        }
    }
}

/// Waits for an entry's replies, holding its in-flight slot (if any) until they come
/// or until this node no longer leads `term`; after that, only while one of the
/// callers still waits (`None` once all are gone). See "Slots in flight" above.
async fn replies_or_gone<R: std::future::Future>(
    replies: R,
    callers: &mut [oneshot::Sender<Result<Applied, NodeError>>],
    slot: Option<OwnedSemaphorePermit>,
    mut leading: watch::Receiver<Option<u64>>,
    term: Option<u64>,
) -> Option<R::Output> {
    tokio::pin!(replies);
    if slot.is_some() {
        let deposed = leading.wait_for(|now| term.is_none() || *now != term);
        tokio::select! {
            result = &mut replies => return Some(result),
            _ = deposed => drop(slot),
        }
    }
    let gone = futures::future::join_all(callers.iter_mut().map(|c| c.closed()));
    tokio::select! {
        result = &mut replies => Some(result),
        _ = gone => None,
    }
}

/// Sends each caller its reply, or all of them the error.
fn answer(
    replies: Vec<oneshot::Sender<Result<Applied, NodeError>>>,
    result: Result<Vec<Applied>, NodeError>,
) {
    match result {
        Ok(applied) if applied.len() == replies.len() => {
            for (reply, applied) in replies.into_iter().zip(applied) {
                // A caller that went away does not need its answer.
                let _ = reply.send(Ok(applied));
            }
        }
        Ok(applied) => {
            let e = NodeError::Fatal(format!(
                "batch of {} applied as {} replies",
                replies.len(),
                applied.len()
            ));
            answer(replies, Err(e));
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// A failed proposal as the node's error (see "What a failed write means").
pub fn write_error(e: ClientWriteError<TypeConfig>) -> NodeError {
    match e {
        ClientWriteError::ForwardToLeader(ForwardToLeader {
            reason: ForwardReason::LeaseExpired,
            ..
        }) => NodeError::NoQuorum,
        ClientWriteError::ForwardToLeader(f) => not_leader(f.leader_id, f.leader_node),
        ClientWriteError::LogEntryDiscarded(_) => NodeError::Discarded,
        // Not reached from the batcher, which sets no precondition and changes no
        // membership; `Node::membership_change` matches its own errors before this.
        ClientWriteError::ChangeMembershipError(e) => NodeError::Fatal(e.to_string()),
        ClientWriteError::PreconditionFailed(e) => NodeError::Fatal(e.to_string()),
    }
}

/// openraft stopped: shutting down, or a fatal storage error.
pub fn fatal_error(e: openraft::errors::Fatal<TypeConfig>) -> NodeError {
    match e {
        openraft::errors::Fatal::Stopped => NodeError::ShuttingDown,
        other => NodeError::Fatal(other.to_string()),
    }
}

/// A [`RaftError`] of a client write as the node's error.
pub fn raft_write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> NodeError {
    match e {
        RaftError::APIError(e) => write_error(e),
        RaftError::Fatal(e) => fatal_error(e),
    }
}

/// The proposer's side of log time.
#[derive(Default)]
struct LeaderClock {
    last: Millis,
}

impl LeaderClock {
    /// max(wall clock, last proposed, applied log clock), but at most
    /// [`MAX_CLOCK_JUMP_MS`] past a running log clock; remembered as the last proposed.
    fn now(&mut self, log_clock: Millis) -> Millis {
        let mut now = now_ms().max(self.last).max(log_clock);
        if log_clock > 0 {
            now = now.min(log_clock + MAX_CLOCK_JUMP_MS);
        }
        self.last = now;
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_clock_never_goes_back() {
        let mut clock = LeaderClock::default();
        let first = clock.now(0);
        assert!(first >= now_ms() - 1000);
        let ahead = first + 60_000;
        assert_eq!(
            clock.now(ahead),
            ahead,
            "a log clock ahead of the wall wins"
        );
        assert_eq!(clock.now(0), ahead, "and is never undone");
    }

    #[test]
    fn leader_clock_catches_up_in_bounded_steps() {
        let mut clock = LeaderClock::default();
        let long_ago = now_ms() - 10 * MAX_CLOCK_JUMP_MS;
        assert_eq!(clock.now(long_ago), long_ago + MAX_CLOCK_JUMP_MS);
    }

    #[test]
    fn a_short_batch_fails_every_caller() {
        let (tx, mut rx) = oneshot::channel();
        answer(vec![tx], Ok(vec![]));
        assert!(matches!(rx.try_recv(), Ok(Err(NodeError::Fatal(_)))));
    }
}
