//! What clients send: the lower-case format, the seed format's aliases, and a clear
//! error for every invalid input.

use serde_json::{json, Value};
use slct::engine::types::{Callback, Case, Select};
use slct::engine::wire::{parse_token, StateBody};
use slct::engine::{validate, Error};

/// Parses a body as the API does: from its text (values are kept as raw JSON text).
fn body(json: Value) -> StateBody {
    serde_json::from_str(&json.to_string()).unwrap()
}

fn selects(json: Value) -> Result<Vec<Select>, Error> {
    body(json).selects().map(Option::unwrap_or_default)
}

fn invalid(body: Value) -> String {
    match selects(body) {
        Err(Error::Invalid(message)) => message,
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn the_lower_case_format_is_parsed() {
    let got = selects(json!({"selects": [{"id": "g1", "cases": [
        {"op": "recv", "chan": "jobs"},
        {"op": "send", "chan": "out", "data": null},
        {"op": "timer", "at": 5},
        {"op": "timer", "after_ms": 7},
        {"op": "default"}
    ]}]}))
    .unwrap();
    assert_eq!(
        got[0].cases,
        vec![
            Case::Recv {
                chan: "jobs".into()
            },
            Case::Send {
                chan: "out".into(),
                data: Value::Null.into()
            },
            Case::Timer {
                at: 5,
                after_ms: None
            },
            Case::Timer {
                at: 0,
                after_ms: Some(7)
            },
            Case::Default,
        ]
    );
}

#[test]
fn the_seed_format_is_accepted() {
    let body = body(json!({
        "Data": "... initial process state...",
        "Selects": [{"ID": "1", "Cases": [
            {"Op": 1, "Chan": "chan1 id"},
            {"Op": 3, "Chan": "15600421234"},
            {"Op": 2, "Chan": "chan2 id", "Data": "hello world"}
        ]}],
        "Results": [],
        "Callback": {"Type": 1, "URI": "http://example.test/callback"}
    }));
    let s = body.selects().unwrap().unwrap();
    assert_eq!(s[0].id, "1");
    assert_eq!(
        s[0].cases[1],
        Case::Timer {
            at: 15_600_421_234_000,
            after_ms: None
        }
    );
    assert_eq!(
        s[0].cases[2],
        Case::Send {
            chan: "chan2 id".into(),
            data: json!("hello world").into()
        }
    );
    let callback = body.callback().unwrap().flatten().unwrap();
    assert_eq!(
        callback,
        Callback {
            url: "http://example.test/callback".into(),
            timeout_ms: 10_000
        }
    );
    assert_eq!(body.data.unwrap(), json!("... initial process state..."));
}

#[test]
fn an_omitted_field_is_none_and_an_explicit_null_is_kept_apart() {
    let omitted = body(json!({"lease": {"token": "x"}}));
    assert!(omitted.data.is_none() && omitted.callback.is_none() && omitted.selects.is_none());
    let nulls = body(json!({"data": null, "callback": null}));
    assert!(nulls.data.as_ref().unwrap().is_null());
    assert_eq!(
        nulls.callback().unwrap(),
        Some(None),
        "null removes the callback"
    );
}

#[test]
fn values_keep_the_text_the_client_sent() {
    let raw = r#"{"data": {"amount": 1e15, "id": 12345678901234567890123}}"#;
    let body: StateBody = serde_json::from_str(raw).unwrap();
    assert_eq!(
        body.data.unwrap().as_str(),
        r#"{"amount": 1e15, "id": 12345678901234567890123}"#
    );
}

#[test]
fn every_invalid_select_gets_a_message_naming_the_problem() {
    let g = |cases: Value| json!({"selects": [{"id": "g", "cases": cases}]});
    assert!(invalid(g(json!([{"op": "fly", "chan": "c"}]))).contains("unknown op"));
    assert!(invalid(g(json!([{"op": 9, "chan": "c"}]))).contains("unknown op"));
    assert!(invalid(g(json!([{"op": "recv"}]))).contains("needs chan"));
    assert!(invalid(g(json!([{"op": "send", "chan": "c"}]))).contains("needs data"));
    assert!(invalid(g(json!([{"op": "timer"}]))).contains("at or after_ms"));
    assert!(
        invalid(g(json!([{"op": "default"}, {"op": "default"}]))).contains("more than one default")
    );
    assert!(invalid(g(json!([{"op": "recv", "chan": ""}]))).contains("1 to 256 bytes"));
    assert!(invalid(g(json!([{"op": "recv", "chan": "a\nb"}]))).contains("control characters"));
    let many: Vec<Value> = (0..65)
        .map(|i| json!({"op": "recv", "chan": format!("c{i}")}))
        .collect();
    assert!(invalid(g(json!(many))).contains("more than 64 cases"));
    let dup = json!({"selects": [{"id": "g", "cases": []}, {"id": "g", "cases": []}]});
    assert!(invalid(dup).contains("duplicate select id"));
    let too_many: Vec<Value> = (0..257)
        .map(|i| json!({"id": format!("g{i}"), "cases": []}))
        .collect();
    assert!(invalid(json!({"selects": too_many})).contains("at most 256 selects"));
    assert!(invalid(json!({"selects": [{"cases": []}]})).contains("needs an id"));
}

#[test]
fn names_are_one_to_256_bytes_without_control_characters() {
    assert!(validate::name("state id", "payments/order-42 ✓").is_ok());
    assert!(validate::name("state id", &"x".repeat(256)).is_ok());
    assert!(validate::name("state id", &"x".repeat(257)).is_err());
    assert!(validate::name("state id", "").is_err());
    assert!(validate::name("state id", "tab\there").is_err());
}

#[test]
fn capacities_are_not_negative() {
    assert_eq!(validate::capacity(3), Ok(3));
    assert!(matches!(validate::capacity(-1), Err(Error::Invalid(m)) if m.contains("negative")));
}

#[test]
fn tokens_must_be_uuids_and_callbacks_http_urls() {
    assert!(parse_token("not-a-uuid").is_err());
    assert!(parse_token(&uuid::Uuid::new_v4().to_string()).is_ok());
    let bad = body(json!({"callback": {"url": "ftp://x"}}));
    assert!(bad.callback().is_err());
    let typed: StateBody = body(json!({"Callback": {"Type": 2, "URI": "http://x"}}));
    assert!(typed.callback().is_err());
}

#[test]
fn unknown_fields_are_refused_and_server_owned_ones_ignored() {
    let parse = |text: &str| serde_json::from_str::<StateBody>(text).map(|_| ());
    let unknown = parse(r#"{"data": 1, "selectz": []}"#).unwrap_err();
    assert!(unknown.to_string().starts_with("unknown field `selectz`"));
    let in_case =
        r#"{"selects": [{"id": "g", "cases": [{"op": "timer", "after_ms": 1, "timeout": 5}]}]}"#;
    assert!(parse(in_case)
        .unwrap_err()
        .to_string()
        .contains("`timeout`"));
    let echoed = r#"{"id": "x", "status": "leased", "data": 1, "selects": [], "results": [],
        "version": 3, "lease": {"token": "00000000-0000-0000-0000-000000000000",
        "expires_at": 1, "granted_at": 0}, "created_at": 1, "updated_at": 2, "attempts": 1,
        "last_error": "x", "paused": false, "priority": 0}"#;
    parse(echoed).unwrap();
    let seed = r#"{"ID": "1", "Data": 1, "Results": [], "Callback": {"Type": 1, "URI": "http://h/"},
        "Selects": [{"ID": "1", "Cases": [{"Op": 2, "Chan": "c", "Data": 1}]}]}"#;
    parse(seed).unwrap();
}
