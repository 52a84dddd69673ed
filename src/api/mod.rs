//! The HTTP API (placeholder until the `api` branch is merged).

use axum::Router;

use crate::node::Node;

/// The client API routes.
pub fn router(node: Node) -> Router {
    let _ = node;
    Router::new()
}
