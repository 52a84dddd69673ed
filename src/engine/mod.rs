//! The CSP engine: Go's channels and `select` as a deterministic state machine on
//! ordered key-value storage.
//!
//! Every Raft replica applies the same [`Command`]s in log order through [`apply`], and
//! because applying is a pure function of the store and the command — log time and the
//! random seed travel in the command, there is no clock, no thread RNG and no hash-map
//! iteration inside — every replica ends with the same tables.
//!
//! # Semantics (design.md §2)
//! - A `recv` is ready if the channel has buffered values, a blocked sender, or is
//!   closed; a `send` if the channel is closed, has a blocked receiver, or buffer room; a
//!   timer once its deadline is at or before log time.
//! - Among ready cases one is chosen uniformly by a PRNG seeded from the command; with
//!   none ready a `default` case is taken; otherwise the select blocks in the FIFO queue
//!   of every channel it names and in the timer index.
//! - A receive takes the buffer's head and refills it from the first blocked sender, or
//!   takes straight from the first blocked sender (both selects complete in the same
//!   command). A send hands its value to the first blocked receiver or buffers it.
//! - `close` completes every blocked receiver with `ok: false` and every blocked sender
//!   with `ok: false` and Go's "send on closed channel"; buffered values drain first.
//! - A select never matches itself (it is not queued while it looks for a partner); two
//!   selects of one state may match each other.
//!
//! # Layout
//! - [`types`], [`command`], [`error`]: the data and the contract with Raft and the API.
//! - [`wire`], [`validate`]: what clients send, checked.
//! - `store`, `keys`: tables, the write overlay, key encodings — private: storage
//!   implements [`Store`], and everything else reads through the engine's functions
//!   ([`load_state`], [`chan_view`], [`list`], [`poll`], [`history`]); [`counts`]:
//!   running totals for metrics.
//! - `ctx`: per-command caches and derived-index maintenance; `chan`, `select`, `states`,
//!   `time`: the operations.

pub mod chan;
pub mod command;
pub mod counts;
mod ctx;
pub mod data;
pub mod error;
pub mod history;
pub mod idempotency;
mod keys;
pub mod list;
pub mod poll;
mod rng;
mod select;
mod states;
mod store;
mod time;
pub mod types;
pub mod validate;
pub mod wire;

pub use command::{
    Applied, Command, Discarded, DiscardedSend, Effects, Op, OpOutcome, ParkedOp, RecvMode,
    Response, SendMode, TurnedPending,
};
pub use counts::{counts, Counts};
pub use data::Data;
pub use error::Error;
pub use store::{merge, MemStore, ReadOnly, Scan, Store, StoreError, Table, Tx, WriteSet};
pub use time::{clock, next_deadline, MAX_CLOCK_JUMP_MS};

pub use ctx::CALLBACK_LEASE_MARGIN_MS;

use crate::codec;
use chan::Side;
use counts::DeleteReason;
use ctx::Ctx;
use states::OpResult;
use types::Chan;

/// Applies one command, from the log entry at Raft `index` of leader term `term`, to
/// the transaction: first the passing of time up to the command's `now`, then — at the
/// first command of a term — the withdrawal of the operations parked in earlier terms
/// (`Ctx::enter_term`), then the operation. Errors are fatal storage failures only;
/// what the client did wrong is in [`Applied::reply`]. A command whose `now` jumps too
/// far ahead of log time changes nothing (see [`time::log_time`]).
pub fn apply<S: Store + ?Sized>(
    tx: &mut Tx<'_, S>,
    cmd: Command,
    index: u64,
    term: u64,
) -> Result<Applied, StoreError> {
    let now = match time::log_time(tx, cmd.now)? {
        Ok(now) => now,
        Err(e) => {
            return Ok(Applied {
                reply: Err(e),
                effects: Effects::default(),
            })
        }
    };
    let mut ctx = Ctx::new(tx, now, cmd.seed).with_history(index, cmd.history_limit);
    ctx.advance()?;
    ctx.enter_term(term)?;
    let reply = run(&mut ctx, cmd.op)?;
    ctx.flush()?;
    Ok(Applied {
        reply,
        effects: ctx.effects,
    })
}

fn run<S: Store + ?Sized>(ctx: &mut Ctx<'_, '_, S>, op: Op) -> OpResult {
    if let Some(Err(e)) = op.chan().map(|name| validate::name("channel name", name)) {
        return Ok(Err(e));
    }
    match op {
        Op::CreateState {
            id,
            data,
            selects,
            callback,
            priority,
            max_deliveries,
            retain_ms,
        } => ctx.create_state(
            &id,
            data,
            selects,
            callback,
            states::Settings {
                priority,
                max_deliveries,
                retain_ms,
            },
        ),
        Op::UpdateState {
            id,
            token,
            data,
            selects,
            callback,
            priority,
            max_deliveries,
            retain_ms,
        } => ctx.update_state(
            &id,
            token,
            states::Update {
                data,
                selects,
                callback,
                priority,
                max_deliveries,
                retain_ms,
            },
        ),
        Op::Pause { id } => ctx.set_paused(&id, true),
        Op::Resume { id } => ctx.set_paused(&id, false),
        Op::DeleteState { id } => ctx.delete_state(&id, DeleteReason::Request),
        Op::DeleteStates {
            prefix,
            status,
            limit,
            after,
        } => ctx.delete_states(&prefix, status.as_deref(), limit, after.as_deref()),
        Op::LeasePending {
            prefix,
            min_priority,
            tokens,
            lease_ms,
        } => ctx.lease_pending(&prefix, min_priority, &tokens, lease_ms),
        Op::ExtendLease {
            id,
            token,
            extend_ms,
        } => ctx.extend_lease(&id, token, extend_ms),
        Op::ReleaseLease { id, token } => ctx.release_lease(&id, token),
        Op::CallbackFailed {
            id,
            token,
            error,
            max_attempts,
            backoff_ms,
            duration_ms,
        } => ctx.callback_failed(&id, token, error, max_attempts, backoff_ms, duration_ms),
        Op::RetryFailed { id } => ctx.retry_failed(&id),
        Op::MakeChan { name, capacity } => make_chan(ctx, &name, capacity),
        Op::CloseChan { name } => close_chan(ctx, &name),
        Op::Send { chan, data, mode } => send(ctx, &chan, data, mode),
        Op::Recv { chan, mode } => recv(ctx, &chan, mode),
        Op::Withdraw { id } => Ok(if ctx.withdraw_op(id)? {
            Ok(Response::Done)
        } else {
            Err(Error::NotFound(format!("operation {id} is not parked")))
        }),
        Op::Keyed {
            key,
            digest,
            window_ms,
            op,
        } => keyed(ctx, &key, digest, window_ms, *op),
        Op::Tick => Ok(Ok(Response::Done)),
        Op::WithdrawParked => {
            ctx.withdraw_all_ops()?;
            Ok(Ok(Response::Done))
        }
        Op::Claim { id } => Ok(match ctx.claim_op(id)? {
            Some(data) => Ok(Response::Received { data, ok: true }),
            None => Err(Error::NotFound(format!(
                "operation {id} has no value to claim"
            ))),
        }),
    }
}

/// A write with an idempotency key: the first reply again for a repeat within the
/// window, a refusal for another request under the same key, else the write, recorded.
fn keyed<S: Store + ?Sized>(
    ctx: &mut Ctx<'_, '_, S>,
    key: &str,
    digest: Vec<u8>,
    window_ms: u64,
    op: Op,
) -> OpResult {
    let valid = idempotency::check_key(key).and(idempotency::check_window(window_ms));
    if let Err(e) = valid {
        return Ok(Err(e));
    }
    if matches!(op, Op::Keyed { .. } | Op::Tick) {
        return Ok(Err(Error::Invalid(format!(
            "{} cannot carry a key",
            op.kind()
        ))));
    }
    let route = op.kind();
    if let Some(first) = ctx.idempotency_record(key)? {
        if first.route == route && first.digest == digest {
            return Ok(first.reply);
        }
        return Ok(Err(Error::IdempotencyKeyReused(format!(
            "Idempotency-Key {key:?} was used for another request ({}) less than its \
             window ago; nothing was applied: use a new key for a new request",
            first.route
        ))));
    }
    let reply = run(ctx, op)?;
    let record = idempotency::Record {
        route: route.to_owned(),
        digest,
        reply: reply.clone(),
        expires_at: ctx.now.saturating_add(window_ms),
    };
    ctx.record_idempotency(key, &record)?;
    Ok(reply)
}

fn make_chan<S: Store + ?Sized>(ctx: &mut Ctx<'_, '_, S>, name: &str, capacity: u64) -> OpResult {
    let stored = ctx.chan(name)?;
    let created = stored.is_vacant();
    if !created && stored.capacity != capacity {
        let message = format!("channel {name:?} exists with capacity {}", stored.capacity);
        return Ok(Err(Error::Exists(message)));
    }
    let chan = ctx.chan_mut(name)?;
    if created {
        *chan = Chan {
            capacity,
            ..Chan::default()
        };
    }
    chan.explicit = true;
    let view = chan::view(name, chan);
    Ok(Ok(Response::Chan {
        chan: view,
        created,
    }))
}

fn close_chan<S: Store + ?Sized>(ctx: &mut Ctx<'_, '_, S>, name: &str) -> OpResult {
    Ok(match ctx.close(name)? {
        Some(discarded) => Ok(Response::Closed(discarded)),
        None => Err(Error::Closed(name.to_owned())),
    })
}

fn send<S: Store + ?Sized>(
    ctx: &mut Ctx<'_, '_, S>,
    name: &str,
    data: Data,
    mode: SendMode,
) -> OpResult {
    if ctx.chan(name)?.closed {
        return Ok(Err(Error::Closed(name.to_owned())));
    }
    if ctx.send_ready(name)? {
        ctx.take_send(name, data)?;
        return Ok(Ok(Response::Sent));
    }
    match mode {
        SendMode::Try => return Ok(Err(Error::WouldBlock)),
        SendMode::Detached => {
            let sent_at = ctx.now;
            ctx.enqueue(name, Side::Send, chan::Waiter::Detached { data, sent_at })?;
        }
        SendMode::Park(op) => {
            if let Err(e) = park(ctx, name, Side::Send, &op, data)? {
                return Ok(Err(e));
            }
        }
    }
    Ok(Ok(Response::Parked))
}

fn recv<S: Store + ?Sized>(ctx: &mut Ctx<'_, '_, S>, name: &str, mode: RecvMode) -> OpResult {
    if ctx.recv_ready(name)? {
        let (data, ok) = ctx.take_recv(name)?;
        return Ok(Ok(Response::Received { data, ok }));
    }
    match mode {
        RecvMode::Try => Ok(Err(Error::WouldBlock)),
        RecvMode::Park(op) => {
            Ok(park(ctx, name, Side::Recv, &op, Data::null())?.map(|()| Response::Parked))
        }
    }
}

/// Parks an HTTP caller's send or receive, unless the channel has all it may hold.
fn park<S: Store + ?Sized>(
    ctx: &mut Ctx<'_, '_, S>,
    name: &str,
    side: Side,
    op: &ParkedOp,
    data: Data,
) -> Result<Result<(), Error>, StoreError> {
    if ctx.chan(name)?.parked >= validate::MAX_PARKED_PER_CHAN {
        return Ok(Err(Error::TooManyWaiters(name.to_owned())));
    }
    if let Err(e) = time::check_deadline(ctx.now, op.deadline) {
        return Ok(Err(e));
    }
    ctx.park_op(name, side, op.id, data, op.deadline)?;
    Ok(Ok(()))
}

/// One state as of the store (for reads outside apply).
pub fn load_state<S: Store + ?Sized>(
    store: &S,
    id: &str,
) -> Result<Option<types::State>, StoreError> {
    store
        .get(Table::States, id.as_bytes())?
        .map(|bytes| codec::decode(&bytes))
        .transpose()
        .map_err(StoreError::from)
}

/// A channel's view as of the store (for reads outside apply).
pub fn chan_view<S: Store + ?Sized>(
    store: &S,
    name: &str,
) -> Result<Option<types::ChanView>, StoreError> {
    let mut tx = Tx::new(store);
    let mut ctx = Ctx::new(&mut tx, 0, 0);
    ctx.chan_view(name)
}

/// The values buffered in channel `name`, head first (for reads outside apply, such as
/// consistency checks).
pub fn buffered<S: Store + ?Sized>(store: &S, name: &str) -> Result<Vec<Data>, StoreError> {
    chan_entries(store, Table::Buffers, name)
}

/// The waiters in the `side` queue of channel `name`, first first (for reads outside
/// apply, such as consistency checks).
pub fn queued<S: Store + ?Sized>(
    store: &S,
    name: &str,
    side: Side,
) -> Result<Vec<chan::Waiter>, StoreError> {
    let mut tx = Tx::new(store);
    let mut ctx = Ctx::new(&mut tx, 0, 0);
    let head = side.head(ctx.chan(name)?).cloned();
    let mut waiters: Vec<chan::Waiter> = head.into_iter().map(Into::into).collect();
    waiters.extend(chan_entries(store, side.queue(), name)?);
    Ok(waiters)
}

/// The records of channel `name` in `table`, in key order.
fn chan_entries<S: Store + ?Sized, T: serde::de::DeserializeOwned>(
    store: &S,
    table: Table,
    name: &str,
) -> Result<Vec<T>, StoreError> {
    let prefix = keys::chan_prefix(name);
    let mut records = Vec::new();
    for entry in store.scan_from(table, &prefix) {
        let (key, bytes) = entry?;
        if !key.starts_with(&prefix) {
            break;
        }
        records.push(codec::decode(&bytes)?);
    }
    Ok(records)
}
