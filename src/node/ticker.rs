//! The leader's ticker: a `tick` command when the earliest deadline passes.
//!
//! Timers, parked HTTP operations and leases fall due in log time, which only moves when
//! a command is applied. So the leader watches the next deadline (published by the state
//! machine after every apply), sleeps until its wall clock reaches it — waking early if
//! an apply brings a nearer deadline or leadership changes — and then proposes
//! [`Op::Tick`]. When nothing is due it proposes nothing (design.md §2 Time). Followers
//! only wait for leadership. A leader whose clock is more than [`MAX_CLOCK_JUMP_MS`]
//! ahead of log time (after an outage) ticks until log time has caught up, one bounded
//! step per tick.
//!
//! A node that becomes leader while HTTP operations are parked ticks at once: the first
//! command of its term withdraws those parked in earlier terms, whose handlers can no
//! longer claim or withdraw them, and puts the values offered to them back into their
//! channels (design.md §3.3) — without waiting for a client's write. A leader elected
//! with nothing parked writes nothing for it; one that parks an operation before it
//! has ticked in its term ticks once more than it needs to, no more.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::batcher::Proposal;
use super::propose;
use crate::clock::now_ms;
use crate::engine::types::Millis;
use crate::engine::{Op, MAX_CLOCK_JUMP_MS};
use crate::raft::state_machine::Progress;

/// Pause after a failed tick before trying again (leadership may be moving).
const RETRY: Duration = Duration::from_millis(50);

/// The ticker task: runs until `shutdown` fires.
pub async fn run(
    proposals: mpsc::Sender<Proposal>,
    mut progress: watch::Receiver<Progress>,
    mut leadership: watch::Receiver<Option<u64>>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The (deadline, log clock) the last successful tick was for: a tick applies
    // everything due, so meeting the same pair again means something due was left
    // behind, and ticking again would only flood the log. It is reported once and
    // waited out instead. (A catch-up tick moves the clock, so the pair changes.)
    let mut ticked: Option<(Option<Millis>, Millis)> = None;
    let mut reported: Option<Millis> = None;
    // The term this node led when it last ticked.
    let mut ticked_in: Option<u64> = None;
    loop {
        let leading = *leadership.borrow_and_update();
        let leader = leading.is_some();
        let Progress {
            clock,
            next_deadline: deadline,
            parked,
        } = *progress.borrow_and_update();
        let behind = clock > 0 && now_ms() > clock.saturating_add(MAX_CLOCK_JUMP_MS);
        let take_over = leader && parked && leading != ticked_in;
        let mut wait = match deadline {
            _ if take_over || (leader && behind) => Some(0),
            Some(at) if leader => Some(at.saturating_sub(now_ms())),
            _ => None,
        };
        let mark = (deadline, clock);
        if wait == Some(0) && (take_over || ticked != Some(mark)) {
            match propose(&proposals, Op::Tick).await {
                Ok(_) => {
                    ticked = Some(mark);
                    ticked_in = leading;
                }
                Err(_) => tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = shutdown.changed() => return,
                },
            }
            continue;
        }
        if wait == Some(0) {
            if reported != deadline {
                tracing::warn!(
                    ?deadline,
                    "a tick left this deadline due; not ticking for it"
                );
                reported = deadline;
            }
            wait = None;
        }
        let sleep = async {
            match wait {
                Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            changed = progress.changed() => if changed.is_err() { return },
            changed = leadership.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}
