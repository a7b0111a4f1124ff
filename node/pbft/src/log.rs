//! Per-sequence-number slots of the message log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::message::{
    CommitCertificate, Digest, Message, Payload, PrePrepare, PreparedCert, ReplicaIndex,
    SignedMessage, Vote,
};

/// Everything a replica knows and promised about one sequence number.
///
/// Fields up to `sent_commit` belong to the current view and are reset on a
/// view change; `prepared` and `committed` survive views because a view
/// change must carry them forward.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Slot {
    /// Accepted PRE-PREPARE of the current view (at most one: equivocation
    /// is detected against it).
    pub pre_prepare: Option<SignedMessage>,
    /// Ledger said the payload is valid (or no validation needed).
    pub validated: bool,
    /// First PREPARE per replica in the current view.
    pub prepares: BTreeMap<ReplicaIndex, SignedMessage>,
    /// First COMMIT per replica in the current view.
    pub commits: BTreeMap<ReplicaIndex, SignedMessage>,
    pub sent_prepare: bool,
    pub sent_commit: bool,
    /// Prepared certificate of the highest view this replica prepared in.
    pub prepared: Option<PreparedCert>,
    /// Committed payload with its certificate (released in seq order).
    pub committed: Option<(Payload, CommitCertificate)>,
}

impl Slot {
    pub fn pre_prepare(&self) -> Option<&PrePrepare> {
        self.pre_prepare.as_ref().and_then(as_pre_prepare)
    }

    /// Forget per-view state when entering a new view.
    pub fn reset_view_state(&mut self) {
        self.pre_prepare = None;
        self.validated = false;
        self.prepares.clear();
        self.commits.clear();
        self.sent_prepare = false;
        self.sent_commit = false;
    }

    /// Votes in `votes` that match `digest`, in replica order.
    pub fn matching<'a>(
        votes: &'a BTreeMap<ReplicaIndex, SignedMessage>,
        digest: &'a Digest,
    ) -> impl Iterator<Item = &'a SignedMessage> + 'a {
        votes
            .values()
            .filter(move |sm| vote_of(sm).is_some_and(|v| &v.digest == digest))
    }
}

pub fn as_pre_prepare(sm: &SignedMessage) -> Option<&PrePrepare> {
    match &sm.message {
        Message::PrePrepare(pp) => Some(pp),
        _ => None,
    }
}

pub fn vote_of(sm: &SignedMessage) -> Option<&Vote> {
    match &sm.message {
        Message::Prepare(v) | Message::Commit(v) => Some(v),
        _ => None,
    }
}
