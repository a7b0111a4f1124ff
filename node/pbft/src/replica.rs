//! The replica: inputs, actions, state and the `step` dispatcher. Protocol
//! logic lives in the sibling modules as further `impl Replica` blocks.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::log::{as_pre_prepare, vote_of, Slot};
use crate::message::{
    CommitCertificate, Digest, Message, Payload, ReplicaIndex, Seq, SignedMessage, View,
};
use crate::timers::TimerId;
use crate::validators::ValidatorSet;

/// How many request timeouts a primary waits without progress before it
/// gives up its own view.
const PRIMARY_TIMEOUT_FACTOR: u64 = 3;
/// The request timeout doubles with each view change, at most this many
/// times (4x), and halves again for each checkpoint interval committed
/// without one. See [`Replica::request_timeout_ms`].
pub(crate) const MAX_PATIENCE: u32 = 2;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// K: a checkpoint every K sequence numbers.
    pub checkpoint_interval: u64,
    /// L: sequence numbers accepted are (low, low + L]. Must be >= K.
    pub window: u64,
    pub request_timeout_ms: u64,
    /// Base NEW-VIEW wait, doubled per successive view change.
    pub view_change_timeout_ms: u64,
    pub max_backoff_exponent: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            checkpoint_interval: 16,
            window: 64,
            request_timeout_ms: 2_000,
            view_change_timeout_ms: 2_000,
            max_backoff_exponent: 6,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A batch from the node's block cutter; only the primary acts on it.
    Propose {
        payload: Payload,
    },
    /// A peer message as received from transport peer `from`.
    Message {
        from: ReplicaIndex,
        msg: SignedMessage,
    },
    TimerFired(TimerId),
    PayloadValidated {
        seq: Seq,
        view: View,
        digest: Digest,
        valid: bool,
    },
    Executed {
        seq: Seq,
        state_root: Digest,
        block_hash: Digest,
    },
    StateTransferred {
        seq: Seq,
        state_root: Digest,
        block_hash: Digest,
    },
    /// Whether the node's mempool holds client work not yet committed.
    RequestsPending(bool),
    /// A stable-checkpoint certificate the node obtained outside the peer
    /// stream (asked of a peer after falling behind). Verified here like
    /// any other; a replica that has not reached it fetches the state.
    StableCertificate(Vec<SignedMessage>),
    /// The ticket of the oldest client request the node holds that a
    /// committed block with room for it left out; `None` when there is no
    /// such request.
    ///
    /// A ticket is a node-local arrival number, increasing with each request
    /// the mempool admits. The node decides "with room" itself (the block
    /// had fewer transactions, or fewer bytes, than its limits allow, and the
    /// request was valid and not in flight in another block); the replica
    /// never sees block limits. Report whenever the value changes: when such
    /// a request first appears, when the watched one commits (the next
    /// oldest, or `None`), and once more after a restart (this is transient
    /// state). A new epoch's replica starts with none: the node forgets what
    /// the previous set's blocks overlooked.
    ///
    /// A backup watching a ticket arms [`TimerId::Censorship`] for the
    /// request timeout; unlike the request timer, commits do not restart
    /// it, so a primary that keeps the chain moving but leaves the request
    /// out is replaced (see the README's node integration notes).
    Overlooked(Option<u64>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    NotPrimary,
    ViewChangeInProgress,
    WindowFull,
    StateTransferInProgress,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send to every other replica.
    Broadcast(SignedMessage),
    Send {
        to: ReplicaIndex,
        msg: SignedMessage,
    },
    /// Ask the ledger; answer with `Input::PayloadValidated`.
    ValidatePayload {
        seq: Seq,
        view: View,
        digest: Digest,
        payload: Payload,
    },
    /// Execute the block at height `seq`. Emitted in order, once per seq.
    Commit {
        seq: Seq,
        view: View,
        payload: Payload,
        certificate: CommitCertificate,
    },
    SetTimer {
        id: TimerId,
        after_ms: u64,
    },
    CancelTimer {
        id: TimerId,
    },
    /// Fetch blocks/snapshot up to `target_seq` (verifiable against the
    /// checkpoint certificate) then answer with `Input::StateTransferred`.
    /// No `Commit` is emitted until then.
    FetchState {
        target_seq: Seq,
        state_root: Digest,
        block_hash: Digest,
        certificate: Vec<SignedMessage>,
        peers: Vec<ReplicaIndex>,
    },
    ViewChanged {
        view: View,
        primary: ReplicaIndex,
    },
    CheckpointStable {
        seq: Seq,
        state_root: Digest,
        block_hash: Digest,
    },
    /// The proposal was not ordered; keep its transactions.
    ProposalRejected {
        payload: Payload,
        reason: RejectReason,
    },
}

/// Counters of dropped or suspicious input, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    pub unknown_sender: u64,
    pub wrong_sender: u64,
    pub bad_signature: u64,
    pub stale_view: u64,
    pub out_of_window: u64,
    pub malformed: u64,
    pub not_from_primary: u64,
    pub equivocations: u64,
    pub invalid_payloads: u64,
    pub invalid_view_changes: u64,
    pub invalid_new_views: u64,
    pub invalid_proofs: u64,
    pub buffer_full: u64,
    pub view_changes_started: u64,
    /// View changes started because the censorship timer expired: the
    /// primary kept committing blocks that left out a request for a whole
    /// request timeout ([`Input::Overlooked`]).
    pub censorship_suspected: u64,
}

/// What one replica was last sent to catch up (see [`Replica::caught_up`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CatchUpSent {
    /// The highest view its VIEW-CHANGEs asked for.
    pub(crate) target: View,
    /// Committed blocks were sent through this sequence number.
    pub(crate) through: Seq,
    /// The stable checkpoint whose certificate was sent.
    pub(crate) stable: Seq,
    /// (stable seq, last committed) that the VIEW-CHANGE answered last
    /// reported. One of the same target reporting more progress is a new
    /// message of its signer (a replay reports the same or less): what was
    /// sent before did not all arrive, so it is answered afresh.
    pub(crate) reported: (Seq, Seq),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StableCheckpoint {
    pub seq: Seq,
    pub state_root: Digest,
    pub block_hash: Digest,
    /// Quorum of signed CHECKPOINTs (empty for genesis).
    pub proof: Vec<SignedMessage>,
}

/// What a replica promised; persist after every `step` that returned
/// messages, restore with [`Replica::restore`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PersistentState {
    pub view: View,
    pub in_view_change: bool,
    pub stable: StableCheckpoint,
    pub last_committed: Seq,
    pub next_seq: Seq,
    pub slots: BTreeMap<Seq, Slot>,
    pub own_view_change: Option<SignedMessage>,
    /// Our recent VIEW-CHANGEs by target view (since the last NEW-VIEW), so a
    /// peer still collecting an older view can get the one it lost.
    pub sent_view_changes: BTreeMap<View, SignedMessage>,
    pub new_view: Option<SignedMessage>,
    pub own_checkpoints: BTreeMap<Seq, SignedMessage>,
    pub view_changes: u64,
    pub vc_attempts: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub view: View,
    pub primary: ReplicaIndex,
    pub is_primary: bool,
    pub low_watermark: Seq,
    pub high_watermark: Seq,
    pub stable_checkpoint: Seq,
    pub last_committed: Seq,
    pub last_executed: Seq,
    pub view_changes: u64,
    pub view_change_in_progress: bool,
    pub state_transfer_target: Option<Seq>,
    /// The checkpoint this validator set's epoch started from (0: genesis).
    pub epoch_base: Seq,
    /// The last sequence number of this epoch, once a change of the
    /// validator set is scheduled.
    pub epoch_end: Option<Seq>,
    /// The request timeout in force ([`Replica::request_timeout_ms`]).
    pub request_timeout_ms: u64,
}

pub struct Replica {
    pub(crate) cfg: Config,
    pub(crate) vset: ValidatorSet,
    pub(crate) me: ReplicaIndex,
    pub(crate) key: SigningKey,
    pub(crate) st: PersistentState,
    // --- transient (rebuilt after restart) ---
    pub(crate) stats: Stats,
    pub(crate) last_executed: Seq,
    pub(crate) requests_pending: bool,
    pub(crate) request_timer_armed: bool,
    /// Doublings of the request timeout earned by recent view changes.
    pub(crate) patience: u32,
    /// The view in force when the last checkpoint became stable.
    pub(crate) calm_view: View,
    pub(crate) vc_timer_armed: bool,
    /// VC timer is the NEW-VIEW deadline (quorum seen) vs. a retransmit.
    pub(crate) vc_timer_escalates: bool,
    /// Latest signed CHECKPOINTs per replica, bounded per replica.
    pub(crate) checkpoints: BTreeMap<ReplicaIndex, BTreeMap<Seq, SignedMessage>>,
    /// Recent valid VIEW-CHANGEs per replica, by target view (bounded).
    pub(crate) view_changes: BTreeMap<ReplicaIndex, BTreeMap<View, SignedMessage>>,
    /// Catch-up already sent to each replica in answer to its VIEW-CHANGEs,
    /// so a replayed VIEW-CHANGE costs no signing and no resend.
    pub(crate) caught_up: BTreeMap<ReplicaIndex, CatchUpSent>,
    /// Normal-case messages for a view we have not entered yet.
    pub(crate) future: Vec<(ReplicaIndex, SignedMessage)>,
    pub(crate) fetching: Option<StableCheckpoint>,
    /// Where this validator set's epoch starts: a checkpoint the previous
    /// set certified, taken as stable without a certificate of this set
    /// (genesis is epoch 0's base).
    pub(crate) epoch_base: StableCheckpoint,
    /// The last sequence number this set orders, once the next set is
    /// scheduled; nothing past it is accepted.
    pub(crate) epoch_end: Option<Seq>,
    /// The overlooked request being watched ([`Input::Overlooked`]).
    pub(crate) overlooked: Option<u64>,
    pub(crate) censorship_timer_armed: bool,
}

fn genesis_base() -> StableCheckpoint {
    StableCheckpoint {
        seq: 0,
        state_root: [0; 32],
        block_hash: [0; 32],
        proof: Vec::new(),
    }
}

fn fresh_state(base: &StableCheckpoint) -> PersistentState {
    PersistentState {
        view: 0,
        in_view_change: false,
        stable: base.clone(),
        last_committed: base.seq,
        next_seq: base.seq.saturating_add(1),
        slots: BTreeMap::new(),
        own_view_change: None,
        sent_view_changes: BTreeMap::new(),
        new_view: None,
        own_checkpoints: BTreeMap::new(),
        view_changes: 0,
        vc_attempts: 0,
    }
}

impl Replica {
    pub fn new(
        cfg: Config,
        vset: ValidatorSet,
        me: ReplicaIndex,
        key: SigningKey,
    ) -> Result<Self, Error> {
        Self::restore(cfg, vset, me, key, fresh_state(&genesis_base()), 0)
    }

    /// A replica of a validator set whose epoch starts after checkpoint
    /// `base` (certified by the previous set, which the caller checked; its
    /// proof is not kept). It starts in view 0 with that checkpoint stable.
    pub fn new_epoch(
        cfg: Config,
        vset: ValidatorSet,
        me: ReplicaIndex,
        key: SigningKey,
        base: StableCheckpoint,
        executed_seq: Seq,
    ) -> Result<Self, Error> {
        let base = StableCheckpoint {
            proof: Vec::new(),
            ..base
        };
        let st = fresh_state(&base);
        Self::restore_in_epoch(cfg, vset, me, key, st, executed_seq, base)
    }

    /// Whether `st` was saved by a replica of the epoch that starts at
    /// `base_seq` (rather than an earlier epoch's replica).
    pub fn state_belongs_to_epoch(st: &PersistentState, base_seq: Seq) -> bool {
        st.stable.seq > base_seq || (st.stable.seq == base_seq && st.stable.proof.is_empty())
    }

    /// Rebuild a replica after a crash. `executed_seq` is the ledger height;
    /// committed-but-unexecuted blocks are re-emitted by [`Replica::start`].
    /// After `start`, report the ledger tip once more as `Input::Executed`:
    /// a crash between executing a block and reporting it loses that
    /// block's CHECKPOINT, and the last checkpoint of an epoch has no later
    /// one to stand in for it (the epoch would never end).
    pub fn restore(
        cfg: Config,
        vset: ValidatorSet,
        me: ReplicaIndex,
        key: SigningKey,
        st: PersistentState,
        executed_seq: Seq,
    ) -> Result<Self, Error> {
        Self::restore_in_epoch(cfg, vset, me, key, st, executed_seq, genesis_base())
    }

    /// [`Replica::restore`] for a replica of the epoch starting at `base`
    /// (see [`Replica::new_epoch`]); the ledger tip is reported again after
    /// `start` in the same way.
    pub fn restore_in_epoch(
        cfg: Config,
        vset: ValidatorSet,
        me: ReplicaIndex,
        key: SigningKey,
        mut st: PersistentState,
        executed_seq: Seq,
        base: StableCheckpoint,
    ) -> Result<Self, Error> {
        if !Self::state_belongs_to_epoch(&st, base.seq) {
            return Err(Error::StaleEpoch {
                stable: st.stable.seq,
                base: base.seq,
            });
        }
        if cfg.checkpoint_interval == 0 {
            return Err(Error::InvalidConfig("checkpoint_interval must be > 0"));
        }
        if cfg.window < cfg.checkpoint_interval {
            return Err(Error::InvalidConfig(
                "window must be >= checkpoint_interval",
            ));
        }
        let pk = vset.key(me).ok_or(Error::NotAValidator(me))?;
        if pk.as_bytes() != key.verifying_key().as_bytes() {
            return Err(Error::KeyMismatch(me));
        }
        st.last_committed = executed_seq.max(base.seq);
        Ok(Replica {
            cfg,
            vset,
            me,
            key,
            st,
            stats: Stats::default(),
            last_executed: executed_seq,
            requests_pending: false,
            request_timer_armed: false,
            patience: 0,
            calm_view: 0,
            vc_timer_armed: false,
            vc_timer_escalates: false,
            caught_up: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            view_changes: BTreeMap::new(),
            future: Vec::new(),
            fetching: None,
            epoch_base: StableCheckpoint {
                proof: Vec::new(),
                ..base
            },
            epoch_end: None,
            overlooked: None,
            censorship_timer_armed: false,
        })
    }

    /// Call once after `new`/`restore`: arms timers, re-announces a view
    /// change in progress and re-emits committed-but-unexecuted blocks.
    pub fn start(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.st.last_committed < self.st.stable.seq {
            let cp = self.st.stable.clone();
            self.request_state_transfer(cp, &mut out);
        }
        if self.st.in_view_change {
            if let Some(vc) = self.st.own_view_change.clone() {
                let view = self.st.view;
                self.view_changes
                    .entry(self.me)
                    .or_default()
                    .insert(view, vc.clone());
                out.push(Action::Broadcast(vc));
            }
            self.arm_vc_timer(false, &mut out);
        }
        self.release_commits(&mut out);
        self.update_request_timer(false, &mut out);
        out
    }

    /// The deterministic transition function: one input, a list of actions.
    pub fn step(&mut self, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Propose { payload } => self.on_propose(payload, &mut out),
            Input::Message { from, msg } => self.on_message(from, msg, &mut out),
            Input::TimerFired(id) => self.on_timer(id, &mut out),
            Input::PayloadValidated {
                seq,
                view,
                digest,
                valid,
            } => self.on_payload_validated(seq, view, digest, valid, &mut out),
            Input::Executed {
                seq,
                state_root,
                block_hash,
            } => self.on_executed(seq, state_root, block_hash, &mut out),
            Input::StateTransferred {
                seq,
                state_root,
                block_hash,
            } => self.on_state_transferred(seq, state_root, block_hash, &mut out),
            Input::RequestsPending(p) => {
                self.requests_pending = p;
                self.update_request_timer(false, &mut out);
            }
            Input::StableCertificate(proof) => self.on_stable_proof(proof, &mut out),
            Input::Overlooked(ticket) => self.on_overlooked(ticket, &mut out),
        }
        out
    }

    pub fn status(&self) -> Status {
        let primary = self.vset.primary(self.st.view);
        Status {
            view: self.st.view,
            primary,
            is_primary: primary == self.me,
            low_watermark: self.st.stable.seq,
            high_watermark: self.high_watermark(),
            stable_checkpoint: self.st.stable.seq,
            last_committed: self.st.last_committed,
            last_executed: self.last_executed,
            view_changes: self.st.view_changes,
            view_change_in_progress: self.st.in_view_change,
            state_transfer_target: self.fetching.as_ref().map(|c| c.seq),
            epoch_base: self.epoch_base.seq,
            epoch_end: self.epoch_end,
            request_timeout_ms: self.request_timeout_ms(),
        }
    }

    /// How long a backup waits for progress before it suspects the primary.
    ///
    /// The configured timeout, doubled for each recent view change (at most
    /// [`MAX_PATIENCE`] times). When blocks legitimately take longer than the
    /// timeout to go from proposal to commit (large blocks on small
    /// machines), a fixed timeout makes every new primary fail the same way
    /// and the replicas change view over and over. Each view change now buys
    /// the next primary twice the time, and each checkpoint interval
    /// committed within one view gives one doubling back, so a calm
    /// consortium returns to the configured timeout. A primary that dies
    /// right after a view change is found within 4x the timeout.
    pub fn request_timeout_ms(&self) -> u64 {
        crate::timers::backoff(self.cfg.request_timeout_ms, self.patience, MAX_PATIENCE)
    }

    /// Ends this validator set's epoch after `end` (a checkpoint sequence
    /// number): the next set takes over from `end + 1`. The node calls it
    /// as soon as it has executed the block that scheduled the change,
    /// before it reports that block executed, so the window (which never
    /// runs more than L past what this replica executed) has not reached
    /// past `end`. Ignored unless `end` is a checkpoint inside the epoch.
    pub fn set_epoch_end(&mut self, end: Seq) {
        if end <= self.epoch_base.seq
            || end % self.cfg.checkpoint_interval != 0
            || self.epoch_end.is_some_and(|e| e <= end)
        {
            return;
        }
        tracing::info!(me = self.me, end, "validator set ends its epoch");
        self.epoch_end = Some(end);
        // Defensive: nothing past the end is ever ordered by this set.
        let committed = self.st.last_committed;
        self.st
            .slots
            .retain(|s, slot| *s <= end || (*s <= committed && slot.committed.is_some()));
    }

    /// The epoch's last checkpoint is stable: the next validator set takes
    /// over from here.
    pub fn epoch_complete(&self) -> bool {
        self.epoch_end.is_some_and(|e| self.st.stable.seq >= e)
    }

    /// This replica executed every block of its epoch and waits for the
    /// epoch's last checkpoint to become stable.
    pub(crate) fn epoch_drained(&self) -> bool {
        self.epoch_end
            .is_some_and(|e| self.st.last_committed >= e && self.st.stable.seq < e)
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Changes the request and view-change timeouts (a chain parameter
    /// changed by configuration). Timers already running keep their
    /// deadline; the next ones armed use the new values. Timeouts decide
    /// only when a replica suspects the primary, never what is committed.
    pub fn set_timeouts(&mut self, request_timeout_ms: u64, view_change_timeout_ms: u64) {
        self.cfg.request_timeout_ms = request_timeout_ms.max(1);
        self.cfg.view_change_timeout_ms = view_change_timeout_ms.max(1);
    }

    pub fn id(&self) -> ReplicaIndex {
        self.me
    }

    /// Snapshot to persist (see [`PersistentState`]).
    pub fn persistent_state(&self) -> PersistentState {
        self.st.clone()
    }

    /// The state to persist, borrowed: a node whose payloads are large can
    /// store them separately instead of cloning the whole log.
    pub fn persistent(&self) -> &PersistentState {
        &self.st
    }

    /// Payloads ordered but not yet committed (in the current view), so the
    /// node's block cutter does not propose their transactions again.
    pub fn in_flight_payloads(&self) -> impl Iterator<Item = (Seq, Digest, &Payload)> + '_ {
        let lc = self.st.last_committed;
        self.st
            .slots
            .range(lc.saturating_add(1)..)
            .filter_map(|(s, slot)| {
                if let Some((p, c)) = &slot.committed {
                    return Some((*s, c.digest, p));
                }
                slot.pre_prepare().map(|pp| (*s, pp.digest, &pp.payload))
            })
    }

    // ----- helpers shared by the protocol modules -----

    pub(crate) fn primary(&self) -> ReplicaIndex {
        self.vset.primary(self.st.view)
    }

    pub(crate) fn is_primary(&self) -> bool {
        self.primary() == self.me
    }

    /// The highest sequence number accepted: L past the stable checkpoint
    /// (or the state being fetched), and never more than L past what this
    /// replica executed, so a change the ledger schedules (a new validator
    /// set from an epoch end at least L after the deciding block) is known
    /// before anything it rules out was accepted. Capped at the epoch end.
    pub(crate) fn high_watermark(&self) -> Seq {
        let base = self
            .fetching
            .as_ref()
            .map_or(self.st.stable.seq, |c| c.seq.max(self.st.stable.seq));
        let executed = self.last_executed.max(self.epoch_base.seq);
        let hw = base.min(executed).saturating_add(self.cfg.window);
        match self.epoch_end {
            Some(end) => hw.min(end),
            None => hw,
        }
    }

    pub(crate) fn in_window(&self, seq: Seq) -> bool {
        seq > self.st.stable.seq && seq <= self.high_watermark()
    }

    pub(crate) fn sign(&self, m: Message) -> SignedMessage {
        SignedMessage::sign(&self.vset, self.me, &self.key, m)
    }

    /// Whether `msg` comes from validator `from` itself and its signature
    /// verifies: what the runtime must know before it believes anything a
    /// message claims (a peer's height, say). The check is remembered, so
    /// stepping the same message afterwards does not verify it again.
    pub fn is_authentic(&self, from: ReplicaIndex, msg: &SignedMessage) -> bool {
        self.vset.contains(from) && from != self.me && msg.signer == from && msg.verify(&self.vset)
    }

    fn on_message(&mut self, from: ReplicaIndex, msg: SignedMessage, out: &mut Vec<Action>) {
        if !self.vset.contains(from) || from == self.me || !self.vset.contains(msg.signer) {
            self.stats.unknown_sender += 1;
            return;
        }
        if msg.signer != from && !msg.may_be_relayed() {
            self.stats.wrong_sender += 1;
            return;
        }
        if !msg.verify(&self.vset) {
            self.stats.bad_signature += 1;
            return;
        }
        tracing::trace!(me = self.me, from, "message");
        match &msg.message {
            Message::PrePrepare(_) | Message::Prepare(_) | Message::Commit(_) => {
                self.route_normal_case(from, msg, out)
            }
            Message::Checkpoint(_) => self.on_checkpoint(msg, out),
            Message::ViewChange(_) => self.on_view_change(msg, out),
            Message::NewView(_) => self.on_new_view(msg, out),
            Message::Committed { .. } => self.on_commit_proof(msg, out),
            Message::StableProof(_) => self.on_stable_proof_msg(msg, out),
        }
    }

    /// Normal-case messages are only processed in their own view, once the
    /// view is installed; future ones wait in a bounded buffer.
    pub(crate) fn route_normal_case(
        &mut self,
        from: ReplicaIndex,
        msg: SignedMessage,
        out: &mut Vec<Action>,
    ) {
        let view = match &msg.message {
            Message::PrePrepare(pp) => pp.view,
            _ => match vote_of(&msg) {
                Some(v) => v.view,
                None => return,
            },
        };
        if view < self.st.view {
            self.stats.stale_view += 1;
            return;
        }
        if view > self.st.view || self.st.in_view_change {
            // Per-sender cap, so one faulty peer cannot crowd out the others.
            let cap = 3 * self.cfg.window as usize + 8;
            if self.future.iter().filter(|(f, _)| *f == from).count() >= cap {
                self.stats.buffer_full += 1;
            } else {
                self.future.push((from, msg));
            }
            self.join_observed_view(out);
            return;
        }
        if as_pre_prepare(&msg).is_some() {
            self.on_pre_prepare(msg, out);
        } else if matches!(msg.message, Message::Prepare(_)) {
            self.on_prepare(msg, out);
        } else {
            self.on_commit(msg, out);
        }
    }

    /// A replica left behind in an old view (restarted, or partitioned
    /// while the others changed view) joins the view that f + 1 others already work in, as
    /// shown by their signed normal-case messages: at least one of them is
    /// honest, so that view was installed. Its VIEW-CHANGE makes the
    /// others send the NEW-VIEW they installed.
    fn join_observed_view(&mut self, out: &mut Vec<Action>) {
        let current = self.st.view;
        let mut highest: BTreeMap<ReplicaIndex, View> = BTreeMap::new();
        for (_, m) in &self.future {
            let view = match &m.message {
                Message::PrePrepare(pp) => pp.view,
                _ => vote_of(m).map_or(0, |v| v.view),
            };
            if view > current && m.signer != self.me {
                let e = highest.entry(m.signer).or_insert(view);
                *e = (*e).max(view);
            }
        }
        let mut views: Vec<View> = highest.into_values().collect();
        views.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(target) = views.get(self.vset.weak_quorum().saturating_sub(1)) {
            if *target > current {
                self.start_view_change(*target, out);
            }
        }
    }

    fn on_timer(&mut self, id: TimerId, out: &mut Vec<Action>) {
        match id {
            TimerId::Request => {
                if !self.request_timer_armed || self.st.in_view_change {
                    return;
                }
                self.request_timer_armed = false;
                if self.epoch_drained() {
                    // Nothing left to order in this epoch: the primary is
                    // not at fault. Repair lost CHECKPOINTs instead.
                    self.rebroadcast_checkpoints(out);
                    self.update_request_timer(false, out);
                    return;
                }
                tracing::debug!(me = self.me, view = self.st.view, "request timer expired");
                let next = self.st.view.saturating_add(1);
                self.start_view_change(next, out);
            }
            TimerId::ViewChange => {
                if !self.vc_timer_armed || !self.st.in_view_change {
                    return;
                }
                self.vc_timer_armed = false;
                if self.vc_timer_escalates {
                    let next = self.st.view.saturating_add(1);
                    self.start_view_change(next, out);
                } else {
                    // Not enough peers joined yet: re-send, do not escalate,
                    // so a lone partitioned replica does not race ahead.
                    self.retransmit_view_change(out);
                    self.arm_vc_timer(false, out);
                }
            }
            TimerId::Censorship => self.on_censorship_timer(out),
        }
    }

    /// The request timer runs while work is outstanding and nothing commits.
    pub(crate) fn update_request_timer(&mut self, progressed: bool, out: &mut Vec<Action>) {
        let lc = self.st.last_committed;
        let outstanding = self
            .st
            .slots
            .range(lc.saturating_add(1)..)
            .any(|(_, s)| s.pre_prepare.is_some() || s.committed.is_some());
        let needed = !self.st.in_view_change
            && self.fetching.is_none()
            && (self.requests_pending || outstanding || self.epoch_drained());
        if needed && (!self.request_timer_armed || progressed) {
            self.request_timer_armed = true;
            // Backups watch the primary. The primary's own timer only
            // catches it being stuck (deposed, or missing votes it lost),
            // so it waits longer: it must not abandon its view whenever the
            // backups are merely slow to vote on large blocks.
            let after_ms = if self.is_primary() {
                self.request_timeout_ms()
                    .saturating_mul(PRIMARY_TIMEOUT_FACTOR)
            } else {
                self.request_timeout_ms()
            };
            out.push(Action::SetTimer {
                id: TimerId::Request,
                after_ms,
            });
        } else if !needed && self.request_timer_armed {
            self.request_timer_armed = false;
            out.push(Action::CancelTimer {
                id: TimerId::Request,
            });
        }
    }

    pub(crate) fn arm_vc_timer(&mut self, escalates: bool, out: &mut Vec<Action>) {
        self.vc_timer_armed = true;
        self.vc_timer_escalates = escalates;
        let after_ms = if escalates {
            crate::timers::backoff(
                self.cfg.view_change_timeout_ms,
                self.st.vc_attempts.saturating_sub(1),
                self.cfg.max_backoff_exponent,
            )
        } else {
            self.cfg.view_change_timeout_ms
        };
        out.push(Action::SetTimer {
            id: TimerId::ViewChange,
            after_ms,
        });
    }

    pub(crate) fn cancel_vc_timer(&mut self, out: &mut Vec<Action>) {
        if self.vc_timer_armed {
            self.vc_timer_armed = false;
            out.push(Action::CancelTimer {
                id: TimerId::ViewChange,
            });
        }
    }
}
