//! The HTTP admin listener: liveness, readiness, Prometheus metrics, the minting keys'
//! discovery and JWKS (unless `mint.publish.listen` gives them a listener of their own) and
//! (in dev mode) the dev issuer's JWKS.
//!
//! `/healthz` answers 200 while the process runs. `/readyz` answers 200 once the configuration
//! is loaded and every issuer has keys, 503 with the issuers still missing keys otherwise.
//! Depends on [`crate::pipeline`] and [`crate::publish`].

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use crate::metrics::Metrics;
use crate::pipeline::Generation;

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// The running configuration generation.
    pub current: Arc<ArcSwap<Generation>>,
    /// The process metrics, served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The dev issuer's public JWK Set, served at `/dev/jwks.json` in dev mode only.
    pub dev_jwks: Option<Arc<String>>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if state.dev_jwks.is_some() {
        router = router.route("/dev/jwks.json", get(dev_jwks));
    }
    let publish = crate::publish::router(Arc::clone(&state.current), crate::publish::Place::Admin);
    router.with_state(state).merge(publish)
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let missing = state.current.load().keys.missing();
    let status = if missing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "ready": missing.is_empty(), "issuers_without_keys": missing });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn dev_jwks(State(state): State<AdminState>) -> impl IntoResponse {
    let body = state.dev_jwks.as_deref().cloned().unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/jwk-set+json")], body)
}
