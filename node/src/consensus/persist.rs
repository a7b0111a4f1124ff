//! Durable replica state. The PBFT log holds each payload several times
//! (pre-prepare, prepared certificate, committed slot, view-change proofs),
//! so payloads are stored once, by digest, and the state is written with
//! empty placeholders that are filled back in at restart.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use kubeledger_pbft::{Digest, Payload, PersistentState, PreparedCert, Slot};

use super::codec::{self, CodecError};
use super::payload_table;
use crate::ledger::{Ledger, LedgerError};

const STATE_KEY: &[u8] = b"state";
const PAYLOAD_PREFIX: &[u8] = b"payload/";

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("stored replica state references payload {0} which is missing")]
    MissingPayload(String),
}

fn payload_key(d: &Digest) -> Vec<u8> {
    let mut k = PAYLOAD_PREFIX.to_vec();
    k.extend_from_slice(d);
    k
}

/// Writes the replica state; remembers which payloads are already stored.
#[derive(Debug)]
pub struct Persister {
    ledger: Arc<Ledger>,
    stored: HashSet<Digest>,
}

impl Persister {
    /// Loads the stored state, if any, with its payloads filled back in.
    pub fn load(ledger: Arc<Ledger>) -> Result<(Self, Option<PersistentState>), PersistError> {
        let mut persister = Persister {
            ledger,
            stored: HashSet::new(),
        };
        let Some(bytes) = persister.ledger.consensus_record(STATE_KEY)? else {
            return Ok((persister, None));
        };
        let mut st: PersistentState = codec::decode("replica state", &bytes, usize::MAX)?;
        let mut loaded: HashMap<Digest, Payload> = HashMap::new();
        let mut refs = Vec::new();
        for_each_payload_mut(&mut st, &mut |digest, payload| {
            refs.push(*digest);
            let _ = payload;
        });
        for d in refs {
            if loaded.contains_key(&d) {
                continue;
            }
            let bytes = persister
                .ledger
                .consensus_record(&payload_key(&d))?
                .ok_or_else(|| PersistError::MissingPayload(hex::encode(d)))?;
            let p: Payload = codec::decode("stored payload", &bytes, usize::MAX)?;
            loaded.insert(d, p);
        }
        for_each_payload_mut(&mut st, &mut |digest, payload| {
            if let Some(p) = loaded.get(digest) {
                *payload = p.clone();
            }
        });
        persister.stored = loaded.into_keys().collect();
        Ok((persister, Some(st)))
    }

    /// Durably writes `st` (one fsynced batch with any new payloads, and
    /// deletes payloads no longer referenced).
    pub fn save(&mut self, st: &PersistentState) -> Result<(), PersistError> {
        let mut payloads: HashMap<Digest, &Payload> = HashMap::new();
        let stripped = strip_state(st, &mut payloads);
        let mut puts = Vec::new();
        for (d, p) in &payloads {
            if !self.stored.contains(d) {
                puts.push((payload_key(d), codec::encode("payload", *p)?));
            }
        }
        let deletes: Vec<Vec<u8>> = self
            .stored
            .iter()
            .filter(|d| !payloads.contains_key(*d))
            .map(payload_key)
            .collect();
        puts.push((
            STATE_KEY.to_vec(),
            codec::encode("replica state", &stripped)?,
        ));
        self.ledger.write_consensus(&puts, &deletes)?;
        self.stored = payloads.into_keys().collect();
        Ok(())
    }
}

fn strip_state<'a>(
    st: &'a PersistentState,
    out: &mut HashMap<Digest, &'a Payload>,
) -> PersistentState {
    let slots: BTreeMap<_, _> = st
        .slots
        .iter()
        .map(|(seq, s)| {
            let slot = Slot {
                pre_prepare: s.pre_prepare.as_ref().map(|m| payload_table::strip(m, out)),
                validated: s.validated,
                prepares: s.prepares.clone(),
                commits: s.commits.clone(),
                sent_prepare: s.sent_prepare,
                sent_commit: s.sent_commit,
                prepared: s.prepared.as_ref().map(|c| PreparedCert {
                    pre_prepare: payload_table::strip(&c.pre_prepare, out),
                    prepares: c.prepares.clone(),
                }),
                committed: s.committed.as_ref().map(|(p, c)| {
                    payload_table::keep(&c.digest, p, out);
                    (Payload::null(), c.clone())
                }),
            };
            (*seq, slot)
        })
        .collect();
    PersistentState {
        view: st.view,
        in_view_change: st.in_view_change,
        stable: st.stable.clone(),
        last_committed: st.last_committed,
        next_seq: st.next_seq,
        slots,
        own_view_change: st
            .own_view_change
            .as_ref()
            .map(|m| payload_table::strip(m, out)),
        sent_view_changes: st
            .sent_view_changes
            .iter()
            .map(|(v, m)| (*v, payload_table::strip(m, out)))
            .collect(),
        new_view: st.new_view.as_ref().map(|m| payload_table::strip(m, out)),
        own_checkpoints: st.own_checkpoints.clone(),
        view_changes: st.view_changes,
        vc_attempts: st.vc_attempts,
    }
}

/// Visits every (digest, payload) place of a stripped or full state.
fn for_each_payload_mut(st: &mut PersistentState, f: &mut impl FnMut(&Digest, &mut Payload)) {
    for s in st.slots.values_mut() {
        if let Some(m) = &mut s.pre_prepare {
            payload_table::for_each_place(m, f);
        }
        if let Some(c) = &mut s.prepared {
            payload_table::for_each_place(&mut c.pre_prepare, f);
        }
        if let Some((p, c)) = &mut s.committed {
            payload_table::visit(&c.digest, p, f);
        }
    }
    for m in st
        .own_view_change
        .iter_mut()
        .chain(st.sent_view_changes.values_mut())
        .chain(st.new_view.iter_mut())
    {
        payload_table::for_each_place(m, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use ed25519_dalek::SigningKey;
    use kubeledger_pbft::{Config, Input, Replica, ValidatorSet};

    #[test]
    fn state_round_trips_with_payloads_stored_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SigningKey::from_bytes(&[3; 32]);
        let genesis = crate::genesis::single_validator_for_tests(&key);
        let ledger =
            Arc::new(Ledger::open(dir.path(), genesis, &StorageConfig::default()).expect("open"));
        let vset = ValidatorSet::new(&[key.verifying_key().to_bytes()]).expect("vset");
        let mut replica =
            Replica::new(Config::default(), vset.clone(), 0, key.clone()).expect("replica");
        let _ = replica.start();
        let payload = Payload {
            timestamp_ms: 5,
            proposer: 0,
            txs: vec![vec![1; 100], vec![2; 50]].into(),
        };
        let _ = replica.step(Input::Propose {
            payload: payload.clone(),
        });
        let (mut persister, none) = Persister::load(ledger.clone()).expect("load");
        assert!(none.is_none());
        persister.save(replica.persistent()).expect("save");
        let (_, loaded) = Persister::load(ledger).expect("load");
        let loaded = loaded.expect("stored state");
        let original = replica.persistent_state();
        assert_eq!(loaded.slots.len(), original.slots.len());
        let slot = loaded.slots.get(&1).expect("slot 1");
        let (p, _) = slot.committed.as_ref().expect("committed");
        assert_eq!(p, &payload);
        assert_eq!(
            slot.pre_prepare,
            original.slots.get(&1).and_then(|s| s.pre_prepare.clone())
        );
    }
}
