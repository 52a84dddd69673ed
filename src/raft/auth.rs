//! Authenticating Raft traffic: every `/raft/*` request carries a MAC, never the secret.
//!
//! With `--cluster-secret`, a node sends `Slct-Raft-Auth: <hex HMAC-SHA256>` over the
//! target node's id, the route, the snapshot header and `Slct-Raft-Digest: <hex
//! SHA-256 of the body>`, all of them headers. The receiver recomputes the MAC for its
//! own id from the headers alone and compares in constant time (`hmac`'s
//! `verify_slice`, built on `subtle`): a request that does not authenticate gets 401
//! before a byte of its body is read, so strangers cannot make a node buffer anything.
//! Only then is the body read and its digest checked (400 if it differs; a request
//! without a digest must have no body). So:
//! - a stranger who can reach the port cannot vote, append or install a snapshot;
//! - a tag seen on the wire (or by a learner added at a wrong address) proves nothing
//!   about the secret and is valid only for the same bytes to the same node — and Raft
//!   tolerates a duplicated message, which is all a replay can be;
//! - the body cannot be swapped under a captured tag.
//!
//! Without a secret there is nothing to check; the node refuses to start that way unless
//! it listens and talks on loopback only, or `--insecure` says the network is isolated
//! by other means ([`check_exposure`]).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header carrying the MAC of a `/raft/*` request.
pub const AUTH_HEADER: &str = "Slct-Raft-Auth";

/// Header carrying the hex SHA-256 of a `/raft/*` request's body, covered by the MAC.
pub const DIGEST_HEADER: &str = "Slct-Raft-Digest";

/// The [`DIGEST_HEADER`] value of `body`.
pub fn digest(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(body))
}

/// The shared secret of a cluster, if it has one.
#[derive(Clone, Default)]
pub struct ClusterKey(Option<Vec<u8>>);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ClusterKey(set)"
        } else {
            "ClusterKey(none)"
        })
    }
}

impl ClusterKey {
    /// The key of `--cluster-secret` (none if absent or empty).
    pub fn new(secret: Option<&str>) -> ClusterKey {
        ClusterKey(
            secret
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().to_vec()),
        )
    }

    /// Whether a secret is set.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// The header value for a request to `target`'s `route` with these bytes, if a
    /// secret is set.
    pub fn sign(&self, target: u64, route: &str, parts: &[&[u8]]) -> Option<String> {
        let mac = self.mac(target, route, parts)?;
        Some(hex::encode(mac.finalize().into_bytes()))
    }

    /// Whether `given` authenticates a request to this node (`me`) — always true when
    /// no secret is set.
    pub fn verify(&self, me: u64, route: &str, parts: &[&[u8]], given: Option<&[u8]>) -> bool {
        let Some(mac) = self.mac(me, route, parts) else {
            return true;
        };
        let Some(tag) = given.and_then(|g| hex::decode(g).ok()) else {
            return false;
        };
        mac.verify_slice(&tag).is_ok()
    }

    fn mac(&self, target: u64, route: &str, parts: &[&[u8]]) -> Option<Hmac<Sha256>> {
        let secret = self.0.as_ref()?;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(b"slct-raft\0");
        mac.update(&target.to_be_bytes());
        for part in std::iter::once(route.as_bytes()).chain(parts.iter().copied()) {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        Some(mac)
    }
}

/// Refuses a configuration that would expose an unauthenticated Raft port: a listen
/// address or a peer that is not loopback, with no cluster secret, unless `insecure`.
pub fn check_exposure<'a>(
    listen: &std::net::SocketAddr,
    peers: impl IntoIterator<Item = &'a String>,
    key: &ClusterKey,
    insecure: bool,
) -> Result<(), String> {
    if key.is_set() || insecure {
        return Ok(());
    }
    let exposed = std::iter::once(listen.to_string())
        .chain(peers.into_iter().cloned())
        .find(|addr| !is_loopback(addr));
    match exposed {
        None => Ok(()),
        Some(addr) => Err(format!(
            "{addr} is not a loopback address, so /raft/* would be open to anyone who can \
             reach it: give every node the same --cluster-secret (env SLCT_CLUSTER_SECRET), \
             or --insecure if the network is isolated by other means"
        )),
    }
}

/// Whether `host:port` names this machine only (127.0.0.0/8, ::1, `localhost`).
fn is_loopback(addr: &str) -> bool {
    if let Ok(socket) = addr.parse::<std::net::SocketAddr>() {
        return socket.ip().is_loopback();
    }
    addr.rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_bound_to_node_route_and_bytes() {
        let key = ClusterKey::new(Some("s3cret"));
        let tag = key.sign(2, "append", &[b"body"]).unwrap();
        assert!(key.verify(2, "append", &[b"body"], Some(tag.as_bytes())));
        assert!(
            !key.verify(3, "append", &[b"body"], Some(tag.as_bytes())),
            "other node"
        );
        assert!(
            !key.verify(2, "vote", &[b"body"], Some(tag.as_bytes())),
            "other route"
        );
        assert!(
            !key.verify(2, "append", &[b"bodz"], Some(tag.as_bytes())),
            "other body"
        );
        assert!(
            !key.verify(2, "append", &[b"bo", b"dy"], Some(tag.as_bytes())),
            "framing"
        );
        assert!(!key.verify(2, "append", &[b"body"], None));
        assert!(!key.verify(2, "append", &[b"body"], Some(b"s3cret")));
        let other = ClusterKey::new(Some("other"));
        assert!(!other.verify(2, "append", &[b"body"], Some(tag.as_bytes())));
        assert!(ClusterKey::new(None).verify(2, "append", &[], None));
        assert!(!ClusterKey::new(Some("")).is_set());
    }

    #[test]
    fn only_loopback_may_go_without_a_secret() {
        let none = ClusterKey::new(None);
        let lo: std::net::SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let any: std::net::SocketAddr = "0.0.0.0:7001".parse().unwrap();
        let local = ["127.0.0.2:7002".to_owned(), "localhost:7003".to_owned()];
        assert!(check_exposure(&lo, &local, &none, false).is_ok());
        let err = check_exposure(&any, &local, &none, false).unwrap_err();
        assert!(
            err.contains("--cluster-secret") && err.contains("--insecure"),
            "{err}"
        );
        let named = ["slct2:7001".to_owned()];
        assert!(check_exposure(&lo, &named, &none, false).is_err());
        assert!(check_exposure(&lo, &named, &none, true).is_ok());
        assert!(check_exposure(&any, &named, &ClusterKey::new(Some("s")), false).is_ok());
    }
}
