//! An order process in Rust with `slct::client`: each order waits for its payment on a
//! channel or for a timeout, whichever comes first, and a `Worker` resumes it.
//!
//! ```text
//! slct dev &                                   # three nodes on 127.0.0.1:7001-7003
//! cargo run --release --bin order_worker        # or SLCT_SERVER=http://a:7001,http://b:7001
//! ```
//!
//! Three orders start; two are paid, one is not. The worker long-polls the orders'
//! prefix; when an order's select completes — a payment arrived, or the timer fired —
//! it gets the state with the result, decides, and finishes the order. The example
//! stops the worker (as Ctrl-C would) once every order is done, and prints them.

use std::time::Duration;

use serde_json::json;
use slct::client::{
    Case, Client, ListStates, Select, SendMode, State, StateBody, Worker, WorkerConfig,
};

/// How long an order waits for its payment.
const PAYMENT_TIMEOUT_MS: u64 = 3_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Every node the client may use, comma-separated: it fails over between them.
    let servers = std::env::var("SLCT_SERVER").unwrap_or_else(|_| {
        "http://127.0.0.1:7001,http://127.0.0.1:7002,http://127.0.0.1:7003".into()
    });
    let mut builder = Client::builder(servers);
    if let Ok(token) = std::env::var("SLCT_TOKEN") {
        builder = builder.token(token);
    }
    let client = builder.build()?;
    let prefix = format!("order-rs/{}/", std::process::id());

    for n in 1..=3 {
        let body = StateBody::new()
            .data(json!({"order": n, "step": "awaiting payment"}))
            .select(
                Select::new("main")
                    .case(Case::recv(payments(&prefix, n)))
                    .case(Case::timer_after(PAYMENT_TIMEOUT_MS)),
            );
        client.put_state(&format!("{prefix}{n}"), &body).await?;
    }
    for n in [1, 2] {
        let payment = json!({"amount": 10 * n});
        client
            .send(&payments(&prefix, n), &payment, SendMode::Detached)
            .await?;
    }

    let config = WorkerConfig {
        prefix: prefix.clone(),
        concurrency: 2,
        lease: Duration::from_secs(10),
        poll_wait: 5,
        ..WorkerConfig::default()
    };
    let worker = Worker::new(client.clone(), config);
    let stats = worker
        .run(resume, all_done(client.clone(), prefix.clone(), 3))
        .await;

    let page = client
        .list_states(&ListStates {
            prefix,
            full: true,
            ..ListStates::default()
        })
        .await?;
    for order in page.states {
        println!("{}: {}", order.id, order.data.unwrap_or_default());
    }
    println!("worker: {stats:?}");
    Ok(())
}

/// The channel an order's payment arrives on.
fn payments(prefix: &str, n: u32) -> String {
    format!("payments/{prefix}{n}")
}

/// Resumes an order: its `main` select completed through the payment or the timer.
async fn resume(order: State) -> Result<StateBody, String> {
    let result = order
        .results
        .iter()
        .find(|r| r.select == "main")
        .ok_or("resumed without a result of main")?;
    let mut data = order.data.unwrap_or_default();
    data["step"] = match result.op.as_str() {
        "recv" if result.ok => json!("paid"),
        "timer" => json!("cancelled: no payment in time"),
        other => return Err(format!("unexpected {other} result")),
    };
    if result.op == "recv" {
        data["amount"] = result.data["amount"].clone();
    }
    // No selects left: the order is done.
    Ok(StateBody::new().data(data).selects(vec![]))
}

/// Completes when `count` states under `prefix` are done, or on Ctrl-C.
async fn all_done(client: Client, prefix: String, count: usize) {
    let done = async {
        let options = ListStates {
            prefix,
            status: Some("done".into()),
            ..ListStates::default()
        };
        loop {
            if let Ok(page) = client.list_states(&options).await {
                if page.states.len() >= count {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        () = done => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
