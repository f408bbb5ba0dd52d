//! The gate every client request passes before its handler: authenticate the token (401),
//! check the role against [`crate::auth::ACCESS_RULES`] (403), and hold each token to its share
//! of requests per second and of open streams (429). Routed requests pass it as middleware;
//! streams served straight on the socket call [`Gate::admit`] themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::{permission, Permission, Principal, Tokens};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Requests per second one token may make unless configured otherwise (with one second's worth
/// as a burst).
pub const REQUESTS_PER_SECOND_PER_TOKEN: u32 = 2_000;
/// Streams one token may hold open on one node unless configured otherwise.
pub const SUBSCRIBERS_PER_TOKEN: usize = 1_000;

#[derive(Clone, Debug)]
pub struct GateOptions {
    /// None: the server runs open and every caller is the admin `anonymous`.
    pub tokens: Option<Tokens>,
    pub requests_per_second_per_token: u32,
    pub subscribers_per_token: usize,
}

impl Default for GateOptions {
    fn default() -> GateOptions {
        GateOptions {
            tokens: None,
            requests_per_second_per_token: REQUESTS_PER_SECOND_PER_TOKEN,
            subscribers_per_token: SUBSCRIBERS_PER_TOKEN,
        }
    }
}

pub struct Gate {
    options: GateOptions,
    /// Per principal: a token bucket of requests.
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Per principal: streams open on this node.
    streams: Arc<Mutex<HashMap<String, usize>>>,
}

struct Bucket {
    available: f64,
    updated: Instant,
}

impl Gate {
    pub fn new(options: GateOptions) -> Gate {
        Gate { options, buckets: Mutex::default(), streams: Arc::default() }
    }

    /// Whether callers need a token.
    pub fn is_open(&self) -> bool {
        self.options.tokens.is_none()
    }

    /// The caller of a request with this `Authorization` value, if it may call an endpoint
    /// needing `permission` (for `host`, when the path names one) and is within its rate.
    pub fn admit(
        &self,
        authorization: Option<&[u8]>,
        permission: Permission,
        host: Option<&str>,
    ) -> ApiResult<Principal> {
        let Some(tokens) = &self.options.tokens else {
            return Ok(Principal::anonymous());
        };
        if permission == Permission::Public {
            return Ok(Principal::anonymous());
        }
        let principal = tokens.authenticate(authorization, now_micros())?;
        match host {
            Some(host) => principal.require_for_host(permission, host)?,
            None => principal.require(permission)?,
        }
        self.take_request(&principal.name)?;
        Ok(principal)
    }

    fn take_request(&self, name: &str) -> ApiResult<()> {
        let rate = f64::from(self.options.requests_per_second_per_token.max(1));
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let bucket = buckets.entry(name.to_string()).or_insert(Bucket { available: rate, updated: now });
        bucket.available = (bucket.available + now.duration_since(bucket.updated).as_secs_f64() * rate).min(rate);
        bucket.updated = now;
        if bucket.available >= 1.0 {
            bucket.available -= 1.0;
            return Ok(());
        }
        let wait_seconds = ((1.0 - bucket.available) / rate).ceil().max(1.0) as u64;
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "this token may make {} requests per second; retry later",
                self.options.requests_per_second_per_token
            ),
        )
        .retry_after(wait_seconds))
    }

    /// Counts a stream against its principal's share; the share frees when the slot drops.
    pub fn stream_slot(&self, principal: &Principal) -> ApiResult<TokenStreamSlot> {
        if self.is_open() {
            return Ok(TokenStreamSlot { streams: None, name: String::new() });
        }
        let mut streams = self.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let open = streams.entry(principal.name.clone()).or_insert(0);
        if *open >= self.options.subscribers_per_token {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams_for_token",
                format!(
                    "the token of {:?} already holds {} streams on this node",
                    principal.name, self.options.subscribers_per_token
                ),
            )
            .retry_after(1));
        }
        *open += 1;
        Ok(TokenStreamSlot { streams: Some(self.streams.clone()), name: principal.name.clone() })
    }
}

/// One stream counted against a principal; dropping it frees the place.
pub struct TokenStreamSlot {
    streams: Option<Arc<Mutex<HashMap<String, usize>>>>,
    name: String,
}

impl Drop for TokenStreamSlot {
    fn drop(&mut self) {
        if let Some(streams) = &self.streams {
            let mut streams = streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(open) = streams.get_mut(&self.name) {
                *open -= 1;
                if *open == 0 {
                    streams.remove(&self.name);
                }
            }
        }
    }
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The query parameter a stream may carry its token in (RFC 6750, section 2.3): a browser's
/// `EventSource` cannot set an `Authorization` header, and the operator's page follows the log
/// with one. Only the two stream endpoints accept it, so a token never sits in the URL of a
/// request that changes anything; the server logs no URLs.
pub const QUERY_TOKEN_PARAMETER: &str = "access_token";

/// Whether the route template is a stream, whose token may come in the query.
pub fn is_stream_route(template: &str) -> bool {
    template == "/v1/subscribe" || template == "/v1/watch/{host}"
}

/// The `Authorization` value of a stream request: its header, or `Bearer` and the query's token.
/// Both at once is refused, as RFC 6750 asks, so no one wonders which of two tokens was used.
pub fn stream_authorization(header: Option<&[u8]>, query_token: Option<&str>) -> ApiResult<Option<Vec<u8>>> {
    match (header, query_token) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "invalid_parameter",
            format!("give the token in the Authorization header or in {QUERY_TOKEN_PARAMETER}, not both"),
        )),
        (Some(header), None) => Ok(Some(header.to_vec())),
        (None, Some(token)) => Ok(Some(format!("Bearer {token}").into_bytes())),
        (None, None) => Ok(None),
    }
}

/// The `access_token` of a query string, if it has one.
fn query_token(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(name, _)| name == QUERY_TOKEN_PARAMETER)
        .map(|(_, value)| value.into_owned())
}

/// Middleware of the router: admits the request and hands its [`Principal`] to the handler.
pub async fn middleware(
    State(app): State<AppState>,
    matched: Option<MatchedPath>,
    path_params: Result<RawPathParams, RawPathParamsRejection>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(matched) = matched else {
        // Unrouted requests reach the 404 and 405 fallbacks, which reveal nothing.
        return next.run(request).await;
    };
    if matched.as_str().starts_with("/raft/") {
        // Peer traffic carries the cluster secret instead, checked by its handlers.
        return next.run(request).await;
    }
    let Some(permission) = permission(request.method(), matched.as_str()) else {
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", "no access rule covers this endpoint")
            .into_response();
    };
    let host = path_params
        .as_ref()
        .ok()
        .and_then(|params| params.iter().find(|(name, _)| *name == "host").map(|(_, value)| value));
    let header = request.headers().get(axum::http::header::AUTHORIZATION).map(|value| value.as_bytes());
    let authorization = if is_stream_route(matched.as_str()) {
        match stream_authorization(header, query_token(request.uri().query()).as_deref()) {
            Ok(authorization) => authorization,
            Err(error) => return error.into_response(),
        }
    } else {
        header.map(<[u8]>::to_vec)
    };
    match app.gate.admit(authorization.as_deref(), permission, host) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => {
            app.metrics.refused();
            error.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{create_token, Role};

    fn gate(rate: u32, streams: usize) -> (Gate, String, String) {
        let agent = create_token("web-agents", Role::Agent, &["web-1".to_string()], None).unwrap();
        let auditor = create_token("audit", Role::Auditor, &[], None).unwrap();
        let tokens = Tokens::parse(&format!("{}\n{}\n", agent.line, auditor.line)).unwrap();
        let options =
            GateOptions { tokens: Some(tokens), requests_per_second_per_token: rate, subscribers_per_token: streams };
        (Gate::new(options), format!("Bearer {}", agent.token), format!("Bearer {}", auditor.token))
    }

    #[test]
    fn admits_by_role_and_host() {
        let (gate, agent, auditor) = gate(1_000, 10);
        let code = |result: ApiResult<Principal>| result.map(|principal| principal.name).map_err(|error| error.code);
        assert_eq!(
            code(gate.admit(Some(agent.as_bytes()), Permission::HostRead, Some("web-1"))),
            Ok("web-agents".into())
        );
        assert_eq!(
            code(gate.admit(Some(agent.as_bytes()), Permission::HostRead, Some("db-1"))),
            Err("forbidden".into())
        );
        assert_eq!(code(gate.admit(Some(agent.as_bytes()), Permission::Read, None)), Err("forbidden".into()));
        assert_eq!(code(gate.admit(Some(auditor.as_bytes()), Permission::Read, None)), Ok("audit".into()));
        assert_eq!(code(gate.admit(Some(auditor.as_bytes()), Permission::Write, None)), Err("forbidden".into()));
        assert_eq!(code(gate.admit(None, Permission::Read, None)), Err("unauthenticated".into()));
        assert_eq!(code(gate.admit(None, Permission::Public, None)), Ok("anonymous".into()));
    }

    #[test]
    fn a_token_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
        let (gate, agent, auditor) = gate(5, 10);
        for _ in 0..5 {
            gate.admit(Some(auditor.as_bytes()), Permission::Read, None).unwrap();
        }
        let refused = gate.admit(Some(auditor.as_bytes()), Permission::Read, None).unwrap_err();
        assert_eq!((refused.status, refused.code.as_str()), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
        assert_eq!(refused.retry_after_seconds, Some(1));
        gate.admit(Some(agent.as_bytes()), Permission::HostRead, Some("web-1")).unwrap();
    }

    #[test]
    fn a_token_holds_at_most_its_share_of_streams() {
        let (gate, _, auditor) = gate(1_000, 2);
        let principal = gate.admit(Some(auditor.as_bytes()), Permission::Read, None).unwrap();
        let first = gate.stream_slot(&principal).unwrap();
        let _second = gate.stream_slot(&principal).unwrap();
        let refused = gate.stream_slot(&principal).err().unwrap();
        assert_eq!(refused.code, "too_many_streams_for_token");
        drop(first);
        gate.stream_slot(&principal).unwrap();
    }
}
