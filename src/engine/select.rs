//! `select`: registration and completion (Go's runtime/select.go).
//!
//! Registering a select finds its ready cases, picks one uniformly at random with the
//! command's seeded generator, and completes it; with none ready it takes `default`, or
//! blocks: it joins the queue of every channel it names and the timer index. When it
//! later completes through one case — a peer took or gave a value, the channel closed,
//! or its earliest timer fired — it leaves every other queue, and its result is
//! appended to its state.

use super::chan::{Completion, Side, Waiter};
use super::ctx::Ctx;
use super::data::Data;
use super::history::What;
use super::store::{Store, StoreError};
use super::types::{Case, Select, SelectResult};

/// Go's panic on a send to a closed channel, as a result's `error`.
pub const SEND_ON_CLOSED: &str = "send on closed channel";

impl<S: Store + ?Sized> Ctx<'_, '_, S> {
    /// Registers `select` for state `state_id` (which must exist and not already hold a
    /// blocked select with this id): completes it now or blocks it.
    pub fn register(&mut self, state_id: &str, mut select: Select) -> Result<(), StoreError> {
        // Queue positions are the engine's own: whatever a command carried is dropped.
        select.queued.clear();
        self.resolve_timers(&mut select);
        let registered = What::SelectRegistered {
            select: select.id.clone(),
        };
        self.note(state_id, registered);
        let ready = self.ready_cases(&select)?;
        if !ready.is_empty() {
            let case = ready[self.rng.below(ready.len())];
            let completion = match &select.cases[case] {
                Case::Recv { chan } => {
                    let (data, ok) = self.take_recv(chan)?;
                    Completion::Received { data, ok }
                }
                Case::Send { chan, data } => Completion::Sent {
                    ok: self.take_send(chan, data.clone())?,
                },
                Case::Timer { .. } | Case::Default => Completion::Sent { ok: true },
            };
            return self.push_result(state_id, &select, case, completion);
        }
        if let Some(case) = select.cases.iter().position(|c| *c == Case::Default) {
            return self.push_result(state_id, &select, case, Completion::Sent { ok: true });
        }
        self.block(state_id, select)
    }

    /// Completes a blocked select through `case`: it leaves every other queue and its
    /// result is appended. Returns the value the case was sending (null otherwise).
    pub fn complete_select(
        &mut self,
        state_id: &str,
        select_id: &str,
        case: usize,
        how: Completion,
    ) -> Result<Data, StoreError> {
        let Some(mut state) = self.state(state_id)? else {
            return Err(StoreError::Invariant(format!(
                "queued select of missing state {state_id:?}"
            )));
        };
        let Some(index) = state.selects.iter().position(|s| s.id == select_id) else {
            return Err(StoreError::Invariant(format!(
                "queued select {select_id:?} is not blocked"
            )));
        };
        let select = state.selects.remove(index);
        self.put_state(state)?;
        self.leave_queues(&select, Some(case))?;
        let sent = match &select.cases[case] {
            Case::Send { data, .. } => data.clone(),
            _ => Data::null(),
        };
        self.push_result(state_id, &select, case, how)?;
        Ok(sent)
    }

    /// Removes a blocked select from every channel queue, except the entry of `taken`
    /// (already popped by whoever completed it). Timer entries follow the state.
    pub fn leave_queues(
        &mut self,
        select: &Select,
        taken: Option<usize>,
    ) -> Result<(), StoreError> {
        for &(case, pos) in &select.queued {
            if Some(case) == taken {
                continue;
            }
            if let Some(chan) = select.cases[case].chan() {
                self.dequeue(chan, side_of(&select.cases[case]), pos)?;
            }
        }
        Ok(())
    }

    /// Fixes relative timers to absolute deadlines at this command's log time.
    fn resolve_timers(&self, select: &mut Select) {
        for case in &mut select.cases {
            if let Case::Timer {
                at,
                after_ms: Some(ms),
            } = case
            {
                *at = self.now.saturating_add(*ms);
            }
        }
    }

    fn ready_cases(&mut self, select: &Select) -> Result<Vec<usize>, StoreError> {
        let mut ready = Vec::new();
        for (i, case) in select.cases.iter().enumerate() {
            let is_ready = match case {
                Case::Recv { chan } => self.recv_ready(chan)?,
                Case::Send { chan, .. } => self.send_ready(chan)?,
                Case::Timer { at, .. } => *at <= self.now,
                Case::Default => false,
            };
            if is_ready {
                ready.push(i);
            }
        }
        Ok(ready)
    }

    fn block(&mut self, state_id: &str, mut select: Select) -> Result<(), StoreError> {
        for (case, c) in select.cases.iter().enumerate() {
            let Some(chan) = c.chan() else {
                continue;
            };
            let waiter = Waiter::Select {
                state: state_id.to_owned(),
                select: select.id.clone(),
                case,
            };
            let pos = self.enqueue(chan, side_of(c), waiter)?;
            select.queued.push((case, pos));
        }
        let mut state = self.state_or_corrupt(state_id)?;
        state.selects.push(select);
        state.version += 1;
        state.updated_at = self.now;
        self.put_state(state)
    }

    /// Appends the result of `select` completing through `case`.
    fn push_result(
        &mut self,
        state_id: &str,
        select: &Select,
        case: usize,
        how: Completion,
    ) -> Result<(), StoreError> {
        let mut state = self.state_or_corrupt(state_id)?;
        let chosen = &select.cases[case];
        let (data, ok) = match how {
            Completion::Received { data, ok } => (data, ok),
            Completion::Sent { ok } => (Data::null(), ok),
        };
        let error = (!ok && matches!(chosen, Case::Send { .. })).then(|| SEND_ON_CLOSED.to_owned());
        let completed = What::CaseCompleted {
            select: select.id.clone(),
            case,
            op: chosen.op_name().to_owned(),
            chan: chosen.chan().map(str::to_owned),
            size: data.len(),
            ok,
        };
        self.note(state_id, completed);
        state.results.push(SelectResult {
            seq: state.next_seq,
            select: select.id.clone(),
            case,
            op: chosen.op_name().to_owned(),
            chan: chosen.chan().map(str::to_owned),
            data,
            ok,
            error,
            at: self.now,
        });
        state.next_seq += 1;
        state.version += 1;
        state.updated_at = self.now;
        self.put_state(state)
    }

    fn state_or_corrupt(&mut self, state_id: &str) -> Result<super::types::State, StoreError> {
        self.state(state_id)?.ok_or_else(|| {
            StoreError::Invariant(format!("state {state_id:?} vanished during apply"))
        })
    }
}

/// The queue a channel case waits in.
fn side_of(case: &Case) -> Side {
    match case {
        Case::Send { .. } => Side::Send,
        _ => Side::Recv,
    }
}
