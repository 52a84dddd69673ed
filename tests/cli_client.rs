//! The client commands of the `slct` binary against a real three-node cluster: JSON
//! when stdout is not a terminal (as here) or with `-o json`, tables with `-o table`.

mod support;

use std::process::Output;

use serde_json::Value;
use support::Cluster;

/// Runs `slct <args>` against `server`.
async fn slct(server: &str, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_slct"));
    cmd.args(args)
        .env("SLCT_SERVER", server)
        .env_remove("SLCT_TOKEN")
        .env_remove("SLCT_OUTPUT");
    cmd.output().await.expect("slct runs")
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_command_works() {
    let c = Cluster::start().await;
    let s = c.urls[c.follower()].as_str();
    let body = r#"{"selects": [{"id": "g", "cases": [{"op": "recv", "chan": "jobs/1"}]}]}"#;
    let put = json(&slct(s, &["state", "put", "job 1", body]).await);
    assert_eq!(put["status"], "waiting");
    let again = slct(s, &["state", "put", "job 1", body]).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));

    let made = json(&slct(s, &["chan", "make", "jobs/1", "--capacity", "0"]).await);
    assert_eq!(made["capacity"], 0);
    let sent = json(&slct(s, &["chan", "send", "jobs/1", r#"{"n": 1}"#, "--wait", "5"]).await);
    assert_eq!(sent["status"], "sent");
    let polled = json(&slct(s, &["poll", "--prefix", "job", "--wait", "5"]).await);
    let token = polled[0]["lease"]["token"].as_str().unwrap().to_owned();
    let done = json(
        &slct(
            s,
            &[
                "state",
                "put",
                "job 1",
                r#"{"selects": []}"#,
                "--lease",
                &token,
            ],
        )
        .await,
    );
    assert_eq!(done["status"], "done");
    let got = json(&slct(s, &["state", "get", "job 1"]).await);
    assert_eq!(got["id"], "job 1");
    let list = json(&slct(s, &["state", "list", "--status", "done", "--full"]).await);
    assert_eq!(list["states"][0]["id"], "job 1");
    let paused = json(&slct(s, &["state", "pause", "job 1"]).await);
    assert_eq!(paused["paused"], true);
    let resumed = json(&slct(s, &["state", "resume", "job 1"]).await);
    assert_eq!(resumed["paused"], false);
    let history = json(&slct(s, &["state", "history", "job 1", "--limit", "2"]).await);
    assert_eq!(history["events"][0]["event"], "resumed");
    assert_eq!(history["events"][1]["event"], "paused");

    json(&slct(s, &["chan", "send", "jobs/1", "7"]).await);
    let info = json(&slct(s, &["chan", "info", "jobs/1"]).await);
    assert_eq!(info["senders"], 1);
    let recv = json(&slct(s, &["chan", "recv", "jobs/1", "--wait", "1"]).await);
    assert_eq!(recv["data"], 7);
    let closed = json(&slct(s, &["chan", "close", "jobs/1"]).await);
    assert_eq!(closed["closed"], true);

    let deleted = slct(s, &["state", "delete", "job 1"]).await;
    assert!(deleted.status.success());
    let cluster = json(&slct(s, &["cluster", "status"]).await);
    assert_eq!(cluster["members"].as_object().unwrap().len(), 3);
    c.shutdown().await;
}

/// The stdout of a command that succeeded.
fn text(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 on stdout")
}

/// Whether some line of `table` holds every one of `cells`, in order.
fn has_row(table: &str, cells: &[&str]) -> bool {
    table.lines().any(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut rest = words.as_slice();
        cells
            .iter()
            .all(|cell| match rest.iter().position(|w| w == cell) {
                Some(i) => {
                    rest = &rest[i + 1..];
                    true
                }
                None => false,
            })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_a_table_or_json_as_asked() {
    let c = Cluster::start().await;
    let s = c.urls[c.follower()].as_str();
    let body = r#"{"data": {"n": 1}, "selects": [{"id": "g", "cases": [{"op": "recv", "chan": "c"}, {"op": "timer", "after_ms": 600000}]}]}"#;
    let put = text(&slct(s, &["state", "put", "t1", body, "-o", "table"]).await);
    assert!(has_row(&put, &["ID", "t1"]), "{put}");
    assert!(has_row(&put, &["STATUS", "waiting"]), "{put}");
    assert!(has_row(&put, &["DATA", r#"{"n":1}"#]), "{put}");
    assert!(has_row(&put, &["SELECT", "CASES"]), "{put}");
    assert!(has_row(&put, &["g", "recv", "c", "|", "timer"]), "{put}");

    let got = json(&slct(s, &["state", "-o", "json", "get", "t1"]).await);
    assert_eq!(got["data"]["n"], 1);
    let env_json = slct_env(s, &["state", "get", "t1"], "json").await;
    assert_eq!(json(&env_json)["id"], "t1");

    let list = text(&slct(s, &["state", "list", "-o", "table"]).await);
    assert!(has_row(&list, &["ID", "STATUS", "VERSION"]), "{list}");
    assert!(has_row(&list, &["t1", "waiting"]), "{list}");
    json(&slct(s, &["chan", "send", "c", "5"]).await);
    let polled = text(&slct(s, &["poll", "--wait", "5", "-o", "table"]).await);
    assert!(has_row(&polled, &["t1", "leased"]), "{polled}");
    let history = text(&slct(s, &["state", "history", "t1", "-o", "table"]).await);
    assert!(
        has_row(&history, &["SEQ", "TIME", "INDEX", "EVENT"]),
        "{history}"
    );
    assert!(has_row(&history, &["leased", "to=poller"]), "{history}");
    assert!(has_row(&history, &["created"]), "{history}");

    let made = text(
        &slct(
            s,
            &["chan", "make", "buf", "--capacity", "2", "-o", "table"],
        )
        .await,
    );
    assert!(
        has_row(&made, &["NAME", "CAPACITY", "LEN", "CLOSED"]),
        "{made}"
    );
    assert!(has_row(&made, &["buf", "2", "0", "false"]), "{made}");
    let sent = text(&slct(s, &["chan", "send", "buf", "[1, 2]", "-o", "table"]).await);
    assert_eq!(sent.trim(), "sent");
    let recv = text(&slct(s, &["chan", "recv", "buf", "-o", "table"]).await);
    assert!(has_row(&recv, &["true", "[1,2]"]), "{recv}");
    let chans = json(&slct(s, &["chan", "list", "--prefix", "bu", "-o", "json"]).await);
    assert_eq!(chans["chans"][0]["name"], "buf");
    let closed = text(&slct(s, &["chan", "close", "buf", "-o", "table"]).await);
    assert_eq!(closed.trim(), "closed buf");

    let cluster = text(&slct(s, &["cluster", "status", "-o", "table"]).await);
    assert!(has_row(&cluster, &["STATE", "Follower"]), "{cluster}");
    assert!(has_row(&cluster, &["ID", "ADDRESS", "ROLE"]), "{cluster}");
    assert!(has_row(&cluster, &["leader"]), "{cluster}");
    assert_eq!(cluster.matches("voter").count(), 2, "{cluster}");
    assert!(cluster.contains("MiB free, reserve"), "{cluster}");

    let deleted = text(&slct(s, &["state", "delete", "t1", "-o", "table"]).await);
    assert_eq!(deleted.trim(), "deleted t1");
    let missing = slct(s, &["state", "get", "t1", "-o", "table"]).await;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
    let bad = slct(s, &["state", "get", "t1", "-o", "yaml"]).await;
    assert!(!bad.status.success());
    c.shutdown().await;
}

/// Runs `slct <args>` with `SLCT_OUTPUT` set.
async fn slct_env(server: &str, args: &[&str], output: &str) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_slct"));
    cmd.args(args)
        .env("SLCT_SERVER", server)
        .env("SLCT_OUTPUT", output)
        .env_remove("SLCT_TOKEN");
    cmd.output().await.expect("slct runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_went_wrong_and_what_to_do() {
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let refused = slct(
        &format!("http://127.0.0.1:{port}"),
        &["state", "get", "order-9"],
    )
    .await;
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(
        message.contains("cannot connect to http://127.0.0.1:"),
        "{message}"
    );
    assert!(message.contains("connection refused"), "{message}");
    assert!(!message.contains("%2d"), "{message}");
    let unresolved = slct("http://no-such-host.invalid:7001", &["state", "get", "x"]).await;
    let message = String::from_utf8_lossy(&unresolved.stderr);
    assert!(message.contains("cannot resolve the host"), "{message}");

    let not_json = slct("http://127.0.0.1:9", &["chan", "send", "c", "text"]).await;
    let message = String::from_utf8_lossy(&not_json.stderr);
    assert!(message.contains("not JSON"), "{message}");
    assert!(message.contains(r#"'"text"'"#), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_run_twice_with_an_idempotency_key_applies_once() {
    let c = Cluster::start().await;
    let s = c.urls[c.follower()].as_str();
    let send = [
        "chan",
        "send",
        "orders",
        "{\"n\": 1}",
        "--idempotency-key",
        "order-1",
    ];
    let first = json(&slct(s, &send).await);
    let again = json(&slct(s, &send).await);
    assert_eq!(
        (first["status"].as_str(), again["status"].as_str()),
        (Some("parked"), Some("parked"))
    );
    let info = json(&slct(s, &["chan", "info", "orders"]).await);
    assert_eq!(info["senders"], 1, "sent once");
    let reused = slct(
        s,
        &[
            "chan",
            "send",
            "orders",
            "2",
            "--idempotency-key",
            "order-1",
        ],
    )
    .await;
    assert!(!reused.status.success());
    assert!(String::from_utf8_lossy(&reused.stderr).contains("idempotency_key_reused"));
    c.shutdown().await;
}
