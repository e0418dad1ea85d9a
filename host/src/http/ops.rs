//! Operational routes: `/health`, `/metrics`, the 404 fallback, and the
//! response a panicking handler is turned into.

use std::any::Any;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::metrics::CONTENT_TYPE;
use super::{ApiState, ok};

/// `GET /health`: no auth, no Host gate (load balancers and probes).
pub async fn health(State(state): State<ApiState>) -> Response {
    let sandbox = state.sandbox.read().expect("sandbox status lock").clone();
    ok(&json!({
        "ok": true,
        "version": env!("CARGO_PKG_VERSION"),
        "activeRuns": state.engine.active_runs(),
        "recovering": state.engine.recovering(),
        "sandbox": sandbox,
        "http": state.engine.runtime().http_summary(),
    }))
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<ApiState>) -> Response {
    let text = state.metrics.render(&state.engine);
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// Unknown route or wrong method: 404 `NOT_FOUND` "Route not found".
pub async fn not_found() -> ApiError {
    ApiError::route_not_found()
}

/// A handler panicked: answer the envelope, log the payload.
pub fn panic_response(payload: Box<dyn Any + Send + 'static>) -> Response {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::internal(&format!("handler panicked: {message}")).into_response()
}
