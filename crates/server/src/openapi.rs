//! `GET /api/v1/openapi.json`: the hand-written OpenAPI 3 description of `docs/api.md`.

use axum::http::header;
use axum::response::IntoResponse;

/// Kept as a JSON file next to the code so it is reviewed as a document, not generated from handlers.
const OPENAPI: &str = include_str!("openapi.json");

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
