//! Listing and bulk-deleting states by status (design.md §3.1, §3.2) on the pure engine.
//! `waiting` has no entries in the by-status index, so both walk the states of the
//! prefix for it; these tests pin what that must not cost: a page or a batch examines a
//! bounded number of states, and the walk still gets past any number of states that do
//! not match.

mod support;

use slct::engine::list::{self, StatesQuery, MAX_SCAN};
use slct::engine::types::Listed;
use slct::engine::{Op, Response, Store, Table};
use support::world::*;

/// `MAX_SCAN + 10` states that are `done`, ids `a-…`, then three `waiting` ones, `b-…`.
fn many_done_then_three_waiting() -> World {
    let mut w = World::new();
    for i in 0..MAX_SCAN + 10 {
        w.create(&format!("a-{i:05}"), vec![]);
    }
    for i in 0..3 {
        w.create(&format!("b-{i}"), vec![sel("g", vec![recv("never")])]);
    }
    w
}

/// One batch of `DELETE /states?prefix=&status=` from `after`: deleted, and `next`.
fn delete_batch(
    w: &mut World,
    prefix: &str,
    status: &str,
    after: Option<String>,
) -> (u64, Option<String>) {
    match w.ok(Op::DeleteStates {
        prefix: prefix.into(),
        status: Some(status.into()),
        limit: 1000,
        after,
    }) {
        Response::Deleted { count, next } => (count, next),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn waiting_states_have_no_by_status_entries_and_the_others_do() {
    let mut w = World::new();
    w.create("w", vec![sel("g", vec![recv("never")])]);
    w.create("d", vec![]);
    w.ok(Op::Pause { id: "w".into() });
    let tags: Vec<(u8, String)> = w
        .store
        .scan_from(Table::ByStatus, b"")
        .map(|entry| {
            let (key, _) = entry.unwrap();
            (key[0], String::from_utf8(key[1..].to_vec()).unwrap())
        })
        .collect();
    let done = Listed::parse("done").unwrap().tag();
    let paused = Listed::parse("paused").unwrap().tag();
    assert_eq!(tags, vec![(done, "d".into()), (paused, "w".into())]);
}

#[test]
fn a_bulk_delete_of_waiting_states_walks_past_any_number_of_others_in_bounded_batches() {
    let mut w = many_done_then_three_waiting();
    let (count, next) = delete_batch(&mut w, "", "waiting", None);
    assert_eq!(count, 0, "the first batch examines only done states");
    assert_eq!(
        next.as_deref(),
        Some(format!("a-{:05}", MAX_SCAN - 1).as_str())
    );

    let (mut deleted, mut after, mut batches) = (0, next, 1);
    while after.is_some() {
        let (count, next) = delete_batch(&mut w, "", "waiting", after);
        deleted += count;
        after = next;
        batches += 1;
    }
    assert_eq!((deleted, batches), (3, 2));
    assert!((0..3).all(|i| !w.exists(&format!("b-{i}"))));
    assert!((0..MAX_SCAN + 10).all(|i| w.exists(&format!("a-{i:05}"))));
}

#[test]
fn a_bulk_delete_of_an_indexed_status_says_exactly_whether_more_match() {
    let mut w = many_done_then_three_waiting();
    let (mut deleted, mut after, mut batches) = (0, None, 0);
    loop {
        let (count, next) = delete_batch(&mut w, "a-", "done", after);
        assert_eq!(count, 1000.min(MAX_SCAN as u64 + 10 - deleted));
        deleted += count;
        batches += 1;
        after = next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(deleted, MAX_SCAN as u64 + 10);
    assert_eq!(batches, (MAX_SCAN + 10).div_ceil(1000));
    assert!((0..3).all(|i| w.exists(&format!("b-{i}"))));
}

#[test]
fn a_listing_of_waiting_states_pages_past_the_others_with_a_cursor() {
    let w = many_done_then_three_waiting();
    let page = |after: Option<String>| {
        let q = StatesQuery {
            status: Listed::parse("waiting"),
            after,
            limit: 100,
            ..StatesQuery::default()
        };
        let body = list::states_page(&w.store, &q).unwrap();
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()
    };
    let first = page(None);
    assert_eq!(first["states"], serde_json::json!([]));
    assert_eq!(first["next"], format!("a-{:05}", MAX_SCAN - 1));
    let second = page(Some(first["next"].as_str().unwrap().into()));
    let ids: Vec<&str> = second["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b-0", "b-1", "b-2"]);
    assert_eq!(second["next"], serde_json::Value::Null);
}
