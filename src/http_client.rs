//! The HTTP clients slct sends requests with, made in one place for one reason: how
//! they resolve host names.
//!
//! Peers are named by host name in a deployment (`slct1:7001` in the compose file,
//! `slct-0.slct:7001` in the StatefulSet), and the image is a static binary with
//! nothing beside it, where glibc's resolver cannot load its NSS modules. So names are
//! resolved in Rust by hickory-resolver, from `/etc/hosts` and then the name servers of
//! `/etc/resolv.conf` (Docker's embedded DNS, a Kubernetes cluster's DNS), which both
//! platforms mount into every container.
//!
//! reqwest can do that by itself (its `hickory-dns` feature is on, so that every client
//! resolves names), but its resolver keeps an answer for the record's whole TTL, and
//! Docker's DNS answers with 600 s: a peer that came back with a new address (a
//! container recreated or reconnected) stayed unreachable for ten minutes, and a node
//! that could not be reached kept calling elections meanwhile. The resolver here keeps
//! an answer for at most [`MAX_CACHE`]. Names are looked up only when a connection is
//! opened (pooled connections are reused), so that costs a query per new connection
//! at most.
//!
//! The same resolver serves [`connector`], the hyper connector a follower relays client
//! requests to the leader with (reqwest would rewrite their paths; see
//! `api::forward`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hickory_resolver::config::LookupIpStrategy;
use hickory_resolver::{ResolveError, TokioResolver};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::sync::OnceCell;

/// The longest a resolved name (or the absence of one) is reused.
pub const MAX_CACHE: Duration = Duration::from_secs(1);

/// How long a client of slct nodes keeps an idle pooled connection: half the server's
/// default `--idle-timeout` (60 s, design.md §3.5), so the client drops a connection
/// before the server may close it and a request is never written onto a connection
/// the server is closing. reqwest's own default (90 s) is above it.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A client builder whose host names are resolved as this module describes; use it
/// instead of `reqwest::Client::builder()`.
pub fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().dns_resolver(Arc::new(Resolver::default()))
}

/// A client of slct nodes (a peer's `/raft/*` routes) with reqwest's defaults but this
/// module's resolver and [`POOL_IDLE_TIMEOUT`]; use it instead of
/// `reqwest::Client::new()`. The Raft routes are served on the API's port, under its
/// `--idle-timeout`, and a follower sends nothing for as long as its leader lasts: with
/// reqwest's 90 s, its first vote request after that could be written onto a
/// connection the peer is just closing, and fail, costing the election a round.
pub fn client() -> reqwest::Client {
    builder()
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build()
        .unwrap_or_default()
}

/// Resolves names with hickory-resolver, made on first use (inside the runtime) from
/// the system's configuration and kept for the client's life.
#[derive(Clone, Default)]
pub struct Resolver {
    resolver: Arc<OnceCell<TokioResolver>>,
}

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.clone();
        Box::pin(async move {
            let addrs: Addrs = Box::new(resolver.lookup(name.as_str()).await?.into_iter());
            Ok(addrs)
        })
    }
}

/// A hyper connector whose host names are resolved as this module describes, giving
/// up on a connection after `connect_timeout`.
pub fn connector(connect_timeout: Duration) -> HttpConnector<Resolver> {
    let mut connector = HttpConnector::new_with_resolver(Resolver::default());
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector
}

impl Resolver {
    async fn lookup(&self, name: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let resolver = self
            .resolver
            .get_or_try_init(|| async { system_resolver() })
            .await?;
        let lookup = resolver.lookup_ip(name).await?;
        Ok(lookup.iter().map(|ip| SocketAddr::new(ip, 0)).collect())
    }
}

type Lookup =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, ResolveError>> + Send>>;

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = Lookup;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ResolveError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Lookup {
        let resolver = self.clone();
        Box::pin(async move { Ok(resolver.lookup(name.as_str()).await?.into_iter()) })
    }
}

/// A resolver configured from `/etc/resolv.conf` (and `/etc/hosts`), asking for IPv4
/// and IPv6 addresses alike (the connector tries them in turn), caching briefly.
fn system_resolver() -> Result<TokioResolver, ResolveError> {
    let mut builder = TokioResolver::builder_tokio()?;
    let options = builder.options_mut();
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.positive_max_ttl = Some(MAX_CACHE);
    options.negative_max_ttl = Some(MAX_CACHE);
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn localhost_resolves_from_the_hosts_file() {
        let addrs: Vec<SocketAddr> = Resolver::default()
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        assert!(!addrs.is_empty());
    }

    #[tokio::test]
    async fn a_client_reaches_a_server_by_name() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "here" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let body = client()
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "here");
    }
}
