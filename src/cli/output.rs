//! How client commands print: `-o json` (the answer as pretty JSON, for scripts) or
//! `-o table` (aligned columns for people, in the style of `kubectl get`).
//!
//! Without `-o`, the format is a table when stdout is a terminal and JSON otherwise,
//! so a pipe or a script gets JSON without asking. Times in tables are UTC
//! (`2025-11-24 10:00:00.000`); JSON keeps Unix ms as the API does.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};

use clap::ValueEnum;
use serde::Serialize;
use serde_json::Value;

use crate::client::{
    Case, Chan, ChanPage, ClusterInfo, History, Received, Select, SelectResult, State, StatePage,
};

/// An output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// Pretty JSON, as the API answers.
    Json,
}

impl Format {
    /// The format asked for, or the default: a table on a terminal, JSON otherwise.
    pub fn choose(asked: Option<Format>) -> Format {
        asked.unwrap_or_else(|| {
            if std::io::stdout().is_terminal() {
                Format::Table
            } else {
                Format::Json
            }
        })
    }
}

/// Something a command prints.
pub trait Show: Serialize {
    /// The table form.
    fn table(&self) -> String;
}

/// Prints `value` in `format` on stdout. A closed pipe (`slct ... | head`) is not
/// worth an error: the output is ignored.
pub fn print(format: Format, value: &impl Show) {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(value).unwrap_or_default() + "\n",
        Format::Table => value.table(),
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// Rows under a header, columns padded to the widest cell.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let columns = self.rows[0].len();
        let widths: Vec<usize> = (0..columns)
            .map(|c| self.rows.iter().map(|r| width(&r[c])).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if c + 1 < columns {
                    line.push_str(&" ".repeat(widths[c] - width(cell) + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn width(cell: &str) -> usize {
    cell.chars().count()
}

/// `KEY  value` lines, keys padded.
fn fields(pairs: &[(&str, String)]) -> String {
    let mut table = Table::new(&["FIELD", "VALUE"]);
    for (key, value) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        table.row(vec![key.to_string(), value.clone()]);
    }
    // The header row is for the lists; a record reads better without it.
    table
        .render()
        .split_once('\n')
        .map_or_else(String::new, |(_, rest)| rest.to_owned())
}

/// Unix ms as UTC `YYYY-MM-DD hh:mm:ss.mmm`.
pub fn time(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let (days, rest) = (ms / 86_400_000, ms % 86_400_000);
    let (year, month, day) = civil(days);
    let (h, m, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{milli:03}")
}

/// The Gregorian date `days` after 1970-01-01 (era arithmetic over 400-year cycles).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Compact JSON, cut to `max` characters.
fn short(value: &Value, max: usize) -> String {
    let text = value.to_string();
    if width(&text) <= max {
        return text;
    }
    let cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut + "…"
}

fn case_text(case: &Case) -> String {
    match case {
        Case::Recv { chan } => format!("recv {chan}"),
        Case::Send { chan, data } => format!("send {chan} {}", short(&data.to_value(), 30)),
        Case::Timer { at: Some(at), .. } => format!("timer {}", time(*at)),
        Case::Timer { after_ms, .. } => format!("timer +{}ms", after_ms.unwrap_or(0)),
        Case::Default => "default".into(),
    }
}

fn selects_table(selects: &[Select]) -> String {
    let mut table = Table::new(&["SELECT", "CASES"]);
    for select in selects {
        let cases: Vec<String> = select.cases.iter().map(case_text).collect();
        table.row(vec![select.id.clone(), cases.join(" | ")]);
    }
    table.render()
}

fn results_table(results: &[SelectResult]) -> String {
    let mut table = Table::new(&["SEQ", "SELECT", "CASE", "OP", "CHAN", "OK", "DATA"]);
    for r in results {
        table.row(vec![
            r.seq.to_string(),
            r.select.clone(),
            r.case.to_string(),
            r.op.clone(),
            r.chan.clone().unwrap_or_default(),
            r.ok.to_string(),
            r.error.clone().unwrap_or_else(|| short(&r.data, 60)),
        ]);
    }
    table.render()
}

fn status_text(state: &State) -> String {
    if state.paused {
        format!("{} (paused)", state.status)
    } else {
        state.status.to_string()
    }
}

impl Show for State {
    fn table(&self) -> String {
        let lease = self.lease.as_ref().map_or_else(String::new, |l| {
            format!("{} until {}", l.token, time(l.expires_at))
        });
        let mut out = fields(&[
            ("ID", self.id.clone()),
            ("STATUS", status_text(self)),
            ("VERSION", self.version.to_string()),
            ("PRIORITY", self.priority.to_string()),
            ("CREATED", time(self.created_at)),
            ("UPDATED", time(self.updated_at)),
            ("LEASE", lease),
            (
                "CALLBACK",
                self.callback
                    .as_ref()
                    .map_or_else(String::new, |c| c.url.clone()),
            ),
            (
                "ATTEMPTS",
                if self.attempts > 0 {
                    self.attempts.to_string()
                } else {
                    String::new()
                },
            ),
            (
                "DELIVERIES",
                match self.max_deliveries {
                    0 => self.deliveries.to_string(),
                    max => format!("{} of {max}", self.deliveries),
                },
            ),
            (
                "RETAIN",
                match self.retain_ms {
                    0 => "for ever once done".to_owned(),
                    ms => format!("{ms} ms once done"),
                },
            ),
            ("LAST ERROR", self.last_error.clone().unwrap_or_default()),
            (
                "DATA",
                self.data
                    .as_ref()
                    .map_or_else(String::new, Value::to_string),
            ),
        ]);
        if !self.selects.is_empty() {
            out.push('\n');
            out.push_str(&selects_table(&self.selects));
        }
        if !self.results.is_empty() {
            out.push('\n');
            out.push_str(&results_table(&self.results));
        }
        out
    }
}

/// Rows of states, as `state list` and `poll` show them.
fn states_table(states: &[State]) -> String {
    let mut table = Table::new(&[
        "ID", "STATUS", "VERSION", "PRIO", "SELECTS", "RESULTS", "LEASE", "UPDATED",
    ]);
    for s in states {
        table.row(vec![
            s.id.clone(),
            status_text(s),
            s.version.to_string(),
            s.priority.to_string(),
            s.selects.len().to_string(),
            s.results.len().to_string(),
            s.lease
                .as_ref()
                .map_or_else(|| "-".into(), |l| l.token.to_string()),
            time(s.updated_at),
        ]);
    }
    table.render()
}

impl Show for StatePage {
    fn table(&self) -> String {
        let mut out = states_table(&self.states);
        if let Some(next) = &self.next {
            let _ = writeln!(out, "\nmore: --after {next}");
        }
        out
    }
}

impl Show for Vec<State> {
    fn table(&self) -> String {
        if self.is_empty() {
            return "no state was pending\n".into();
        }
        states_table(self)
    }
}

impl Show for History {
    fn table(&self) -> String {
        let mut table = Table::new(&["SEQ", "TIME", "INDEX", "EVENT", "DETAILS"]);
        for e in &self.events {
            let details: Vec<String> = e
                .details
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect();
            table.row(vec![
                e.seq.to_string(),
                time(e.at),
                e.index.to_string(),
                e.event.clone(),
                details.join(" "),
            ]);
        }
        let mut out = table.render();
        if let Some(next) = self.next {
            let _ = writeln!(out, "\nolder: --before {next}");
        }
        out
    }
}

fn chans_table(chans: &[Chan]) -> String {
    let mut table = Table::new(&[
        "NAME",
        "CAPACITY",
        "LEN",
        "CLOSED",
        "SENDERS",
        "RECEIVERS",
        "DISCARDED",
    ]);
    for c in chans {
        table.row(vec![
            c.name.clone(),
            c.capacity.to_string(),
            c.len.to_string(),
            c.closed.to_string(),
            c.senders.to_string(),
            c.receivers.to_string(),
            c.discarded.to_string(),
        ]);
    }
    table.render()
}

impl Show for Chan {
    fn table(&self) -> String {
        chans_table(std::slice::from_ref(self))
    }
}

impl Show for ChanPage {
    fn table(&self) -> String {
        let mut out = chans_table(&self.chans);
        if let Some(next) = &self.next {
            let _ = writeln!(out, "\nmore: --after {next}");
        }
        out
    }
}

impl Show for Received {
    fn table(&self) -> String {
        let mut table = Table::new(&["OK", "DATA"]);
        table.row(vec![self.ok.to_string(), self.data.to_string()]);
        table.render()
    }
}

impl Show for ClusterInfo {
    fn table(&self) -> String {
        let opt = |n: Option<u64>| n.map_or_else(|| "-".into(), |n| n.to_string());
        let mut out = fields(&[
            ("NODE", self.id.to_string()),
            ("STATE", self.state.clone()),
            ("LEADER", opt(self.leader)),
            ("TERM", self.term.to_string()),
            ("LAST LOG", opt(self.last_log_index)),
            ("APPLIED", opt(self.last_applied)),
            ("DISK", self.disk.as_ref().map_or_else(|| "-".into(), disk)),
        ]);
        let mut table = Table::new(&["ID", "ADDRESS", "ROLE"]);
        let leader = self.leader.map(|l| l.to_string());
        for (id, addr) in &self.members {
            let role = if leader.as_deref() == Some(id) {
                "leader"
            } else {
                "voter"
            };
            table.row(vec![id.clone(), addr.clone(), role.into()]);
        }
        for (id, addr) in &self.learners {
            table.row(vec![id.clone(), addr.clone(), "learner".into()]);
        }
        out.push('\n');
        out.push_str(&table.render());
        out
    }
}

/// A node's disk as a person reads it: free space, the reserve, and whether writes are
/// refused for it.
fn disk(d: &crate::client::Disk) -> String {
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    let low = if d.low {
        " — LOW: writes refused (507 disk_full)"
    } else {
        ""
    };
    format!(
        "{:.1} MiB free, reserve {:.1} MiB{low}",
        mib(d.free_bytes),
        mib(d.reserve_bytes)
    )
}

/// A one-line answer: `{"<key>": <value>}` in JSON, `text` in a table.
#[derive(Serialize)]
#[serde(transparent)]
pub struct Note {
    /// The JSON form.
    pub json: Value,
    /// The line a person reads.
    #[serde(skip)]
    pub text: String,
}

impl Show for Note {
    fn table(&self) -> String {
        format!("{}\n", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(time(0), "-");
        assert_eq!(time(1), "1970-01-01 00:00:00.001");
        assert_eq!(time(951_782_400_000), "2000-02-29 00:00:00.000");
        assert_eq!(time(1_764_000_000_123), "2025-11-24 16:00:00.123");
    }

    #[test]
    fn a_low_disk_says_writes_are_refused() {
        let mut d = crate::client::Disk {
            free_bytes: 24 << 20,
            reserve_bytes: 32 << 20,
            low: true,
        };
        assert_eq!(
            disk(&d),
            "24.0 MiB free, reserve 32.0 MiB — LOW: writes refused (507 disk_full)"
        );
        d.low = false;
        assert_eq!(disk(&d), "24.0 MiB free, reserve 32.0 MiB");
    }

    #[test]
    fn columns_line_up() {
        let mut table = Table::new(&["ID", "STATUS"]);
        table.row(vec!["a-long-id".into(), "done".into()]);
        table.row(vec!["é".into(), "waiting".into()]);
        assert_eq!(
            table.render(),
            "ID         STATUS\na-long-id  done\né          waiting\n"
        );
    }

    #[test]
    fn long_values_are_cut() {
        assert_eq!(short(&serde_json::json!("abcdef"), 5), "\"abc…");
        assert_eq!(short(&serde_json::json!(1), 5), "1");
    }
}
