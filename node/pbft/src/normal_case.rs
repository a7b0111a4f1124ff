//! PRE-PREPARE / PREPARE / COMMIT and in-order release of committed blocks.

use crate::log::{as_pre_prepare, vote_of, Slot};
use crate::message::{
    CommitCertificate, Digest, Message, Payload, PrePrepare, PreparedCert, Seq, SignedMessage,
    View, Vote,
};
use crate::replica::{Action, CatchUpSent, RejectReason, Replica};

impl Replica {
    pub(crate) fn on_propose(&mut self, payload: Payload, out: &mut Vec<Action>) {
        let reason = if self.st.in_view_change {
            Some(RejectReason::ViewChangeInProgress)
        } else if !self.is_primary() {
            Some(RejectReason::NotPrimary)
        } else if self.fetching.is_some() {
            Some(RejectReason::StateTransferInProgress)
        } else {
            None
        };
        let seq = self
            .st
            .next_seq
            .max(self.st.last_committed.saturating_add(1))
            .max(self.st.stable.seq.saturating_add(1));
        let reason = reason.or((seq > self.high_watermark()).then_some(RejectReason::WindowFull));
        if let Some(reason) = reason {
            out.push(Action::ProposalRejected { payload, reason });
            return;
        }
        // The node names this replica already (its caches key payloads by
        // digest); a payload naming another would be refused by the backups.
        let mut payload = payload;
        payload.proposer = self.me;
        let digest = payload.digest();
        let view = self.st.view;
        tracing::debug!(me = self.me, view, seq, "propose");
        let sm = self.sign(Message::PrePrepare(PrePrepare {
            view,
            seq,
            digest,
            payload,
        }));
        out.push(Action::Broadcast(sm.clone()));
        self.st.next_seq = seq + 1;
        let slot = self.st.slots.entry(seq).or_default();
        slot.pre_prepare = Some(sm);
        // The primary's pre-prepare is its vote; it validated its own batch.
        slot.validated = true;
        self.check_prepared(seq, out);
        self.update_request_timer(false, out);
    }

    pub(crate) fn on_pre_prepare(&mut self, sm: SignedMessage, out: &mut Vec<Action>) {
        let Some(pp) = as_pre_prepare(&sm) else {
            return;
        };
        let (seq, digest, view) = (pp.seq, pp.digest, pp.view);
        if sm.signer != self.primary() {
            self.stats.not_from_primary += 1;
            return;
        }
        if !self.in_window(seq) {
            self.stats.out_of_window += 1;
            return;
        }
        if pp.payload.digest() != digest {
            self.stats.malformed += 1;
            return;
        }
        let lc = self.st.last_committed;
        let slot = self.st.slots.entry(seq).or_default();
        if let Some(existing) = slot.pre_prepare() {
            if existing.digest != digest {
                // Two signed proposals for one (v, n): proof of a faulty primary.
                tracing::warn!(me = self.me, view, seq, "equivocating primary");
                self.stats.equivocations += 1;
                self.start_view_change(view.saturating_add(1), out);
            }
            return;
        }
        if let Some((_, cert)) = &slot.committed {
            if cert.digest != digest {
                self.stats.equivocations += 1;
                return;
            }
        }
        if !pp.payload.is_null() && pp.payload.proposer != sm.signer {
            // A fresh proposal names its primary; re-issued ones come in a
            // NEW-VIEW, whose pre-prepares are installed without this path.
            self.stats.malformed += 1;
            return;
        }
        let already_decided = seq <= lc || slot.committed.is_some();
        let payload = pp.payload.clone();
        slot.pre_prepare = Some(sm);
        if already_decided {
            // Still vote, to help peers finish, but no need to re-validate.
            slot.validated = true;
            self.send_prepare(seq, out);
        } else {
            out.push(Action::ValidatePayload {
                seq,
                view,
                digest,
                payload,
            });
        }
        // A fresh proposal is the primary doing its part: the request timer
        // restarts, so a large block that takes long to validate and commit
        // is not mistaken for a silent primary. A primary that stops
        // proposing (or proposes to too few) still times out.
        self.update_request_timer(!already_decided, out);
    }

    pub(crate) fn on_payload_validated(
        &mut self,
        seq: Seq,
        view: View,
        digest: Digest,
        valid: bool,
        out: &mut Vec<Action>,
    ) {
        if view != self.st.view || self.st.in_view_change {
            return;
        }
        let Some(slot) = self.st.slots.get_mut(&seq) else {
            return;
        };
        if slot.validated || slot.pre_prepare().is_none_or(|pp| pp.digest != digest) {
            return;
        }
        if valid {
            slot.validated = true;
            self.send_prepare(seq, out);
        } else {
            tracing::warn!(
                me = self.me,
                view,
                seq,
                "primary proposed an invalid payload"
            );
            self.stats.invalid_payloads += 1;
            self.start_view_change(view.saturating_add(1), out);
        }
    }

    /// Backups vote PREPARE for the accepted pre-prepare (primary never does).
    pub(crate) fn send_prepare(&mut self, seq: Seq, out: &mut Vec<Action>) {
        let view = self.st.view;
        let is_primary = self.is_primary();
        let Some(slot) = self.st.slots.get(&seq) else {
            return;
        };
        let Some(digest) = slot.pre_prepare().map(|pp| pp.digest) else {
            return;
        };
        if !is_primary && !slot.sent_prepare {
            let sm = self.sign(Message::Prepare(Vote { view, seq, digest }));
            out.push(Action::Broadcast(sm.clone()));
            if let Some(slot) = self.st.slots.get_mut(&seq) {
                slot.sent_prepare = true;
                slot.prepares.insert(self.me, sm);
            }
        }
        self.check_prepared(seq, out);
    }

    pub(crate) fn on_prepare(&mut self, sm: SignedMessage, out: &mut Vec<Action>) {
        let Some(v) = vote_of(&sm).copied() else {
            return;
        };
        if sm.signer == self.primary() {
            self.stats.not_from_primary += 1;
            return;
        }
        if !self.in_window(v.seq) {
            self.stats.out_of_window += 1;
            return;
        }
        let slot = self.st.slots.entry(v.seq).or_default();
        match slot.prepares.get(&sm.signer).and_then(vote_of) {
            Some(prev) if prev.digest != v.digest => self.stats.equivocations += 1,
            Some(_) => {}
            None => {
                slot.prepares.insert(sm.signer, sm);
                self.check_prepared(v.seq, out);
            }
        }
    }

    pub(crate) fn on_commit(&mut self, sm: SignedMessage, out: &mut Vec<Action>) {
        let Some(v) = vote_of(&sm).copied() else {
            return;
        };
        if !self.in_window(v.seq) {
            self.stats.out_of_window += 1;
            return;
        }
        let slot = self.st.slots.entry(v.seq).or_default();
        match slot.commits.get(&sm.signer).and_then(vote_of) {
            Some(prev) if prev.digest != v.digest => self.stats.equivocations += 1,
            Some(_) => {}
            None => {
                slot.commits.insert(sm.signer, sm);
                self.check_committed(v.seq, out);
            }
        }
    }

    /// prepared = validated pre-prepare + quorum-1 matching backup prepares.
    pub(crate) fn check_prepared(&mut self, seq: Seq, out: &mut Vec<Action>) {
        let primary = self.primary();
        let need = self.vset.quorum().saturating_sub(1);
        let view = self.st.view;
        let Some(slot) = self.st.slots.get_mut(&seq) else {
            return;
        };
        if slot.sent_commit || !slot.validated {
            return;
        }
        let (Some(pp_sm), Some(digest)) = (
            slot.pre_prepare.clone(),
            slot.pre_prepare().map(|pp| pp.digest),
        ) else {
            return;
        };
        let prepares: Vec<SignedMessage> = Slot::matching(&slot.prepares, &digest)
            .filter(|sm| sm.signer != primary)
            .cloned()
            .collect();
        if prepares.len() < need {
            return;
        }
        tracing::debug!(me = self.me, view, seq, "prepared");
        slot.prepared = Some(PreparedCert {
            pre_prepare: pp_sm,
            prepares,
        });
        let sm = self.sign(Message::Commit(Vote { view, seq, digest }));
        out.push(Action::Broadcast(sm.clone()));
        if let Some(slot) = self.st.slots.get_mut(&seq) {
            slot.sent_commit = true;
            slot.commits.insert(self.me, sm);
        }
        self.check_committed(seq, out);
    }

    /// committed-local = prepared here + a quorum of matching commits.
    pub(crate) fn check_committed(&mut self, seq: Seq, out: &mut Vec<Action>) {
        let quorum = self.vset.quorum();
        let view = self.st.view;
        let Some(slot) = self.st.slots.get_mut(&seq) else {
            return;
        };
        if slot.committed.is_some() || !slot.sent_commit {
            return;
        }
        let Some(pp) = slot.pre_prepare() else {
            return;
        };
        let (digest, payload) = (pp.digest, pp.payload.clone());
        let commits: Vec<SignedMessage> = Slot::matching(&slot.commits, &digest)
            .take(quorum)
            .cloned()
            .collect();
        if commits.len() < quorum {
            return;
        }
        tracing::debug!(me = self.me, view, seq, "committed-local");
        slot.committed = Some((
            payload,
            CommitCertificate {
                view,
                seq,
                digest,
                commits,
            },
        ));
        self.release_commits(out);
    }

    /// Emit `Commit` strictly in sequence order, once per seq.
    pub(crate) fn release_commits(&mut self, out: &mut Vec<Action>) {
        if self.fetching.is_some() {
            return;
        }
        let mut progressed = false;
        loop {
            let next = self.st.last_committed.saturating_add(1);
            let Some((payload, cert)) = self.st.slots.get(&next).and_then(|s| s.committed.clone())
            else {
                break;
            };
            out.push(Action::Commit {
                seq: next,
                view: cert.view,
                payload,
                certificate: cert,
            });
            self.st.last_committed = next;
            progressed = true;
        }
        if progressed {
            self.st.vc_attempts = 0;
            self.update_request_timer(true, out);
        }
    }

    /// Catch-up relay: a committed payload with a quorum of commits.
    pub(crate) fn on_commit_proof(&mut self, sm: SignedMessage, out: &mut Vec<Action>) {
        let Message::Committed {
            payload,
            certificate,
        } = sm.message
        else {
            return;
        };
        let seq = certificate.seq;
        if seq <= self.st.last_committed {
            return;
        }
        if !self.in_window(seq) {
            self.stats.out_of_window += 1;
            return;
        }
        if payload.digest() != certificate.digest || !certificate.verify(&self.vset) {
            self.stats.invalid_proofs += 1;
            return;
        }
        let slot = self.st.slots.entry(seq).or_default();
        match &slot.committed {
            Some((_, c)) if c.digest != certificate.digest => {
                // Only possible with more than f faulty replicas.
                tracing::error!(me = self.me, seq, "conflicting commit certificates");
                self.stats.invalid_proofs += 1;
            }
            Some(_) => {}
            None => {
                slot.committed = Some((payload, certificate));
                self.release_commits(out);
            }
        }
    }

    /// Send a lagging peer our stable certificate and the commit
    /// certificates it is missing. The certificate goes to any peer whose
    /// stable checkpoint is behind ours, even one that committed as far as
    /// we did: its window ends L past its own stable checkpoint, so it
    /// could accept nothing further.
    /// Sends a replica behind us, whose VIEW-CHANGE for view `target` says
    /// where it stands, our stable certificate and the committed blocks it
    /// lacks. A VIEW-CHANGE for a view no higher than one already answered
    /// (a replay, or a retransmission) gets only what was not sent yet: a
    /// replayed message must not make this replica sign and resend a window
    /// of blocks each time. A higher view, which only its signer can ask
    /// for, starts over from what the replica says it has; so does a
    /// VIEW-CHANGE of the same view that reports more progress (its signer
    /// re-signs it when it retransmits: the blocks sent before may have been
    /// lost, or dropped while it fetched state, as out of its window).
    pub(crate) fn send_catch_up(
        &mut self,
        to: crate::message::ReplicaIndex,
        target: crate::message::View,
        their_stable: Seq,
        their_lc: Seq,
        out: &mut Vec<Action>,
    ) {
        let sent = self.caught_up.get(&to).copied().unwrap_or_default();
        let reported = (their_stable, their_lc);
        let fresh = !self.caught_up.contains_key(&to)
            || target > sent.target
            || (target == sent.target && reported > sent.reported);
        let (sent_through, sent_stable) = if fresh {
            (0, 0)
        } else {
            (sent.through, sent.stable)
        };
        let stable = self.st.stable.seq;
        if their_stable < stable && sent_stable < stable && !self.st.stable.proof.is_empty() {
            let m = self.sign(Message::StableProof(self.st.stable.proof.clone()));
            out.push(Action::Send { to, msg: m });
        }
        let last_committed = self.st.last_committed;
        // One entry per validator at most: `to` is one (checked on receipt).
        self.caught_up.insert(
            to,
            CatchUpSent {
                target: target.max(sent.target),
                through: last_committed.max(sent_through),
                stable: stable.max(sent_stable),
                reported: if fresh { reported } else { sent.reported },
            },
        );
        if their_lc >= last_committed {
            return;
        }
        let from = their_lc
            .max(self.st.stable.seq)
            .max(sent_through)
            .saturating_add(1);
        if from > self.st.last_committed {
            // BTreeMap::range panics on an inverted range.
            return;
        }
        let proofs: Vec<Message> = self
            .st
            .slots
            .range(from..=self.st.last_committed)
            .filter_map(|(_, s)| s.committed.clone())
            .map(|(payload, certificate)| Message::Committed {
                payload,
                certificate,
            })
            .collect();
        for m in proofs {
            let msg = self.sign(m);
            out.push(Action::Send { to, msg });
        }
    }
}
