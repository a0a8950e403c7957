//! The master's HTTP port (`[http] listen`): `/metrics` (Prometheus), `/healthz`, and the status
//! page (`status_page`), at most [`MAX_CONCURRENT_REQUESTS`] of the costly ones at a time. Off
//! unless configured. It serves without authentication or TLS: bind it to an address only
//! operators and the monitoring system can reach.

use std::future::Future;

use axum::Router;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use tokio::net::TcpListener;
use tower::limit::GlobalConcurrencyLimitLayer;

use crate::error::MasterError;
use crate::node::Node;

/// Serves the HTTP routes on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    node: Node,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MasterError> {
    let app = routes(node);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| MasterError::Serve(format!("http: {e}")))
}

/// Most requests for `/metrics` and the status page (`/`) served at once, together; more wait
/// for a turn. Each may take a blocking thread (computing a report when the cached one is
/// stale, walking the running tasks), and both are served without authentication: a flood of
/// scrapes or page views waits here instead of piling work up. `/healthz` is not limited.
pub const MAX_CONCURRENT_REQUESTS: usize = 8;

/// Every route of the HTTP port.
pub fn routes(node: Node) -> Router {
    // One semaphore shared by every limited route.
    let limited = Router::new()
        .route("/metrics", get(metrics))
        .with_state(node.clone())
        .merge(crate::status_page::routes(node))
        .layer(GlobalConcurrencyLimitLayer::new(MAX_CONCURRENT_REQUESTS));
    Router::new().route("/healthz", get(healthz)).merge(limited)
}

async fn metrics(axum::extract::State(node): axum::extract::State<Node>) -> Response {
    // Reads the state and a few files: off the async workers.
    match tokio::task::spawn_blocking(move || crate::metrics::render(&node)).await {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics task failed: {e}\n"),
        )
            .into_response(),
    }
}

/// 200 while the process serves (liveness; readiness is gRPC health).
async fn healthz() -> &'static str {
    "ok\n"
}

/// Binds `[http] listen`, naming the key when that fails.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, MasterError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| MasterError::Config(format!("http.listen: cannot listen on {addr}: {e}")))
}
