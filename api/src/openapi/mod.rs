//! The OpenAPI 3.1 document of the HTTP API, served at `GET /v1/openapi.json` and kept in
//! `docs/openapi.json`.
//!
//! The schemas come from the `fleetlog-types` shapes the server writes (their `ToSchema`
//! derives), so a member added to a type appears in the document without a second edit. The
//! operations are described in `endpoints.rs`, one entry per route of [`crate::router`]; a test
//! below fails for a route that has none. `builder.rs` holds the small vocabulary those entries
//! are written in; `requests.rs` the request bodies, which the server reads as JSON objects.

mod builder;
mod endpoints;
mod requests;

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::OpenApi;

/// The document, built from the types and the endpoint descriptions.
pub fn document() -> OpenApi {
    endpoints::describe()
}

/// The document as served and as committed: pretty JSON with a final newline.
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut text = document().to_pretty_json().expect("the OpenAPI document serialises");
        text.push('\n');
        text
    })
}

/// `GET /v1/openapi.json`.
pub async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document_json()).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    /// Every (method, path template) the router serves, read from `router()`'s source as the
    /// access rules' test does. The peer routes are the cluster's own protocol, not the API.
    fn routed_endpoints() -> BTreeSet<(String, String)> {
        let source = include_str!("../lib.rs");
        let mut endpoints = BTreeSet::new();
        for line in source.lines().map(str::trim).filter(|line| line.starts_with(".route(\"")) {
            let path = line.trim_start_matches(".route(\"").split('"').next().unwrap();
            for method in ["get", "post", "put", "delete"] {
                if line.contains(&format!("{method}(")) {
                    endpoints.insert((method.to_string(), path.to_string()));
                }
            }
        }
        endpoints
    }

    /// The document's (method, path) pairs, with `{*stream}` written as axum writes it.
    fn documented_endpoints(document: &Value) -> BTreeSet<(String, String)> {
        let mut endpoints = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let axum_path = path.replace("{stream}", "{*stream}");
                endpoints.insert((method.clone(), axum_path));
            }
        }
        endpoints
    }

    /// A route added to the router without a description here fails, and so does a description
    /// of a route that is gone.
    #[test]
    fn every_route_of_the_router_is_documented_and_nothing_else() {
        let document: Value = serde_json::from_str(document_json()).unwrap();
        let routed = routed_endpoints();
        let documented = documented_endpoints(&document);
        assert!(routed.len() > 40, "the router's routes were not found in its source: {routed:?}");
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "routes without a description in api/src/openapi/endpoints.rs: {undocumented:?}"
        );
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(unrouted.is_empty(), "the document describes routes the router does not have: {unrouted:?}");
    }

    /// Every reference points at a schema or an answer of the document, so a client generator
    /// can resolve the whole document.
    #[test]
    fn every_reference_resolves() {
        let document: Value = serde_json::from_str(document_json()).unwrap();
        let mut references = Vec::new();
        collect_references(&document, &mut references);
        assert!(references.iter().any(|reference| reference.starts_with("#/components/responses/")));
        for reference in references {
            let mut parts = reference.strip_prefix("#/components/").unwrap_or_else(|| panic!("{reference}")).split('/');
            let (kind, name) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(!document["components"][kind][name].is_null(), "{reference} is not in the document");
        }
    }

    fn collect_references(value: &Value, references: &mut Vec<String>) {
        match value {
            Value::Object(members) => {
                if let Some(Value::String(reference)) = members.get("$ref") {
                    references.push(reference.clone());
                }
                members.values().for_each(|member| collect_references(member, references));
            }
            Value::Array(items) => items.iter().for_each(|item| collect_references(item, references)),
            _ => {}
        }
    }

    /// `docs/openapi.json` is what the server serves. `make openapi` (this test with
    /// `FLEETLOG_WRITE_OPENAPI=1`) rewrites it.
    #[test]
    fn the_committed_document_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let generated = document_json();
        if std::env::var_os("FLEETLOG_WRITE_OPENAPI").is_some() {
            std::fs::write(path, generated).expect("write docs/openapi.json");
            return;
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json differs from the document the server generates; regenerate it with \
             `make openapi` (or `FLEETLOG_WRITE_OPENAPI=1 cargo test -p fleetlog-api --lib openapi`) and commit it"
        );
    }
}
