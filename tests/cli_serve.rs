//! `slct serve` refuses a configuration that would leave the Raft port open: a
//! non-loopback address without `--cluster-secret`, unless `--insecure`.

use std::process::Command;
use std::time::Duration;

fn serve(args: &[&str]) -> std::process::Child {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_slct"))
        .arg("serve")
        .args(["--data", dir.path().to_str().unwrap()])
        .args(args)
        .env_remove("SLCT_CLUSTER_SECRET")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run slct")
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
    for extra in [["--cluster-secret", "s3cret"], ["--insecure", "--id=1"]] {
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
