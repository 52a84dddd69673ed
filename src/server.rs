//! One node's HTTP server: the client API and the `/raft/*` routes on one port.
//!
//! Raft traffic shares the port with clients (design.md §3.5), so a node needs one address
//! and one firewall rule. The two routers keep their own layers (body limits, auth):
//! nothing is layered over the merged router.

use std::future::Future;

use axum::Router;
use tokio::net::TcpListener;

use crate::api::ApiConfig;
use crate::node::Node;

/// The node's whole router: API and Raft routes.
pub fn app(node: Node, api: ApiConfig) -> Router {
    node.raft_router().merge(crate::api::router_with(node, api))
}

/// Serves `node` on `listener` until `shutdown` completes, then lets in-flight requests
/// finish. Does not stop the node: the caller does, after this returns.
pub async fn serve(
    node: Node,
    api: ApiConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(node, api))
        .with_graceful_shutdown(shutdown)
        .await
}
