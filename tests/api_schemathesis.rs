//! Fuzzes the API from `openapi.yaml` with Schemathesis against three real `slct serve`
//! processes: no 5xx other than 503, every status and body as the schema says, valid
//! requests accepted and invalid ones refused.
//!
//! Schemathesis is a Python tool; `scripts/test.sh` installs it into a virtual
//! environment at `target/schemathesis/`. Its settings are in
//! `tests/schemathesis/schemathesis.toml`. Without it this test fails, saying so.
//! `SLCT_SCHEMATHESIS` names another `st` executable; `SLCT_SCHEMATHESIS_EXAMPLES` sets
//! the examples per operation (default 100: under a minute on two cores).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::Cluster;

const TOKEN: &str = "fuzz-token";

fn schemathesis() -> PathBuf {
    let st = std::env::var_os("SLCT_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/schemathesis/bin/st")
        });
    assert!(
        st.exists(),
        "Schemathesis is not installed at {}: run scripts/test.sh, which installs it",
        st.display()
    );
    st
}

#[tokio::test]
async fn the_api_conforms_to_openapi_yaml_under_fuzzing() {
    let st = schemathesis();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Membership changes take the admin token, which the fuzzer does not have: it sees
    // their 403s, and cannot take the cluster apart.
    let mut cluster = Cluster::binary(
        3,
        &[
            "--token",
            TOKEN,
            "--admin-token",
            "fuzz-admin-token",
            "--callback-allow",
            "127.0.0.1/32",
        ],
    );
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {TOKEN}").parse().expect("header value");
    headers.insert(reqwest::header::AUTHORIZATION, bearer);
    cluster.http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("http client");
    let leader = cluster.await_leader().await;
    // A follower: every write is forwarded, so the forwarding path is fuzzed too.
    let target = cluster.other_than(leader);
    let examples = std::env::var("SLCT_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "100".into());
    let output = Command::new(&st)
        .arg("--config-file")
        .arg(root.join("tests/schemathesis/schemathesis.toml"))
        .arg("run")
        .arg(root.join("openapi.yaml"))
        .args(["--url", &cluster.url(target, "")])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--max-examples", &examples])
        // The coverage phase crashes inside Python (AST recursion depth) on this schema.
        .args(["--phases", "examples,fuzzing,stateful"])
        .args([
            "--seed",
            "20240601",
            "--workers",
            "2",
            "--request-timeout",
            "30",
        ])
        .args(["--no-color", "--generation-database", "none"])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", st.display()));
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}");
    assert!(
        output.status.success(),
        "Schemathesis found problems ({}):\n{report}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
