//! The operator's page at `/`: one self-contained HTML file built into the binary (no build step,
//! no third-party request, so it works on an air-gapped network). It holds no data itself: it
//! reads the API with the reader's token, so serving it needs none.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("../dashboard/index.html");

/// Only this origin: the page's own inline script and style, and the API it reads.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'";

pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}
