//! VIEW-CHANGE / NEW-VIEW: validation, computing and checking the O set.

use std::collections::{BTreeMap, BTreeSet};

use crate::checkpoint::verify_checkpoint_proof;
use crate::log::{as_pre_prepare, vote_of};
use crate::message::{
    Digest, Message, NewView, Payload, PrePrepare, PreparedCert, Seq, SignedMessage, View,
    ViewChange,
};
use crate::replica::{Action, Replica, StableCheckpoint, MAX_PATIENCE};
use crate::validators::ValidatorSet;

/// How many of our own past VIEW-CHANGEs we keep for retransmission.
const MAX_SENT_VIEW_CHANGES: usize = 8;

/// The new primary's decision, recomputed by every backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewViewPlan {
    pub stable: StableCheckpoint,
    /// Digest and payload for every seq in (stable.seq, max_s].
    pub entries: BTreeMap<Seq, (Digest, Payload)>,
}

fn as_view_change(sm: &SignedMessage) -> Option<&ViewChange> {
    match &sm.message {
        Message::ViewChange(vc) => Some(vc),
        _ => None,
    }
}

/// Full validation of a VIEW-CHANGE body (outer signature checked by caller).
/// The epoch's base checkpoint is stable without a certificate of this set
/// (the previous set certified it); anything older is not of this epoch.
pub(crate) fn valid_view_change(
    vset: &ValidatorSet,
    window: u64,
    base: &StableCheckpoint,
    vc: &ViewChange,
) -> bool {
    if vc.stable_seq < base.seq {
        return false;
    }
    if vc.stable_seq == base.seq {
        if !vc.checkpoint_proof.is_empty() {
            return false;
        }
    } else {
        match verify_checkpoint_proof(vset, &vc.checkpoint_proof) {
            Some(cp) if cp.seq == vc.stable_seq => {}
            _ => return false,
        }
    }
    if vc.prepared.len() as u64 > window {
        return false;
    }
    let mut seqs = BTreeSet::new();
    vc.prepared.iter().all(|c| {
        valid_prepared_cert(vset, vc.new_view, vc.stable_seq, window, c)
            .is_some_and(|seq| seqs.insert(seq))
    })
}

fn valid_prepared_cert(
    vset: &ValidatorSet,
    new_view: View,
    stable_seq: Seq,
    window: u64,
    cert: &PreparedCert,
) -> Option<Seq> {
    let pp = as_pre_prepare(&cert.pre_prepare)?;
    let primary = vset.primary(pp.view);
    let ok = pp.view < new_view
        && cert.pre_prepare.signer == primary
        && pp.seq > stable_seq
        && pp.seq <= stable_seq.saturating_add(window)
        && pp.payload.digest() == pp.digest
        && cert.pre_prepare.verify(vset);
    if !ok {
        return None;
    }
    let mut signers = BTreeSet::new();
    for p in &cert.prepares {
        let matches = matches!(&p.message, Message::Prepare(v)
            if v.view == pp.view && v.seq == pp.seq && v.digest == pp.digest);
        if !matches || p.signer == primary || !signers.insert(p.signer) || !p.verify(vset) {
            return None;
        }
    }
    (signers.len() + 1 >= vset.quorum()).then_some(pp.seq)
}

/// Deterministic O-set computation from a set of valid VIEW-CHANGEs.
pub(crate) fn compute_plan(base: &StableCheckpoint, vcs: &[&ViewChange]) -> Option<NewViewPlan> {
    let best = vcs.iter().max_by_key(|vc| vc.stable_seq)?;
    let stable = match best.checkpoint_proof.first().map(|m| &m.message) {
        Some(Message::Checkpoint(cp)) => StableCheckpoint {
            seq: cp.seq,
            state_root: cp.state_root,
            block_hash: cp.block_hash,
            proof: best.checkpoint_proof.clone(),
        },
        _ => base.clone(),
    };
    // Per seq, the certificate of the highest view wins (ties: lowest digest,
    // only reachable with > f faults, but keeps the choice deterministic).
    let mut chosen: BTreeMap<Seq, (View, Digest, &Payload)> = BTreeMap::new();
    for vc in vcs {
        for cert in &vc.prepared {
            let Some(pp) = as_pre_prepare(&cert.pre_prepare) else {
                continue;
            };
            if pp.seq <= stable.seq {
                continue;
            }
            let cand = (pp.view, pp.digest, &pp.payload);
            chosen
                .entry(pp.seq)
                .and_modify(|cur| {
                    if (cand.0, std::cmp::Reverse(cand.1)) > (cur.0, std::cmp::Reverse(cur.1)) {
                        *cur = cand;
                    }
                })
                .or_insert(cand);
        }
    }
    let max_s = chosen.keys().next_back().copied().unwrap_or(stable.seq);
    let null = Payload::null();
    let entries = (stable.seq.saturating_add(1)..=max_s)
        .map(|s| match chosen.get(&s) {
            Some((_, d, p)) => (s, (*d, (*p).clone())),
            None => (s, (null.digest(), null.clone())),
        })
        .collect();
    Some(NewViewPlan { stable, entries })
}

impl Replica {
    /// Stop normal operation in the current view and ask to move to `target`.
    pub(crate) fn start_view_change(&mut self, target: View, out: &mut Vec<Action>) {
        if target <= self.st.view && (self.st.in_view_change || target < self.st.view) {
            return;
        }
        if target == self.st.view && !self.st.in_view_change {
            return;
        }
        tracing::info!(
            me = self.me,
            from = self.st.view,
            to = target,
            "view change"
        );
        self.stats.view_changes_started += 1;
        self.st.view = target;
        self.st.in_view_change = true;
        self.st.vc_attempts = self.st.vc_attempts.saturating_add(1);
        self.patience = self.patience.saturating_add(1).min(MAX_PATIENCE);
        for slot in self.st.slots.values_mut() {
            slot.reset_view_state();
        }
        let vc = self.view_change_body(target);
        self.send_own_view_change(vc, out);
        if self.request_timer_armed {
            self.request_timer_armed = false;
            out.push(Action::CancelTimer {
                id: crate::timers::TimerId::Request,
            });
        }
        self.cancel_censorship_timer(out);
        self.future.retain(|(_, m)| message_view(m) >= target);
        self.arm_vc_timer(false, out);
        self.check_view_change_quorum(out);
    }

    /// Our VIEW-CHANGE for `target` as of now. Its stable checkpoint is the
    /// highest one known to be certified: while a state transfer runs, the
    /// one being fetched. The window runs from that checkpoint during the
    /// transfer, so certificates up to L past it may have been prepared,
    /// and a VIEW-CHANGE claiming the older stable checkpoint would carry
    /// certificates more than L past its claim: every peer would reject it.
    /// Peers (and the new primary) lacking that state fetch it, as for any
    /// NEW-VIEW.
    fn view_change_body(&self, target: View) -> ViewChange {
        let stable = match &self.fetching {
            Some(f) if f.seq > self.st.stable.seq && !f.proof.is_empty() => f,
            _ => &self.st.stable,
        };
        ViewChange {
            new_view: target,
            stable_seq: stable.seq,
            checkpoint_proof: stable.proof.clone(),
            prepared: self
                .st
                .slots
                .range(stable.seq.saturating_add(1)..)
                .filter_map(|(_, s)| s.prepared.clone())
                .collect(),
            last_committed: self.st.last_committed,
        }
    }

    /// Sign, broadcast and remember our VIEW-CHANGE.
    fn send_own_view_change(&mut self, vc: ViewChange, out: &mut Vec<Action>) {
        let target = vc.new_view;
        let sm = self.sign(Message::ViewChange(vc));
        out.push(Action::Broadcast(sm.clone()));
        self.st.own_view_change = Some(sm.clone());
        self.st.sent_view_changes.insert(target, sm.clone());
        while self.st.sent_view_changes.len() > MAX_SENT_VIEW_CHANGES {
            self.st.sent_view_changes.pop_first();
        }
        self.view_changes
            .entry(self.me)
            .or_default()
            .insert(target, sm);
    }

    /// Re-send our VIEW-CHANGE while too few peers joined. If the stable
    /// checkpoint or the last committed block moved since it was signed
    /// (catch-up arrived, a state transfer finished), sign it afresh: peers
    /// answer a replay of the old one with nothing, so blocks they sent
    /// that were lost, or dropped as outside our window while we fetched
    /// state, would never come again on a chain that has gone idle.
    pub(crate) fn retransmit_view_change(&mut self, out: &mut Vec<Action>) {
        let Some(old) = self.st.own_view_change.as_ref() else {
            return;
        };
        let Some(prev) = as_view_change(old) else {
            return;
        };
        let progressed =
            (self.st.stable.seq, self.st.last_committed) > (prev.stable_seq, prev.last_committed);
        if progressed && prev.new_view == self.st.view {
            tracing::debug!(
                me = self.me,
                view = self.st.view,
                stable = self.st.stable.seq,
                last_committed = self.st.last_committed,
                "view change re-signed with our progress"
            );
            let vc = self.view_change_body(prev.new_view);
            self.send_own_view_change(vc, out);
        } else {
            out.push(Action::Broadcast(old.clone()));
        }
    }

    pub(crate) fn on_view_change(&mut self, sm: SignedMessage, out: &mut Vec<Action>) {
        let Some(vc) = as_view_change(&sm) else {
            return;
        };
        if !valid_view_change(&self.vset, self.cfg.window, &self.epoch_base, vc) {
            self.stats.invalid_view_changes += 1;
            return;
        }
        let (target, their_lc, from) = (vc.new_view, vc.last_committed, sm.signer);
        self.send_catch_up(from, target, vc.stable_seq, their_lc, out);
        // A straggler: the NEW-VIEW we installed lets it join that view.
        if let Some(nv) = &self.st.new_view {
            if matches!(&nv.message, Message::NewView(b) if b.view >= target) {
                out.push(Action::Send {
                    to: from,
                    msg: nv.clone(),
                });
            }
        }
        if target <= self.st.view && !self.st.in_view_change {
            return;
        }
        if target < self.st.view {
            // The sender may be missing our VIEW-CHANGE for its view (lost
            // before we moved on); without it that view can never form.
            if let Some(old) = self.st.sent_view_changes.get(&target) {
                out.push(Action::Send {
                    to: from,
                    msg: old.clone(),
                });
            }
            self.stats.stale_view += 1;
            return;
        }
        let per = self.view_changes.entry(from).or_default();
        per.entry(target).or_insert(sm);
        while per.len() > MAX_SENT_VIEW_CHANGES {
            per.pop_first();
        }
        // Join rule: f+1 replicas (one honest) already want a higher view.
        let mut higher: Vec<View> = self
            .view_changes
            .iter()
            .filter(|(r, _)| **r != self.me)
            .filter_map(|(_, per)| per.keys().next_back().copied())
            .filter(|v| *v > self.st.view)
            .collect();
        higher.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(v) = higher.get(self.vset.weak_quorum().saturating_sub(1)) {
            self.start_view_change(*v, out);
            return;
        }
        self.check_view_change_quorum(out);
    }

    pub(crate) fn check_view_change_quorum(&mut self, out: &mut Vec<Action>) {
        if !self.st.in_view_change {
            return;
        }
        let view = self.st.view;
        let vcs: Vec<SignedMessage> = self
            .view_changes
            .values()
            .filter_map(|per| per.get(&view))
            .cloned()
            .collect();
        if vcs.len() < self.vset.quorum() {
            return;
        }
        if !self.vc_timer_escalates {
            self.arm_vc_timer(true, out);
        }
        if self.vset.primary(view) != self.me {
            return;
        }
        let bodies: Vec<&ViewChange> = vcs.iter().filter_map(as_view_change).collect();
        let Some(plan) = compute_plan(&self.epoch_base, &bodies) else {
            return;
        };
        let pre_prepares = plan
            .entries
            .iter()
            .map(|(seq, (digest, payload))| {
                self.sign(Message::PrePrepare(PrePrepare {
                    view,
                    seq: *seq,
                    digest: *digest,
                    payload: payload.clone(),
                }))
            })
            .collect();
        let nv = self.sign(Message::NewView(NewView {
            view,
            view_changes: vcs,
            pre_prepares,
        }));
        tracing::info!(me = self.me, view, "sending new-view");
        out.push(Action::Broadcast(nv.clone()));
        self.install_new_view(nv, plan, out);
    }

    pub(crate) fn on_new_view(&mut self, sm: SignedMessage, out: &mut Vec<Action>) {
        let Message::NewView(nv) = &sm.message else {
            return;
        };
        if nv.view < self.st.view || (nv.view == self.st.view && !self.st.in_view_change) {
            return;
        }
        if sm.signer != self.vset.primary(nv.view) {
            self.stats.invalid_new_views += 1;
            return;
        }
        match self.check_new_view(nv) {
            Some(plan) => self.install_new_view(sm, plan, out),
            None => {
                // A validly signed but wrong NEW-VIEW convicts its primary.
                tracing::warn!(me = self.me, view = nv.view, "invalid new-view");
                self.stats.invalid_new_views += 1;
                let next = nv.view.saturating_add(1);
                self.start_view_change(next, out);
            }
        }
    }

    /// Re-derive O from the enclosed VIEW-CHANGEs and compare exactly.
    fn check_new_view(&self, nv: &NewView) -> Option<NewViewPlan> {
        let mut senders = BTreeSet::new();
        let mut bodies = Vec::new();
        for m in &nv.view_changes {
            let vc = as_view_change(m)?;
            if vc.new_view != nv.view
                || !senders.insert(m.signer)
                || !m.verify(&self.vset)
                || !valid_view_change(&self.vset, self.cfg.window, &self.epoch_base, vc)
            {
                return None;
            }
            bodies.push(vc);
        }
        if senders.len() < self.vset.quorum() {
            return None;
        }
        let plan = compute_plan(&self.epoch_base, &bodies)?;
        if plan.entries.len() != nv.pre_prepares.len() {
            return None;
        }
        let primary = self.vset.primary(nv.view);
        for ((seq, (digest, _)), m) in plan.entries.iter().zip(&nv.pre_prepares) {
            let pp = as_pre_prepare(m)?;
            let ok = m.signer == primary
                && pp.view == nv.view
                && pp.seq == *seq
                && pp.digest == *digest
                && pp.payload.digest() == *digest
                && m.verify(&self.vset);
            if !ok {
                return None;
            }
        }
        Some(plan)
    }

    fn install_new_view(&mut self, nv_sm: SignedMessage, plan: NewViewPlan, out: &mut Vec<Action>) {
        let Message::NewView(nv) = &nv_sm.message else {
            return;
        };
        let view = nv.view;
        let pre_prepares = nv.pre_prepares.clone();
        self.st.view = view;
        self.st.in_view_change = false;
        self.st.own_view_change = None;
        self.st.sent_view_changes.clear();
        self.st.new_view = Some(nv_sm);
        self.st.view_changes = self.st.view_changes.saturating_add(1);
        self.cancel_vc_timer(out);
        self.vc_timer_escalates = false;
        for (seq, slot) in self.st.slots.iter_mut() {
            slot.reset_view_state();
            // A lower-view certificate that O did not pick was provably never
            // committed; dropping it stops stale batches resurfacing later.
            let keep = slot.prepared.as_ref().is_some_and(|c| {
                as_pre_prepare(&c.pre_prepare)
                    .is_some_and(|pp| plan.entries.get(seq).is_some_and(|(d, _)| *d == pp.digest))
            });
            if !keep {
                slot.prepared = None;
            }
        }
        let max_s = plan
            .entries
            .keys()
            .next_back()
            .copied()
            .unwrap_or(plan.stable.seq);
        self.on_stable_certificate(plan.stable, out);
        let primary = self.primary();
        out.push(Action::ViewChanged { view, primary });
        for m in pre_prepares {
            let Some(seq) = as_pre_prepare(&m).map(|pp| pp.seq) else {
                continue;
            };
            if seq <= self.st.stable.seq {
                continue;
            }
            let slot = self.st.slots.entry(seq).or_default();
            slot.pre_prepare = Some(m);
            // Prepared by a quorum earlier, or a null request: no validation.
            slot.validated = true;
            self.send_prepare(seq, out);
        }
        // New proposals continue right after O; anything beyond was never
        // prepared by a quorum and is superseded.
        self.st.next_seq = max_s
            .max(self.st.stable.seq)
            .max(self.st.last_committed)
            .saturating_add(1);
        self.rebroadcast_checkpoints(out);
        let buffered = std::mem::take(&mut self.future);
        let (now, later): (Vec<_>, Vec<_>) = buffered
            .into_iter()
            .filter(|(_, m)| message_view(m) >= view)
            .partition(|(_, m)| message_view(m) == view);
        self.future = later;
        for (from, m) in now {
            self.route_normal_case(from, m, out);
        }
        self.update_request_timer(true, out);
        // A new primary gets a full timeout for a request still overlooked
        // (and a deposed one starts watching now that it is a backup).
        self.arm_censorship_timer(out);
    }
}

fn message_view(m: &SignedMessage) -> View {
    match &m.message {
        Message::PrePrepare(pp) => pp.view,
        _ => vote_of(m).map_or(0, |v| v.view),
    }
}
