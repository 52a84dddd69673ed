//! Channels: buffers, FIFO wait queues, and the completion rules of Go's runtime
//! (runtime/chan.go) — who gets which value when a send or receive goes through.
//!
//! A waiter in a queue is a blocked select of some state, a detached send, or an HTTP
//! caller's parked send or receive. Counts of buffered values and waiters live in the
//! channel's metadata, so readiness is decided without touching the queues; so does a
//! select's case that joined an empty queue, the head of that queue, which saves the
//! commonest blocking command a key of its own (design.md §4, keys per command).
//!
//! A value that meets a parked HTTP receive is *offered* to it, not given: it leaves the
//! channel but stays in the operation's record until the caller, still connected,
//! claims it with [`Op::Claim`](super::Op::Claim). A withdrawal (the caller hung up),
//! the deadline or the start of a new leader term (whose leader cannot hear from the
//! handler: `Ctx::enter_term`) puts an offered value back at the head of the channel in
//! the same command, so a receiver that has gone never takes a value, whatever came
//! after it in the log (design.md §3.3). A value put back may make the buffer longer than its
//! capacity for a while: receivers drain it first and sends block until it is back under.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::command::{Discarded, DiscardedSend, OpOutcome};
use super::counts::Counter;
use super::ctx::Ctx;
use super::data::Data;
use super::keys;
use super::store::{get_record, put_record};
use super::store::{Store, StoreError, Table, Tx};
use super::types::{Chan, ChanView, Millis, QueuedCase};
use crate::codec::decode;

/// Who waits in a channel queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Waiter {
    /// Case `case` of select `select` of state `state`.
    Select {
        /// State id.
        state: String,
        /// Select id.
        select: String,
        /// Case index.
        case: usize,
    },
    /// A detached send (`go func() { ch <- data }()`).
    Detached {
        /// The value.
        data: Data,
        /// Log time of the send (reported if a close discards it).
        sent_at: Millis,
    },
    /// An HTTP caller's parked send (`data`) or receive (`data` null).
    Http {
        /// Operation id.
        op: Uuid,
        /// The value of a send.
        data: Data,
    },
}

/// Which end of a channel an operation is at, and so which queue it waits in.
///
/// Stored in [`OpRecord`] as its variant index, which is the encoding of the `bool`
/// ("is a sender") it replaced: keep `Recv` first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    /// A receive, in the receivers' queue.
    Recv,
    /// A send, in the senders' queue.
    Send,
}

impl Side {
    /// The table of this side's queue.
    pub fn queue(self) -> Table {
        match self {
            Side::Send => Table::Senders,
            Side::Recv => Table::Receivers,
        }
    }

    /// This side's count of waiters in a channel's metadata.
    fn waiters(self, c: &mut Chan) -> &mut u64 {
        match self {
            Side::Send => &mut c.senders,
            Side::Recv => &mut c.receivers,
        }
    }

    /// This side's head waiter kept in a channel's metadata, if any.
    pub fn head(self, c: &Chan) -> Option<&QueuedCase> {
        match self {
            Side::Send => c.head_sender.as_ref(),
            Side::Recv => c.head_receiver.as_ref(),
        }
    }

    /// [`Side::head`], to change.
    fn head_mut(self, c: &mut Chan) -> &mut Option<QueuedCase> {
        match self {
            Side::Send => &mut c.head_sender,
            Side::Recv => &mut c.head_receiver,
        }
    }
}

impl From<QueuedCase> for Waiter {
    fn from(head: QueuedCase) -> Self {
        Waiter::Select {
            state: head.state,
            select: head.select,
            case: head.case,
        }
    }
}

/// A parked HTTP operation: where it waits, so it can be withdrawn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpRecord {
    /// Channel.
    pub chan: String,
    /// The queue it waits in.
    pub side: Side,
    /// Position in the queue while it waits there; once a value is offered to it, the
    /// offer's number among all offers ever made (the queue is behind it), so offered
    /// values go back in the order they were offered even across a channel that started
    /// its positions over in between (an implicit channel is not stored while every
    /// value is offered).
    pub pos: u64,
    /// Withdrawn at this log time.
    pub deadline: Millis,
    /// A receive's value, offered and not yet claimed: the operation has left the
    /// queue, and a withdrawal puts the value back at the head of the channel.
    pub offered: Option<Data>,
}

/// Most discarded values a close lists (it counts them all).
pub const MAX_DISCARDED_LISTED: usize = 100;

/// How a waiter's operation ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Completion {
    /// A receive got `data` (`ok` false: channel closed and drained).
    Received { data: Data, ok: bool },
    /// A send went through (`ok` false: the channel was closed).
    Sent { ok: bool },
}

impl<S: Store + ?Sized> Ctx<'_, '_, S> {
    /// `<-ch` could complete now.
    pub fn recv_ready(&mut self, name: &str) -> Result<bool, StoreError> {
        let c = self.chan(name)?;
        Ok(c.len > 0 || c.senders > 0 || c.closed)
    }

    /// `ch <- v` could complete now (possibly by failing on a closed channel).
    pub fn send_ready(&mut self, name: &str) -> Result<bool, StoreError> {
        let c = self.chan(name)?;
        Ok(c.closed || c.receivers > 0 || c.len < c.capacity)
    }

    /// Completes a ready receive: the buffer's head (refilled from the first blocked
    /// sender), else the first blocked sender's value, else `ok: false` from a closed
    /// channel.
    pub fn take_recv(&mut self, name: &str) -> Result<(Data, bool), StoreError> {
        let &Chan { len, senders, .. } = self.chan(name)?;
        if len > 0 {
            let value = self.pop_buffer(name)?;
            if senders > 0 {
                let sender = self.pop_waiter(name, Side::Send)?;
                let sent = self.complete_waiter(sender, Completion::Sent { ok: true })?;
                self.push_buffer(name, sent)?;
            }
            return Ok((value, true));
        }
        if senders > 0 {
            let sender = self.pop_waiter(name, Side::Send)?;
            let sent = self.complete_waiter(sender, Completion::Sent { ok: true })?;
            return Ok((sent, true));
        }
        Ok((Data::null(), false))
    }

    /// Completes a ready send of `data`: to the first blocked receiver, else into the
    /// buffer. Returns false if the channel is closed (the send fails).
    pub fn take_send(&mut self, name: &str, data: Data) -> Result<bool, StoreError> {
        let &Chan {
            closed, receivers, ..
        } = self.chan(name)?;
        if closed {
            return Ok(false);
        }
        if receivers > 0 {
            let receiver = self.pop_waiter(name, Side::Recv)?;
            self.complete_waiter(receiver, Completion::Received { data, ok: true })?;
        } else {
            self.push_buffer(name, data)?;
        }
        Ok(true)
    }

    /// Queues a waiter at the tail; returns its position. A select's case that finds
    /// the queue empty waits in the channel's record instead of the queue's table, so
    /// blocking on a channel of its own writes one key fewer (design.md §4).
    pub fn enqueue(&mut self, name: &str, side: Side, waiter: Waiter) -> Result<u64, StoreError> {
        let c = self.chan_mut(name)?;
        let pos = c.next_pos;
        c.next_pos += 1;
        let waiting = side.waiters(c);
        *waiting += 1;
        match waiter {
            Waiter::Select {
                state,
                select,
                case,
            } if *waiting == 1 => {
                *side.head_mut(c) = Some(QueuedCase {
                    pos,
                    state,
                    select,
                    case,
                });
            }
            waiter => put_record(self.tx, side.queue(), keys::queue(name, pos), &waiter)?,
        }
        Ok(pos)
    }

    /// Removes a waiter from the middle of a queue (its select completed elsewhere, or
    /// it was withdrawn). Absent entries are ignored.
    pub fn dequeue(&mut self, name: &str, side: Side, pos: u64) -> Result<(), StoreError> {
        if side
            .head(self.chan(name)?)
            .is_some_and(|head| head.pos == pos)
        {
            let c = self.chan_mut(name)?;
            *side.head_mut(c) = None;
            *side.waiters(c) -= 1;
            return Ok(());
        }
        let key = keys::queue(name, pos);
        if self.tx.get(side.queue(), &key)?.is_none() {
            return Ok(());
        }
        self.tx.delete(side.queue(), key);
        self.update_chan(name, |c| *side.waiters(c) -= 1)
    }

    /// `close(ch)`: every blocked receiver gets `ok: false`, every blocked sender fails.
    /// A detached send has no sender left to fail: its value is discarded, and the
    /// first [`MAX_DISCARDED_LISTED`] of them (with their number) are returned for the
    /// closer to hear of (design.md §3.3). `None` if the channel was closed already.
    pub fn close(&mut self, name: &str) -> Result<Option<Discarded>, StoreError> {
        if self.chan(name)?.closed {
            return Ok(None);
        }
        let mut discarded = Discarded::default();
        self.chan_mut(name)?.closed = true;
        // Completing one waiter withdraws its select's other entries, possibly in this
        // same queue: count anew each time.
        while self.chan(name)?.receivers > 0 {
            let receiver = self.pop_waiter(name, Side::Recv)?;
            let closed = Completion::Received {
                data: Data::null(),
                ok: false,
            };
            self.complete_waiter(receiver, closed)?;
        }
        while self.chan(name)?.senders > 0 {
            let sender = self.pop_waiter(name, Side::Send)?;
            if let Waiter::Detached { data, sent_at } = &sender {
                if discarded.values.len() < MAX_DISCARDED_LISTED {
                    discarded.values.push(DiscardedSend {
                        data: data.clone(),
                        sent_at: *sent_at,
                    });
                }
                discarded.count += 1;
            }
            self.complete_waiter(sender, Completion::Sent { ok: false })?;
        }
        if discarded.count > 0 {
            self.update_chan(name, |c| c.discarded += discarded.count)?;
            self.count(Counter::Discarded, discarded.count as i64);
        }
        Ok(Some(discarded))
    }

    /// The channel as clients see it, or `None` if nothing is stored for it.
    pub fn chan_view(&mut self, name: &str) -> Result<Option<ChanView>, StoreError> {
        let c = self.chan(name)?;
        Ok((!c.is_vacant()).then(|| view(name, c)))
    }

    /// Removes and returns the first waiter of a queue whose count says it has one.
    fn pop_waiter(&mut self, name: &str, side: Side) -> Result<Waiter, StoreError> {
        let c = self.chan_mut(name)?;
        if let Some(head) = side.head_mut(c).take() {
            *side.waiters(c) -= 1;
            return Ok(head.into());
        }
        let table = side.queue();
        let prefix = keys::chan_prefix(name);
        let Some((key, bytes)) = self.tx.first_with_prefix(table, &prefix)? else {
            return Err(StoreError::Invariant(format!(
                "queue of {name:?} is empty but counted"
            )));
        };
        self.tx.delete(table, key);
        self.update_chan(name, |c| *side.waiters(c) -= 1)?;
        Ok(decode(&bytes)?)
    }

    fn pop_buffer(&mut self, name: &str) -> Result<Data, StoreError> {
        let prefix = keys::chan_prefix(name);
        let Some((key, bytes)) = self.tx.first_with_prefix(Table::Buffers, &prefix)? else {
            return Err(StoreError::Invariant(format!(
                "buffer of {name:?} is empty but counted"
            )));
        };
        self.tx.delete(Table::Buffers, key);
        self.update_chan(name, |c| c.len -= 1)?;
        Ok(decode(&bytes)?)
    }

    fn push_buffer(&mut self, name: &str, data: Data) -> Result<(), StoreError> {
        let c = self.chan_mut(name)?;
        let pos = c.next_pos;
        c.next_pos += 1;
        c.len += 1;
        put_record(self.tx, Table::Buffers, keys::queue(name, pos), &data)
    }

    /// Finishes a waiter taken from a queue; returns the value it was sending (null for
    /// receivers).
    fn complete_waiter(&mut self, waiter: Waiter, how: Completion) -> Result<Data, StoreError> {
        match waiter {
            Waiter::Select {
                state,
                select,
                case,
            } => self.complete_select(&state, &select, case, how),
            Waiter::Detached { data, .. } => Ok(data),
            Waiter::Http { op, data } => {
                match how {
                    Completion::Received { data, ok: true } => self.offer_op(op, data)?,
                    Completion::Received { data, ok: false } => {
                        self.finish_op(op, OpOutcome::Received { data, ok: false })?;
                    }
                    Completion::Sent { ok: true } => self.finish_op(op, OpOutcome::Sent)?,
                    Completion::Sent { ok: false } => self.finish_op(op, OpOutcome::Closed)?,
                }
                Ok(data)
            }
        }
    }

    /// Parks an HTTP caller's operation until `deadline`.
    pub fn park_op(
        &mut self,
        name: &str,
        side: Side,
        op: Uuid,
        data: Data,
        deadline: Millis,
    ) -> Result<(), StoreError> {
        let pos = self.enqueue(name, side, Waiter::Http { op, data })?;
        self.update_chan(name, |c| c.parked += 1)?;
        let record = OpRecord {
            chan: name.to_owned(),
            side,
            pos,
            deadline,
            offered: None,
        };
        put_record(self.tx, Table::Ops, op.as_bytes().to_vec(), &record)?;
        let timer = keys::timer(deadline, &keys::Due::Op(op));
        self.tx.put(Table::Timers, timer, Vec::new());
        self.count(Counter::Timers, 1);
        Ok(())
    }

    /// Withdraws a parked operation (deadline passed or caller gave up): out of its
    /// queue, or, if a value was offered to it, the value back at the head of the
    /// channel. Returns false if it is no longer parked.
    pub fn withdraw_op(&mut self, op: Uuid) -> Result<bool, StoreError> {
        let Some(record) = get_record::<S, OpRecord>(self.tx, Table::Ops, op.as_bytes())? else {
            return Ok(false);
        };
        match record.offered {
            Some(value) => self.put_back(&record.chan, vec![value])?,
            None => self.dequeue(&record.chan, record.side, record.pos)?,
        }
        self.finish_op(op, OpOutcome::Expired)?;
        Ok(true)
    }

    /// The first command of a new leader term withdraws every parked operation: each
    /// was parked in an earlier term, and its handler, on a node that stopped leading
    /// when the term ended, can neither claim nor withdraw it through the new leader
    /// (design.md §3.3). The values offered to receives go back to the head of their
    /// channels in the order they were offered, before the command does its own work.
    /// `term` is the Raft term of the entry being applied, so every replica withdraws
    /// at the same command.
    pub fn enter_term(&mut self, term: u64) -> Result<(), StoreError> {
        let current: u64 = get_record(self.tx, Table::Meta, keys::META_TERM)?.unwrap_or(0);
        if term <= current {
            return Ok(());
        }
        put_record(self.tx, Table::Meta, keys::META_TERM.to_vec(), &term)?;
        self.withdraw_all_ops()
    }

    /// Withdraws every parked operation, as a new term does ([`Self::enter_term`]); also
    /// [`Op::WithdrawParked`](super::Op::WithdrawParked).
    pub fn withdraw_all_ops(&mut self) -> Result<(), StoreError> {
        let mut by_chan: BTreeMap<String, Vec<(Uuid, OpRecord)>> = BTreeMap::new();
        for entry in self.tx.scan_from(Table::Ops, &[]) {
            let (key, bytes) = entry?;
            let op = Uuid::from_slice(&key)
                .map_err(|_| StoreError::bad_key(&key, "an operation id of the wrong length"))?;
            let record: OpRecord = decode(&bytes)?;
            by_chan
                .entry(record.chan.clone())
                .or_default()
                .push((op, record));
        }
        for (chan, mut ops) in by_chan {
            // An offered operation's position is its offer's number: the order its
            // channel handed the values out in. The others leave their queues in any
            // order.
            ops.sort_by_key(|(_, record)| record.pos);
            let mut offered = Vec::new();
            for (op, record) in ops {
                match record.offered {
                    Some(value) => offered.push(value),
                    None => self.dequeue(&chan, record.side, record.pos)?,
                }
                self.finish_op(op, OpOutcome::Expired)?;
            }
            self.put_back(&chan, offered)?;
        }
        Ok(())
    }

    /// The caller of a parked receive, still connected, takes the value offered to it.
    /// `None` if nothing is offered (not parked, still waiting, or withdrawn).
    pub fn claim_op(&mut self, op: Uuid) -> Result<Option<Data>, StoreError> {
        let record = get_record::<S, OpRecord>(self.tx, Table::Ops, op.as_bytes())?;
        let Some(value) = record.and_then(|r| r.offered) else {
            return Ok(None);
        };
        self.forget_op(op)?;
        Ok(Some(value))
    }

    /// A value reached the parked receive `op`: it has left the queue (done by the
    /// caller), no longer counts against the channel's cap of parked operations, and
    /// waits in the operation's record for [`Self::claim_op`].
    fn offer_op(&mut self, op: Uuid, value: Data) -> Result<(), StoreError> {
        let Some(mut record) = get_record::<S, OpRecord>(self.tx, Table::Ops, op.as_bytes())?
        else {
            return Err(StoreError::Invariant(format!(
                "parked operation {op} is queued but has no record"
            )));
        };
        self.update_chan(&record.chan, |c| c.parked = c.parked.saturating_sub(1))?;
        let offers: u64 = get_record(self.tx, Table::Meta, keys::META_OFFERS)?.unwrap_or(0);
        put_record(
            self.tx,
            Table::Meta,
            keys::META_OFFERS.to_vec(),
            &(offers + 1),
        )?;
        record.pos = offers;
        record.offered = Some(value);
        put_record(self.tx, Table::Ops, op.as_bytes().to_vec(), &record)?;
        self.effects.ops.push((op, OpOutcome::Offered));
        Ok(())
    }

    /// Puts values taken from the channel back in front of everything else, first
    /// first: to the blocked receivers in their order, and what they do not take at the
    /// head of the buffer (even past its capacity).
    fn put_back(&mut self, name: &str, values: Vec<Data>) -> Result<(), StoreError> {
        let mut rest = Vec::new();
        for value in values {
            // Receivers wait only on an empty buffer, so once they are served the rest
            // goes in front of values that came after it.
            if rest.is_empty() && self.chan(name)?.receivers > 0 {
                self.take_send(name, value)?;
            } else {
                rest.push(value);
            }
        }
        if rest.is_empty() {
            return Ok(());
        }
        if self.chan(name)?.len == 0 {
            // Nothing to go in front of, and a channel that was not stored meanwhile
            // (every value offered, nothing queued) started its positions over.
            for value in rest {
                self.push_buffer(name, value)?;
            }
            Ok(())
        } else {
            self.put_at_head(name, rest)
        }
    }

    /// Puts values in front of a buffer that is not empty, first first, in the
    /// positions just before its head. Buffered values came after the receives whose
    /// values go back parked, each on an empty buffer and at a position of its own, so
    /// there are usually enough such positions; a channel that started its positions
    /// over at 0 (not stored while every value was offered, then sent to or made again)
    /// can lack them, and its buffer shifts to later positions to make room
    /// (design.md §3.3).
    fn put_at_head(&mut self, name: &str, values: Vec<Data>) -> Result<(), StoreError> {
        let Some((key, _)) = self
            .tx
            .first_with_prefix(Table::Buffers, &keys::chan_prefix(name))?
        else {
            return Err(StoreError::Invariant(format!(
                "buffer of {name:?} is empty but counted"
            )));
        };
        let mut head = keys::queue_pos(&key)?;
        let count = values.len() as u64;
        if head < count {
            self.shift_buffer(name, count - head)?;
            head = count;
        }
        self.update_chan(name, |c| c.len += count)?;
        for (pos, value) in (head - count..).zip(values) {
            put_record(self.tx, Table::Buffers, keys::queue(name, pos), &value)?;
        }
        Ok(())
    }

    /// Moves every buffered value `by` positions towards the tail, keeping their order,
    /// and the channel's next position past the last of them.
    fn shift_buffer(&mut self, name: &str, by: u64) -> Result<(), StoreError> {
        let prefix = keys::chan_prefix(name);
        let buffered = self
            .tx
            .scan_prefix(Table::Buffers, &prefix)
            .collect::<Result<Vec<_>, _>>()?;
        let mut end = 0;
        for (key, _) in &buffered {
            self.tx.delete(Table::Buffers, key.clone());
        }
        for (key, value) in buffered {
            let pos = keys::queue_pos(&key)? + by;
            self.tx.put(Table::Buffers, keys::queue(name, pos), value);
            end = pos + 1;
        }
        self.update_chan(name, |c| c.next_pos = c.next_pos.max(end))
    }

    /// Forgets a parked operation and reports its outcome.
    fn finish_op(&mut self, op: Uuid, outcome: OpOutcome) -> Result<(), StoreError> {
        self.forget_op(op)?;
        self.effects.ops.push((op, outcome));
        Ok(())
    }

    /// Forgets a parked operation: its record, its timer and its place in the cap.
    fn forget_op(&mut self, op: Uuid) -> Result<(), StoreError> {
        if let Some(record) = get_record::<S, OpRecord>(self.tx, Table::Ops, op.as_bytes())? {
            if record.offered.is_none() {
                self.update_chan(&record.chan, |c| c.parked = c.parked.saturating_sub(1))?;
            }
            self.tx.delete(Table::Ops, op.as_bytes().to_vec());
            let timer = keys::timer(record.deadline, &keys::Due::Op(op));
            self.tx.delete(Table::Timers, timer);
            self.count(Counter::Timers, -1);
        }
        Ok(())
    }
}

/// Whether any HTTP operation is parked (for reads outside apply).
pub fn any_parked<S: Store + ?Sized>(tx: &Tx<'_, S>) -> Result<bool, StoreError> {
    Ok(tx.first_key(Table::Ops)?.is_some())
}

/// A channel's client view.
pub fn view(name: &str, c: &Chan) -> ChanView {
    ChanView {
        name: name.to_owned(),
        capacity: c.capacity,
        len: c.len,
        closed: c.closed,
        senders: c.senders,
        receivers: c.receivers,
        discarded: c.discarded,
    }
}
