//! The admission policy's verdict on a proposal's ballots.

use crate::proto::{MemberInfo, Proposal, ProposalState, VoteComparator};

/// Whether `yes` of `members` meets the threshold.
pub fn meets(
    yes: usize,
    members: usize,
    threshold_percent: u32,
    comparator: VoteComparator,
) -> bool {
    let (yes, all, t) = (
        yes as u64 * 100,
        members as u64,
        u64::from(threshold_percent),
    );
    match comparator {
        VoteComparator::GreaterThan => yes > t * all,
        // UNSPECIFIED is stored by no code path; read it as the default.
        VoteComparator::AtLeast | VoteComparator::Unspecified => yes >= t * all,
    }
}

/// Approved once the approvals of current members meet the threshold;
/// rejected once the threshold is out of reach even if every member who
/// has not voted approves; otherwise still open. Ballots of members who
/// have since left do not count.
pub fn verdict(proposal: &Proposal, members: &[MemberInfo]) -> ProposalState {
    let n = members.len();
    let counts = |approve: bool| {
        proposal
            .ballots
            .iter()
            .filter(|b| b.approve == approve && members.iter().any(|m| m.name == b.member))
            .count()
    };
    let (yes, no) = (counts(true), counts(false));
    let comparator = VoteComparator::try_from(proposal.comparator).unwrap_or_default();
    if meets(yes, n, proposal.threshold_percent, comparator) {
        ProposalState::Approved
    } else if !meets(
        n.saturating_sub(no),
        n,
        proposal.threshold_percent,
        comparator,
    ) {
        ProposalState::Rejected
    } else {
        ProposalState::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Ballot;

    fn members(n: usize) -> Vec<MemberInfo> {
        (0..n)
            .map(|i| MemberInfo {
                name: format!("m{i}"),
                ..Default::default()
            })
            .collect()
    }

    fn proposal(t: u32, c: VoteComparator, votes: &[(usize, bool)]) -> Proposal {
        Proposal {
            threshold_percent: t,
            comparator: c as i32,
            ballots: votes
                .iter()
                .map(|(i, a)| Ballot {
                    member: format!("m{i}"),
                    approve: *a,
                    height: 1,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn at_least_and_greater_than_differ_exactly_at_the_threshold() {
        let m = members(4);
        // 2 of 4 is exactly 50%.
        let half = [(0, true), (1, true)];
        assert_eq!(
            verdict(&proposal(50, VoteComparator::AtLeast, &half), &m),
            ProposalState::Approved
        );
        assert_eq!(
            verdict(&proposal(50, VoteComparator::GreaterThan, &half), &m),
            ProposalState::Open
        );
        assert_eq!(
            verdict(
                &proposal(
                    50,
                    VoteComparator::GreaterThan,
                    &[(0, true), (1, true), (2, true)]
                ),
                &m
            ),
            ProposalState::Approved
        );
    }

    #[test]
    fn rejected_once_the_threshold_is_out_of_reach() {
        let m = members(4);
        // 67% of 4 needs 3 approvals: two rejections make it unreachable.
        let p = proposal(67, VoteComparator::AtLeast, &[(0, true), (1, false)]);
        assert_eq!(verdict(&p, &m), ProposalState::Open);
        let p = proposal(
            67,
            VoteComparator::AtLeast,
            &[(0, true), (1, false), (2, false)],
        );
        assert_eq!(verdict(&p, &m), ProposalState::Rejected);
    }

    #[test]
    fn ballots_of_departed_members_do_not_count() {
        let p = proposal(50, VoteComparator::AtLeast, &[(0, true), (9, true)]);
        assert_eq!(verdict(&p, &members(4)), ProposalState::Open);
        assert_eq!(verdict(&p, &members(2)), ProposalState::Approved);
    }
}
