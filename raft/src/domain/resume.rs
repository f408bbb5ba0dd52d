//! Where a stream (subscribe or watch) starts, from the client's `Last-Event-ID` header or its
//! `from_seq` parameter. Pure, so the fuzz target can drive it with any text.

/// Why a resume position is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("Last-Event-ID must be a seq, not {0:?}")]
    LastEventIdNotASeq(String),
    #[error("from_seq must be a whole number, not {0:?}")]
    FromSeqNotANumber(String),
    #[error("seq {seq} is beyond the head of the ledger ({head})")]
    BeyondHead { seq: u64, head: u64 },
}

/// The first seq to send, or None when the client gave no position. `Last-Event-ID` (the last
/// seq the client saw) wins over `from_seq`; a position may be at most one past the head (the
/// next event), and seq 0 means the start.
pub fn resume_position(
    last_event_id: Option<&str>,
    from_seq: Option<&str>,
    head: u64,
) -> Result<Option<u64>, ResumeError> {
    let position = match (last_event_id, from_seq) {
        (Some(text), _) => {
            let seen: u64 = text.trim().parse().map_err(|_| ResumeError::LastEventIdNotASeq(text.to_string()))?;
            seen.saturating_add(1)
        }
        (None, Some(text)) => text.parse().map_err(|_| ResumeError::FromSeqNotANumber(text.to_string()))?,
        (None, None) => return Ok(None),
    };
    if position > head.saturating_add(1) {
        return Err(ResumeError::BeyondHead { seq: position, head });
    }
    Ok(Some(position.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_resume_rules() {
        assert_eq!(resume_position(None, None, 10), Ok(None));
        assert_eq!(resume_position(Some(" 4 "), Some("2"), 10), Ok(Some(5)));
        assert_eq!(resume_position(None, Some("0"), 10), Ok(Some(1)));
        assert_eq!(resume_position(None, Some("11"), 10), Ok(Some(11)));
        assert_eq!(resume_position(Some("10"), None, 10), Ok(Some(11)));
        assert_eq!(resume_position(None, Some("12"), 10), Err(ResumeError::BeyondHead { seq: 12, head: 10 }));
        assert_eq!(
            resume_position(Some(&u64::MAX.to_string()), None, 10),
            Err(ResumeError::BeyondHead { seq: u64::MAX, head: 10 })
        );
        assert_eq!(resume_position(Some("x"), None, 10), Err(ResumeError::LastEventIdNotASeq("x".into())));
        assert_eq!(resume_position(None, Some("-1"), 10), Err(ResumeError::FromSeqNotANumber("-1".into())));
        assert_eq!(resume_position(None, Some(" 1"), 10), Err(ResumeError::FromSeqNotANumber(" 1".into())));
    }
}
