//! The on-chain configuration: parameter proposals from the Consortium's spec,
//! a Member's votes, and the admission and removal of Members joining and
//! leaving a running consortium.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use serde_json::{json, Value};

use crate::chain::ChainAdmin as _;
use crate::controller::Context;
use crate::crd::{Consortium, Member, MemberStatus, ProposalStatus};
use crate::fixtures::api_server::{Call, Handle};
use crate::fixtures::calls::{
    all_pods_ready, escrow_status_patch, event_call, genesis_copies, get_consortium,
    get_key_secret, member_calls, member_finalizer_patch, member_pods_call, member_status_patch,
    member_teardown_deletes, members_list, running_consortium_calls,
};
use crate::fixtures::objects::{
    active_members, admin_secret, being_deleted, consortium_on_chain, consortium_with_genesis,
    genesis_of, org2_secret, prober_answering, with_finalizer, NODES3,
};
use crate::fixtures::reconcile::{
    context_with_chain, last_status, run_consortium_in, run_member_in,
};
use crate::fixtures::recording_chain::RecordingChain;
use crate::fixtures::{self};
use crate::probe::{NodeReport, StaticProber};
use crate::proto::{self, config_change::Change};
use kubeledger_protocol::governance::genesis_config::from_genesis;

/// The chain of [`consortium_with_genesis`] at `height`, as its genesis made
/// it (org1 the consortium admin, and org2), whose proposals are voted on:
/// 67 % of the two members, so a proposal stays open until both approve.
fn genesis_chain(height: u64) -> RecordingChain {
    let mut config = from_genesis(&genesis_of(&consortium_with_genesis()));
    config.admission = Some(proto::AdmissionPolicy {
        mode: proto::AdmissionMode::Vote as i32,
        threshold_percent: 67,
        comparator: proto::VoteComparator::AtLeast as i32,
        expiry_ms: 86_400_000,
        consortium_admin: "org1".into(),
    });
    let params = config.params;
    RecordingChain::new(
        proto::GetConfigResponse {
            config: Some(config),
            height,
            effective_params: params,
        },
        Vec::new(),
    )
}

/// Every validator of the fixture answers at `height`.
fn all_nodes_answer(height: u64) -> StaticProber {
    prober_answering(
        &NODES3,
        &NodeReport {
            height,
            ..Default::default()
        },
    )
}

/// A context for a Member's reconcile on `chain` (no node answers Status).
fn member_context(chain: &Arc<RecordingChain>) -> (Arc<Context>, Handle) {
    context_with_chain(StaticProber::default(), chain.clone())
}

/// A one-node Member's reconcile up to its (empty) pod list, with the key
/// Secret `secret`, when nothing happens on chain.
fn quiet_member_calls(c: &Consortium, name: &str, secret: Option<Value>) -> Vec<Call> {
    let mut calls = member_calls(c, name, secret, Some(1));
    calls.push(member_pods_call(name, json!([])));
    calls
}

/// A member's reconcile that waits (teardown held back): it keeps the
/// finalizer (no finalizer patch among `calls`) and is requeued at the fixed
/// interval rather than backing off as a failure would.
async fn run_member_waiting(ctx: Arc<Context>, handle: Handle, m: Member, calls: Vec<Call>) {
    let (action, _) = run_member_in(ctx.clone(), handle, m, calls).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    let text = ctx.metrics.encode();
    assert!(!text.contains("reconcile_failures_total{"), "{text}");
}

/// org1's open proposal 1 to change the block interval.
fn open_params_proposal(chain: &RecordingChain) {
    let key = ed25519_dalek::SigningKey::from_bytes(
        &hex::decode(fixtures::admin_seed("org1"))
            .expect("hex")
            .try_into()
            .expect("32 bytes"),
    );
    let propose = chain.submit_config(
        "setup",
        &key,
        "escrow-prod",
        Change::UpdateParams(proto::UpdateParams {
            block_interval_ms: Some(500),
            ..Default::default()
        }),
    );
    futures::executor::block_on(propose).expect("proposal");
}

/// The chain configuration with a member `name` added (no nodes).
fn with_member(chain: &RecordingChain, name: &str) {
    chain.update_config(|r| {
        if let Some(cfg) = r.config.as_mut() {
            cfg.members.push(proto::MemberInfo {
                name: name.into(),
                ..Default::default()
            });
        }
    });
}

#[tokio::test]
async fn a_new_block_interval_is_proposed_once_with_the_consortium_admin_key() {
    let mut c = consortium_with_genesis();
    c.spec.block_interval = "500ms".into();
    c.metadata.generation = Some(2);
    let members = active_members();
    let chain = Arc::new(genesis_chain(42));
    let (ctx, handle) = context_with_chain(all_nodes_answer(42), chain.clone());
    let mut calls = running_consortium_calls(&members);
    calls.extend([
        get_key_secret("org1", admin_secret("org1")),
        event_call("default", "ParamsProposed").check(|b| {
            let note = b["note"].as_str().unwrap_or_default();
            assert!(note.contains("blockInterval 500ms"), "{note}");
        }),
        event_call("default", "Running"),
        escrow_status_patch(&c, |b| {
            let cc = &b["status"]["chainConfig"];
            // Still in force: genesis's 200 ms; proposal 1 pending.
            assert_eq!(cc["blockIntervalMs"], 200);
            assert_eq!(cc["height"], 42);
            assert_eq!(cc["pendingProposal"]["id"], 1);
            assert_eq!(cc["pendingProposal"]["kind"], "UpdateParams");
            assert_eq!(cc["pendingProposal"]["votesFor"], 1);
            assert_eq!(cc["members"], json!(["org1", "org2"]));
        }),
    ]);
    let (_, bodies) = run_consortium_in(ctx, handle, c.clone(), calls).await;
    let submitted = chain.submitted();
    assert_eq!(submitted.len(), 1, "{submitted:?}");
    assert_eq!(submitted[0].signer, fixtures::admin_public_key("org1"));
    assert_eq!(submitted[0].chain_id, "escrow-prod");
    assert_eq!(
        submitted[0].host,
        "org1-0.org1-nodes.org1.svc.cluster.local"
    );
    assert_eq!(
        submitted[0].change,
        Change::UpdateParams(proto::UpdateParams {
            block_interval_ms: Some(500),
            ..Default::default()
        })
    );

    // Next poll: the open proposal already proposes these values. Nothing is
    // submitted, no Secret read, no Event (the status write is the
    // transaction rate becoming known).
    let mut c2 = c;
    c2.status = Some(last_status(&bodies));
    let (ctx, handle) = context_with_chain(all_nodes_answer(42), chain.clone());
    let mut calls = running_consortium_calls(&members);
    calls.push(escrow_status_patch(&c2, |b| {
        let cc = &b["status"]["chainConfig"];
        assert_eq!(cc["pendingProposal"]["id"], 1);
        assert_eq!(
            cc["message"].as_str(),
            Some("proposal 1 proposes the spec's parameters")
        );
    }));
    run_consortium_in(ctx, handle, c2, calls).await;
    assert_eq!(chain.submitted().len(), 1);
}

#[tokio::test]
async fn parameters_the_chain_has_are_not_proposed() {
    let c = consortium_with_genesis();
    let members = active_members();
    let chain = Arc::new(genesis_chain(7));
    let (ctx, handle) = context_with_chain(all_nodes_answer(7), chain.clone());
    let mut calls = running_consortium_calls(&members);
    calls.extend([
        event_call("default", "Running"),
        escrow_status_patch(&c, |b| {
            let cc = &b["status"]["chainConfig"];
            assert_eq!(cc["version"], 0);
            assert_eq!(cc["blockIntervalMs"], 200);
            assert_eq!(cc["fromHeight"], 0);
            assert!(cc.get("pendingProposal").is_none());
            assert!(cc.get("message").is_none());
        }),
    ]);
    run_consortium_in(ctx, handle, c, calls).await;
    assert!(chain.submitted().is_empty());
}

#[tokio::test]
async fn a_foreign_admin_key_is_never_used() {
    let mut c = consortium_with_genesis();
    c.spec.block_interval = "500ms".into();
    let members = active_members();
    // The Secret holds another key than the chain's: nothing can be signed.
    let chain = Arc::new(genesis_chain(42));
    let (ctx, handle) = context_with_chain(all_nodes_answer(42), chain.clone());
    let mut calls = running_consortium_calls(&members);
    calls.extend([
        get_key_secret("org1", admin_secret("org2")),
        event_call("default", "Running"),
        escrow_status_patch(&c, |b| {
            let msg = b["status"]["chainConfig"]["message"]
                .as_str()
                .unwrap_or_default();
            assert!(msg.contains("not the one the chain knows"), "{msg}");
        }),
    ]);
    run_consortium_in(ctx, handle, c, calls).await;
    assert!(chain.submitted().is_empty());
}

#[tokio::test]
async fn a_refused_parameter_change_is_not_repeated() {
    let mut c = consortium_with_genesis();
    c.spec.max_block_txs = 20;
    let members = active_members();
    let chain = Arc::new(genesis_chain(42));
    chain.refuse_with(Some(
        "parameters decided by proposal 9 take effect at height 50".into(),
    ));
    let (ctx, handle) = context_with_chain(all_nodes_answer(42), chain.clone());
    let mut calls = running_consortium_calls(&members);
    calls.extend([
        get_key_secret("org1", admin_secret("org1")),
        event_call("default", "ParamsRefused"),
        event_call("default", "Running"),
        escrow_status_patch(&c, |b| {
            let cc = &b["status"]["chainConfig"];
            assert!(cc["refusedParams"]
                .as_str()
                .unwrap_or_default()
                .contains("maxBlockTxs 20"));
            assert!(cc["message"]
                .as_str()
                .unwrap_or_default()
                .contains("height 50"));
        }),
    ]);
    let (_, bodies) = run_consortium_in(ctx, handle, c.clone(), calls).await;
    assert_eq!(chain.submitted().len(), 1);

    let mut c2 = c;
    c2.status = Some(last_status(&bodies));
    let (ctx, handle) = context_with_chain(all_nodes_answer(42), chain.clone());
    let mut calls = running_consortium_calls(&members);
    calls.push(escrow_status_patch(&c2, |b| {
        let cc = &b["status"]["chainConfig"];
        assert!(cc["refusedParams"].is_string(), "{cc}");
    }));
    run_consortium_in(ctx, handle, c2, calls).await;
    assert_eq!(
        chain.submitted().len(),
        1,
        "the same values are not proposed again"
    );
}

#[tokio::test]
async fn a_listed_approval_is_cast_once_with_the_members_own_key() {
    let c = consortium_on_chain();
    let chain = Arc::new(genesis_chain(42));
    open_params_proposal(&chain);
    let mut m = with_finalizer(fixtures::member_named("org2", 1));
    m.spec.approvals = vec![1];
    m.spec.rejections = vec![7];
    let (ctx, handle) = member_context(&chain);
    let mut calls = member_calls(&c, "org2", Some(org2_secret()), Some(1));
    calls.extend([
        event_call("org2", "VoteCast"),
        event_call("org2", "VoteSkipped").check(|b| {
            let note = b["note"].as_str().unwrap_or_default();
            assert!(note.contains("no proposal 7"), "{note}");
        }),
        member_pods_call("org2", json!([])),
        member_status_patch("org2", &m, |b| {
            let votes = &b["status"]["votes"];
            assert_eq!(votes[0]["proposalId"], 1);
            assert_eq!(votes[0]["state"], "Cast");
            assert_eq!(votes[1]["state"], "UnknownProposal");
        }),
    ]);
    let (_, bodies) = run_member_in(ctx, handle, m.clone(), calls).await;
    let submitted = chain.submitted();
    assert_eq!(submitted.len(), 2, "the setup proposal and one vote");
    assert_eq!(submitted[1].signer, fixtures::admin_public_key("org2"));
    assert_eq!(
        submitted[1].change,
        Change::Vote(proto::Vote {
            proposal_id: 1,
            approve: true
        })
    );
    let ballots = &chain.proposal_list()[0].ballots;
    assert_eq!(ballots.len(), 2);

    // Next reconcile: the ballot is on chain. Nothing is submitted and, the
    // status being the same, nothing is written.
    let mut m2 = m;
    m2.status = Some(last_status(&bodies));
    let (ctx, handle) = member_context(&chain);
    let calls = quiet_member_calls(&c, "org2", Some(org2_secret()));
    run_member_in(ctx, handle, m2, calls).await;
    assert_eq!(chain.submitted().len(), 2);
}

#[tokio::test]
async fn votes_on_decided_proposals_are_skipped() {
    let c = consortium_on_chain();
    let chain = Arc::new(genesis_chain(42));
    open_params_proposal(&chain);
    let mut proposals = chain.proposal_list();
    proposals[0].state = proto::ProposalState::Expired as i32;
    chain.set_proposals(proposals);
    let mut m = with_finalizer(fixtures::member_named("org2", 1));
    m.spec.rejections = vec![1];
    let (ctx, handle) = member_context(&chain);
    let mut calls = member_calls(&c, "org2", Some(org2_secret()), Some(1));
    calls.extend([
        event_call("org2", "VoteSkipped").check(|b| {
            let note = b["note"].as_str().unwrap_or_default();
            assert!(note.contains("Expired"), "{note}");
        }),
        member_pods_call("org2", json!([])),
        member_status_patch("org2", &m, |b| {
            assert_eq!(b["status"]["votes"][0]["state"], "Skipped");
            assert_eq!(b["status"]["votes"][0]["approve"], false);
        }),
    ]);
    run_member_in(ctx, handle, m, calls).await;
    assert_eq!(chain.submitted().len(), 1, "only the setup proposal");
}

#[tokio::test]
async fn a_member_joining_a_running_consortium_is_proposed_once_and_its_nodes_observe() {
    let c = consortium_on_chain();
    let chain = Arc::new(genesis_chain(42));
    let m = with_finalizer(fixtures::member_named("org3", 1));
    let (ctx, handle) = member_context(&chain);
    // Its nodes start at once: outside the validator set, they observe.
    let mut calls = member_calls(&c, "org3", None, Some(1));
    calls.extend([
        get_key_secret("org1", admin_secret("org1")),
        event_call("org3", "AdmissionProposed"),
        member_pods_call("org3", json!([])),
        member_status_patch("org3", &m, |b| {
            let s = &b["status"];
            assert_eq!(s["phase"], "Pending");
            assert_eq!(s["conditions"][0]["reason"], "AdmissionProposed");
            assert_eq!(s["admission"]["id"], 1);
            assert_eq!(s["admission"]["kind"], "AdmitMember");
            assert_eq!(s["admission"]["state"], "Open");
            assert_eq!(s["admission"]["votesFor"], 1);
        }),
    ]);
    let (_, bodies) = run_member_in(ctx, handle, m.clone(), calls).await;
    let submitted = chain.submitted();
    assert_eq!(submitted.len(), 1);
    assert_eq!(submitted[0].signer, fixtures::admin_public_key("org1"));
    let status = &bodies.last().expect("status")["status"];
    let Change::Admit(admit) = &submitted[0].change else {
        panic!("not an admission: {:?}", submitted[0].change);
    };
    assert_eq!(admit.member, "org3");
    assert_eq!(admit.organization, "Org One");
    assert_eq!(
        hex::encode(&admit.admin_key),
        status["adminPublicKey"].as_str().expect("admin key")
    );
    assert_eq!(admit.nodes.len(), 1);
    assert_eq!(admit.nodes[0].name, "org3-0");
    assert_eq!(
        hex::encode(&admit.nodes[0].public_key),
        status["nodePublicKeys"][0]["publicKey"]
            .as_str()
            .expect("key")
    );
    assert_eq!(
        admit.nodes[0].peer_address,
        "org3-0.org3-nodes.org3.svc.cluster.local:7051"
    );

    // Next reconcile: the proposal is found by name, not made again.
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "org3-keys", "namespace": "org3"},
        "data": bodies[3]["data"].clone(),
    });
    let mut m2 = m;
    m2.status = Some(serde_json::from_value(status.clone()).expect("status"));
    let (ctx, handle) = member_context(&chain);
    let calls = quiet_member_calls(&c, "org3", Some(secret.clone()));
    run_member_in(ctx, handle, m2.clone(), calls).await;
    assert_eq!(chain.submitted().len(), 1);

    // Admitted on chain: the nodes keep observing, and the condition says
    // they wait for the validator-set switch.
    with_member(&chain, "org3");
    let (ctx, handle) = member_context(&chain);
    let mut calls = quiet_member_calls(&c, "org3", Some(secret));
    calls.push(member_status_patch("org3", &m2, |b| {
        let s = &b["status"];
        assert_eq!(s["phase"], "Admitted");
        assert_eq!(s["conditions"][0]["status"], "False");
        assert_eq!(s["conditions"][0]["reason"], "AwaitingValidatorSwitch");
    }));
    run_member_in(ctx, handle, m2, calls).await;
    assert_eq!(chain.submitted().len(), 1);
}

#[tokio::test]
async fn deleting_a_member_that_joined_proposes_its_removal_first() {
    let c = consortium_on_chain();
    let chain = Arc::new(genesis_chain(42));
    with_member(&chain, "org3");
    let mut m = being_deleted(with_finalizer(fixtures::member_named("org3", 1)));
    m.status = Some(MemberStatus {
        admission: Some(ProposalStatus {
            id: 1,
            state: "Approved".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    // 1. The removal is proposed; the nodes keep running.
    let calls = vec![
        get_consortium(&c),
        get_key_secret("org1", admin_secret("org1")),
        event_call("org3", "RemovalProposed"),
    ];
    let (ctx, handle) = member_context(&chain);
    run_member_waiting(ctx, handle, m.clone(), calls).await;
    let submitted = chain.submitted();
    assert_eq!(submitted.len(), 1);
    assert_eq!(submitted[0].signer, fixtures::admin_public_key("org1"));
    assert_eq!(
        submitted[0].change,
        Change::Remove(proto::RemoveMember {
            member: "org3".into()
        })
    );

    // 2. Removed on chain, but its nodes validate until the next set takes
    //    over: still nothing is torn down, nothing proposed again.
    chain.update_config(|r| {
        if let Some(cfg) = r.config.as_mut() {
            cfg.members.retain(|m| m.name != "org3");
            cfg.scheduled_validators = Some(proto::ScheduledValidators {
                from_height: r.height + 30,
                validators: Vec::new(),
                proposal_id: 2,
            });
        }
    });
    let (ctx, handle) = member_context(&chain);
    run_member_waiting(ctx, handle, m.clone(), vec![get_consortium(&c)]).await;
    assert_eq!(chain.submitted().len(), 1);

    // 3. The new set is in force: the nodes (observers now) are torn down.
    chain.update_config(|r| {
        if let Some(cfg) = r.config.as_mut() {
            if let Some(s) = cfg.scheduled_validators.as_mut() {
                s.from_height = r.height;
            }
        }
    });
    let mut calls = vec![get_consortium(&c), event_call("org3", "TearingDown")];
    calls.extend(member_teardown_deletes("org3"));
    calls.push(member_finalizer_patch("org3", &m));
    let (ctx, handle) = member_context(&chain);
    run_member_in(ctx, handle, m, calls).await;
    assert_eq!(chain.submitted().len(), 1);
}

#[tokio::test]
async fn running_does_not_wait_for_members_that_joined_after_genesis() {
    let c = consortium_with_genesis();
    let mut members = active_members();
    let mut joiner = fixtures::member_named("org3", 1);
    joiner.status = Some(MemberStatus {
        phase: Some("Admitted".into()),
        ..Default::default()
    });
    members.push(joiner);
    let (ctx, handle) = context_with_chain(all_nodes_answer(5), Arc::new(genesis_chain(5)));
    let mut calls = vec![members_list(&members)];
    // org3 mounts the genesis too.
    calls.extend(genesis_copies(&["org1", "org2", "org3"]));
    calls.extend(all_pods_ready());
    calls.extend([
        event_call("default", "Running"),
        escrow_status_patch(&c, |b| {
            assert_eq!(b["status"]["phase"], "Running");
            assert_eq!(b["status"]["membersSummary"], "2/3");
        }),
    ]);
    run_consortium_in(ctx, handle, c, calls).await;
}
