//! The client commands of the `slct` binary against a real three-node cluster.

mod common;

use std::process::Output;

use common::Cluster;
use serde_json::Value;

/// Runs `slct <args>` against `server`.
async fn slct(server: &str, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_slct"));
    cmd.args(args)
        .env("SLCT_SERVER", server)
        .env_remove("SLCT_TOKEN");
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
