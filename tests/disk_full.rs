//! A disk running full refuses writes with 507 `disk_full` and keeps the node up: on
//! `slct serve` processes whose data directories are each a small tmpfs of their own,
//! filled by a file to below the node's reserve (`storage::space`) and then emptied.
//! Writes are refused through every node while any voter's disk is low (the leader
//! hears a follower's on its Raft answers), reads and listings go on, so do deletes and
//! receives (they make room), an operation parked before ends as it would have, and
//! once the file is gone writes go on with no
//! node restarted and nothing acknowledged lost (docs/design.md, "A full disk").

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{eventually, Cluster};

/// Each node's tmpfs: a reserve of 32 MiB (an eighth), room for the log's segments.
const DISK_BYTES: u64 = 256 << 20;

/// Whether process `pid` is alive (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z')
        })
        .unwrap_or(false)
}

/// Node `id`'s `disk` from `GET /cluster`.
async fn disk(cluster: &Cluster, id: u64) -> Value {
    let info = cluster.cluster_info(id).await.expect("GET /cluster");
    info["disk"].clone()
}

/// Fills node `id`'s disk with a file to half its reserve below the reserve; returns
/// the file.
async fn fill(cluster: &Cluster, id: u64) -> PathBuf {
    let space = disk(cluster, id).await;
    let free = space["free_bytes"].as_u64().expect("free_bytes");
    let reserve = space["reserve_bytes"].as_u64().expect("reserve_bytes");
    assert!(
        reserve > 0 && free > reserve,
        "node {id}'s disk has room: {space}"
    );
    let filler = cluster.data(id).join("filler");
    write_zeros(&filler, free - reserve / 2);
    filler
}

/// Writes `bytes` zero bytes into a new file at `path` (tmpfs keeps each page it holds).
fn write_zeros(path: &Path, bytes: u64) {
    let mut file = std::fs::File::create(path).expect("filler file");
    let chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n]).expect("fill the disk");
        left -= n as u64;
    }
}

/// `PUT /state/{id}` through `via`: status and error code.
async fn put(cluster: &Cluster, via: u64, id: &str, n: u64) -> (u16, String) {
    let response = cluster
        .http
        .put(cluster.url(via, &format!("/state/{id}")))
        .json(&json!({ "data": { "n": n } }))
        .send()
        .await
        .expect("PUT answered");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, code)
}

/// Waits until a write through every node is refused 507 `disk_full`, and checks the
/// refusal's shape and that nothing was applied.
async fn await_refused(cluster: &Cluster, round: &str, nodes: &[u64]) {
    let what = format!("{round}: writes refused 507 disk_full through every node");
    let mut n = 0;
    eventually(Duration::from_secs(10), &what, || {
        n += 1;
        let id = format!("{round}-refused-{n}");
        async move {
            for &via in nodes {
                if put(cluster, via, &id, n).await != (507, "disk_full".to_owned()) {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    for &via in nodes {
        let id = format!("{round}-never-{via}");
        assert_eq!(put(cluster, via, &id, 0).await, (507, "disk_full".into()));
        let read = cluster
            .http
            .get(cluster.url(via, &format!("/state/{id}")))
            .send()
            .await
            .expect("GET answered");
        assert_eq!(read.status(), 404, "a refused write is not applied");
    }
}

/// Reads every acknowledged state through every node, linearizably, and the listing.
async fn reads_work(cluster: &Cluster, nodes: &[u64], acked: &[String]) {
    for &via in nodes {
        for id in acked {
            let read = cluster
                .http
                .get(cluster.url(via, &format!("/state/{id}")))
                .send()
                .await
                .expect("GET answered");
            assert_eq!(read.status(), 200, "read {id} through node {via}");
        }
        let listing = cluster
            .http
            .get(cluster.url(via, "/states?limit=1000"))
            .send()
            .await
            .expect("GET /states answered");
        assert_eq!(listing.status(), 200, "listing through node {via}");
    }
}

/// What makes room goes on while writes are refused: through each node, one state of
/// `acked` deleted (then gone) and the next value received from channel `room`, in order.
async fn room_is_made(cluster: &Cluster, nodes: &[u64], acked: &mut Vec<String>) {
    for (n, &via) in nodes.iter().enumerate() {
        let id = acked.pop().expect("a state to delete");
        let url = cluster.url(via, &format!("/state/{id}"));
        let deleted = cluster.http.delete(&url).send().await.expect("DELETE");
        assert_eq!(deleted.status(), 204, "delete {id} through node {via}");
        let read = cluster.http.get(&url).send().await.expect("GET answered");
        assert_eq!(read.status(), 404, "{id} is gone");
        let received = cluster
            .http
            .post(cluster.url(via, "/chan/room/recv?wait=0"))
            .send()
            .await
            .expect("receive");
        assert_eq!(received.status(), 200, "receive through node {via}");
        let body: Value = received.json().await.expect("JSON");
        assert_eq!(body["data"], json!(format!("r{n}")));
    }
}

/// Waits until writes through every node succeed again; records them as acknowledged.
async fn await_writes(cluster: &Cluster, round: &str, nodes: &[u64], acked: &mut Vec<String>) {
    for &via in nodes {
        let id = format!("{round}-after-{via}");
        let what = format!("{round}: a write through node {via} succeeds");
        eventually(Duration::from_secs(10), &what, || async {
            let (status, _) = put(cluster, via, &id, via).await;
            // 409: created by an attempt before, whose answer said so.
            matches!(status, 201 | 409).then_some(())
        })
        .await;
        acked.push(id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_with_507_and_recovers_without_a_restart() {
    let cluster = Cluster::build().tmpfs(DISK_BYTES).binary();
    let leader = cluster.await_leader().await;
    let nodes = [1, 2, 3];
    let pids: Vec<u32> = nodes.iter().map(|id| cluster.pid(*id)).collect();
    let mut acked = Vec::new();
    for i in 0..20 {
        let id = format!("before-{i}");
        cluster.create(&id, json!({ "i": i })).await;
        acked.push(id);
    }
    let follower = cluster.other_than(leader);
    let room = cluster
        .http
        .put(cluster.url(leader, "/chan/room"))
        .json(&json!({ "capacity": nodes.len() }))
        .send()
        .await
        .expect("make a channel");
    assert_eq!(room.status(), 201);
    for n in 0..nodes.len() {
        let sent = cluster
            .http
            .post(cluster.url(leader, "/chan/room/send?wait=0"))
            .json(&json!(format!("r{n}")))
            .send()
            .await
            .expect("send");
        assert_eq!(sent.status(), 200);
    }

    // A follower's disk: the leader hears of it and refuses for the cluster.
    let chan = cluster
        .http
        .put(cluster.url(leader, "/chan/c"))
        .json(&json!({ "capacity": 0 }))
        .send()
        .await
        .expect("make a channel");
    assert!(
        chan.status().is_success(),
        "make a channel: {}",
        chan.status()
    );
    let parked = {
        let (http, url) = (
            cluster.http.clone(),
            cluster.url(follower, "/chan/c/recv?wait=4"),
        );
        tokio::spawn(async move { http.post(url).send().await.map(|r| r.status().as_u16()) })
    };
    eventually(Duration::from_secs(10), "the receive is parked", || async {
        let url = cluster.url(leader, "/metrics");
        let text = cluster.http.get(url).send().await.ok()?.text().await.ok()?;
        text.contains("slct_queued{kind=\"receivers\"} 1")
            .then_some(())
    })
    .await;
    let filler = fill(&cluster, follower).await;
    let filled = Instant::now();
    await_refused(&cluster, "follower-full", &nodes).await;
    eprintln!(
        "a follower's disk below its reserve to writes refused through every node: {} ms",
        filled.elapsed().as_millis()
    );
    assert!(
        !parked.is_finished(),
        "the receive is still parked while writes are refused"
    );
    assert_eq!(disk(&cluster, follower).await["low"], true);
    let info = cluster.cluster_info(leader).await.expect("GET /cluster");
    assert_eq!(
        info["peers"][follower.to_string()]["disk_low"],
        true,
        "the leader knows: {info}"
    );
    reads_work(&cluster, &nodes, &acked).await;
    room_is_made(&cluster, &nodes, &mut acked).await;
    let metrics = cluster
        .http
        .get(cluster.url(follower, "/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(metrics.contains("slct_disk_low 1"), "{metrics}");
    // The receive parked before the disk filled withdraws at its deadline: 408, as
    // ever, not an error (its withdrawal finishes an operation the log holds).
    let parked = parked.await.expect("parked receive").expect("answered");
    assert_eq!(parked, 408, "a parked receive ends as it would have");
    std::fs::remove_file(&filler).expect("remove the filler");
    await_writes(&cluster, "follower-freed", &nodes, &mut acked).await;
    assert_eq!(disk(&cluster, follower).await["low"], false);

    // The leader's own disk.
    let leader = cluster.await_leader().await;
    let filler = fill(&cluster, leader).await;
    await_refused(&cluster, "leader-full", &nodes).await;
    reads_work(&cluster, &nodes, &acked).await;
    std::fs::remove_file(&filler).expect("remove the filler");
    await_writes(&cluster, "leader-freed", &nodes, &mut acked).await;

    // No node restarted or stopped; everything acknowledged is on every node.
    for (id, pid) in nodes.iter().zip(&pids) {
        assert_eq!(cluster.pid(*id), *pid);
        assert!(alive(*pid), "node {id} is still running");
        let log = cluster.log(*id);
        assert!(!log.contains("raft stopped"), "node {id} stopped:\n{log}");
    }
    cluster.await_same_applied().await;
    for id in &nodes {
        for state in &acked {
            cluster.await_state(*id, state).await;
        }
    }
    assert!(
        cluster.log(follower).contains("is low on space"),
        "the follower said its disk was low"
    );
}
