//! Wakes HTTP callers waiting on the state machine: long-pollers and parked channel
//! operations, driven by the [`Effects`] of every command this node applies.
//!
//! One task per router listens to [`crate::node::Node::subscribe`] and routes each
//! effect to whoever waits for it, so a state turning pending reaches a waiting poller
//! in the time it takes to apply the command, and nobody scans sled on a timer.
//!
//! # Fairness
//! Waiting pollers stand in one queue in arrival order (a ticket number). A state that
//! turns pending wakes the longest-waiting poller whose prefix matches it, and only
//! that one; the woken poller leaves the queue. If it then leases nothing (another
//! caller got there first) it goes back to its *old* place; if it returns without
//! using the state it was woken for, the wake passes on to the next matching poller,
//! so no pending state is left with a poller asleep.
//!
//! # Caveat
//! The effects broadcast is bounded. If this task falls behind and misses effects,
//! every waiting poller is woken to look again; a parked channel operation whose
//! outcome was missed learns it when its caller withdraws it (see [`super::chans`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::{broadcast, oneshot, Notify};
use uuid::Uuid;

use crate::engine::{Effects, OpOutcome};

/// Routes effects to waiting callers.
#[derive(Default)]
pub struct Hub {
    waiters: Mutex<Waiters>,
}

#[derive(Default)]
struct Waiters {
    /// Parked channel operations by id.
    ops: HashMap<Uuid, oneshot::Sender<OpOutcome>>,
    /// Waiting pollers in arrival order: ticket → (prefix, wake-up).
    queue: BTreeMap<u64, (String, Arc<Notify>)>,
    /// State ids each woken (and so dequeued) poller was woken for.
    woken: HashMap<u64, Vec<String>>,
    /// The ticket the next poller gets: tickets rise, so `queue` is in arrival order.
    next_ticket: u64,
}

impl Hub {
    /// A hub fed by `effects` until the node drops its sender or the hub is dropped.
    pub fn start(effects: broadcast::Receiver<Arc<Effects>>) -> Arc<Hub> {
        let hub = Arc::new(Hub::default());
        tokio::spawn(run(Arc::downgrade(&hub), effects));
        hub
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Routes one command's effects.
    pub fn dispatch(&self, effects: &Effects) {
        let mut w = self.lock();
        for (id, outcome) in &effects.ops {
            if let Some(tx) = w.ops.remove(id) {
                let _ = tx.send(outcome.clone());
            }
        }
        for pending in effects.pending.iter().filter(|p| !p.callback) {
            w.wake_one(&pending.id);
        }
    }

    /// Wakes every waiting poller (after missed effects).
    fn wake_all(&self) {
        let mut w = self.lock();
        for (_, (_, notify)) in std::mem::take(&mut w.queue) {
            notify.notify_one();
        }
    }

    /// Waits for the outcome of parked operation `id`; register before proposing it.
    pub fn op(self: &Arc<Self>, id: Uuid) -> OpWaiter {
        let (tx, rx) = oneshot::channel();
        self.lock().ops.insert(id, tx);
        OpWaiter {
            hub: self.clone(),
            id,
            rx,
        }
    }

    /// Joins the back of the pollers' queue.
    pub fn poller(self: &Arc<Self>, prefix: &str) -> PollTicket {
        let notify = Arc::new(Notify::new());
        let mut w = self.lock();
        let ticket = w.next_ticket;
        w.next_ticket += 1;
        w.queue.insert(ticket, (prefix.to_owned(), notify.clone()));
        PollTicket {
            hub: self.clone(),
            ticket,
            prefix: prefix.to_owned(),
            notify,
            delivered: HashSet::new(),
        }
    }

    /// Pollers waiting now.
    pub fn pollers_waiting(&self) -> usize {
        self.lock().queue.len()
    }

    /// Parked channel operations whose callers wait on this node now.
    pub fn parked_ops(&self) -> usize {
        self.lock().ops.len()
    }
}

impl Waiters {
    /// Wakes the longest-waiting poller whose prefix matches `id`.
    fn wake_one(&mut self, id: &str) {
        let first = self
            .queue
            .iter()
            .find(|(_, (prefix, _))| id.starts_with(prefix.as_str()))
            .map(|(t, _)| *t);
        if let Some((ticket, (_, notify))) = first.and_then(|t| self.queue.remove_entry(&t)) {
            self.woken.entry(ticket).or_default().push(id.to_owned());
            notify.notify_one();
        }
    }
}

async fn run(hub: Weak<Hub>, mut effects: broadcast::Receiver<Arc<Effects>>) {
    loop {
        let next = effects.recv().await;
        let Some(hub) = hub.upgrade() else { return };
        match next {
            Ok(e) => hub.dispatch(&e),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "long-poll hub fell behind the apply path");
                hub.wake_all();
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// A caller waiting for one parked operation's outcome.
pub struct OpWaiter {
    hub: Arc<Hub>,
    id: Uuid,
    rx: oneshot::Receiver<OpOutcome>,
}

impl OpWaiter {
    /// The outcome, or `None` if it does not come before `deadline`.
    pub async fn wait_until(&mut self, deadline: tokio::time::Instant) -> Option<OpOutcome> {
        tokio::time::timeout_at(deadline, &mut self.rx)
            .await
            .ok()
            .and_then(Result::ok)
    }
}

impl Drop for OpWaiter {
    fn drop(&mut self) {
        self.hub.lock().ops.remove(&self.id);
    }
}

/// A poller's place in the queue.
pub struct PollTicket {
    hub: Arc<Hub>,
    ticket: u64,
    prefix: String,
    notify: Arc<Notify>,
    delivered: HashSet<String>,
}

impl PollTicket {
    /// Waits to be woken by a matching state turning pending.
    pub async fn woken(&self) {
        self.notify.notified().await;
    }

    /// Back to this poller's old place after a look that leased nothing.
    pub fn rearm(&self) {
        let mut w = self.hub.lock();
        w.woken.remove(&self.ticket);
        w.queue
            .entry(self.ticket)
            .or_insert_with(|| (self.prefix.clone(), self.notify.clone()));
    }

    /// Notes states this poller returns, so their wake-ups are not passed on.
    pub fn delivered<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) {
        self.delivered.extend(ids.into_iter().map(str::to_owned));
    }
}

impl Drop for PollTicket {
    fn drop(&mut self) {
        let mut w = self.hub.lock();
        w.queue.remove(&self.ticket);
        for id in w.woken.remove(&self.ticket).unwrap_or_default() {
            if !self.delivered.contains(&id) {
                w.wake_one(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::TurnedPending;
    use std::time::Duration;

    fn pending(id: &str) -> Effects {
        Effects {
            pending: vec![TurnedPending {
                id: id.into(),
                callback: false,
            }],
            ops: vec![],
        }
    }

    async fn is_woken(t: &PollTicket) -> bool {
        tokio::time::timeout(Duration::from_millis(50), t.woken())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn wakes_the_longest_waiting_matching_poller_only() {
        let hub = Arc::new(Hub::default());
        let a = hub.poller("order/");
        let b = hub.poller("");
        let c = hub.poller("");
        hub.dispatch(&pending("job-1"));
        assert!(!is_woken(&a).await);
        assert!(is_woken(&b).await);
        assert!(!is_woken(&c).await);
        hub.dispatch(&pending("order/7"));
        assert!(is_woken(&a).await);
        assert_eq!(hub.pollers_waiting(), 1);
    }

    #[tokio::test]
    async fn rearmed_poller_keeps_its_place() {
        let hub = Arc::new(Hub::default());
        let a = hub.poller("");
        let b = hub.poller("");
        hub.dispatch(&pending("x"));
        assert!(is_woken(&a).await);
        a.rearm();
        hub.dispatch(&pending("y"));
        assert!(is_woken(&a).await);
        assert!(!is_woken(&b).await);
    }

    #[tokio::test]
    async fn an_unused_wake_passes_on() {
        let hub = Arc::new(Hub::default());
        let mut a = hub.poller("");
        let b = hub.poller("");
        hub.dispatch(&pending("x"));
        a.delivered(["older"]);
        drop(a);
        assert!(is_woken(&b).await);
    }

    #[tokio::test]
    async fn op_outcomes_reach_their_waiter() {
        let hub = Arc::new(Hub::default());
        let id = Uuid::new_v4();
        let mut w = hub.op(id);
        hub.dispatch(&Effects {
            pending: vec![],
            ops: vec![(id, OpOutcome::Sent)],
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        assert_eq!(w.wait_until(deadline).await, Some(OpOutcome::Sent));
        drop(w);
        assert!(hub.lock().ops.is_empty());
    }
}
