//! `slct::client::Worker` against a real three-node cluster: concurrent handlers,
//! heartbeats, giving leases back, lost leases and graceful shutdown.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use slct::client::{
    Case, Client, ListStates, Select, SendMode, State, StateBody, Status, Worker, WorkerConfig,
    WorkerStats,
};
use support::{eventually, Cluster};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(20);

fn worker(c: &Cluster, config: WorkerConfig) -> (Client, Worker) {
    let client = Client::new(c.urls[c.follower()].as_str()).unwrap();
    (client.clone(), Worker::new(client, config))
}

/// A state that is pending at once (its select has a `default` case).
fn ready_now() -> StateBody {
    StateBody::new().select(Select::new("g").case(Case::Default))
}

/// The update that finishes a process.
fn finish(data: serde_json::Value) -> StateBody {
    StateBody::new().data(data).selects(vec![])
}

/// Runs `worker` with `handler` on a task of its own until the returned sender fires
/// (or is dropped); the task yields the worker's counters.
fn start<F, Fut>(worker: &Worker, handler: F) -> (oneshot::Sender<()>, JoinHandle<WorkerStats>)
where
    F: Fn(State) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<StateBody, String>> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    let worker = worker.clone();
    let run = tokio::spawn(async move {
        worker
            .run(handler, async { stopped.await.unwrap_or(()) })
            .await
    });
    (stop, run)
}

async fn count(client: &Client, prefix: &str, status: &str) -> usize {
    let options = ListStates {
        prefix: prefix.into(),
        status: Some(status.into()),
        ..ListStates::default()
    };
    client.list_states(&options).await.unwrap().states.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_handlers_resume_every_state() {
    let c = Cluster::start().await;
    let config = WorkerConfig {
        prefix: "job/".into(),
        concurrency: 3,
        poll_wait: 2,
        ..WorkerConfig::default()
    };
    let (client, worker) = worker(&c, config);
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, m) = (running.clone(), most.clone());
    let handler = move |state: State| {
        let (running, most) = (r.clone(), m.clone());
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::task::yield_now().await;
            running.fetch_sub(1, Ordering::SeqCst);
            let paid = &state.results[0].data;
            Ok::<_, String>(finish(json!({ "paid": paid })))
        }
    };
    let (stop, run) = start(&worker, handler);
    for i in 0..12 {
        let body = StateBody::new().select(Select::new("g").case(Case::recv(format!("pay/{i}"))));
        client.put_state(&format!("job/{i}"), &body).await.unwrap();
        let chan = format!("pay/{i}");
        client
            .send(&chan, &json!(i), SendMode::Detached)
            .await
            .unwrap();
    }
    eventually(DEADLINE, "every job done", || async {
        count(&client, "job/", "done").await == 12
    })
    .await;
    stop.send(()).unwrap();
    let stats = run.await.unwrap();
    assert_eq!((stats.polled, stats.completed, stats.failed), (12, 12, 0));
    assert_eq!(stats.in_flight, 0);
    assert!(most.load(Ordering::SeqCst) <= 3);
    let job = client.get_state("job/7").await.unwrap();
    assert_eq!(job.data, Some(json!({"paid": 7})));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_the_lease_of_a_slow_handler() {
    let c = Cluster::start().await;
    let config = WorkerConfig {
        lease: Duration::from_millis(1500),
        poll_wait: 2,
        ..WorkerConfig::default()
    };
    let (client, worker) = worker(&c, config);
    let watched = worker.clone();
    // The handler outlives its first lease: it returns after three extensions.
    let handler = move |_state: State| {
        let worker = watched.clone();
        async move {
            while worker.stats().heartbeats < 3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, String>(finish(json!("slow but done")))
        }
    };
    let (stop, run) = start(&worker, handler);
    client.put_state("slow", &ready_now()).await.unwrap();
    eventually(DEADLINE, "the slow state done", || async {
        client.get_state("slow").await.unwrap().status == Status::Done
    })
    .await;
    stop.send(()).unwrap();
    let stats = run.await.unwrap();
    assert_eq!((stats.completed, stats.lease_lost), (1, 0));
    assert!(stats.heartbeats >= 3);
    let history = client.history("slow", None, None).await.unwrap();
    assert!(history.events.iter().any(|e| e.event == "lease_extended"));
    assert!(!history.events.iter().any(|e| e.event == "lease_expired"));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_handler_gives_the_lease_back_and_a_lost_lease_is_counted() {
    let c = Cluster::start().await;
    // A lease far longer than the deadline: only giving it back redelivers in time.
    let config = WorkerConfig {
        lease: Duration::from_secs(120),
        poll_wait: 2,
        ..WorkerConfig::default()
    };
    let (client, worker) = worker(&c, config);
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = attempts.clone();
    let releaser = client.clone();
    let handler = move |state: State| {
        let attempt = seen.fetch_add(1, Ordering::SeqCst);
        let client = releaser.clone();
        async move {
            match attempt {
                0 => Err("the first attempt fails".to_owned()),
                1 => {
                    // Someone else gives the lease back under the handler's feet.
                    let token = state.lease.unwrap().token;
                    client.release_lease(&state.id, token).await.unwrap();
                    Ok(finish(json!("too late")))
                }
                _ => Ok(finish(json!("done"))),
            }
        }
    };
    let (stop, run) = start(&worker, handler);
    client.put_state("flaky", &ready_now()).await.unwrap();
    eventually(DEADLINE, "the flaky state done", || async {
        client.get_state("flaky").await.unwrap().status == Status::Done
    })
    .await;
    stop.send(()).unwrap();
    let stats = run.await.unwrap();
    assert_eq!(stats.polled, 3);
    assert_eq!((stats.failed, stats.lease_lost, stats.completed), (1, 1, 1));
    let done = client.get_state("flaky").await.unwrap();
    assert_eq!(done.data, Some(json!("done")));
    let history = client.history("flaky", None, None).await.unwrap();
    let released = history
        .events
        .iter()
        .filter(|e| e.event == "lease_released");
    assert_eq!(released.count(), 2);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_handlers_finish_and_polls_no_more() {
    let c = Cluster::start().await;
    let config = WorkerConfig {
        poll_wait: 2,
        ..WorkerConfig::default()
    };
    let (client, worker) = worker(&c, config);
    let started = Arc::new(Notify::new());
    let go = Arc::new(Notify::new());
    let finished = Arc::new(AtomicBool::new(false));
    let (s, g, f) = (started.clone(), go.clone(), finished.clone());
    let handler = move |_state: State| {
        let (started, go, finished) = (s.clone(), g.clone(), f.clone());
        async move {
            started.notify_one();
            go.notified().await;
            finished.store(true, Ordering::SeqCst);
            Ok::<_, String>(finish(json!("finished after the signal")))
        }
    };
    let (stop, run) = start(&worker, handler);
    client.put_state("busy", &ready_now()).await.unwrap();
    started.notified().await;
    stop.send(()).unwrap();
    go.notify_one();
    let stats = run.await.unwrap();
    assert!(finished.load(Ordering::SeqCst));
    assert_eq!((stats.polled, stats.completed), (1, 1));
    let busy = client.get_state("busy").await.unwrap();
    assert_eq!(busy.status, Status::Done);
    // The worker is gone: a new pending state stays pending.
    let later = client.put_state("later", &ready_now()).await.unwrap();
    assert_eq!(later.status, Status::Pending);
    assert_eq!(worker.stats().polled, 1);
    c.shutdown().await;
}
