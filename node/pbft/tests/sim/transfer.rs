//! The node's state transfer (`Action::FetchState`), modelled on what a
//! node must do: ask the certificate's signers one after the other, check
//! what a peer serves against the certificate (every block links to the
//! previous one, and the last one has the certified state root and block
//! hash), and move on to another peer when it does not. A byzantine peer
//! serves a forged chain: a wrong state root, a broken block hash, another
//! history with consistent hashes, or a truncated chain.

use kubeledger_pbft::{Digest, Input, ReplicaIndex};
use rand::Rng;

use super::{hash_parts, Block, Ev, Sim};

/// A state fetch in progress.
#[derive(Clone, Debug)]
pub struct Fetch {
    pub target: u64,
    pub state_root: Digest,
    pub block_hash: Digest,
    /// The certificate's signers (nodes), asked in turn from `next`.
    pub peers: Vec<usize>,
    pub next: usize,
}

impl Sim {
    pub(super) fn start_fetch(
        &mut self,
        node: usize,
        target: u64,
        state_root: Digest,
        block_hash: Digest,
        peers: &[ReplicaIndex],
    ) {
        let members = &self.epoch(node).members;
        let peers: Vec<usize> = peers
            .iter()
            .filter_map(|p| members.get(*p as usize).copied())
            .filter(|p| *p != node)
            .collect();
        let next = if peers.is_empty() {
            0
        } else {
            self.rng.gen_range(0..peers.len())
        };
        let t = self.now + self.rng.gen_range(5..30);
        let fetch = Fetch {
            target,
            state_root,
            block_hash,
            peers,
            next,
        };
        self.at(t, Ev::Fetch { node, fetch });
    }

    pub(super) fn do_fetch(&mut self, node: usize, mut fetch: Fetch) {
        if self.nodes[node].replica.is_none() {
            return;
        }
        // Blocks committed before the transfer began are executed first.
        while !self.nodes[node].exec_queue.is_empty() {
            self.execute_next(node);
        }
        let target = fetch.target;
        let have = self.nodes[node].ledger.len() as u64;
        if have < target {
            let mut fetched = None;
            for k in 0..fetch.peers.len() {
                let peer = fetch.peers[(fetch.next + k) % fetch.peers.len()];
                if self.nodes[peer].down {
                    continue;
                }
                let forged = !self.honest(peer);
                let chain = if forged {
                    self.forged_chain(peer, have, target)
                } else if self.nodes[peer].ledger.len() as u64 >= target {
                    self.nodes[peer].ledger[have as usize..target as usize].to_vec()
                } else {
                    // It has not executed that far yet.
                    continue;
                };
                let ok = self.verify_chain(node, &chain, &fetch);
                match (ok, forged) {
                    (true, false) => {
                        fetched = Some(chain);
                        break;
                    }
                    (false, true) => {
                        self.byz_stats.forged_chains_rejected += 1;
                        if self.trace {
                            eprintln!(
                                "t={} node {node} rejects a forged chain from node {peer}",
                                self.now
                            );
                        }
                    }
                    (true, true) => {
                        self.violations.push(format!(
                            "node {node}: accepted a forged chain from node {peer}"
                        ));
                        return;
                    }
                    (false, false) => {
                        self.violations.push(format!(
                            "node {node}: rejected the honest chain of node {peer}"
                        ));
                        return;
                    }
                }
            }
            let Some(blocks) = fetched else {
                // Nobody served it (yet): retry later, starting elsewhere.
                fetch.next += 1;
                let t = self.now + 50;
                self.at(t, Ev::Fetch { node, fetch });
                return;
            };
            self.state_transfers += 1;
            for b in blocks {
                self.execute_block(node, b, false);
            }
        }
        let n = &self.nodes[node];
        if target > 0 && n.ledger[target as usize - 1].block_hash != fetch.block_hash {
            self.violations.push(format!(
                "node {node}: certified checkpoint {target} does not match the fetched chain"
            ));
        }
        let top = n.ledger.len() as u64;
        let (state_root, block_hash) = n
            .ledger
            .last()
            .map_or(([0; 32], [0; 32]), |b| (b.state_root, b.block_hash));
        self.step(
            node,
            Input::StateTransferred {
                seq: top,
                state_root,
                block_hash,
            },
        );
    }

    /// The node's check of a served chain: it continues the local ledger,
    /// every block's hashes follow from its payload and predecessor, and it
    /// ends exactly at the certified checkpoint.
    fn verify_chain(&self, node: usize, chain: &[Block], fetch: &Fetch) -> bool {
        let ledger = &self.nodes[node].ledger;
        if ledger.len() + chain.len() != fetch.target as usize {
            return false;
        }
        let (mut root, mut hash) = ledger
            .last()
            .map_or(([0; 32], [0; 32]), |b| (b.state_root, b.block_hash));
        for (i, b) in chain.iter().enumerate() {
            let seq = (ledger.len() + i + 1) as u64;
            let digest = b.payload.digest();
            root = hash_parts(&[&root, &digest]);
            hash = hash_parts(&[&seq.to_be_bytes(), &hash, &digest]);
            if b.digest != digest || b.state_root != root || b.block_hash != hash {
                return false;
            }
        }
        root == fetch.state_root && hash == fetch.block_hash
    }

    /// What a byzantine source serves for blocks `have + 1 ..= target`.
    fn forged_chain(&mut self, peer: usize, have: u64, target: u64) -> Vec<Block> {
        let ledger = &self.nodes[peer].ledger;
        let end = (target as usize).min(ledger.len());
        let mut chain: Vec<Block> = ledger.get(have as usize..end).unwrap_or(&[]).to_vec();
        let want = (target - have) as usize;
        if chain.len() < want || chain.is_empty() {
            // Truncated: it does not have (or gives) the whole chain.
            chain.truncate(want.saturating_sub(1));
            return chain;
        }
        let i = self.rng.gen_range(0..chain.len());
        match self.rng.gen_range(0..4) {
            0 => {
                // The right blocks, a wrong state at the checkpoint.
                let last = chain.len() - 1;
                self.rng.fill(&mut chain[last].state_root);
            }
            1 => self.rng.fill(&mut chain[i].block_hash),
            2 => {
                // Another history from block i on, hashed consistently.
                let (mut root, mut hash) = if i == 0 {
                    self.nodes[peer]
                        .ledger
                        .get((have as usize).wrapping_sub(1))
                        .map_or(([0; 32], [0; 32]), |b| (b.state_root, b.block_hash))
                } else {
                    (chain[i - 1].state_root, chain[i - 1].block_hash)
                };
                chain[i].payload.txs.make_mut().push(b"forged".to_vec());
                for (j, b) in chain.iter_mut().enumerate().skip(i) {
                    let seq = have + j as u64 + 1;
                    b.digest = b.payload.digest();
                    root = hash_parts(&[&root, &b.digest]);
                    hash = hash_parts(&[&seq.to_be_bytes(), &hash, &b.digest]);
                    b.state_root = root;
                    b.block_hash = hash;
                }
            }
            _ => chain.truncate(want - 1),
        }
        chain
    }
}
