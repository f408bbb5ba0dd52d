//! Why the ledger refused a command: a value, never an error. Each code is stable API.

use serde::{Deserialize, Serialize};

/// The class of a rejection, which the API maps to one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectionKind {
    /// Malformed command (HTTP 422).
    Invalid,
    /// Too large (HTTP 413).
    TooLarge,
    /// Conflicts with the ledger's state (HTTP 409).
    Conflict,
}

macro_rules! rejection_codes {
    ($($variant:ident => ($code:literal, $kind:ident)),* $(,)?) => {
        /// Stable machine-readable reason of a rejection.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum RejectionCode { $($variant),* }

        impl RejectionCode {
            pub const ALL: &'static [RejectionCode] = &[$(RejectionCode::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(RejectionCode::$variant => $code),* }
            }

            pub fn kind(self) -> RejectionKind {
                match self { $(RejectionCode::$variant => RejectionKind::$kind),* }
            }
        }
    };
}

rejection_codes! {
    EmptyBatch => ("empty_batch", Invalid),
    MissingField => ("missing_field", Invalid),
    UnknownField => ("unknown_field", Invalid),
    FieldNotAllowed => ("field_not_allowed", Invalid),
    InvalidField => ("invalid_field", Invalid),
    InvalidType => ("invalid_type", Invalid),
    UnknownType => ("unknown_type", Invalid),
    InvalidName => ("invalid_name", Invalid),
    InvalidId => ("invalid_id", Invalid),
    DataNotObject => ("data_not_object", Invalid),
    UnsafeNumber => ("unsafe_number", Invalid),
    DuplicateIdInBatch => ("duplicate_id_in_batch", Invalid),
    ExpectedVersionMultipleStreams => ("expected_version_multiple_streams", Invalid),
    InvalidWaves => ("invalid_waves", Invalid),
    InvalidPolicy => ("invalid_policy", Invalid),
    InvalidCalendar => ("invalid_calendar", Invalid),
    InvalidCron => ("invalid_cron", Invalid),
    InvalidTimeZone => ("invalid_time_zone", Invalid),
    FieldMismatch => ("field_mismatch", Invalid),
    ReservedForSystem => ("reserved_for_system", Invalid),
    EventTooLarge => ("event_too_large", TooLarge),
    BatchTooLarge => ("batch_too_large", TooLarge),
    IdConflict => ("id_conflict", Conflict),
    PartialReplay => ("partial_replay", Conflict),
    WrongExpectedVersion => ("wrong_expected_version", Conflict),
    ReleaseExists => ("release_exists", Conflict),
    UnknownRelease => ("unknown_release", Conflict),
    ReleaseBlocked => ("release_blocked", Conflict),
    ReleaseAlreadyBlocked => ("release_already_blocked", Conflict),
    ReleaseNotBlocked => ("release_not_blocked", Conflict),
    UnknownHost => ("unknown_host", Conflict),
    UnknownDeployment => ("unknown_deployment", Conflict),
    DeploymentExists => ("deployment_exists", Conflict),
    DeploymentActive => ("deployment_active", Conflict),
    DeploymentNotActive => ("deployment_not_active", Conflict),
    DeploymentHalted => ("deployment_halted", Conflict),
    DeploymentNotHalted => ("deployment_not_halted", Conflict),
    UnknownWave => ("unknown_wave", Conflict),
    WaveOutOfOrder => ("wave_out_of_order", Conflict),
    WaveNotStarted => ("wave_not_started", Conflict),
    WaveAlreadyCompleted => ("wave_already_completed", Conflict),
    WavesIncomplete => ("waves_incomplete", Conflict),
    Frozen => ("frozen", Conflict),
    AlreadyFrozen => ("already_frozen", Conflict),
    NotFrozen => ("not_frozen", Conflict),
    NoRollbackTarget => ("no_rollback_target", Conflict),
    NoHosts => ("no_hosts", Conflict),
    SelectorMatchesNobody => ("selector_matches_nobody", Conflict),
    HostsFailed => ("hosts_failed", Conflict),
}

/// A refused command: nothing of its batch was written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: RejectionCode,
    pub message: String,
    /// Position of the offending event in its batch, when one event is to blame.
    pub event_index: Option<u32>,
    /// The field to blame, as a path (`data.policy.min_healthy.percent`), when one is.
    pub field: Option<String>,
}

impl Rejection {
    pub fn new(code: RejectionCode, message: impl Into<String>) -> Rejection {
        Rejection { code, message: message.into(), event_index: None, field: None }
    }

    /// Names the field to blame, unless a more precise one is named already.
    pub fn on(mut self, field: &str) -> Rejection {
        if self.field.is_none() {
            self.field = Some(field.to_string());
        }
        self
    }

    pub fn at(mut self, event_index: usize) -> Rejection {
        if self.event_index.is_none() {
            self.event_index = Some(event_index as u32);
        }
        self
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: {}", self.code.as_str(), self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in RejectionCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "duplicate code {text}");
            assert!(text.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{text}");
        }
    }
}
