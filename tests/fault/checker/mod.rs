//! The checker: reads a whole history and proves, or refutes, what slct promises.
//!
//! - [`linear`]: each state's `data` is linearizable (Wing–Gong search per state id).
//! - [`values`]: every value whose send was acknowledged is received exactly once; none
//!   is received twice or invented — also when its send was retried under an
//!   `Idempotency-Key`, whose answers must agree; a refused or withdrawn send is never
//!   received; channels keep FIFO order.
//! - [`leases`]: no two leases on one state overlap, by the server's own (log) times.
//! - [`clock`]: timers never fire before their deadline in log time, overdue timers do
//!   not linger, and log time never goes back across completed operations.
//!
//! Replica agreement (same `last_applied`, identical listings) needs the live nodes and
//! is checked by the run itself (`super::run`); its verdict joins the same [`Report`].
//!
//! Each check adds a line to the report saying what it checked and how many things it
//! looked at, and a violation for every anomaly, with the history indexes of the ops
//! that show it.

pub mod clock;
pub mod leases;
pub mod linear;
pub mod values;

use std::fmt;

use serde_json::Value;

use super::history::{Call, Op};

/// What the checks found.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per check: what was checked, over how much.
    pub checked: Vec<String>,
    /// Anomalies, each a sentence with evidence.
    pub violations: Vec<String>,
    /// Checks that could not conclude (e.g. search budget exhausted).
    pub inconclusive: Vec<String>,
}

impl Report {
    /// No violation found.
    pub fn valid(&self) -> bool {
        self.violations.is_empty()
    }

    /// Records an anomaly.
    pub fn violation(&mut self, what: String) {
        self.violations.push(what);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.checked {
            writeln!(f, "  checked: {line}")?;
        }
        for line in &self.inconclusive {
            writeln!(f, "  INCONCLUSIVE: {line}")?;
        }
        for line in &self.violations {
            writeln!(f, "  VIOLATION: {line}")?;
        }
        Ok(())
    }
}

/// Runs every history check.
pub fn check(ops: &[Op]) -> Report {
    let mut report = Report::default();
    linear::check_states(ops, "k-", &mut report);
    values::check(ops, &mut report);
    leases::check(ops, &mut report);
    clock::check(ops, &mut report);
    report
}

/// A state as some op's answer showed it.
#[derive(Clone, Debug)]
pub struct Seen<'a> {
    /// Index of the op in the history.
    pub index: usize,
    /// The op.
    pub op: &'a Op,
    /// The state's JSON.
    pub state: &'a Value,
}

impl Seen<'_> {
    /// The state id.
    pub fn id(&self) -> &str {
        self.state["id"].as_str().unwrap_or_default()
    }

    /// Identifies the state's incarnation (a deleted and re-created id is another).
    pub fn incarnation(&self) -> (String, u64) {
        (
            self.id().to_owned(),
            self.state["created_at"].as_u64().unwrap_or_default(),
        )
    }
}

/// Every state any successful answer in the history shows.
pub fn seen_states(ops: &[Op]) -> Vec<Seen<'_>> {
    let mut seen = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        let Some(body) = op.outcome.ok() else {
            continue;
        };
        let states: Vec<&Value> = match &op.call {
            Call::Create { .. } | Call::Update { .. } | Call::Read { .. } => vec![body],
            Call::Poll { .. } => body
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
            Call::ListStates => body["states"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
            _ => vec![],
        };
        for state in states {
            if state["id"].is_string() {
                seen.push(Seen { index, op, state });
            }
        }
    }
    seen
}

/// A value as a short string for reports.
pub fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
