//! A small HTTP client for the CLI: JSON calls that turn API errors into [`ClientError`], and a
//! reader for Server-Sent Events.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fleetlog_types::ErrorBody;
use serde::de::DeserializeOwned;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{message} ({code}, HTTP {status})")]
    Api { status: u16, code: String, message: String },
    #[error("cannot reach {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("unexpected response from {url}: {reason}")]
    Protocol { url: String, reason: String },
}

/// What a client presents and trusts: a bearer token, and a CA certificate (PEM) for servers that
/// serve TLS with a certificate it signed.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub token: Option<String>,
    pub ca_pem: Option<Vec<u8>>,
}

/// A client of one server, or of a list of servers it fails over between: a request goes to the
/// server that answered last, and moves on to the next only when a connection could not be
/// made (nothing was sent, so trying another node is always safe).
#[derive(Clone)]
pub struct Client {
    bases: Arc<Vec<String>>,
    /// Index in `bases` of the server that answered last.
    current: Arc<AtomicUsize>,
    http: reqwest::Client,
}

impl Client {
    /// `base` is the server's URL, e.g. `http://127.0.0.1:7070`, or several, comma-separated.
    pub fn new(base: &str) -> Result<Client, ClientError> {
        Client::configured(base, &Credentials::default())
    }

    /// A client that sends the token with every request and trusts the CA for https URLs.
    /// `servers` is one URL or a comma-separated list to fail over between.
    pub fn configured(servers: &str, credentials: &Credentials) -> Result<Client, ClientError> {
        let bases: Vec<String> = servers
            .split(',')
            .map(|base| base.trim().trim_end_matches('/').to_string())
            .filter(|base| !base.is_empty())
            .collect();
        let Some(base) = bases.first().cloned() else {
            return Err(ClientError::Transport {
                url: servers.to_string(),
                reason: "no server given (set one with --server or FLEETLOG_SERVER)".to_string(),
            });
        };
        for base in &bases {
            check_server_url(base)?;
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = credentials.token.as_deref().filter(|token| !token.is_empty()) {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                ClientError::Transport { url: base.clone(), reason: "the token must be visible ASCII".to_string() }
            })?;
            // Kept out of debug output.
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // Below the server's idle limit (its client timeout, 30 s by default), so a pooled
            // connection is not reused just as the server closes it.
            .pool_idle_timeout(Duration::from_secs(20))
            .default_headers(headers);
        if let Some(pem) = &credentials.ca_pem {
            let certificate = reqwest::Certificate::from_pem(pem).map_err(|error| ClientError::Transport {
                url: base.clone(),
                reason: format!("the CA file is not a PEM certificate: {error}"),
            })?;
            builder = builder.add_root_certificate(certificate);
        }
        let http =
            builder.build().map_err(|error| ClientError::Transport { url: base.clone(), reason: error.to_string() })?;
        Ok(Client { bases: Arc::new(bases), current: Arc::default(), http })
    }

    /// The server that answered last (the first of the list before any answer).
    pub fn base(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// A GET whose answer is kept as the JSON the server sent (what `--output json` prints).
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.get_as(path, query).await
    }

    /// A GET whose answer is read into its type (one of `fleetlog_types`).
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T, ClientError> {
        self.send(path, |url| self.http.get(url).query(query).timeout(Duration::from_secs(60))).await
    }

    /// A GET whose successful answer is text (a signed checkpoint, a key); errors are still JSON.
    pub async fn get_text(&self, path: &str, query: &[(&str, String)]) -> Result<String, ClientError> {
        let (url, status, bytes) =
            self.exchange(path, |url| self.http.get(url).query(query).timeout(Duration::from_secs(60))).await?;
        if !status.is_success() {
            return Err(error_from(&url, status, &bytes));
        }
        String::from_utf8(bytes.to_vec())
            .map_err(|_| ClientError::Protocol { url, reason: "the answer is not UTF-8 text".into() })
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.post_as(path, body).await
    }

    /// A POST whose answer is read into its type.
    pub async fn post_as<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        self.send(path, |url| self.http.post(url).json(body).timeout(Duration::from_secs(60))).await
    }

    pub async fn delete(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(path, |url| self.http.delete(url).json(body).timeout(Duration::from_secs(60))).await
    }

    /// Any method, with a body when given, and a caller-chosen timeout (membership changes wait
    /// for a learner to catch up).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        self.send(path, |url| {
            let request = self.http.request(method.clone(), url).timeout(timeout);
            match body {
                Some(body) => request.json(body),
                None => request,
            }
        })
        .await
    }

    /// Sends the request `build` makes for a URL to the current server, and to the next ones in
    /// turn while a connection cannot be made; the server that answers becomes the current one.
    async fn response(
        &self,
        path: &str,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<(String, reqwest::Response), ClientError> {
        let count = self.bases.len();
        let first = self.current.load(Ordering::Relaxed) % count;
        let mut unreachable = Vec::new();
        for offset in 0..count {
            let index = (first + offset) % count;
            let url = format!("{}{}", self.bases[index], path);
            match build(&url).send().await {
                Ok(response) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok((url, response));
                }
                Err(error) if error.is_connect() && offset + 1 < count => unreachable.push(self.bases[index].clone()),
                Err(error) => {
                    let mut reason = describe(&error);
                    if !unreachable.is_empty() {
                        reason.push_str(&format!("; also unreachable: {}", unreachable.join(", ")));
                    }
                    return Err(ClientError::Transport { url, reason });
                }
            }
        }
        unreachable!("the loop returns on its last server")
    }

    async fn exchange(
        &self,
        path: &str,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<(String, reqwest::StatusCode, bytes::Bytes), ClientError> {
        let (url, response) = self.response(path, build).await?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| ClientError::Transport { url: url.clone(), reason: describe(&error) })?;
        Ok((url, status, bytes))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        path: &str,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let (url, status, bytes) = self.exchange(path, build).await?;
        if !status.is_success() {
            return Err(error_from(&url, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|error| ClientError::Protocol {
            url: url.clone(),
            reason: format!("HTTP {status}, the body is not the JSON expected: {error}"),
        })
    }

    /// Opens an SSE stream.
    pub async fn stream(
        &self,
        path: &str,
        query: &[(&str, String)],
        last_event_id: Option<u64>,
    ) -> Result<SseReader, ClientError> {
        let (url, response) = self
            .response(path, |url| {
                let request = self.http.get(url).query(query).header("accept", "text/event-stream");
                match last_event_id {
                    Some(seen) => request.header("last-event-id", seen.to_string()),
                    None => request,
                }
            })
            .await?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            // A stream refused with a body that is not an API error still fails with its status,
            // which callers act on (retry a 503, give up on a 403).
            let body = response.bytes().await.unwrap_or_default();
            let body = serde_json::from_slice::<ErrorBody>(&body).unwrap_or_else(|_| ErrorBody {
                error: fleetlog_types::ErrorDetail {
                    code: "unknown".into(),
                    message: "no message".into(),
                    event_index: None,
                    field: None,
                },
            });
            return Err(api_error(status, body));
        }
        Ok(SseReader { url, response, buffer: Vec::new() })
    }
}

/// One SSE message. A heartbeat is a message with only a comment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub comment: Option<String>,
}

/// Bytes of one SSE message the reader accepts before giving up on the stream.
const SSE_MESSAGE_BYTES_MAX: usize = 1024 * 1024;

pub struct SseReader {
    url: String,
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl SseReader {
    /// The next message, or `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<SseMessage>, ClientError> {
        loop {
            if let Some(end) = find_message_end(&self.buffer) {
                let raw: Vec<u8> = self.buffer.drain(..end.0 + end.1).collect();
                return Ok(Some(parse_message(&raw[..end.0])));
            }
            if self.buffer.len() > SSE_MESSAGE_BYTES_MAX {
                return Err(ClientError::Protocol { url: self.url.clone(), reason: "SSE message too large".into() });
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => return Ok(None),
                Err(error) => return Err(ClientError::Transport { url: self.url.clone(), reason: describe(&error) }),
            }
        }
    }
}

/// Position and length of the blank line that ends the first message.
fn find_message_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|pair| pair == b"\n\n").map(|at| (at, 2));
    let crlf = buffer.windows(4).position(|quad| quad == b"\r\n\r\n").map(|at| (at, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// The error an API answer with a non-success status stands for.
fn error_from(url: &str, status: reqwest::StatusCode, body: &[u8]) -> ClientError {
    let Ok(body) = serde_json::from_slice::<ErrorBody>(body) else {
        return ClientError::Protocol {
            url: url.to_string(),
            reason: format!("HTTP {status}, body is not an API error"),
        };
    };
    api_error(status.as_u16(), body)
}

/// An API error answer (`{"error": {"code", "message"}}`), with what to try when it is a 401.
fn api_error(status: u16, body: ErrorBody) -> ClientError {
    let mut message = body.error.message;
    if status == 401 {
        message.push_str("; give a token with --token or FLEETLOG_TOKEN");
    }
    ClientError::Api { status, code: body.error.code, message }
}

/// Refuses a server address that is not an http(s) URL, which reqwest would only call a
/// "builder error" on the first request.
fn check_server_url(base: &str) -> Result<(), ClientError> {
    let parsed = reqwest::Url::parse(base);
    let usable = parsed.as_ref().is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some());
    if usable {
        return Ok(());
    }
    Err(ClientError::Transport {
        url: base.to_string(),
        reason: "the server address must be a URL such as http://127.0.0.1:7070 or https://host:7070 \
                 (set it with --server or FLEETLOG_SERVER)"
            .to_string(),
    })
}

/// Says what went wrong on the way to the server, and what to try, from the causes reqwest keeps
/// (connection refused, a name that does not resolve, TLS trouble, a time-out); the raw text
/// follows in parentheses.
fn describe(error: &reqwest::Error) -> String {
    let raw = error.to_string();
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return format!(
                    "connection refused: is `fleetlog serve` running at that address? (--server or FLEETLOG_SERVER \
                     picks another; {raw})"
                );
            }
        }
        source = cause.source();
    }
    let chain = causes.join(": ");
    let hint = if chain.contains("dns error") || chain.contains("failed to lookup address") {
        "the server's host name could not be resolved"
    } else if chain.contains("UnknownIssuer") {
        "the server's TLS certificate is not trusted: give the CA that signed it with --tls-ca or FLEETLOG_TLS_CA"
    } else if chain.contains("NotValidForName") || chain.contains("not valid for name") {
        "the server's TLS certificate does not name this host: use the name or address it was issued for"
    } else if chain.contains("InvalidContentType") || chain.contains("corrupt message") {
        "the server did not answer in TLS: use http:// for a server without --tls-cert"
    } else if error.is_timeout() {
        "no answer in time: the server may be overloaded or unreachable"
    } else if error.is_connect() {
        "cannot connect to the server"
    } else {
        return format!("{raw}{}", if chain.is_empty() { String::new() } else { format!(": {chain}") });
    };
    format!("{hint} ({raw}{})", if chain.is_empty() { String::new() } else { format!(": {chain}") })
}

pub fn parse_message(raw: &[u8]) -> SseMessage {
    let text = String::from_utf8_lossy(raw);
    let mut message = SseMessage::default();
    let mut data_lines = Vec::new();
    for line in text.lines() {
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "" => message.comment = Some(value.to_string()),
            "id" => message.id = Some(value.to_string()),
            "event" => message.event = Some(value.to_string()),
            "data" => data_lines.push(value.to_string()),
            _ => {}
        }
    }
    message.data = data_lines.join("\n");
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_comments_and_multiline_data() {
        let message = parse_message(b"id: 7\nevent: wave.started\ndata: {\"a\":1}\ndata: more");
        assert_eq!(message.id.as_deref(), Some("7"));
        assert_eq!(message.event.as_deref(), Some("wave.started"));
        assert_eq!(message.data, "{\"a\":1}\nmore");
        assert_eq!(parse_message(b": head 12").comment.as_deref(), Some("head 12"));
        assert_eq!(find_message_end(b"a\n\nb"), Some((1, 2)));
    }
}
