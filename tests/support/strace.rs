//! strace attached to a running node process: to see its system calls, or to make
//! them fail or stall, from the first call after [`attach`] returns.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Starts `strace` and returns once it says it attached, on the first line of its
/// stderr: with `-f -p` it has then stopped every thread of the process, so every
/// system call after this is seen (and faults injected into it).
pub fn attach(mut strace: Command) -> std::process::Child {
    let mut strace = strace
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace is installed (scripts/test.sh installs it)");
    let stderr = strace.stderr.take().expect("strace's stderr");
    let mut lines = BufReader::new(stderr).lines();
    let first = lines
        .next()
        .expect("strace says something")
        .expect("strace's stderr");
    assert!(first.contains("attached"), "strace did not attach: {first}");
    // Drain the rest, so that strace never writes into a closed or full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    strace
}

/// Lets strace detach (SIGINT) and waits for it, so its output is complete.
pub fn stop_tracing(mut strace: std::process::Child) {
    let status = Command::new("kill")
        .args(["-INT", &strace.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    strace.wait().expect("strace exits");
}
