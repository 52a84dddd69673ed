//! [`Worker`]: resumes processes by long-polling pending states and running a handler
//! for each, the poller side of design.md §3.2.
//!
//! One loop long-polls for as many states as there are free handler slots
//! ([`WorkerConfig::concurrency`]), so a worker holds no more leases than it can work
//! on. Each leased state runs in its own task: the handler gets the [`State`] (results
//! included) and returns the update, a [`StateBody`], which the worker PUTs under the
//! lease. While the handler runs, the worker extends the lease every third of its
//! length, so a slow handler keeps it. A handler error (or panic) gives the lease back,
//! so the state is pending again and is redelivered — to this worker or another — at
//! once rather than when the lease would have lapsed.
//!
//! Delivery is at-least-once: a handler whose lease was lost (it ran past the lease
//! despite heartbeats, e.g. cut off from the cluster) finds its update refused with
//! `lease_lost` and the state goes to someone else; handlers should be idempotent, or
//! key their side effects on the state's id and `version`.
//!
//! Shutdown: [`Worker::run`] takes a future; when it completes no new poll starts, a
//! poll in flight is abandoned (a state it leased in that instant is redelivered when
//! the lease lapses), and the handlers already running finish and submit their
//! updates before `run` returns.

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::{Client, Error, PollOptions, State, StateBody};

/// What a worker polls for, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Only states whose id starts with this.
    pub prefix: String,
    /// Handlers running at once (and so leases held at once); at least 1.
    pub concurrency: usize,
    /// Lease length; the worker extends it every third of this while a handler runs.
    pub lease: Duration,
    /// Seconds one long-poll waits (1–300).
    pub poll_wait: u64,
    /// Only states with at least this priority.
    pub min_priority: Option<u8>,
}

impl Default for WorkerConfig {
    /// Any prefix, 4 handlers, 30 s leases, 30 s polls.
    fn default() -> Self {
        WorkerConfig {
            prefix: String::new(),
            concurrency: 4,
            lease: Duration::from_secs(30),
            poll_wait: 30,
            min_priority: None,
        }
    }
}

/// A worker's counters since it was made (see [`Worker::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// States leased and handed to the handler.
    pub polled: u64,
    /// Updates the server accepted.
    pub completed: u64,
    /// Handler errors and panics, and updates refused for another reason than a lost
    /// lease.
    pub failed: u64,
    /// States whose lease was lost before the update (found by a heartbeat or by the
    /// update itself).
    pub lease_lost: u64,
    /// Lease extensions the server accepted.
    pub heartbeats: u64,
    /// Polls that failed (the worker backs off and polls again).
    pub poll_errors: u64,
    /// Handlers running now.
    pub in_flight: u64,
}

#[derive(Debug, Default)]
struct Counters {
    polled: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    lease_lost: AtomicU64,
    heartbeats: AtomicU64,
    poll_errors: AtomicU64,
    in_flight: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Polls pending states and runs a handler for each; clones share counters.
#[derive(Clone, Debug)]
pub struct Worker {
    client: Client,
    config: WorkerConfig,
    counters: Arc<Counters>,
}

/// The longest pause after a failed poll.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Worker {
    /// A worker polling through `client`.
    pub fn new(client: Client, config: WorkerConfig) -> Worker {
        Worker {
            client,
            config,
            counters: Arc::default(),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> WorkerStats {
        let c = &self.counters;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        WorkerStats {
            polled: get(&c.polled),
            completed: get(&c.completed),
            failed: get(&c.failed),
            lease_lost: get(&c.lease_lost),
            heartbeats: get(&c.heartbeats),
            poll_errors: get(&c.poll_errors),
            in_flight: get(&c.in_flight),
        }
    }

    /// Polls and handles states until `shutdown` completes, then waits for the running
    /// handlers and returns the counters. `handler` gets a leased state and returns its
    /// update; an `Err` gives the lease back.
    pub async fn run<F, Fut, E>(
        &self,
        handler: F,
        shutdown: impl Future<Output = ()>,
    ) -> WorkerStats
    where
        F: Fn(State) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<StateBody, E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let handler = Arc::new(handler);
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let mut backoff = Duration::from_millis(100);
        tokio::pin!(shutdown);
        loop {
            let mut permits = tokio::select! {
                biased;
                () = &mut shutdown => break,
                permits = free_slots(&slots) => permits,
            };
            let options = self.poll_options(permits.len());
            let polled = tokio::select! {
                biased;
                () = &mut shutdown => break,
                polled = self.client.poll(&options) => polled,
            };
            while tasks.try_join_next().is_some() {}
            match polled {
                Ok(states) => {
                    backoff = Duration::from_millis(100);
                    for state in states {
                        let permit = permits.pop();
                        tasks.spawn(self.clone().handle(handler.clone(), state, permit));
                    }
                }
                Err(e) => {
                    bump(&self.counters.poll_errors);
                    tracing::warn!("slct worker: poll failed: {e}; retrying in {backoff:?}");
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        while tasks.join_next().await.is_some() {}
        self.stats()
    }

    fn poll_options(&self, limit: usize) -> PollOptions {
        PollOptions {
            prefix: self.config.prefix.clone(),
            wait: self.config.poll_wait,
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            lease_ms: lease_ms(self.config.lease),
            min_priority: self.config.min_priority,
        }
    }

    /// Runs the handler on one leased state with heartbeats, then submits or releases.
    async fn handle<F, Fut, E>(
        self,
        handler: Arc<F>,
        state: State,
        _slot: Option<OwnedSemaphorePermit>,
    ) where
        F: Fn(State) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<StateBody, E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        bump(&self.counters.polled);
        let Some(token) = state.lease.as_ref().map(|l| l.token) else {
            // A poll always leases what it returns; nothing to do without a token.
            bump(&self.counters.failed);
            return;
        };
        self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let id = state.id.clone();
        let mut work = tokio::spawn(handler(state));
        let heartbeat = self.heartbeat(&id, token);
        tokio::pin!(heartbeat);
        let mut lost = false;
        let outcome = loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                () = &mut heartbeat, if !lost => lost = true,
            }
        };
        match outcome {
            Ok(Ok(body)) => self.submit(&id, token, &body).await,
            Ok(Err(e)) => self.give_back(&id, token, lost, e.to_string()).await,
            Err(e) => self.give_back(&id, token, lost, e.to_string()).await,
        }
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Extends the lease every third of its length; returns once it is lost.
    async fn heartbeat(&self, id: &str, token: Uuid) {
        let every = self.config.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            match self
                .client
                .extend_lease(id, token, lease_ms(self.config.lease))
                .await
            {
                Ok(_) => bump(&self.counters.heartbeats),
                Err(Error::LeaseLost(_) | Error::NotFound(_)) => return,
                Err(e) => tracing::warn!("slct worker: cannot extend the lease of {id:?}: {e}"),
            }
        }
    }

    /// PUTs the handler's update under the lease.
    async fn submit(&self, id: &str, token: Uuid, body: &StateBody) {
        match self.client.update_state(id, token, body).await {
            Ok(_) => bump(&self.counters.completed),
            Err(Error::LeaseLost(_)) => {
                bump(&self.counters.lease_lost);
                tracing::warn!("slct worker: the lease of {id:?} was lost; its update is void");
            }
            Err(e) => {
                bump(&self.counters.failed);
                tracing::warn!("slct worker: the update of {id:?} failed: {e}");
                let _ = self.client.release_lease(id, token).await;
            }
        }
    }

    /// Records a failed handler and gives the lease back (unless it is gone).
    async fn give_back(&self, id: &str, token: Uuid, lost: bool, error: String) {
        bump(&self.counters.failed);
        tracing::warn!("slct worker: the handler failed on {id:?}: {error}");
        if lost {
            bump(&self.counters.lease_lost);
            return;
        }
        if let Err(e) = self.client.release_lease(id, token).await {
            tracing::warn!("slct worker: cannot give back the lease of {id:?}: {e}");
        }
    }
}

/// Waits for one free slot, then takes every other free one.
async fn free_slots(slots: &Arc<Semaphore>) -> Vec<OwnedSemaphorePermit> {
    // The semaphore is never closed.
    let first = slots
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    let mut permits = vec![first];
    while let Ok(permit) = slots.clone().try_acquire_owned() {
        permits.push(permit);
    }
    permits
}

fn lease_ms(lease: Duration) -> u64 {
    u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1)
}
