//! `GET /health`: liveness for load balancers, scripts and the test harness.

use axum::Json;
use serde_json::{json, Value};

/// Answers without touching the store, so it stays cheap enough to poll.
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}
