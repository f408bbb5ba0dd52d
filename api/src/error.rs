//! The API's one error type: an HTTP status, a stable machine-readable code and a sentence.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fleetlog_raft::consensus::node::WriteError;
use fleetlog_raft::{Rejection, RejectionKind};

#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Position of the offending event in a batch.
    pub event_index: Option<u32>,
    /// The field to blame, as a path, when one is.
    pub field: Option<String>,
    /// Seconds a client should wait before retrying (the Retry-After header of 429 and 503).
    pub retry_after_seconds: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
            event_index: None,
            field: None,
            retry_after_seconds: None,
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn invalid(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unavailable(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after_seconds = Some(seconds);
        self
    }

    pub fn at(mut self, event_index: usize) -> ApiError {
        self.event_index.get_or_insert(event_index as u32);
        self
    }

    /// A storage or internal failure: the node is unwell, not the request.
    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        tracing::error!(%error, "request failed inside the node");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the node failed: {error}"))
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> ApiError {
        let status = match rejection.code.kind() {
            RejectionKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            RejectionKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RejectionKind::Conflict => StatusCode::CONFLICT,
        };
        ApiError {
            status,
            code: rejection.code.as_str().to_string(),
            message: rejection.message,
            event_index: rejection.event_index,
            field: rejection.field,
            retry_after_seconds: None,
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> ApiError {
        let code = match &error {
            WriteError::NoLeader => "no_leader",
            WriteError::NotLeader { .. } => "not_leader",
            WriteError::Timeout(_) => "write_timeout",
            WriteError::Unavailable(_) => "unavailable",
            WriteError::DiskFull(_) => "disk_full",
        };
        ApiError::unavailable(code, error.to_string())
    }
}

impl From<fleetlog_raft::Error> for ApiError {
    fn from(error: fleetlog_raft::Error) -> ApiError {
        match error {
            fleetlog_raft::Error::InstallingSnapshot => ApiError::unavailable("installing_snapshot", error.to_string()),
            error => ApiError::internal(error),
        }
    }
}

impl ApiError {
    /// The Retry-After of this answer: as set, or 1 s for any 503.
    pub fn retry_after_header(&self) -> Option<u64> {
        self.retry_after_seconds.or((self.status == StatusCode::SERVICE_UNAVAILABLE).then_some(1))
    }

    /// The JSON body: `{"error": {"code", "message", "event_index"?, "field"?}}`.
    pub fn body(&self) -> fleetlog_types::ErrorBody {
        fleetlog_types::ErrorBody {
            error: fleetlog_types::ErrorDetail {
                code: self.code.clone(),
                message: self.message.clone(),
                event_index: self.event_index,
                field: self.field.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after_header() {
            response.headers_mut().insert("retry-after", axum::http::HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
