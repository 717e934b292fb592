//! Publication of the minting keys over HTTP: the OpenID Connect discovery document at
//! `{issuer path}/.well-known/openid-configuration` and the JWK Set at the path of its
//! `jwks_uri`, with `Cache-Control: public, max-age` from `mint.publish.max_age`. Served on
//! `mint.publish.listen` when set, else on the admin listener; both read the running
//! configuration at each request, so a reload that moves keys between states is visible at
//! once.
//!
//! Depends on [`crate::pipeline`] (the running generation) and [`crate::response::mint`].

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::pipeline::Generation;
use crate::response::mint::{discovery_path, jwks_uri};

/// Which listener serves the documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// `mint.publish.listen`.
    OwnListener,
    /// The admin listener (only while `mint.publish.listen` is not set).
    Admin,
}

#[derive(Clone)]
struct PublishState {
    current: Arc<ArcSwap<Generation>>,
    place: Place,
}

/// A router answering discovery and JWKS requests; anything else is 404.
pub fn router(current: Arc<ArcSwap<Generation>>, place: Place) -> Router {
    Router::new()
        .fallback(serve)
        .with_state(PublishState { current, place })
}

async fn serve(State(state): State<PublishState>, uri: Uri) -> Response {
    let generation = state.current.load();
    let Some(mint) = generation.config.mint.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(minter) = generation.pipeline.minter() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if state.place == Place::Admin && mint.publish.listen.is_some() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let now = crate::service::unix_now();
    let jwks_path = reqwest::Url::parse(&jwks_uri(mint)).map(|url| url.path().to_owned());
    let (body, content_type) = if uri.path() == discovery_path(&mint.issuer) {
        (minter.discovery(now), "application/json")
    } else if jwks_path.as_deref() == Ok(uri.path()) {
        (minter.jwks(now), "application/jwk-set+json")
    } else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let cache_control = format!("public, max-age={}", minter.max_age().as_secs());
    let mut response = (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body.to_string(),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&cache_control) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}
