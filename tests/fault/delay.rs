//! Added latency on a node's links without `netem`: its packets to and from the other
//! nodes go to a netfilter queue (iptables `NFQUEUE`), and a thread of the test, inside
//! the node's namespace, lets each one through only after the delay.
//!
//! This kernel is built without `sch_netem`, which is what Jepsen uses for delay. The
//! queue gives the same effect for the traffic between nodes: every packet held for
//! `delay` ± `jitter` (released in arrival order, so TCP sees latency, not
//! reordering). Rules use `--queue-bypass`: once the thread is gone, packets pass.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

/// A running delay on one node's links.
pub struct Delay {
    ns: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Delay {
    /// Delays every packet between namespace `ns` and `peers` (IPs) by `delay` ± `jitter`,
    /// through netfilter queue `queue`.
    pub fn start(
        ns: &str,
        queue: u16,
        peers: &[String],
        delay: Duration,
        jitter: Duration,
    ) -> Delay {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, bound) = mpsc::channel();
        let thread = {
            let (ns, stop) = (ns.to_owned(), stop.clone());
            std::thread::spawn(move || hold_packets(&ns, queue, delay, jitter, &stop, ready))
        };
        match bound.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("netfilter queue {queue} in {ns}: {e}"),
            Err(_) => panic!("the delay thread for {ns} died"),
        }
        let q = queue.to_string();
        for peer in peers {
            for (chain, dir) in [("OUTPUT", "-d"), ("INPUT", "-s")] {
                iptables(
                    ns,
                    &[
                        "-A",
                        chain,
                        dir,
                        peer,
                        "-j",
                        "NFQUEUE",
                        "--queue-num",
                        &q,
                        "--queue-bypass",
                    ],
                );
            }
        }
        Delay {
            ns: ns.to_owned(),
            stop,
            thread: Some(thread),
        }
    }

    /// Removes the rules, lets every held packet go, and returns how many were delayed.
    pub fn stop(mut self) -> u64 {
        self.finish()
    }

    fn finish(&mut self) -> u64 {
        iptables(&self.ns, &["-F"]);
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map_or(0, |t| t.join().unwrap_or_default())
    }
}

impl Drop for Delay {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

fn iptables(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "iptables"])
        .args(args)
        .output()
        .expect("run iptables");
    assert!(
        out.status.success(),
        "iptables {} in {ns}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The thread: enters the namespace, binds the queue, holds and releases packets.
fn hold_packets(
    ns: &str,
    queue: u16,
    delay: Duration,
    jitter: Duration,
    stop: &AtomicBool,
    ready: mpsc::Sender<Result<(), String>>,
) -> u64 {
    let mut q = match bind(ns, queue) {
        Ok(q) => {
            let _ = ready.send(Ok(()));
            q
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return 0;
        }
    };
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let mut count = 0;
    let jitter_us = jitter.as_micros() as i64;
    while !stop.load(Ordering::SeqCst) {
        while let Ok(mut msg) = q.recv() {
            let spread = rng.gen_range(-jitter_us..=jitter_us);
            let due = Instant::now() + delay;
            let due = if spread >= 0 {
                due + Duration::from_micros(spread as u64)
            } else {
                due - Duration::from_micros(spread.unsigned_abs())
            };
            // In arrival order: never before the packet ahead of it.
            let due = held.back().map_or(due, |(last, _)| due.max(*last));
            msg.set_verdict(nfq::Verdict::Accept);
            held.push_back((due, msg));
            count += 1;
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, msg)) = held.pop_front() {
                let _ = q.verdict(msg);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for (_, msg) in held {
        let _ = q.verdict(msg);
    }
    let _ = q.unbind(queue);
    count
}

/// Joins namespace `ns` (this thread only) and binds netfilter queue `queue` there.
fn bind(ns: &str, queue: u16) -> Result<nfq::Queue, String> {
    let file = File::open(format!("/run/netns/{ns}")).map_err(|e| format!("open netns: {e}"))?;
    // SAFETY: setns on a valid namespace fd changes only this thread's namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    let mut q = nfq::Queue::open().map_err(|e| format!("open queue: {e}"))?;
    q.bind(queue).map_err(|e| format!("bind: {e}"))?;
    q.set_copy_range(queue, 0)
        .map_err(|e| format!("copy range: {e}"))?;
    q.set_fail_open(queue, true)
        .map_err(|e| format!("fail open: {e}"))?;
    q.set_queue_max_len(queue, 8192)
        .map_err(|e| format!("queue length: {e}"))?;
    q.set_nonblocking(true);
    Ok(q)
}
