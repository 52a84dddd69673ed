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
