//! The governance rules, judged without a ledger.

use ed25519_dalek::SigningKey;

use super::apply::{apply, effective_state, Context, Effects, Refusal};
use super::genesis_config::from_genesis;
use super::params_at;
use crate::genesis::{
    Admission, AdmissionMode, ChainParams, Genesis, Member, Validator, VoteComparator,
};
use crate::proto::config_change::Change;
use crate::proto::{
    AdmitMember, ConfigChange, ConsortiumConfig, NodeInfo, Proposal, ProposalState, RemoveMember,
    UpdateParams, Vote,
};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn admin(i: usize) -> SigningKey {
    key(100 + i as u8)
}

/// `n` members `org1..`, one node each.
fn consortium(n: usize, mode: AdmissionMode) -> ConsortiumConfig {
    let genesis = Genesis {
        chain_id: "gov".into(),
        created_at_ms: 1,
        params: ChainParams::default(),
        validators: (0..n)
            .map(|i| Validator {
                name: format!("node-{i}"),
                public_key: hex::encode(key(i as u8 + 1).verifying_key().to_bytes()),
                peer_address: format!("127.0.0.{}:7051", i + 1),
                member: format!("org{}", i + 1),
            })
            .collect(),
        members: (0..n)
            .map(|i| Member {
                name: format!("org{}", i + 1),
                organization: String::new(),
                admin_key: hex::encode(admin(i).verifying_key().to_bytes()),
            })
            .collect(),
        admission: Some(Admission {
            mode,
            threshold_percent: 67,
            comparator: VoteComparator::AtLeast,
            expiry_ms: 10_000,
            consortium_admin: String::new(),
        }),
    };
    genesis.validate().expect("valid genesis");
    from_genesis(&genesis)
}

fn ctx(height: u64, block_ms: u64) -> Context {
    Context {
        height,
        block_ms,
        tx_id: [height as u8; 32],
    }
}

fn sender(i: usize) -> Vec<u8> {
    admin(i).verifying_key().to_bytes().to_vec()
}

fn change(c: Change) -> ConfigChange {
    ConfigChange { change: Some(c) }
}

fn admit(name: &str, seed: u8) -> ConfigChange {
    change(Change::Admit(AdmitMember {
        member: name.into(),
        organization: "New Org".into(),
        admin_key: key(seed).verifying_key().to_bytes().to_vec(),
        nodes: vec![NodeInfo {
            name: format!("{name}-node-0"),
            public_key: key(seed + 1).verifying_key().to_bytes().to_vec(),
            peer_address: "127.0.0.9:7051".into(),
        }],
    }))
}

fn vote(id: u64, approve: bool) -> ConfigChange {
    change(Change::Vote(Vote {
        proposal_id: id,
        approve,
    }))
}

/// Applies and folds the effects into `config`, returning them.
fn step(
    config: &mut ConsortiumConfig,
    proposal: &mut Option<Proposal>,
    who: usize,
    c: &ConfigChange,
    at: Context,
) -> Result<Effects, Refusal> {
    let effects = apply(config, &sender(who), c, proposal.as_ref(), &at)?;
    if let Some(next) = &effects.config {
        *config = next.clone();
    }
    if let Some(p) = &effects.proposal {
        *proposal = Some(p.clone());
    }
    Ok(effects)
}

#[test]
fn automatic_policy_admits_at_once_when_the_admin_proposes() {
    let mut config = consortium(4, AdmissionMode::Automatic);
    let mut p = None;
    let e = step(&mut config, &mut p, 0, &admit("org5", 50), ctx(7, 1_000)).expect("applies");
    assert!(e.outcome.applied, "{}", e.outcome.message);
    let p = p.expect("proposal");
    assert_eq!(p.state, ProposalState::Approved as i32);
    // K = 10, window 20: the epoch ends at the first checkpoint >= 27.
    assert_eq!(p.effective_height, 31);
    assert_eq!(config.members.len(), 5);
    assert_eq!(config.members[4].admitted_at, 7);
    let next = config.scheduled_validators.as_ref().expect("scheduled");
    assert_eq!((next.from_height, next.proposal_id), (31, p.id));
    assert_eq!(next.validators.len(), 5);
    assert_eq!(next.validators[..4], config.validators[..]);
    assert_eq!(next.validators[4].name, "org5-node-0");
    assert_eq!(config.version, 1);
    assert_eq!(config.next_proposal_id, 2);
}

#[test]
fn automatic_policy_refuses_other_proposers_and_votes() {
    let config = consortium(4, AdmissionMode::Automatic);
    let r = apply(&config, &sender(1), &admit("org5", 50), None, &ctx(1, 1)).unwrap_err();
    assert!(
        matches!(r, Refusal::NotAuthorized(ref m) if m.contains("consortium admin")),
        "{r}"
    );
    let r = apply(&config, &sender(0), &vote(1, true), None, &ctx(1, 1)).unwrap_err();
    assert!(
        matches!(r, Refusal::Refused(ref m) if m.contains("nothing to vote")),
        "{r}"
    );
    let stranger = key(77).verifying_key().to_bytes();
    let r = apply(&config, &stranger, &admit("org5", 50), None, &ctx(1, 1)).unwrap_err();
    assert!(
        matches!(r, Refusal::NotAuthorized(ref m) if m.contains("not the admin key")),
        "{r}"
    );
}

#[test]
fn vote_policy_needs_the_threshold_and_counts_each_member_once() {
    let mut config = consortium(4, AdmissionMode::Vote);
    let mut p = None;
    let e = step(&mut config, &mut p, 1, &admit("org5", 50), ctx(3, 1_000)).expect("proposed");
    assert!(e.outcome.applied);
    assert_eq!(
        p.as_ref().map(|p| p.state),
        Some(ProposalState::Open as i32)
    );
    assert_eq!(config.members.len(), 4, "not admitted before the vote");
    // The proposer already approved; a second ballot is refused.
    let r = step(&mut config, &mut p, 1, &vote(1, true), ctx(4, 2_000)).unwrap_err();
    assert!(r.to_string().contains("already voted"), "{r}");
    step(&mut config, &mut p, 2, &vote(1, true), ctx(5, 2_000)).expect("vote");
    assert_eq!(
        p.as_ref().map(|p| p.state),
        Some(ProposalState::Open as i32)
    );
    // 3 of 4 = 75% >= 67%.
    step(&mut config, &mut p, 3, &vote(1, true), ctx(6, 3_000)).expect("vote");
    let decided = p.clone().expect("proposal");
    assert_eq!(decided.state, ProposalState::Approved as i32);
    assert_eq!(decided.decided_height, 6);
    assert_eq!(config.members.len(), 5);
    let r = step(&mut config, &mut p, 0, &vote(1, false), ctx(7, 3_000)).unwrap_err();
    assert!(r.to_string().contains("already approved"), "{r}");
}

#[test]
fn vote_policy_rejects_when_the_threshold_is_out_of_reach() {
    let mut config = consortium(4, AdmissionMode::Vote);
    let mut p = None;
    step(&mut config, &mut p, 0, &admit("org5", 50), ctx(3, 1_000)).expect("proposed");
    step(&mut config, &mut p, 1, &vote(1, false), ctx(4, 1_000)).expect("vote");
    step(&mut config, &mut p, 2, &vote(1, false), ctx(5, 1_000)).expect("vote");
    let p = p.expect("proposal");
    assert_eq!(p.state, ProposalState::Rejected as i32);
    assert_eq!(config.members.len(), 4);
}

#[test]
fn a_vote_after_expiry_expires_the_proposal_and_is_not_counted() {
    let mut config = consortium(4, AdmissionMode::Vote);
    let mut p = None;
    step(&mut config, &mut p, 0, &admit("org5", 50), ctx(3, 1_000)).expect("proposed");
    let open = p.clone().expect("proposal");
    assert_eq!(open.expires_ms, 11_000);
    assert_eq!(effective_state(&open, 11_000), ProposalState::Open);
    assert_eq!(effective_state(&open, 11_001), ProposalState::Expired);
    let e = step(&mut config, &mut p, 1, &vote(1, true), ctx(9, 11_001)).expect("recorded");
    assert!(!e.outcome.applied);
    let p = p.expect("proposal");
    assert_eq!(p.state, ProposalState::Expired as i32);
    assert_eq!(p.ballots.len(), 1);
    assert!(e.config.is_none());
}

#[test]
fn greater_than_needs_more_than_the_threshold() {
    let mut config = consortium(4, AdmissionMode::Vote);
    if let Some(a) = config.admission.as_mut() {
        a.threshold_percent = 50;
        a.comparator = crate::proto::VoteComparator::GreaterThan as i32;
    }
    let mut p = None;
    step(&mut config, &mut p, 0, &admit("org5", 50), ctx(3, 1_000)).expect("proposed");
    step(&mut config, &mut p, 1, &vote(1, true), ctx(4, 1_000)).expect("vote");
    assert_eq!(
        p.as_ref().map(|p| p.state),
        Some(ProposalState::Open as i32),
        "2 of 4 is not > 50%"
    );
    step(&mut config, &mut p, 2, &vote(1, true), ctx(5, 1_000)).expect("vote");
    assert_eq!(
        p.as_ref().map(|p| p.state),
        Some(ProposalState::Approved as i32)
    );
}

#[test]
fn bad_admissions_are_refused_with_the_rule() {
    let config = consortium(4, AdmissionMode::Automatic);
    let refused = |c: ConfigChange| {
        apply(&config, &sender(0), &c, None, &ctx(1, 1))
            .unwrap_err()
            .to_string()
    };
    assert!(refused(admit("org2", 50)).contains("already a member"));
    assert!(refused(admit("Bad Name", 50)).contains("member name"));
    let mut dup_admin = admit("org5", 50);
    if let Some(Change::Admit(a)) = dup_admin.change.as_mut() {
        a.admin_key = sender(1);
    }
    assert!(refused(dup_admin).contains("admin key"));
    let mut dup_node = admit("org5", 50);
    if let Some(Change::Admit(a)) = dup_node.change.as_mut() {
        a.nodes[0].public_key = key(1).verifying_key().to_bytes().to_vec();
    }
    assert!(refused(dup_node).contains("already another node"));
    let mut no_nodes = admit("org5", 50);
    if let Some(Change::Admit(a)) = no_nodes.change.as_mut() {
        a.nodes.clear();
    }
    assert!(refused(no_nodes).contains("1 to 16 nodes"));
    let mut short_key = admit("org5", 50);
    if let Some(Change::Admit(a)) = short_key.change.as_mut() {
        a.admin_key = vec![1; 5];
    }
    assert!(refused(short_key).contains("32-byte"));
    assert!(refused(ConfigChange::default()).contains("empty"));
}

#[test]
fn removal_keeps_the_admin_and_a_quorum_of_validators() {
    let mut config = consortium(5, AdmissionMode::Automatic);
    let remove = |m: &str| change(Change::Remove(RemoveMember { member: m.into() }));
    let r = apply(&config, &sender(0), &remove("org1"), None, &ctx(1, 1)).unwrap_err();
    assert!(r.to_string().contains("consortium admin"), "{r}");
    let r = apply(&config, &sender(0), &remove("org9"), None, &ctx(1, 1)).unwrap_err();
    assert!(r.to_string().contains("not a member"), "{r}");
    let mut p = None;
    step(&mut config, &mut p, 0, &remove("org5"), ctx(2, 1)).expect("5 -> 4 validators");
    assert_eq!(config.members.len(), 4);
    let next = config.scheduled_validators.clone().expect("scheduled");
    assert_eq!(next.from_height, 31);
    assert_eq!(next.validators, config.validators[..4]);
    // One validator change per epoch.
    let r = apply(&config, &sender(0), &remove("org4"), None, &ctx(3, 1)).unwrap_err();
    assert!(
        r.to_string().contains("one validator change per epoch"),
        "{r}"
    );
    let r = apply(&config, &sender(0), &admit("org6", 60), None, &ctx(30, 1)).unwrap_err();
    assert!(r.to_string().contains("takes over at height 31"), "{r}");
    let r = apply(&config, &sender(0), &remove("org4"), None, &ctx(31, 1)).unwrap_err();
    assert!(r.to_string().contains("at least 4"), "{r}");
}

#[test]
fn parameter_updates_apply_from_the_announced_height() {
    let mut config = consortium(4, AdmissionMode::Automatic);
    let mut p = None;
    let slow = change(Change::UpdateParams(UpdateParams {
        block_interval_ms: Some(1_000),
        ..Default::default()
    }));
    step(&mut config, &mut p, 0, &slow, ctx(40, 1)).expect("scheduled");
    let from = 40 + super::activation_delay(10);
    assert_eq!(p.as_ref().map(|p| p.effective_height), Some(from));
    assert_eq!(params_at(&config, from - 1).block_interval_ms, 200);
    assert_eq!(params_at(&config, from).block_interval_ms, 1_000);
    // Only one parameter change in flight at a time.
    let fast = change(Change::UpdateParams(UpdateParams {
        block_interval_ms: Some(200),
        ..Default::default()
    }));
    let r = apply(&config, &sender(0), &fast, None, &ctx(45, 1)).unwrap_err();
    assert!(r.to_string().contains("take effect at height"), "{r}");
    // Once in force, the next change builds on it.
    step(&mut config, &mut p, 0, &fast, ctx(from + 1, 1)).expect("scheduled again");
    assert_eq!(params_at(&config, from + 1).block_interval_ms, 1_000);
    let back = from + 1 + super::activation_delay(10);
    assert_eq!(params_at(&config, back).block_interval_ms, 200);
    let bad = change(Change::UpdateParams(UpdateParams {
        max_block_txs: Some(0),
        ..Default::default()
    }));
    let r = apply(&config, &sender(0), &bad, None, &ctx(back + 1, 1)).unwrap_err();
    assert!(r.to_string().contains("max_block_txs"), "{r}");
    // Blocks so large that a VIEW-CHANGE of the window would not fit a
    // consensus message: refused, or losing the primary would halt the chain.
    let huge = change(Change::UpdateParams(UpdateParams {
        max_block_bytes: Some(64 * 1024 * 1024),
        ..Default::default()
    }));
    let r = apply(&config, &sender(0), &huge, None, &ctx(back + 1, 1)).unwrap_err();
    assert!(r.to_string().contains("VIEW-CHANGE"), "{r}");
}

#[test]
fn an_approved_change_that_no_longer_applies_is_rejected_with_the_reason() {
    let mut config = consortium(4, AdmissionMode::Vote);
    let (mut first, mut second) = (None, None);
    step(&mut config, &mut first, 0, &admit("org5", 50), ctx(2, 1)).expect("proposal 1");
    step(&mut config, &mut second, 1, &admit("org5", 60), ctx(3, 1)).expect("proposal 2");
    for who in [1, 2] {
        step(&mut config, &mut first, who, &vote(1, true), ctx(4, 1)).expect("vote");
    }
    assert_eq!(
        first.as_ref().map(|p| p.state),
        Some(ProposalState::Approved as i32)
    );
    // Five members now: 4 of 5 approvals reach 67% (once the first
    // admission's validator set took over at 31: one change per epoch).
    for who in [0, 2, 3] {
        step(&mut config, &mut second, who, &vote(2, true), ctx(31, 1)).expect("vote");
    }
    let second = second.expect("proposal 2");
    assert_eq!(second.state, ProposalState::Rejected as i32);
    assert!(
        second.reason.contains("already a member"),
        "{}",
        second.reason
    );
    assert_eq!(config.members.len(), 5);
}

#[test]
fn a_genesis_without_members_cannot_change() {
    let mut config = consortium(4, AdmissionMode::Automatic);
    config.members.clear();
    let r = apply(&config, &sender(0), &admit("org5", 50), None, &ctx(1, 1)).unwrap_err();
    assert!(r.to_string().contains("names no members"), "{r}");
}

mod properties {
    //! Random sequences of changes from members and strangers, with block
    //! times that let proposals expire: the configuration's invariants hold
    //! after every step, and judging is deterministic.

    use std::collections::{BTreeMap, HashSet};

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Admit(u8),
        Remove(u8),
        Interval(u32),
        Vote(u64, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6).prop_map(Op::Admit),
            (0u8..10).prop_map(Op::Remove),
            prop_oneof![Just(100u32), Just(500), Just(1_000), Just(5)].prop_map(Op::Interval),
            (1u64..8, any::<bool>()).prop_map(|(id, a)| Op::Vote(id, a)),
        ]
    }

    fn to_change(op: &Op) -> ConfigChange {
        match op {
            Op::Admit(i) => admit(&format!("new{i}"), 10 * i + 30),
            Op::Remove(i) if *i < 4 => change(Change::Remove(RemoveMember {
                member: format!("org{}", i + 1),
            })),
            Op::Remove(i) => change(Change::Remove(RemoveMember {
                member: format!("new{}", i - 4),
            })),
            Op::Interval(ms) => change(Change::UpdateParams(UpdateParams {
                block_interval_ms: Some(*ms),
                ..Default::default()
            })),
            Op::Vote(id, approve) => vote(*id, *approve),
        }
    }

    /// The signer: a founding member's admin, an admitted member's, or a
    /// stranger's key.
    fn signer(who: u8) -> Vec<u8> {
        match who {
            0..=3 => sender(who as usize),
            4..=9 => key(10 * (who - 4) + 30).verifying_key().to_bytes().to_vec(),
            _ => key(200).verifying_key().to_bytes().to_vec(),
        }
    }

    fn check_invariants(config: &ConsortiumConfig, initial_nodes: usize) {
        let admin = config
            .admission
            .as_ref()
            .map(|a| a.consortium_admin.clone())
            .unwrap_or_default();
        assert!(
            config.members.iter().any(|m| m.name == admin),
            "the admin stays a member"
        );
        let names: HashSet<_> = config.members.iter().map(|m| &m.name).collect();
        assert_eq!(names.len(), config.members.len(), "member names unique");
        let keys: HashSet<_> = config.members.iter().map(|m| &m.admin_key).collect();
        assert_eq!(keys.len(), config.members.len(), "admin keys unique");
        let nodes: Vec<_> = config.members.iter().flat_map(|m| &m.nodes).collect();
        let node_keys: HashSet<_> = nodes.iter().map(|n| &n.public_key).collect();
        assert_eq!(node_keys.len(), nodes.len(), "node keys unique");
        assert!(nodes.len() >= initial_nodes.min(super::super::apply::MIN_VALIDATORS));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn invariants_hold_under_random_changes(
            vote_mode in any::<bool>(),
            steps in proptest::collection::vec((0u8..11, op(), 0u64..4_000), 1..60),
        ) {
            let mode = if vote_mode { AdmissionMode::Vote } else { AdmissionMode::Automatic };
            let mut config = consortium(4, mode);
            let mut proposals: BTreeMap<u64, Proposal> = BTreeMap::new();
            let mut block_ms = 1_000u64;
            for (height, (who, op, dt)) in steps.iter().enumerate() {
                let height = height as u64 + 1;
                block_ms += dt;
                let at = Context { height, block_ms, tx_id: [height as u8; 32] };
                let c = to_change(op);
                let target = match op {
                    Op::Vote(id, _) => proposals.get(id).cloned(),
                    _ => None,
                };
                let first = apply(&config, &signer(*who), &c, target.as_ref(), &at);
                let again = apply(&config, &signer(*who), &c, target.as_ref(), &at);
                prop_assert_eq!(&first, &again, "judging is deterministic");
                let Ok(effects) = first else { continue };
                if let Some(next) = effects.config {
                    prop_assert!(next.version > config.version);
                    if let Some(s) = &next.scheduled {
                        prop_assert!(s.from_height > height || config.scheduled.is_some());
                    }
                    config = next;
                }
                if let Some(p) = effects.proposal {
                    if let Some(before) = proposals.get(&p.id) {
                        prop_assert_eq!(before.state, ProposalState::Open as i32,
                            "only an open proposal changes");
                        prop_assert!(p.ballots.len() >= before.ballots.len());
                    }
                    let voters: HashSet<_> = p.ballots.iter().map(|b| &b.member).collect();
                    prop_assert_eq!(voters.len(), p.ballots.len(), "one ballot per member");
                    if p.state == ProposalState::Expired as i32 {
                        prop_assert!(block_ms > p.expires_ms);
                    }
                    if !vote_mode {
                        prop_assert_ne!(p.state, ProposalState::Open as i32,
                            "Automatic decides at once");
                    }
                    proposals.insert(p.id, p);
                }
                check_invariants(&config, 4);
            }
        }
    }
}

fn deploy(name: &str, version: u64) -> ConfigChange {
    change(Change::DeployContract(crate::proto::DeployContract {
        name: name.into(),
        code_hash: vec![7; 32],
        version,
        init_input: Vec::new(),
    }))
}

#[test]
fn contracts_deploy_in_version_order_under_the_policy() {
    let mut config = consortium(4, AdmissionMode::Vote);
    // Installing code needs no vote, but only members may.
    let install = change(Change::InstallCode(crate::proto::InstallCode {
        code: vec![0, 97, 115, 109],
    }));
    let installed = apply(&config, &sender(1), &install, None, &ctx(1, 1)).expect("installed");
    assert!(installed.config.is_none() && installed.proposal.is_none());
    assert!(matches!(
        apply(
            &config,
            &key(9).verifying_key().to_bytes(),
            &install,
            None,
            &ctx(1, 1)
        ),
        Err(Refusal::NotAuthorized(_))
    ));
    // A deployment is a proposal: open until the threshold approves it.
    let proposed =
        apply(&config, &sender(0), &deploy("bank", 1), None, &ctx(2, 2)).expect("proposed");
    let mut stored = proposed.proposal.clone().expect("proposal");
    assert_eq!(stored.state, ProposalState::Open as i32);
    config = proposed.config.expect("config");
    assert!(config.contracts.is_empty());
    for voter in 1..3 {
        let vote = change(Change::Vote(Vote {
            proposal_id: stored.id,
            approve: true,
        }));
        let effects =
            apply(&config, &sender(voter), &vote, Some(&stored), &ctx(3, 3)).expect("vote");
        if let Some(c) = effects.config {
            config = c;
        }
        stored = effects.proposal.expect("the proposal voted on");
    }
    assert_eq!(stored.state, ProposalState::Approved as i32);
    assert_eq!(config.contracts.len(), 1);
    assert_eq!(config.contracts[0].version, 1);
    assert_eq!(config.contracts[0].deployed_height, 3);
    // Versions follow on: not 1 again, not 3; the name must be valid.
    for (c, why) in [
        (deploy("bank", 1), "next deployment is version 2"),
        (deploy("bank", 3), "next deployment is version 2"),
        (deploy("Bank!", 1), "contract name"),
    ] {
        match apply(&config, &sender(0), &c, None, &ctx(4, 4)) {
            Err(Refusal::Refused(m)) => assert!(m.contains(why), "{m}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert!(apply(&config, &sender(0), &deploy("bank", 2), None, &ctx(4, 4)).is_ok());
}
