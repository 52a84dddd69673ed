//! What deployment relies on, short of Docker (`deploy/test.sh` runs the image).
//!
//! - Peers named by host name: a cluster whose `--peers` say `localhost:port` forms,
//!   replicates and forwards through those names, as the compose file's `slct1:7001`.
//! - The deployment files agree with themselves and with `slct serve`: the Kubernetes
//!   StatefulSet in `deploy/k8s/slct.yaml` (never applied to a real cluster here, so
//!   this is all that checks it) and `deploy/docker-compose.yml`. Each node's
//!   environment is read as `slct serve` reads it, through the real command line
//!   parser; the peers must name every node by the host name the platform gives it,
//!   on the port it listens on; the compose file publishes its ports clear of
//!   `slct dev`'s, so that both run on one machine.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use reqwest::{Method, StatusCode};
use serde_json::json;
use serde_yaml::Value;
use slct::api::ApiConfig;
use slct::cli::{id_from_hostname, Cli, Command, ServeArgs};
use support::{eventually, Cluster};

#[tokio::test]
async fn peers_may_be_host_names() {
    let cluster = Cluster::start_tuned(ApiConfig::default(), |config| {
        for addr in config.peers.values_mut() {
            *addr = addr.replace("127.0.0.1", "localhost");
        }
    })
    .await;
    let status = cluster.call(0, Method::GET, "/cluster", None).await;
    let members = status.body["members"].as_object().unwrap();
    assert!(
        members
            .values()
            .all(|a| a.as_str().unwrap().starts_with("localhost:")),
        "{members:?}"
    );
    // Through a follower: forwarded to the leader by its name.
    let body = json!({"data": {"n": 1}});
    let put = cluster
        .call(cluster.follower(), Method::PUT, "/state/named", Some(body))
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
    for i in 0..3 {
        eventually(Duration::from_secs(10), "every replica has it", || async {
            let read = cluster
                .call(i, Method::GET, "/state/named?stale=true", None)
                .await;
            read.status == StatusCode::OK && read.body["data"]["n"] == 1
        })
        .await;
    }
    cluster.shutdown().await;
}

fn read(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `value[key]`, which must be there.
fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(value, |v, key| {
        v.get(key)
            .unwrap_or_else(|| panic!("no {key:?} in {path:?} of {v:?}"))
    })
}

fn text<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    at(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} is not text"))
}

/// `slct <args> serve` with each `SLCT_*` environment variable as its flag, parsed as
/// the binary parses its command line.
fn serve_args(args: &[&str], env: &BTreeMap<String, String>) -> ServeArgs {
    let mut argv = vec!["slct".to_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    for (name, value) in env {
        if let Some(flag) = name.strip_prefix("SLCT_") {
            argv.push(format!("--{}", flag.to_lowercase().replace('_', "-")));
            argv.push(value.clone());
        }
    }
    match Cli::try_parse_from(&argv).map(|cli| cli.command) {
        Ok(Command::Serve(args)) => {
            // A node listening beyond loopback starts only with a callback allow list.
            slct::callbacks::allow::check_exposure(&args.listen, &args.api.callback_allow)
                .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            args
        }
        Ok(other) => panic!("{argv:?} is not serve: {other:?}"),
        Err(e) => panic!("{argv:?}: {e}"),
    }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// The ports `slct dev` listens on (127.0.0.1:7001–7003): the compose file publishes
/// elsewhere by default, so that both can run on one machine.
const SLCT_DEV_PORTS: [u16; 3] = [7001, 7002, 7003];

/// The host port a compose `ports` entry publishes when its variable is unset:
/// `127.0.0.1:${SLCT_PORT_1-7101}:7001` publishes 7101.
fn default_host_port(entry: &str) -> u16 {
    let (_, variable) = entry.split_once("${").expect("a port variable");
    let (_, default) = variable.split_once('-').expect("a default");
    let (default, _) = default.split_once('}').expect("a closing brace");
    default.parse().expect("a port number")
}

#[test]
fn the_statefulset_names_its_pods_as_their_peers() {
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&read("deploy/k8s/slct.yaml"))
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|doc: &Value| !doc.is_null())
        .collect();
    let kind = |kind: &str| -> Vec<&Value> {
        docs.iter()
            .filter(|d| d.get("kind").and_then(Value::as_str) == Some(kind))
            .collect()
    };
    let [set] = kind("StatefulSet")[..] else {
        panic!("one StatefulSet")
    };
    let service_name = text(set, &["spec", "serviceName"]);
    let service = kind("Service")
        .into_iter()
        .find(|s| text(s, &["metadata", "name"]) == service_name)
        .expect("the StatefulSet's service");
    let spec = at(service, &["spec"]);
    assert_eq!(text(spec, &["clusterIP"]), "None", "headless");
    assert_eq!(
        at(spec, &["publishNotReadyAddresses"]).as_bool(),
        Some(true),
        "peers must resolve before they are ready"
    );
    assert_eq!(
        at(set, &["spec", "podManagementPolicy"]).as_str(),
        Some("Parallel"),
        "no pod can be ready before a quorum is up"
    );
    let labels = at(set, &["spec", "template", "metadata", "labels"]);
    assert_eq!(at(set, &["spec", "selector", "matchLabels"]), labels);
    assert_eq!(at(spec, &["selector"]), labels);

    let pod = at(set, &["spec", "template", "spec"]);
    let [container] = &at(pod, &["containers"]).as_sequence().unwrap()[..] else {
        panic!("one container")
    };
    let mut env = BTreeMap::new();
    for var in at(container, &["env"]).as_sequence().unwrap() {
        let name = text(var, &["name"]).to_owned();
        let value = match var.get("value") {
            Some(value) => value.as_str().unwrap().to_owned(),
            None => {
                let secret = at(var, &["valueFrom", "secretKeyRef"]);
                assert_eq!(name, "SLCT_CLUSTER_SECRET", "only the secret is a secret");
                assert!(!text(secret, &["name"]).is_empty());
                "from-the-secret".to_owned()
            }
        };
        env.insert(name, value);
    }
    assert!(env.contains_key("SLCT_CLUSTER_SECRET"));
    let args: Vec<&str> = at(container, &["args"])
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let serve = serve_args(&args, &env);
    assert!(serve.id_from_hostname, "the id comes from the pod's name");

    // Every pod slct-<i> is node i+1 and is listed as <pod>.<service>:<port>.
    let replicas = at(set, &["spec", "replicas"]).as_u64().unwrap();
    let peers = serve.peers.expect("--peers");
    assert_eq!(peers.len() as u64, replicas);
    let set_name = text(set, &["metadata", "name"]);
    let port = serve.listen.port();
    for ordinal in 0..replicas {
        let pod_name = format!("{set_name}-{ordinal}");
        let id = id_from_hostname(&pod_name).unwrap();
        assert_eq!(
            peers.get(&id).map(String::as_str),
            Some(format!("{pod_name}.{service_name}:{port}").as_str()),
            "pod {pod_name}"
        );
    }

    // The port the node listens on, the container's, the service's and the probes'.
    let [named] = &at(container, &["ports"]).as_sequence().unwrap()[..] else {
        panic!("one port")
    };
    assert_eq!(at(named, &["containerPort"]).as_u64(), Some(port.into()));
    let port_name = text(named, &["name"]);
    let [service_port] = &at(spec, &["ports"]).as_sequence().unwrap()[..] else {
        panic!("one service port")
    };
    assert_eq!(at(service_port, &["port"]).as_u64(), Some(port.into()));
    assert_eq!(text(service_port, &["targetPort"]), port_name);
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = at(container, &[probe, "httpGet"]);
        assert_eq!(text(get, &["path"]), path, "{probe}");
        assert_eq!(text(get, &["port"]), port_name, "{probe}");
    }

    // The data directory is the claim's volume, writable by the image's user.
    let [mount] = &at(container, &["volumeMounts"]).as_sequence().unwrap()[..] else {
        panic!("one volume mount")
    };
    assert_eq!(Path::new(text(mount, &["mountPath"])), serve.data);
    let [claim] = &at(set, &["spec", "volumeClaimTemplates"])
        .as_sequence()
        .unwrap()[..]
    else {
        panic!("one claim")
    };
    assert_eq!(text(claim, &["metadata", "name"]), text(mount, &["name"]));
    let user = at(pod, &["securityContext", "runAsUser"]).as_u64().unwrap();
    assert_eq!(
        at(pod, &["securityContext", "fsGroup"]).as_u64(),
        Some(user)
    );
    assert!(
        read("deploy/Dockerfile").contains(&format!("USER {user}:{user}")),
        "the image runs as {user}"
    );
}

#[test]
fn the_compose_nodes_name_each_other_by_service() {
    let mut file: Value = serde_yaml::from_str(&read("deploy/docker-compose.yml")).unwrap();
    file.apply_merge().unwrap();
    let services = at(&file, &["services"]).as_mapping().unwrap();
    assert_eq!(services.len(), 3);
    let mut all_peers = Vec::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        // Merge keys nest: the node's environment merges the shared one.
        let mut environment = at(service, &["environment"]).clone();
        environment.apply_merge().unwrap();
        let env: BTreeMap<String, String> = serde_yaml::from_value(environment).unwrap();
        assert_eq!(
            text(service, &["env_file"]),
            "slct.env",
            "{name}: the secret"
        );
        assert!(
            !env.contains_key("SLCT_CLUSTER_SECRET"),
            "{name}: not in the file"
        );
        let serve = serve_args(&["serve"], &env);
        let peers = serve.peers.expect("--peers");
        let port = serve.listen.port();
        assert_eq!(
            peers.get(&serve.id).map(String::as_str),
            Some(format!("{name}:{port}").as_str()),
            "{name} is listed by its service name"
        );
        let ports = at(service, &["ports"]).as_sequence().unwrap();
        assert!(
            ports.iter().any(|p| p
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:") && port_of(p) == port)),
            "{name} publishes its port on 127.0.0.1 only: {ports:?}"
        );
        for port in ports.iter().filter_map(|p| p.as_str()) {
            let host_port = default_host_port(port);
            assert!(
                !SLCT_DEV_PORTS.contains(&host_port),
                "{name} publishes {host_port} by default, which `slct dev` takes: {port}"
            );
        }
        let volumes = at(service, &["volumes"]).as_sequence().unwrap();
        let data = format!(":{}", serve.data.display());
        assert!(
            volumes.iter().any(|v| v.as_str().unwrap().ends_with(&data)),
            "{name} keeps {data} in a volume"
        );
        all_peers.push(peers);
    }
    assert!(all_peers.windows(2).all(|w| w[0] == w[1]), "same --peers");
}
