//! The web console: every node serves it at `/`, as static files compiled
//! into the binary.
//!
//! No Node toolchain and no external fetches: the console is plain HTML, CSS and
//! JavaScript under this folder, embedded with `include_str!`. The files hold no data,
//! so they are open without a token and answered by every node itself (never forwarded,
//! see [`super::forward::is_local`]); the page fetches the data from the API with the
//! token the user gives it, kept in the browser's `sessionStorage`.
//!
//! Ids and data are user input. The scripts build the page with DOM calls and
//! `textContent`, never `innerHTML`, and the responses carry a Content-Security-Policy
//! that allows only this node's own scripts and styles: an injected `<script>` or an
//! inline event handler would not run even if it reached the page.
//!
//! | path | file |
//! |---|---|
//! | `/` | `index.html`: the shell, views are `#/cluster`, `#/states`, `#/state/<id>`, `#/chans`, `#/metrics` |
//! | `/ui/console.js` | views, actions (state actions, channel send/receive/close), login on a 401 |
//! | `/ui/metrics.js` | Prometheus text parsing, the ring buffer of samples, sparklines |
//! | `/ui/console.css` | styles |

use super::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Only this origin's files; no inline script, no frames, no plugins.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// The embedded files under `/ui/`: name, content type, text.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("console.js"),
    ),
    (
        "metrics.js",
        "text/javascript; charset=utf-8",
        include_str!("metrics.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("console.css"),
    ),
];

/// `GET /`: the console's page.
pub async fn index() -> Response {
    file("text/html; charset=utf-8", include_str!("index.html"))
}

/// `GET /ui/{path}`: one of the console's scripts or styles; 404 for anything else.
pub async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == path) {
        Some((_, kind, text)) => file(kind, text),
        None => ApiError::not_found(format!("no console file {path:?}")).into_response(),
    }
}

/// A static file with the console's security headers. `no-cache` makes the browser
/// revalidate, so a node that was upgraded serves its own console at once.
fn file(kind: &'static str, text: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, text).into_response()
}
