//! What auditors use to check the ledger without trusting it: signed checkpoints, RFC 9162
//! inclusion and consistency proofs, the NDJSON export, and the fleet's changes between two
//! moments. Every node serves them from its own applied state.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use fleetlog_raft::domain::checkpoint::Checkpoint;
use fleetlog_raft::domain::event::ClusterIdentity;
use fleetlog_raft::domain::kv::KvRead;
use fleetlog_raft::domain::merkle::store::StoredTree;
use fleetlog_raft::domain::merkle::Hash;
use fleetlog_raft::domain::{ledger, views};
use fleetlog_types as types;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{ApiError, ApiResult};
use crate::input::Params;
use crate::routes::events::beyond_head;
use crate::state::AppState;
use crate::wire;

/// Events read per step of an export, and bytes sent per chunk at most (about).
const EXPORT_PAGE_EVENTS: usize = 1_000;
/// Chunks an export may have read ahead of a slow client.
const EXPORT_CHUNKS_AHEAD: usize = 4;

fn no_identity() -> ApiError {
    ApiError::unavailable(
        "no_signing_key",
        "the cluster has not recorded its identity and checkpoint key yet; it does once a leader is elected",
    )
}

fn identity(kv: &dyn KvRead) -> fleetlog_raft::Result<Result<ClusterIdentity, ApiError>> {
    Ok(ledger::cluster_identity(kv)?.ok_or_else(no_identity))
}

fn tree_beyond_head(size: u64, head: u64) -> ApiError {
    ApiError::not_found("tree_size_beyond_head", format!("tree size {size} is beyond the head of the ledger ({head})"))
}

/// The tree size asked for, or the head; refused beyond the head.
fn size_within_head(wanted: Option<u64>, head: u64) -> Result<u64, ApiError> {
    match wanted {
        Some(size) if size > head => Err(tree_beyond_head(size, head)),
        Some(size) => Ok(size),
        None => Ok(head),
    }
}

fn encode_hashes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|hash| BASE64.encode(hash)).collect()
}

/// `GET /v1/checkpoint[?tree_size=N]`: the signed note of the latest tree (or of size N).
pub async fn checkpoint(
    State(app): State<AppState>,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let params = Params::new(raw, &["tree_size"])?;
    let wanted = params.number("tree_size")?;
    let note = app
        .read(params.linearizable(), move |kv| {
            let identity = match identity(kv)? {
                Ok(identity) => identity,
                Err(error) => return Ok(Err(error)),
            };
            let size = match size_within_head(wanted, views::head(kv)?.seq) {
                Ok(size) => size,
                Err(error) => return Ok(Err(error)),
            };
            let root = StoredTree::new(kv).root(size)?;
            let checkpoint =
                Checkpoint { origin: fleetlog_raft::domain::checkpoint::origin(&identity.cluster_id), size, root };
            Ok(Ok(identity.signer().sign(&checkpoint)))
        })
        .await??;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response())
}

/// `GET /v1/checkpoint/key`: the verifier string of the checkpoint key, one line.
pub async fn checkpoint_key(State(app): State<AppState>) -> ApiResult<Response> {
    let identity = app.read(false, identity).await??;
    let line = format!("{}\n", identity.signer().verifier());
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], line).into_response())
}

/// `GET /v1/proofs/inclusion?seq=S[&tree_size=N]`: the audit path of event S in the tree of N
/// events (default: the head).
pub async fn inclusion(
    State(app): State<AppState>,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult<Json<types::InclusionProof>> {
    let params = Params::new(raw, &["seq", "tree_size"])?;
    let seq = params
        .number("seq")?
        .filter(|seq| *seq >= 1)
        .ok_or_else(|| ApiError::bad_request("invalid_parameter", "seq (a whole number ≥ 1) is required"))?;
    let wanted = params.number("tree_size")?;
    let (size, hashes) = app
        .read(params.linearizable(), move |kv| {
            let size = match size_within_head(wanted, views::head(kv)?.seq) {
                Ok(size) => size,
                Err(error) => return Ok(Err(error)),
            };
            if seq > size {
                return Ok(Err(ApiError::bad_request(
                    "seq_outside_tree",
                    format!("seq {seq} is not in a tree of {size} events"),
                )));
            }
            Ok(Ok((size, StoredTree::new(kv).inclusion_proof(seq - 1, size)?)))
        })
        .await??;
    Ok(Json(types::InclusionProof { seq, leaf_index: seq - 1, tree_size: size, hashes: encode_hashes(&hashes) }))
}

/// `GET /v1/proofs/consistency?from_size=M[&to_size=N]`: proof that the tree of M events is a
/// prefix of the tree of N (default: the head).
pub async fn consistency(
    State(app): State<AppState>,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult<Json<types::ConsistencyProof>> {
    let params = Params::new(raw, &["from_size", "to_size"])?;
    let from = params
        .number("from_size")?
        .filter(|size| *size >= 1)
        .ok_or_else(|| ApiError::bad_request("invalid_parameter", "from_size (a whole number ≥ 1) is required"))?;
    let wanted = params.number("to_size")?;
    let (to, hashes) = app
        .read(params.linearizable(), move |kv| {
            let to = match size_within_head(wanted, views::head(kv)?.seq) {
                Ok(to) => to,
                Err(error) => return Ok(Err(error)),
            };
            if from > to {
                return Ok(Err(ApiError::bad_request(
                    "sizes_out_of_order",
                    format!("from_size {from} is larger than to_size {to}"),
                )));
            }
            Ok(Ok((to, StoredTree::new(kv).consistency_proof(from, to)?)))
        })
        .await??;
    Ok(Json(types::ConsistencyProof { from_size: from, to_size: to, hashes: encode_hashes(&hashes) }))
}

/// `GET /v1/export[?from_seq=A][&to_seq=B]`: committed events as NDJSON, one canonical event per
/// line, from A (default 1) to B (default: the head when the export starts). Streamed in pages,
/// so an export of the whole ledger holds a few pages in memory at a time.
pub async fn export(State(app): State<AppState>, Query(raw): Query<HashMap<String, String>>) -> ApiResult<Response> {
    let params = Params::new(raw, &["from_seq", "to_seq"])?;
    let from = params.number("from_seq")?.unwrap_or(1).max(1);
    let wanted = params.number("to_seq")?;
    let to = app
        .read(params.linearizable(), move |kv| {
            let head = views::head(kv)?.seq;
            Ok(match wanted {
                _ if from > head + 1 => Err(beyond_head(from, head)),
                Some(to) if to > head => Err(beyond_head(to, head)),
                Some(to) if to + 1 < from => {
                    Err(ApiError::bad_request("seqs_out_of_order", format!("to_seq {to} is before from_seq {from}")))
                }
                Some(to) => Ok(to),
                None => Ok(head),
            })
        })
        .await??;
    let (sender, receiver) = mpsc::channel::<Bytes>(EXPORT_CHUNKS_AHEAD);
    let database = app.node.database().clone();
    tokio::task::spawn_blocking(move || {
        // One consistent snapshot for the whole export: a snapshot install may replace the state
        // machine meanwhile, and a live reader would then find events missing.
        let reader = match database.consistent_reader() {
            Ok(reader) => reader,
            Err(error) => {
                // The status line is gone already; ending early makes the export visibly short.
                tracing::error!(%error, at = from, "export stopped");
                return;
            }
        };
        let mut next = from;
        while next <= to {
            let mut chunk = Vec::with_capacity(EXPORT_PAGE_EVENTS * 600);
            let mut read = 0;
            let visited = views::visit_events(&reader, next, to, &mut |event| {
                chunk.extend_from_slice(event.canonical_json().as_bytes());
                chunk.push(b'\n');
                next = event.seq + 1;
                read += 1;
                Ok(read < EXPORT_PAGE_EVENTS)
            });
            if let Err(error) = visited {
                // The status line is gone already; ending early makes the export visibly short.
                tracing::error!(%error, at = next, "export stopped");
                return;
            }
            if read == 0 || sender.blocking_send(Bytes::from(chunk)).is_err() {
                return;
            }
        }
    });
    let body = Body::from_stream(ReceiverStream::new(receiver).map(Ok::<_, Infallible>));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (header::HeaderName::from_static("x-fleetlog-last-seq"), to.to_string()),
        ],
        body,
    )
        .into_response())
}

/// A moment given as a seq (digits) or an RFC 3339 time.
fn moment(params: &Params, name: &str) -> ApiResult<Option<Moment>> {
    let Some(text) = params.text(name) else {
        return Ok(None);
    };
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        let seq = text
            .parse()
            .map_err(|_| ApiError::bad_request("invalid_parameter", format!("{name} {text:?} is too large")))?;
        return Ok(Some(Moment::Seq(seq)));
    }
    match fleetlog_raft::domain::event::parse_time(&text) {
        Some(time) => Ok(Some(Moment::Time(time))),
        None => Err(ApiError::bad_request(
            "invalid_parameter",
            format!("{name} is a seq or an RFC 3339 time such as 2026-11-28T06:00:00Z, not {text:?}"),
        )),
    }
}

#[derive(Clone, Copy, Debug)]
enum Moment {
    Seq(u64),
    Time(i64),
}

/// The seq a moment stands for: a time means the last event at or before it (0 before the first).
fn resolve(kv: &dyn KvRead, moment: Moment, head: u64) -> fleetlog_raft::Result<Result<u64, ApiError>> {
    Ok(match moment {
        Moment::Seq(seq) if seq > head => Err(beyond_head(seq, head)),
        Moment::Seq(seq) => Ok(seq),
        Moment::Time(time) => Ok(views::seq_at_time(kv, time)?.unwrap_or(0)),
    })
}

/// `GET /v1/fleet/diff?from=…[&to=…][&service=…][&env=…]`: hosts whose registration, desired
/// or observed release differs between two moments (seqs or times; `to` defaults to now).
pub async fn fleet_diff(
    State(app): State<AppState>,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let params = Params::new(raw, &["from", "to", "service", "env"])?;
    let from = moment(&params, "from")?
        .ok_or_else(|| ApiError::bad_request("invalid_parameter", "from (a seq or an RFC 3339 time) is required"))?;
    let to = moment(&params, "to")?;
    let service = crate::routes::views::name_param(&params, "service")?;
    let env = crate::routes::views::name_param(&params, "env")?;
    let (from_seq, to_seq, changes) = app
        .read(params.linearizable(), move |kv| {
            let head = views::head(kv)?.seq;
            let from_seq = match resolve(kv, from, head)? {
                Ok(seq) => seq,
                Err(error) => return Ok(Err(error)),
            };
            let to_seq = match to.map(|to| resolve(kv, to, head)).transpose()? {
                Some(Ok(seq)) => seq,
                Some(Err(error)) => return Ok(Err(error)),
                None => head,
            };
            if from_seq > to_seq {
                return Ok(Err(ApiError::bad_request(
                    "moments_out_of_order",
                    format!("from is seq {from_seq}, after to (seq {to_seq})"),
                )));
            }
            let changes = views::fleet_diff(kv, service.as_deref(), env.as_deref(), from_seq, to_seq)?;
            Ok(Ok((from_seq, to_seq, changes)))
        })
        .await??;
    let hosts: Vec<types::HostChange> = changes
        .iter()
        .map(|change| types::HostChange {
            host: change.after.host.as_str().into(),
            service: change.after.service.as_str().into(),
            env: change.after.env.as_str().into(),
            before: change.before.as_ref().map(wire::host),
            after: wire::host(&change.after),
        })
        .collect();
    Ok(Json(types::FleetDiff { from_seq, to_seq, changed: hosts.len() as u64, hosts }).into_response())
}
