//! openapi.yaml parses and describes exactly the routes the router serves.

use std::collections::BTreeSet;

use serde_yaml::Value;

#[test]
fn openapi_describes_every_served_route() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml"))
        .expect("openapi.yaml at the repository root");
    let doc: Value = serde_yaml::from_str(&text).expect("openapi.yaml parses");
    assert_eq!(doc["openapi"].as_str(), Some("3.0.3"));
    let paths = doc["paths"].as_mapping().expect("paths");
    let methods = ["get", "put", "post", "delete", "patch", "head"];
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            let path = path.as_str().unwrap().to_owned();
            methods
                .iter()
                .filter(move |m| item.get(**m).is_some())
                .map(move |m| (m.to_string(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = slct::api::served_routes().into_iter().collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served, not in openapi.yaml: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "in openapi.yaml, not served: {unserved:?}"
    );
    for (method, path) in &documented {
        let op = &paths[&Value::from(path.as_str())][method.as_str()];
        assert!(
            op["responses"].as_mapping().is_some_and(|r| !r.is_empty()),
            "{method} {path}"
        );
    }
}

/// Every route that proposes a client write lists 507 `disk_full` (a voter's disk below
/// its reserve, docs/design.md "A full disk"), and no other route does: not the deletes
/// and the receive, which make room and go on.
#[test]
fn the_write_routes_list_507() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml"))
        .expect("openapi.yaml at the repository root");
    let doc: Value = serde_yaml::from_str(&text).expect("openapi.yaml parses");
    let paths = doc["paths"].as_mapping().expect("paths");
    let listed: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            let path = path.as_str().unwrap().to_owned();
            item.as_mapping()
                .into_iter()
                .flatten()
                .filter(|(_, op)| op["responses"].get("507").is_some())
                .map(move |(method, _)| (method.as_str().unwrap().to_owned(), path.clone()))
        })
        .collect();
    let writes: BTreeSet<(String, String)> = [
        ("put", "/state/{id}"),
        ("get", "/state/poll"),
        ("post", "/state/{id}/lease"),
        ("delete", "/state/{id}/lease"),
        ("post", "/state/{id}/retry"),
        ("post", "/state/{id}/pause"),
        ("post", "/state/{id}/resume"),
        ("put", "/chan/{name}"),
        ("post", "/chan/{name}/send"),
        ("post", "/chan/{name}/close"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(listed, writes);
}
