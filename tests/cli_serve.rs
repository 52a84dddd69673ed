//! `slct serve` refuses a configuration that would leave the Raft port open: a
//! non-loopback address without `--cluster-secret`, unless `--insecure`; one that would
//! let callbacks reach any service: a non-loopback address without `--callback-allow`
//! (`'*'` says "any" explicitly); and it exits
//! non-zero when its Raft stops on a fatal error, so that a supervisor restarts it.

use std::process::Command;
use std::time::Duration;

fn serve(args: &[&str]) -> std::process::Child {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_slct"))
        .arg("serve")
        .args(["--data", dir.path().to_str().unwrap()])
        .args(args)
        .env_remove("SLCT_CLUSTER_SECRET")
        .env_remove("SLCT_CALLBACK_ALLOW")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run slct")
}

#[test]
fn a_node_on_a_public_address_needs_a_callback_allow_list() {
    let out = serve(&["--listen", "0.0.0.0:0", "--cluster-secret", "s3cret"])
        .wait_with_output()
        .unwrap();
    assert!(!out.status.success(), "started without --callback-allow");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--callback-allow") && stderr.contains("'*'"),
        "{stderr}"
    );
}

#[test]
fn a_node_on_a_public_address_needs_a_cluster_secret() {
    for args in [
        &["--listen", "0.0.0.0:0"][..],
        &[
            "--listen",
            "127.0.0.1:0",
            "--peers",
            "1=127.0.0.1:1,2=slct2:7001",
        ][..],
    ] {
        let out = serve(args).wait_with_output().unwrap();
        assert!(!out.status.success(), "{args:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--cluster-secret") && stderr.contains("--insecure"),
            "{args:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn with_a_secret_or_insecure_it_starts() {
    for extra in [
        ["--cluster-secret", "s3cret", "--callback-allow", "*"],
        ["--insecure", "--id=1", "--callback-allow", "10.0.0.0/8"],
    ] {
        let port = std::net::TcpListener::bind("0.0.0.0:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let listen = format!("0.0.0.0:{port}");
        let mut args = vec!["--listen", &listen];
        args.extend(extra);
        let mut child = serve(&args);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let healthz = format!("http://127.0.0.1:{port}/healthz");
        let up = loop {
            if reqwest::get(&healthz)
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                break true;
            }
            if child.try_wait().unwrap().is_some() || tokio::time::Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        child.kill().ok();
        let out = child.wait_with_output().unwrap();
        assert!(up, "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A node whose Raft stops on a fatal error exits non-zero, saying why, instead of
/// answering 503 for ever. The error here: its snapshot directory turns into a file, so
/// the next snapshot build fails.
#[tokio::test]
async fn a_node_whose_raft_fails_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_slct"))
        .arg("serve")
        .args(["--data", dir.path().to_str().unwrap(), "--listen", &listen])
        .args(["--snapshot-threshold", "5"])
        .env_remove("SLCT_CLUSTER_SECRET")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run slct");
    let http = reqwest::Client::new();
    let put = |i: usize| {
        http.put(format!("http://{listen}/state/s{i}"))
            .json(&serde_json::json!({"data": i}))
            .send()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !put(0).await.is_ok_and(|r| r.status() == 201) {
        assert!(tokio::time::Instant::now() < deadline, "no write was taken");
        assert!(
            child.try_wait().unwrap().is_none(),
            "exited before the fault"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snapshots = dir.path().join("snapshots");
    std::fs::remove_dir_all(&snapshots).unwrap();
    std::fs::write(&snapshots, b"not a directory").unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut i = 1;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running 30 s after its snapshots became unwritable"
        );
        let _ = put(i).await;
        i += 1;
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "exited with {status}: {stderr}");
    assert!(
        stderr.contains("raft stopped") && stderr.contains("supervisor restarts it"),
        "{stderr}"
    );
}

/// Runs `slct serve` on `data` at an ephemeral port until it exits; its status and
/// stderr. For nodes that must refuse to start.
fn serve_refused(data: &std::path::Path) -> (std::process::ExitStatus, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_slct"))
        .arg("serve")
        .args(["--data", data.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .env_remove("SLCT_CLUSTER_SECRET")
        .output()
        .expect("run slct");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_second_node_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut first = Command::new(env!("CARGO_BIN_EXE_slct"))
        .arg("serve")
        .args(["--data", dir.path().to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env_remove("SLCT_CLUSTER_SECRET")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run slct");
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !reqwest::get(&healthz)
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first never came up"
        );
        assert!(first.try_wait().unwrap().is_none(), "the first exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, stderr) = serve_refused(dir.path());
    first.kill().ok();
    first.wait().ok();
    assert!(!status.success(), "the second started: {stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
}

#[test]
fn a_data_directory_of_an_earlier_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sled")).unwrap();
    let (status, stderr) = serve_refused(dir.path());
    assert!(!status.success(), "started: {stderr}");
    assert!(
        stderr.contains("earlier version of slct") && stderr.contains("format 1"),
        "{stderr}"
    );
}
