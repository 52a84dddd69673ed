//! Paged listings of states (`GET /states`, design.md §3.1) and channels (`GET /chans`,
//! §3.3), read from a replica outside apply. The API runs them on the blocking pool
//! (they read storage) and sends the bytes they return.
//!
//! Two budgets bound every page, whatever the data and the filters:
//! - **work**: at most [`MAX_SCAN`] index entries are examined. A status filter walks
//!   the by-status index, so only states of that status are read — except `waiting`,
//!   which the index leaves out ([`Listed::indexed`]) and which filters the walk of the
//!   states instead, as `min_priority` does (it has no index of its own: listings are
//!   in id order, the priority index is in priority order). So a selective filter may
//!   end a page early, short or even empty, with a cursor to go on from — the page
//!   says where it stopped, and the client follows `next` as for any page.
//! - **bytes**: a page stops before the item that would take it past
//!   [`MAX_PAGE_BYTES`] of JSON (one item always fits, so no state is unlistable).
//!
//! `next` is null only when the listing is complete.

use serde::Serialize;

use super::keys;
use super::store::{Store, StoreError, Table};
use super::types::{Listed, State};
use crate::codec;

/// Most index entries one page examines.
pub const MAX_SCAN: usize = 5_000;
/// Most bytes of JSON items in one page (one item is always listed).
pub const MAX_PAGE_BYTES: usize = 4 << 20;

/// What `GET /states` asks for.
#[derive(Clone, Debug, Default)]
pub struct StatesQuery {
    /// Only ids starting with this.
    pub prefix: String,
    /// Only states with this status, or the paused ones.
    pub status: Option<Listed>,
    /// Only states with at least this priority.
    pub min_priority: u8,
    /// Only ids after this one (the previous page's `next`).
    pub after: Option<String>,
    /// Most states in the page.
    pub limit: usize,
    /// Whole states (with `data`) instead of summaries.
    pub full: bool,
}

/// What `GET /chans` asks for.
#[derive(Clone, Debug, Default)]
pub struct ChansQuery {
    /// Only names starting with this.
    pub prefix: String,
    /// Only names after this one (the previous page's `next`).
    pub after: Option<String>,
    /// Most channels in the page.
    pub limit: usize,
}

/// A page being filled under the two budgets, entry by entry in key order.
struct Page {
    /// The JSON items, comma-separated.
    items: Vec<u8>,
    count: usize,
    limit: usize,
    scanned: usize,
    /// The last key examined (listed or filtered out).
    previous: Option<String>,
    /// Set when the page stopped before the end: the previous key.
    next: Option<String>,
}

/// Whether to go on after an entry.
enum Step {
    Go,
    Stop,
}

impl Page {
    fn new(limit: usize) -> Page {
        Page {
            items: Vec::new(),
            count: 0,
            limit,
            scanned: 0,
            previous: None,
            next: None,
        }
    }

    /// Takes the entry `key` — `item` if it passes the filters — or stops before it
    /// when a budget is spent; the next page then starts after the previous key.
    fn take<T: Serialize>(&mut self, key: String, item: Option<T>) -> Result<Step, StoreError> {
        if self.scanned == MAX_SCAN {
            return Ok(self.stop());
        }
        if let Some(item) = item {
            let json = serde_json::to_vec(&item).map_err(|e| {
                StoreError::Invariant(format!("a listed item does not encode: {e}"))
            })?;
            let too_big = self.count > 0 && self.items.len() + 1 + json.len() > MAX_PAGE_BYTES;
            if self.count == self.limit || too_big {
                return Ok(self.stop());
            }
            if self.count > 0 {
                self.items.push(b',');
            }
            self.items.extend_from_slice(&json);
            self.count += 1;
        }
        self.scanned += 1;
        self.previous = Some(key);
        Ok(Step::Go)
    }

    /// Takes the entries of `table` from `from` on, while their keys start with
    /// `prefix`, each through `take` (which calls [`Page::take`]), until one stops.
    fn fill<S: Store + ?Sized>(
        &mut self,
        store: &S,
        table: Table,
        from: &[u8],
        prefix: &[u8],
        mut take: impl FnMut(&mut Page, &[u8], &[u8]) -> Result<Step, StoreError>,
    ) -> Result<(), StoreError> {
        for entry in store.scan_from(table, from) {
            let (key, bytes) = entry?;
            if !key.starts_with(prefix) {
                break;
            }
            if let Step::Stop = take(self, &key, &bytes)? {
                break;
            }
        }
        Ok(())
    }

    fn stop(&mut self) -> Step {
        self.next = self.previous.take();
        Step::Stop
    }

    /// `{"<name>": [...], "next": ...}`.
    fn finish(self, name: &str) -> Result<Vec<u8>, StoreError> {
        let next = serde_json::to_string(&self.next)
            .map_err(|e| StoreError::Invariant(format!("a cursor does not encode: {e}")))?;
        let mut body = Vec::with_capacity(self.items.len() + next.len() + name.len() + 16);
        body.extend_from_slice(format!("{{\"{name}\":[").as_bytes());
        body.extend_from_slice(&self.items);
        body.extend_from_slice(format!("],\"next\":{next}}}").as_bytes());
        Ok(body)
    }
}

/// Where a listing starts: the prefix, or just after the cursor if that is later.
pub fn start_key(prefix: &str, after: Option<&str>) -> Vec<u8> {
    match after {
        Some(after) if after.as_bytes() >= prefix.as_bytes() => {
            let mut key = after.as_bytes().to_vec();
            key.push(0);
            key
        }
        _ => prefix.as_bytes().to_vec(),
    }
}

/// One page of `GET /states` as its JSON body, `{"states": [...], "next": ...}`. With an
/// indexed status, the by-status index gives the ids, so only states of that status are
/// read; `waiting` is a filter on the walk of the states.
pub fn states_page<S: Store + ?Sized>(store: &S, q: &StatesQuery) -> Result<Vec<u8>, StoreError> {
    let from = start_key(&q.prefix, q.after.as_deref());
    let mut page = Page::new(q.limit);
    let wanted = |state: &State| state.priority >= q.min_priority;
    match q.status {
        Some(status) if status.indexed() => {
            let tag = status.tag();
            let prefix = keys::by_status(tag, &q.prefix);
            let mut from_key = vec![tag];
            from_key.extend_from_slice(&from);
            page.fill(
                store,
                Table::ByStatus,
                &from_key,
                &prefix,
                |page, key, _| {
                    let id = std::str::from_utf8(&key[1..])
                        .map_err(|_| StoreError::bad_key(key, "a state id that is not UTF-8"))?
                        .to_owned();
                    let state = super::load_state(store, &id)?.filter(|s| s.id == id && wanted(s));
                    page.take(id, state.as_ref().map(|s| s.view(q.full)))
                },
            )?;
        }
        _ => {
            let prefix = q.prefix.as_bytes();
            // No status, or one the index leaves out: each state is checked for it.
            let listed = |state: &State| q.status.is_none_or(|listed| listed.matches(state));
            page.fill(store, Table::States, &from, prefix, |page, _, bytes| {
                let state: State = codec::decode(bytes)?;
                let item = (listed(&state) && wanted(&state)).then(|| state.view(q.full));
                page.take(state.id.clone(), item)
            })?;
        }
    }
    page.finish("states")
}

/// One page of `GET /chans` as its JSON body, `{"chans": [...], "next": ...}`.
pub fn chans_page<S: Store + ?Sized>(store: &S, q: &ChansQuery) -> Result<Vec<u8>, StoreError> {
    let mut page = Page::new(q.limit);
    let from = start_key(&q.prefix, q.after.as_deref());
    page.fill(
        store,
        Table::Chans,
        &from,
        q.prefix.as_bytes(),
        |page, key, _| {
            let name = std::str::from_utf8(key)
                .map_err(|_| StoreError::bad_key(key, "a channel name that is not UTF-8"))?
                .to_owned();
            let view = super::chan_view(store, &name)?;
            page.take(name, view)
        },
    )?;
    page.finish("chans")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_starts_after_the_cursor() {
        assert_eq!(start_key("a", None), b"a");
        assert_eq!(start_key("a", Some("ab")), b"ab\0");
        assert_eq!(start_key("b", Some("a")), b"b");
    }

    #[test]
    fn a_page_stops_at_its_count_its_bytes_or_its_work() {
        let mut page = Page::new(2);
        assert!(matches!(page.take("a".into(), Some(1)).unwrap(), Step::Go));
        assert!(matches!(
            page.take("b".into(), None::<u8>).unwrap(),
            Step::Go
        ));
        assert!(matches!(page.take("c".into(), Some(3)).unwrap(), Step::Go));
        assert!(matches!(
            page.take("d".into(), Some(4)).unwrap(),
            Step::Stop
        ));
        assert_eq!(page.finish("x").unwrap(), br#"{"x":[1,3],"next":"c"}"#);

        let big = "y".repeat(MAX_PAGE_BYTES / 2);
        let mut page = Page::new(100);
        assert!(matches!(
            page.take("a".into(), Some(&big)).unwrap(),
            Step::Go
        ));
        assert!(matches!(
            page.take("b".into(), Some(&big)).unwrap(),
            Step::Stop
        ));
        assert_eq!(page.next.as_deref(), Some("a"));
        let mut alone = Page::new(100);
        let huge = "z".repeat(MAX_PAGE_BYTES * 2);
        assert!(
            matches!(alone.take("a".into(), Some(&huge)).unwrap(), Step::Go),
            "one item always fits"
        );

        let mut page = Page::new(100);
        for i in 0..MAX_SCAN {
            assert!(matches!(
                page.take(format!("{i:05}"), None::<u8>).unwrap(),
                Step::Go
            ));
        }
        assert!(matches!(
            page.take("z".into(), Some(1)).unwrap(),
            Step::Stop
        ));
        let last = format!("{:05}", MAX_SCAN - 1);
        assert_eq!(
            page.finish("x").unwrap(),
            format!(r#"{{"x":[],"next":"{last}"}}"#).into_bytes()
        );
    }
}
