//! Streams served straight on the socket. A connection whose first request is a stream (the
//! listener peeks at it) is not handed to the HTTP framework: this reads the request head,
//! answers with a close-delimited `text/event-stream` body and writes each message with one
//! write. Per watcher that leaves one small task, the socket and the stream's position, instead
//! of a framework connection with its read and write buffers, a body channel and a second task:
//! it is what lets one node hold tens of thousands of agents.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{open, Sink, StreamEnd};
use crate::auth::{self, Principal};
use crate::error::ApiError;
use crate::state::AppState;

/// Largest request head a stream request may have.
const REQUEST_HEAD_BYTES_MAX: usize = 16 * 1024;
const HEADERS_MAX: usize = 64;

/// Whether a connection that starts with these bytes asks for a stream.
pub fn is_stream_request(start: &[u8]) -> bool {
    start.starts_with(b"GET /v1/watch/") || start.starts_with(b"GET /v1/subscribe")
}

/// Serves one connection whose first request is a stream, until the stream ends.
pub async fn serve(app: AppState, mut stream: TcpStream) {
    let head = match tokio::time::timeout(app.client_timeout, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(error)) => return reply_error(&app, &mut stream, error).await,
        Err(_) => return,
    };
    let request = match parse(&head) {
        Ok(request) => request,
        Err(error) => return reply_error(&app, &mut stream, error).await,
    };
    let principal = match admit(&app, &request) {
        Ok(principal) => principal,
        Err(error) => return reply_error(&app, &mut stream, error).await,
    };
    let opened = match open(&app, &principal, &request.path, request.query, request.last_event_id.as_deref()).await {
        Ok(opened) => opened,
        Err(error) => return reply_error(&app, &mut stream, error).await,
    };
    // No length and no chunking: the body ends when the connection does (RFC 9112, 6.3).
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";
    let mut sink = SocketSink { stream, send_timeout: app.send_timeout };
    if sink.send(Bytes::from_static(head.as_bytes())).await.is_err() {
        return;
    }
    match opened.run(&app, &mut sink).await {
        Err(StreamEnd::Stalled) => {
            app.metrics.send_timeouts.fetch_add(1, Ordering::Relaxed);
            // Reset, so the kernel drops what is queued for a client that reads nothing.
            if let Err(error) = sink.stream.set_zero_linger() {
                tracing::debug!(%error, "cannot set SO_LINGER on a stalled stream");
            }
            tracing::debug!(end = %StreamEnd::Stalled, "stream ended");
        }
        Err(end) => tracing::debug!(%end, "stream ended"),
        Ok(()) => {}
    }
}

/// Runs the gate's checks the router's middleware runs for routed requests, with the rule
/// `ACCESS_RULES` gives the route, so the two paths cannot disagree.
fn admit(app: &AppState, request: &StreamRequest) -> Result<Principal, ApiError> {
    let authorization = crate::gate::stream_authorization(
        request.authorization.as_deref().map(str::as_bytes),
        request.query.get(crate::gate::QUERY_TOKEN_PARAMETER).map(String::as_str),
    )?;
    let (template, host) = match request.path.strip_prefix("/v1/watch/") {
        Some(host) => ("/v1/watch/{host}", Some(host)),
        None => ("/v1/subscribe", None),
    };
    let permission = auth::permission(&Method::GET, template)
        .ok_or_else(|| ApiError::internal(format!("{template} has no access rule")))?;
    app.gate.admit(authorization.as_deref(), permission, host).inspect_err(|_| app.metrics.refused())
}

async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, ApiError> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|error| ApiError::bad_request("bad_request", format!("reading the request failed: {error}")))?;
        if read == 0 {
            return Err(ApiError::bad_request("bad_request", "the request head is incomplete"));
        }
        head.extend_from_slice(&chunk[..read]);
        if head.windows(4).any(|window| window == b"\r\n\r\n") {
            head.shrink_to_fit();
            return Ok(head);
        }
        if head.len() > REQUEST_HEAD_BYTES_MAX {
            return Err(ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header_too_large",
                format!("the request head exceeds {REQUEST_HEAD_BYTES_MAX} bytes"),
            ));
        }
    }
}

struct StreamRequest {
    path: String,
    query: HashMap<String, String>,
    last_event_id: Option<String>,
    authorization: Option<String>,
}

fn parse(head: &[u8]) -> Result<StreamRequest, ApiError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut request = httparse::Request::new(&mut headers);
    let malformed = |reason: String| ApiError::bad_request("bad_request", format!("malformed request: {reason}"));
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(malformed("incomplete head".into())),
        Err(error) => return Err(malformed(error.to_string())),
    }
    if request.method != Some("GET") {
        return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "streams are read with GET"));
    }
    let target = request.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut parameters = HashMap::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if parameters.insert(name.to_string(), value.to_string()).is_some() {
            return Err(ApiError::bad_request("invalid_parameter", format!("query parameter {name:?} is repeated")));
        }
    }
    let last_event_id = match request.headers.iter().find(|header| header.name.eq_ignore_ascii_case("last-event-id")) {
        Some(header) => Some(
            std::str::from_utf8(header.value)
                .map_err(|_| ApiError::bad_request("invalid_parameter", "Last-Event-ID must be text"))?
                .to_string(),
        ),
        None => None,
    };
    let authorization = request
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("authorization"))
        .map(|header| String::from_utf8_lossy(header.value).into_owned());
    // Decoded as the router decodes paths, so `/v1/watch/web%2D1` names host web-1 either way.
    let path = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("invalid_parameter", "the path is not UTF-8 once decoded"))?
        .into_owned();
    Ok(StreamRequest { path, query: parameters, last_event_id, authorization })
}

/// A complete HTTP/1.1 answer carrying `error`, for connections served without the router.
pub(crate) fn error_response(error: &ApiError) -> String {
    let body = serde_json::to_string(&error.body()).unwrap_or_default();
    let mut extra = String::new();
    if let Some(seconds) = error.retry_after_header() {
        extra.push_str(&format!("retry-after: {seconds}\r\n"));
    }
    if error.status == StatusCode::UNAUTHORIZED {
        extra.push_str("www-authenticate: Bearer\r\n");
    }
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{body}",
        error.status.as_u16(),
        error.status.canonical_reason().unwrap_or(""),
        body.len()
    )
}

async fn reply_error(app: &AppState, stream: &mut TcpStream, error: ApiError) {
    let response = error_response(&error);
    let _ = tokio::time::timeout(app.send_timeout, async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Writes straight to the client's socket. A client that does not read fills the socket's
/// buffer and blocks only its own stream, and only for the send timeout: every write must make
/// progress within it, or the stream ends ([`StreamEnd::Stalled`]).
struct SocketSink {
    stream: TcpStream,
    send_timeout: Duration,
}

impl Sink for SocketSink {
    async fn send(&mut self, text: Bytes) -> Result<(), StreamEnd> {
        let mut sent = 0;
        while sent < text.len() {
            match tokio::time::timeout(self.send_timeout, self.stream.write(&text[sent..])).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(StreamEnd::ClientGone),
                Ok(Ok(written)) => sent += written,
                Err(_) => return Err(StreamEnd::Stalled),
            }
        }
        Ok(())
    }

    async fn closed(&self) {
        // A stream's client sends nothing after its request: the socket turning readable means
        // it closed (or sent something it should not have, which ends the stream too).
        let mut scratch = [0u8; 16];
        loop {
            if self.stream.readable().await.is_err() {
                return;
            }
            match self.stream.try_read(&mut scratch) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_stream_requests_and_parses_their_heads() {
        assert!(is_stream_request(b"GET /v1/watch/web-1 HTTP/1.1\r\n"));
        assert!(is_stream_request(b"GET /v1/subscribe?type=wave. HTTP/1.1"));
        assert!(!is_stream_request(b"GET /v1/events HTTP/1.1"));
        assert!(!is_stream_request(b"POST /v1/watch/x HTTP/1.1"));
        let request =
            parse(b"GET /v1/subscribe?type=wave.&from_seq=4 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 9\r\n\r\n").unwrap();
        assert_eq!(request.path, "/v1/subscribe");
        assert_eq!(request.query.get("type").map(String::as_str), Some("wave."));
        assert_eq!(request.last_event_id.as_deref(), Some("9"));
        assert_eq!(parse(b"GET /v1/subscribe?a=1&a=2 HTTP/1.1\r\n\r\n").err().unwrap().code, "invalid_parameter");
        assert_eq!(parse(b"GET /v1/\x01 HTTP/1.1\r\n\r\n").err().unwrap().code, "bad_request");
    }
}
