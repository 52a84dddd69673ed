//! What a web browser could be made to send, refused before anything else reads the
//! request (docs/design.md §3.5, "Browsers").
//!
//! A node without `--token` (the default in development) answers anyone who can reach
//! it, and a browser on the same machine or network can reach it for any web page it
//! visits. Three checks close what a page could do with it:
//!
//! - **Host** (DNS rebinding): a page at a name the attacker controls, re-pointed at
//!   this node's address, is same-origin with itself and could read the answers. The
//!   `Host` it sends is the attacker's name, so a node answers only a `Host` that is an
//!   IP address (a name nobody can re-point), `localhost`, a host of its listen address
//!   or of its `--peers` (its advertised name and its peers' names, which a follower
//!   uses when it forwards), or one listed with `--allow-host` (`*`: any). A request
//!   without `Host` (HTTP/1.0) is not from a browser.
//! - **Origin** (cross-site requests): a browser names the page's origin on every
//!   cross-origin request and every same-origin one that is not a GET or HEAD. A request
//!   with an `Origin` is answered only if that is the node's own origin (`http://` or
//!   `https://` and the request's `Host`: the console is same-origin) or one listed with
//!   `--allow-origin`. `Origin: null` (sandboxed pages, some redirects) is refused.
//! - **Content-Type** (forms): a state-changing request (any method but GET and HEAD)
//!   with a body must say `application/json`, and one without a body may name no other
//!   type. An HTML form can send only `application/x-www-form-urlencoded`,
//!   `multipart/form-data` and `text/plain`, and `fetch` cannot send anything else
//!   cross-site without a preflight this node never approves (it sends no CORS
//!   headers). So `curl -d` needs `-H 'Content-Type: application/json'` (or `--json`).
//!
//! Refusals are 403 `host_not_allowed`, 403 `origin_not_allowed` and 415
//! `unsupported_media_type`, with the flag to use in the message. A follower checks a
//! request before it forwards it and leaves the `Origin` out of the forwarded request
//! (the leader's own origin differs; the check is done).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use axum::http::{header, HeaderMap, Method, StatusCode};

use super::error::ApiError;

/// The hosts and origins a node answers to.
#[derive(Clone, Debug, Default)]
pub struct Answers {
    /// Lowercase host names (no port) this node answers to besides IP addresses and
    /// `localhost`.
    hosts: BTreeSet<String>,
    /// `--allow-host '*'`: any host.
    any_host: bool,
    /// `--allow-origin`, lowercase, without a trailing `/`.
    origins: BTreeSet<String>,
}

impl Answers {
    /// What a node listening on `listen`, with these `peers` (`host:port`), answers to,
    /// with the hosts and origins of `--allow-host` and `--allow-origin`.
    pub fn new<'a>(
        listen: &SocketAddr,
        peers: impl IntoIterator<Item = &'a String>,
        allow_hosts: &[String],
        allow_origins: &[String],
    ) -> Answers {
        let mut hosts: BTreeSet<String> = peers
            .into_iter()
            .cloned()
            .chain([listen.ip().to_string()])
            .chain(allow_hosts.iter().cloned())
            .filter_map(|h| host_of(&h))
            .collect();
        let any_host = hosts.remove("*");
        let origins = allow_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        Answers {
            hosts,
            any_host,
            origins,
        }
    }

    /// Whether a request with this `Host` header value is answered.
    fn host(&self, host: &str) -> bool {
        let Some(name) = host_of(host) else {
            return false;
        };
        self.any_host
            || name == "localhost"
            || name.parse::<IpAddr>().is_ok()
            || self.hosts.contains(&name)
    }

    /// Whether a request from `origin` to `host` is answered.
    fn origin(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        let own = host.is_some_and(|host| {
            let host = host.to_ascii_lowercase();
            origin == format!("http://{host}") || origin == format!("https://{host}")
        });
        own || self.origins.contains(&origin)
    }
}

/// The host of `host[:port]` (or `[v6]:port`, or a bare address), lowercase, without
/// brackets; `None` if empty.
fn host_of(value: &str) -> Option<String> {
    let value = value.trim();
    let host = if let Some(rest) = value.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(ip, _)| ip)
    } else if value.parse::<IpAddr>().is_ok() {
        value
    } else {
        value.rsplit_once(':').map_or(value, |(host, _)| host)
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// Whether `headers` announce a request body.
fn has_body(headers: &HeaderMap) -> bool {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    headers.contains_key(header::TRANSFER_ENCODING) || length.is_some_and(|n| n > 0)
}

/// Whether a `Content-Type` value is JSON (`application/json`, parameters allowed).
fn is_json(value: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The checks of the module docs.
pub fn check(answers: &Answers, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    let host = headers.get(header::HOST).map(|v| v.to_str().unwrap_or(""));
    if let Some(host) = host.filter(|h| !answers.host(h)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            format!(
                "this node does not answer to Host {host:?} (DNS rebinding): use one of its \
                 addresses, or start it with --allow-host naming this host"
            ),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !answers.origin(origin, host) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                format!(
                    "requests from pages at {origin:?} are refused (cross-site request): \
                     start the node with --allow-origin {origin} to let that site call it"
                ),
            ));
        }
    }
    if method != Method::GET && method != Method::HEAD {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or(""));
        let json = match content_type {
            Some(value) => is_json(value),
            None => !has_body(headers),
        };
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "a {method} with a body needs Content-Type: application/json (got {}); \
                     with curl: -H 'Content-Type: application/json' or --json",
                    content_type.map_or("none".to_owned(), |t| format!("{t:?}"))
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn answers(listen: &str, peers: &[&str], hosts: &[&str], origins: &[&str]) -> Answers {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Answers::new(
            &listen.parse().unwrap(),
            &own(peers),
            &own(hosts),
            &own(origins),
        )
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn hosts() {
        let a = answers(
            "0.0.0.0:7001",
            &["slct1:7001", "Slct2.example.:7001"],
            &["api.example"],
            &[],
        );
        for ok in [
            "127.0.0.1:7001",
            "10.1.2.3",
            "[::1]:7001",
            "localhost:7001",
            "slct1:7001",
            "SLCT2.example:9",
            "api.example",
        ] {
            assert!(a.host(ok), "{ok}");
        }
        for bad in [
            "evil.example:7001",
            "slct1.evil.example",
            "",
            "api.example.evil",
        ] {
            assert!(!a.host(bad), "{bad}");
        }
        assert!(answers("127.0.0.1:1", &[], &["*"], &[]).host("anything.example"));
    }

    #[test]
    fn origins() {
        let a = answers("127.0.0.1:7001", &[], &[], &["https://ops.example/"]);
        assert!(a.origin("http://127.0.0.1:7001", Some("127.0.0.1:7001")));
        assert!(a.origin("https://ops.example", Some("127.0.0.1:7001")));
        assert!(!a.origin("http://127.0.0.1:7002", Some("127.0.0.1:7001")));
        assert!(!a.origin("null", Some("127.0.0.1:7001")));
        assert!(!a.origin("http://evil.example", None));
    }

    #[test]
    fn content_types() {
        let a = answers("127.0.0.1:7001", &[], &[], &[]);
        let code = |method: Method, h: HeaderMap| check(&a, &method, &h).err().map(|e| e.code);
        let json = ("content-type", "application/json; charset=utf-8");
        let text = ("content-type", "text/plain");
        let body = ("content-length", "2");
        let empty = ("content-length", "0");
        assert_eq!(code(Method::PUT, headers(&[json, body])), None);
        assert_eq!(code(Method::POST, headers(&[empty])), None);
        assert_eq!(code(Method::POST, headers(&[])), None);
        assert_eq!(code(Method::GET, headers(&[text, body])), None);
        let refused = Some("unsupported_media_type");
        assert_eq!(code(Method::POST, headers(&[text, body])), refused);
        assert_eq!(code(Method::POST, headers(&[text, empty])), refused);
        assert_eq!(code(Method::PUT, headers(&[body])), refused);
        let chunked = ("transfer-encoding", "chunked");
        assert_eq!(code(Method::POST, headers(&[chunked])), refused);
    }
}
