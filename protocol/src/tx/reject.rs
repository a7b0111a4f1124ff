//! Why a transaction is refused, and how each reason reaches the client.

use tonic::{Code, Status};

use crate::proto::RejectReason;

/// Metadata key carrying the machine-readable reason on a refused `Submit`.
pub const REJECT_REASON_METADATA: &str = "kubeledger-reject-reason";

/// A refused transaction: the rule broken and a message naming the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub reason: RejectReason,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    /// The gRPC status code documented for this reason in ledger.proto.
    pub fn code(&self) -> Code {
        code_for(self.reason)
    }

    /// Short lowercase label, used in metrics.
    pub fn label(&self) -> &'static str {
        label_for(self.reason)
    }

    /// The gRPC status for a refused single `Submit`.
    pub fn to_status(&self) -> Status {
        let mut status = Status::new(self.code(), self.message.clone());
        if let Ok(value) = self.reason.as_str_name().parse() {
            status.metadata_mut().insert(REJECT_REASON_METADATA, value);
        }
        status
    }
}

/// The status code documented for each reason.
pub fn code_for(reason: RejectReason) -> Code {
    match reason {
        RejectReason::Unspecified => Code::Unknown,
        RejectReason::Malformed | RejectReason::NonCanonical | RejectReason::InvalidPayload => {
            Code::InvalidArgument
        }
        RejectReason::WrongChain => Code::FailedPrecondition,
        RejectReason::MissingSignature | RejectReason::BadSignature => Code::Unauthenticated,
        RejectReason::TxTooLarge | RejectReason::FieldTooLarge | RejectReason::BatchTooLarge => {
            Code::OutOfRange
        }
        RejectReason::DuplicateCommitted | RejectReason::DuplicatePending => Code::AlreadyExists,
        RejectReason::MempoolFull | RejectReason::MempoolBytesFull | RejectReason::SenderQuota => {
            Code::ResourceExhausted
        }
        RejectReason::ShuttingDown => Code::Unavailable,
        RejectReason::NotAuthorized => Code::PermissionDenied,
        RejectReason::ConfigRefused | RejectReason::ReadOnly => Code::FailedPrecondition,
    }
}

/// Metric label for each reason.
pub fn label_for(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::Unspecified => "unspecified",
        RejectReason::Malformed => "malformed",
        RejectReason::NonCanonical => "non_canonical",
        RejectReason::WrongChain => "wrong_chain",
        RejectReason::MissingSignature => "missing_signature",
        RejectReason::BadSignature => "bad_signature",
        RejectReason::TxTooLarge => "tx_too_large",
        RejectReason::FieldTooLarge => "field_too_large",
        RejectReason::InvalidPayload => "invalid_payload",
        RejectReason::DuplicateCommitted => "duplicate_committed",
        RejectReason::DuplicatePending => "duplicate_pending",
        RejectReason::MempoolFull => "mempool_full",
        RejectReason::ShuttingDown => "shutting_down",
        RejectReason::NotAuthorized => "not_authorized",
        RejectReason::ConfigRefused => "config_refused",
        RejectReason::ReadOnly => "read_only",
        RejectReason::BatchTooLarge => "batch_too_large",
        RejectReason::MempoolBytesFull => "mempool_bytes_full",
        RejectReason::SenderQuota => "sender_quota",
    }
}

/// Rebuilds a rejection from a refused `Submit` status, if it carries one.
pub fn from_status(status: &Status) -> Option<Rejection> {
    let name = status
        .metadata()
        .get(REJECT_REASON_METADATA)?
        .to_str()
        .ok()?;
    let reason = RejectReason::from_str_name(name)?;
    Some(Rejection::new(reason, status.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_through_a_status() {
        for value in 1..=15 {
            let reason = RejectReason::try_from(value).expect("known reason");
            let rejection = Rejection::new(reason, format!("reason {value}"));
            let status = rejection.to_status();
            assert_eq!(status.code(), code_for(reason));
            assert_eq!(from_status(&status), Some(rejection));
        }
    }
}
