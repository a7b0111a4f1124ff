//! Building `BlockEvent`s for subscribers, filtered by key prefix.

use prost::Message;

use crate::crypto::sha256;
use crate::ledger::CommittedBlock;
use crate::proto::{tx_body::Payload, Block, BlockEvent, ContractEvent, TxBody, TxEvent};
use crate::tx::envelope::Write;

fn matches(key: &[u8], prefix: &[u8]) -> bool {
    key.starts_with(prefix)
}

/// The key a transaction's event carries: the key written, the
/// configuration key, or a called contract's namespace.
fn event_key(write: &Write) -> std::borrow::Cow<'_, [u8]> {
    match write {
        Write::Call(c) => kubeledger_contract::namespaced(&c.contract, b"").into(),
        w => w.key().as_ref().into(),
    }
}

/// Event for a block just committed (transactions already decoded).
pub fn from_committed(block: &CommittedBlock, prefix: &[u8]) -> BlockEvent {
    let txs = block
        .txs
        .iter()
        .enumerate()
        .filter(|(_, tx)| matches(&event_key(&tx.write), prefix))
        .map(|(i, tx)| TxEvent {
            tx_id: tx.id.0.to_vec(),
            tx_index: i as u32,
            key: event_key(&tx.write).to_vec(),
            deleted: matches!(tx.write, Write::Delete { .. }),
            sender: tx.sender.to_bytes().to_vec(),
            contract_events: block
                .contract_events
                .get(&(i as u32))
                .cloned()
                .unwrap_or_default(),
        })
        .collect();
    BlockEvent {
        header: block.block.header.clone(),
        block_hash: block.hash.to_vec(),
        txs,
    }
}

/// Event for a block read back from storage; `events_of` gives what a
/// contract call emitted, by transaction id (from its stored outcome).
pub fn from_stored(
    block: &Block,
    hash: &[u8],
    prefix: &[u8],
    events_of: impl Fn(&[u8; 32]) -> Vec<ContractEvent>,
) -> BlockEvent {
    let txs = block
        .txs
        .iter()
        .enumerate()
        .filter_map(|(i, signed)| {
            // Committed bodies were checked at admission; skip defensively if not.
            let body = TxBody::decode(signed.body.clone()).ok()?;
            let (key, deleted, call) = match body.payload? {
                Payload::Put(p) => (p.key, false, false),
                Payload::Delete(d) => (d.key, true, false),
                Payload::Config(_) => (crate::governance::keys::CONFIG_KEY.to_vec(), false, false),
                Payload::Call(c) => (
                    kubeledger_contract::namespaced(&c.contract, b""),
                    false,
                    true,
                ),
            };
            let id = sha256(&signed.body);
            matches(&key, prefix).then(|| TxEvent {
                tx_id: id.to_vec(),
                tx_index: i as u32,
                key,
                deleted,
                sender: body.sender,
                contract_events: if call { events_of(&id) } else { Vec::new() },
            })
        })
        .collect();
    BlockEvent {
        header: block.header.clone(),
        block_hash: hash.to_vec(),
        txs,
    }
}
