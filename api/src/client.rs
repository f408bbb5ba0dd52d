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
        Ok(SseReader::new(url, response))
    }
}

/// One SSE message (an event block of the stream; a block with only an `id:` or a `retry:` has
/// empty `data`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    /// The reconnection delay the server asked for, in milliseconds.
    pub retry: Option<u64>,
}

/// Bytes the reader takes in without a message coming out before it gives up on the stream: a
/// bound on what one message may hold in memory.
const SSE_MESSAGE_BYTES_MAX: usize = 1024 * 1024;

type EventStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<sse_stream::Sse, sse_stream::Error>> + Send>>;

/// Reads a stream's messages with the `sse-stream` crate, which follows the format in full (CR,
/// LF and CRLF line endings, `retry:`, comments). Comments are not passed on: the server's
/// heartbeats are comments, so a reader that wants to notice a stream gone silent sets a
/// silence limit ([`SseReader::with_silence_limit`]), which counts any bytes received, a
/// heartbeat's included.
pub struct SseReader {
    url: String,
    events: EventStream,
    activity: Arc<Activity>,
    silence_limit: Option<Duration>,
    retry: Option<Duration>,
}

/// What the byte stream under the parser has seen, shared with the reader.
struct Activity {
    started: std::time::Instant,
    /// Milliseconds after `started` of the last bytes received.
    last_bytes_millis: std::sync::atomic::AtomicU64,
    /// Bytes received since the last message came out of the parser.
    bytes_since_message: AtomicUsize,
}

impl Activity {
    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_bytes_millis.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

impl SseReader {
    fn new(url: String, response: reqwest::Response) -> SseReader {
        let activity = Arc::new(Activity {
            started: std::time::Instant::now(),
            last_bytes_millis: Default::default(),
            bytes_since_message: AtomicUsize::new(0),
        });
        let seen = activity.clone();
        let source = url.clone();
        let bytes = futures::StreamExt::map(response.bytes_stream(), move |chunk| {
            let chunk = chunk.map_err(|error| std::io::Error::other(describe(&error)))?;
            seen.last_bytes_millis.store(seen.started.elapsed().as_millis() as u64, Ordering::Relaxed);
            if seen.bytes_since_message.fetch_add(chunk.len(), Ordering::Relaxed) > SSE_MESSAGE_BYTES_MAX {
                return Err(std::io::Error::other(format!(
                    "{source}: an SSE message over {SSE_MESSAGE_BYTES_MAX} bytes"
                )));
            }
            Ok(chunk)
        });
        SseReader {
            url,
            events: Box::pin(sse_stream::SseByteStream::new(bytes)),
            activity,
            silence_limit: None,
            retry: None,
        }
    }

    /// Makes [`SseReader::next`] fail when nothing at all (not even a heartbeat) arrives for
    /// `limit`.
    pub fn with_silence_limit(mut self, limit: Duration) -> SseReader {
        self.silence_limit = Some(limit);
        self
    }

    /// The reconnection delay the server last asked for with `retry:`.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// The next message, or `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<SseMessage>, ClientError> {
        loop {
            let waited = match self.silence_limit {
                None => Ok(futures::StreamExt::next(&mut self.events).await),
                Some(limit) => {
                    let remaining = limit.saturating_sub(self.activity.idle_for());
                    tokio::time::timeout(
                        remaining.max(Duration::from_millis(1)),
                        futures::StreamExt::next(&mut self.events),
                    )
                    .await
                }
            };
            let block = match waited {
                Ok(block) => block,
                // Bytes may have come in without a message (a heartbeat): only a stream silent
                // for the whole limit fails.
                Err(_) => match self.silence_limit {
                    Some(limit) if self.activity.idle_for() >= limit => {
                        return Err(ClientError::Transport {
                            url: self.url.clone(),
                            reason: format!("the stream went silent for {} s", limit.as_secs()),
                        })
                    }
                    _ => continue,
                },
            };
            self.activity.bytes_since_message.store(0, Ordering::Relaxed);
            return match block {
                None => Ok(None),
                Some(Ok(block)) => {
                    if let Some(retry) = block.retry {
                        self.retry = Some(Duration::from_millis(retry));
                    }
                    Ok(Some(SseMessage {
                        id: block.id,
                        event: block.event,
                        data: block.data.unwrap_or_default(),
                        retry: block.retry,
                    }))
                }
                Some(Err(error)) => Err(ClientError::Transport { url: self.url.clone(), reason: error.to_string() }),
            };
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that writes `body` after an SSE response head, then a heartbeat every 200 ms
    /// for 2 s, then nothing (the connection stays open).
    async fn sse_server(body: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
            socket.write_all(head.as_bytes()).await.unwrap();
            socket.write_all(body.as_bytes()).await.unwrap();
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                socket.write_all(b": head 8\n\n").await.unwrap();
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn reads_every_line_ending_and_retry_and_notices_only_real_silence() {
        // A retry block, a message with lone CR line endings, a heartbeat, a CRLF message.
        let body = "retry: 2500\r\rid: 7\revent: wave.started\rdata: {\"a\":1}\rdata: more\r\r: head 7\n\n\
                    id: 8\r\nevent: rollback\r\ndata: x\r\n\r\n";
        let client = Client::new(&sse_server(body).await).unwrap();
        let stream = client.stream("/v1/subscribe", &[], None).await.unwrap();
        let mut stream = stream.with_silence_limit(Duration::from_secs(1));
        let retry = stream.next().await.unwrap().unwrap();
        assert_eq!((retry.data.as_str(), retry.retry), ("", Some(2500)));
        assert_eq!(stream.retry(), Some(Duration::from_millis(2500)));
        let message = stream.next().await.unwrap().unwrap();
        assert_eq!((message.id.as_deref(), message.event.as_deref()), (Some("7"), Some("wave.started")));
        assert_eq!(message.data, "{\"a\":1}\nmore");
        let message = stream.next().await.unwrap().unwrap();
        assert_eq!((message.id.as_deref(), message.data.as_str()), (Some("8"), "x"));
        // Two seconds of heartbeats are not silence; the silence after them is.
        let waiting = std::time::Instant::now();
        let error = stream.next().await.unwrap_err();
        assert!(error.to_string().contains("went silent"), "{error}");
        assert!(waiting.elapsed() >= Duration::from_secs(2), "failed during the heartbeats: {:?}", waiting.elapsed());
    }
}
