//! Replication on one long-lived connection per peer: AppendEntries requests go out as they are
//! produced, without waiting for the answer to the one before, and the answers come back in the
//! order of the requests.
//!
//! The connection starts as an HTTP/1.1 request to [`path::APPEND_STREAM`] on the peer's API
//! listener (so it shares its port, its TLS and its cluster-secret check, which the server makes
//! from the headers before it switches protocols) and is then upgraded to a stream of frames:
//! a 4-byte big-endian length, then that many bytes of this crate's codec. The leader sends
//! `AppendEntriesRequest`s; the follower answers each with a [`StreamAnswer`].
//!
//! Why pipelining matters: with one request in flight, every entry waits for the follower's
//! fsync of the entry before it, so a follower commits one group per round trip. With the
//! requests pipelined, the follower's log store groups every append that arrives during an fsync
//! into the next one, as the leader's does.

use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, SinkExt, Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, Unreachable};
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::codec::{Framed, FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::consensus::peer::client::{PeerError, Peers};
use crate::consensus::types::{NodeId, Raft, TypeConfig};
use crate::domain::codec;

/// The protocol named in the `Upgrade` header of the request that opens a stream.
pub const UPGRADE_PROTOCOL: &str = "fleetlog-append-stream/1";

/// Largest frame either side accepts. One request carries at most a few megabytes of entries
/// (the log reader's byte budget) but always at least one entry, which may be larger.
pub const FRAME_BYTES_MAX: usize = 128 * 1024 * 1024;

/// A follower closes a stream that brought no request for this long.
const SERVER_IDLE_MAX: Duration = Duration::from_secs(60);

/// A leader reuses an idle stream only if it has been idle for less than this, well below the
/// follower's idle limit, so a reused stream is not one the follower is closing.
const CLIENT_IDLE_REUSE_MAX: Duration = Duration::from_secs(20);

/// With requests unanswered, a stream that brings no answer for this long is given up on. It is
/// longer than openraft's per-call budget (one heartbeat interval) because answers to pipelined
/// requests queue behind each other's fsyncs on a busy follower.
const STALL_MAX: Duration = Duration::from_secs(1);

/// What the follower answers to one request: openraft's result, or why its Raft cannot answer
/// (it stopped); the stream ends after either an error result or a stopped Raft.
pub type StreamAnswer = Result<StreamAppendResult<TypeConfig>, String>;

type RequestStream = Framed<reqwest::Upgraded, LengthDelimitedCodec>;

fn frames() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().length_field_type::<u32>().max_frame_length(FRAME_BYTES_MAX).new_codec()
}

/// The follower's side: feeds the requests read from `connection` to Raft and writes its answers
/// back, until the leader closes the stream, sends something undecodable, stays idle for
/// [`SERVER_IDLE_MAX`], or an answer ends the stream.
pub async fn serve<Connection>(raft: Raft, connection: Connection)
where
    Connection: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(connection);
    let requests = futures::stream::unfold(FramedRead::new(reader, frames()), |mut reader| async move {
        let frame = match tokio::time::timeout(SERVER_IDLE_MAX, reader.next()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(error))) => {
                tracing::warn!(%error, "append stream: unreadable frame; closing the stream");
                return None;
            }
            Ok(None) | Err(_) => return None,
        };
        match codec::decode::<AppendEntriesRequest<TypeConfig>>(&frame) {
            Ok(request) => Some((request, reader)),
            Err(error) => {
                tracing::warn!(%error, "append stream: undecodable request; closing the stream");
                None
            }
        }
    });
    let answers = raft.stream_append(requests);
    futures::pin_mut!(answers);
    let mut writer = FramedWrite::new(writer, frames());
    while let Some(answer) = answers.next().await {
        // Answers that are ready together go out in one write.
        let mut ready = vec![answer];
        while let Some(Some(answer)) = answers.next().now_or_never() {
            ready.push(answer);
        }
        for answer in ready {
            let answer: StreamAnswer = answer.map_err(|fatal| fatal.to_string());
            let bytes = match codec::encode(&answer) {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::error!(%error, "append stream: cannot encode an answer");
                    return;
                }
            };
            if writer.feed(Bytes::from(bytes)).await.is_err() {
                return;
            }
        }
        if SinkExt::<Bytes>::flush(&mut writer).await.is_err() {
            return;
        }
    }
}

/// The leader's side of one stream to one peer, kept between sessions: openraft opens a session
/// per payload and per heartbeat, and a session that ended cleanly leaves the connection here
/// for the next one.
pub struct StreamClient {
    target: NodeId,
    address: String,
    /// openraft wants its network clients `Sync`, which a connection is not; the mutex makes it
    /// so, and is never locked: a session holds `&mut self` and reaches inside with `get_mut`.
    idle: std::sync::Mutex<Option<(RequestStream, Instant)>>,
}

impl StreamClient {
    pub fn new(target: NodeId, address: String) -> StreamClient {
        StreamClient { target, address, idle: std::sync::Mutex::new(None) }
    }

    /// Sends every request `input` yields and yields the answers in order. The stream ends
    /// after the input ends and every request is answered (the connection is then kept for the
    /// next session), or after the first error.
    pub fn session<'s, Input>(
        &'s mut self,
        peers: &'s Peers,
        input: Input,
    ) -> BoxFuture<'s, Result<Answers<'s>, RPCError<TypeConfig>>>
    where
        Input: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            let idle = self.idle.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            let reusable = idle.filter(|(_, since)| since.elapsed() < CLIENT_IDLE_REUSE_MAX);
            let connection = match reusable {
                Some((connection, _)) => connection,
                None => {
                    let upgraded = peers
                        .open_stream(
                            self.target,
                            &self.address,
                            crate::consensus::peer::client::path::APPEND_STREAM,
                            UPGRADE_PROTOCOL,
                        )
                        .await
                        .map_err(open_error)?;
                    Framed::new(upgraded, frames())
                }
            };
            let session = Session {
                connection,
                input,
                unanswered: 0,
                input_ended: false,
                deadline: Instant::now(),
                idle: self.idle.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner),
            };
            let answers = futures::stream::unfold(Some(session), Session::next_answer);
            Ok(answers.boxed())
        })
    }
}

struct Session<'s, Input> {
    connection: RequestStream,
    input: Input,
    /// Requests sent and not yet answered.
    unanswered: usize,
    input_ended: bool,
    /// When the stream counts as stalled if no answer arrived by then (only while `unanswered`).
    deadline: Instant,
    idle: &'s mut Option<(RequestStream, Instant)>,
}

type Answer = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// The answers of one session, in the order of its requests.
pub type Answers<'s> = BoxStream<'s, Answer>;

impl<'s, Input> Session<'s, Input>
where
    Input: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    async fn next_answer(state: Option<Self>) -> Option<(Answer, Option<Self>)> {
        let mut session = state?;
        loop {
            if session.input_ended && session.unanswered == 0 {
                // Everything asked was answered: the connection carries nothing stale, keep it.
                *session.idle = Some((session.connection, Instant::now()));
                return None;
            }
            tokio::select! {
                // Answers first: they free the follower's pipeline and report progress sooner.
                biased;
                frame = session.connection.next(), if session.unanswered > 0 => {
                    let answer = match frame {
                        Some(Ok(frame)) => codec::decode::<StreamAnswer>(&frame).map_err(|error| network_error(&error)),
                        Some(Err(error)) => Err(network_error(&error)),
                        None => Err(network_error(&std::io::Error::other("the peer closed the append stream"))),
                    };
                    return Some(match answer {
                        Ok(Ok(result)) => {
                            session.unanswered -= 1;
                            session.deadline = Instant::now() + STALL_MAX;
                            let go_on = result.is_ok();
                            (Ok(result), go_on.then_some(session))
                        }
                        Ok(Err(stopped)) => (Err(network_error(&std::io::Error::other(stopped))), None),
                        Err(error) => (Err(error), None),
                    });
                }
                request = session.input.next(), if !session.input_ended => {
                    let Some(request) = request else {
                        session.input_ended = true;
                        continue;
                    };
                    let sent = match codec::encode(&request) {
                        Ok(bytes) => session.connection.send(Bytes::from(bytes)).await.map_err(|error| network_error(&error)),
                        Err(error) => Err(network_error(&error)),
                    };
                    if let Err(error) = sent {
                        return Some((Err(error), None));
                    }
                    if session.unanswered == 0 {
                        session.deadline = Instant::now() + STALL_MAX;
                    }
                    session.unanswered += 1;
                }
                _ = tokio::time::sleep_until(session.deadline), if session.unanswered > 0 => {
                    let message = format!("no answer on the append stream for {} ms", STALL_MAX.as_millis());
                    return Some((Err(network_error(&std::io::Error::other(message))), None));
                }
            }
        }
    }
}

fn network_error<E: std::error::Error + 'static>(error: &E) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(error))
}

fn open_error(error: PeerError) -> RPCError<TypeConfig> {
    match error {
        PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&error)),
        PeerError::NoAnswer { .. } | PeerError::Refused { .. } => RPCError::Network(NetworkError::new(&error)),
    }
}
