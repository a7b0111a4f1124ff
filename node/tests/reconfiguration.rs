//! Live reconfiguration of a 4-replica consortium of real processes under
//! a steady load, by configuration transactions signed with member admin
//! keys (policy: Vote, 67%, at least):
//!
//! - a fifth member is proposed and voted in; a second vote on the decided
//!   proposal and a change signed by a non-member are refused;
//! - the block interval goes from 200 ms to 1 s and back, and block
//!   timestamps follow from the announced heights on every replica;
//! - the member is removed again.
//!
//! Throughout: no transaction of the load fails or is lost, and every
//! replica holds the same chain.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use ed25519_dalek::SigningKey;
use kubeledger_node::client::Client;
use kubeledger_node::crypto::keys;
use kubeledger_node::genesis::{Admission, AdmissionMode, ChainParams, VoteComparator};
use kubeledger_node::local::admin_key_path;
use kubeledger_node::proto::{self, config_change::Change, RejectReason};
use kubeledger_node::tx::{envelope, reject};

const N: usize = 4;
const WAIT: Duration = Duration::from_secs(60);

fn admin(dir: &std::path::Path, i: usize) -> SigningKey {
    keys::load(&admin_key_path(dir, &format!("org{}", i + 1))).expect("admin key")
}

/// Height of the last configuration change a client saw committed: reads
/// through another replica first wait until it has executed that far.
static LAST_CHANGE: AtomicU64 = AtomicU64::new(0);

/// Submits a configuration change and insists it was applied.
async fn change(client: &mut Client, key: &SigningKey, c: Change) -> proto::ConfigOutcome {
    let (committed, outcome) = client
        .submit_config(key, c, WAIT)
        .await
        .expect("configuration change commits");
    assert!(outcome.applied, "not applied: {}", outcome.message);
    LAST_CHANGE.fetch_max(committed.height, Ordering::SeqCst);
    outcome
}

fn vote(id: u64) -> Change {
    Change::Vote(proto::Vote {
        proposal_id: id,
        approve: true,
    })
}

async fn proposal(client: &mut Client, id: u64) -> proto::Proposal {
    wait_height(client, LAST_CHANGE.load(Ordering::SeqCst), WAIT).await;
    client
        .inner
        .list_proposals(proto::ListProposalsRequest::default())
        .await
        .expect("list proposals")
        .into_inner()
        .proposals
        .into_iter()
        .find(|p| p.id == id)
        .expect("proposal listed")
}

/// (timestamp, proposer) of blocks `from..=to`.
async fn timestamps(client: &mut Client, from: u64, to: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for h in from..=to {
        let b = block_at(client, h).await;
        let header = b.block.and_then(|b| b.header).expect("header");
        out.push((header.timestamp_ms, header.proposer));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_and_leave_and_the_block_interval_changes_under_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let admission = Admission {
        mode: AdmissionMode::Vote,
        threshold_percent: 67,
        comparator: VoteComparator::AtLeast,
        expiry_ms: 600_000,
        consortium_admin: String::new(),
    };
    let nodes = consortium_with(dir.path(), N, ChainParams::default(), admission);
    let _children: Vec<_> = nodes.iter().map(spawn_node_process).collect();
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(connect_retry(&n.endpoint(), WAIT).await);
    }
    let admins: Vec<SigningKey> = (0..N).map(|i| admin(dir.path(), i)).collect();

    // Steady load: each worker puts and waits, round-robin over the nodes.
    let load = Load::start(&clients, 4, 10, WAIT);
    wait_height(&clients[0], 5, WAIT).await;

    // Admission of org5, proposed by org2 (its approval counts), approved by
    // org3 and org4: 3 of 4 = 75% >= 67%.
    let org5_admin = keys::generate();
    let org5_node = keys::generate();
    let admit = Change::Admit(proto::AdmitMember {
        member: "org5".into(),
        organization: "Organisation 5".into(),
        admin_key: org5_admin.verifying_key().to_bytes().to_vec(),
        nodes: vec![proto::NodeInfo {
            name: "node-4".into(),
            public_key: org5_node.verifying_key().to_bytes().to_vec(),
            peer_address: "127.0.0.5:7051".into(),
        }],
    });
    let proposed = change(&mut clients[1], &admins[1], admit).await;
    let id = proposed.proposal_id;
    let open = proposal(&mut clients[0], id).await;
    assert_eq!(open.state, proto::ProposalState::Open as i32, "{open:?}");
    assert_eq!(open.proposer, "org2");
    change(&mut clients[2], &admins[2], vote(id)).await;
    let still_open = proposal(&mut clients[0], id).await;
    assert_eq!(
        still_open.state,
        proto::ProposalState::Open as i32,
        "2 of 4 < 67%"
    );
    change(&mut clients[3], &admins[3], vote(id)).await;
    let decided = proposal(&mut clients[3], id).await;
    assert_eq!(
        decided.state,
        proto::ProposalState::Approved as i32,
        "{decided:?}"
    );
    assert_eq!(decided.ballots.len(), 3);
    wait_height(&clients[0], LAST_CHANGE.load(Ordering::SeqCst), WAIT).await;
    let config = clients[0]
        .inner
        .get_config(proto::GetConfigRequest::default())
        .await
        .expect("config")
        .into_inner()
        .config
        .expect("config");
    assert_eq!(config.members.len(), 5);
    assert!(config.members.iter().any(|m| m.name == "org5"));

    // A second vote on a decided proposal, and a change signed by a key
    // that is no member's, are refused at submission with the rule.
    let late = clients[3].sign(&admins[0], envelope::config(vote(id)));
    let status = clients[3]
        .inner
        .submit(proto::SubmitRequest { tx: Some(late) })
        .await
        .expect_err("decided proposal");
    let r = reject::from_status(&status).expect("reason");
    assert_eq!(r.reason, RejectReason::ConfigRefused, "{}", r.message);
    let stranger = clients[0].sign(&client_key(99), envelope::config(vote(id)));
    let status = clients[0]
        .inner
        .submit(proto::SubmitRequest { tx: Some(stranger) })
        .await
        .expect_err("not a member");
    assert_eq!(
        reject::from_status(&status).map(|r| r.reason),
        Some(RejectReason::NotAuthorized)
    );

    // Block interval 200 ms -> 1 s, proposed by org1, approved by org2 and
    // org3 of now five members (3 of 5 = 60% < 67%: org4 must approve too).
    let slow = Change::UpdateParams(proto::UpdateParams {
        block_interval_ms: Some(1_000),
        ..Default::default()
    });
    let p = change(&mut clients[0], &admins[0], slow).await.proposal_id;
    for i in [1, 2] {
        change(&mut clients[i], &admins[i], vote(p)).await;
    }
    assert_eq!(
        proposal(&mut clients[0], p).await.state,
        proto::ProposalState::Open as i32
    );
    change(&mut clients[3], &admins[3], vote(p)).await;
    let slow_from = proposal(&mut clients[0], p).await.effective_height;
    assert!(slow_from > 0);
    wait_height(&clients[0], slow_from + 4, WAIT).await;

    let fast = Change::UpdateParams(proto::UpdateParams {
        block_interval_ms: Some(200),
        ..Default::default()
    });
    let p = change(&mut clients[0], &admins[0], fast).await.proposal_id;
    for i in [1, 2, 3] {
        change(&mut clients[i], &admins[i], vote(p)).await;
    }
    let fast_from = proposal(&mut clients[0], p).await.effective_height;
    wait_height(&clients[0], fast_from + 10, WAIT).await;

    // Remove org5 again (org1 proposes; org2..org4 approve: 4 of 5).
    let remove = Change::Remove(proto::RemoveMember {
        member: "org5".into(),
    });
    let p = change(&mut clients[0], &admins[0], remove)
        .await
        .proposal_id;
    for i in [1, 2, 3] {
        change(&mut clients[i], &admins[i], vote(p)).await;
    }
    assert_eq!(
        proposal(&mut clients[2], p).await.state,
        proto::ProposalState::Approved as i32
    );

    let (acked, failures) = load.stop().await;
    assert_eq!(failures, 0, "load transactions failed");

    // Every replica: same chain, same configuration, the new interval in
    // the block timestamps from the announced height, every ack committed.
    let tip = common::status(&mut clients[0]).await.height;
    for c in clients.iter_mut() {
        wait_height(c, tip, WAIT).await;
    }
    let reference = timestamps(&mut clients[0], 1, tip).await;
    for c in clients.iter_mut().skip(1) {
        assert_eq!(timestamps(c, 1, tip).await, reference, "replicas disagree");
    }
    // reference[h - 1] is block h; the gap of block h is its distance to
    // block h - 1, counted when the same primary proposed both (a new
    // primary after a view change starts its own interval).
    let gaps = |from: u64, to: u64| -> Vec<u64> {
        (from.max(2)..to)
            .filter_map(|h| {
                let (ts, proposer) = &reference[h as usize - 1];
                let (prev_ts, prev_proposer) = &reference[h as usize - 2];
                (proposer == prev_proposer).then(|| ts - prev_ts)
            })
            .collect()
    };
    // Blocks at heights [slow_from, fast_from) follow the 1 s interval: the
    // primary cuts no block before the interval has passed since the last.
    let slow_gaps = gaps(slow_from + 1, fast_from);
    assert!(!slow_gaps.is_empty());
    assert!(
        slow_gaps.iter().all(|g| *g >= 990),
        "blocks under the 1 s interval came faster: {slow_gaps:?}"
    );
    let mut fast_gaps = gaps(fast_from + 1, tip);
    fast_gaps.sort_unstable();
    assert!(
        fast_gaps[fast_gaps.len() / 2] < 1_000,
        "blocks after the change back to 200 ms are still 1 s apart: {fast_gaps:?}"
    );
    assert!(!acked.is_empty());
    for c in clients.iter_mut() {
        assert_committed(c, &acked).await;
    }
    // The configuration's history: genesis, then one version per change.
    let history = clients[1]
        .full_history(kubeledger_node::governance::keys::CONFIG_KEY)
        .await
        .expect("config history");
    assert!(history.len() >= 6, "{} versions", history.len());
    let before = clients[1]
        .inner
        .get_config(proto::GetConfigRequest { at_height: 1 })
        .await
        .expect("config at 1")
        .into_inner()
        .config
        .expect("config");
    assert_eq!(before.members.len(), 4);
    assert_eq!(before.version, 0);
}
