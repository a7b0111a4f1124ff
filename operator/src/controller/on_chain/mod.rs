//! A Member's part in the on-chain configuration: the votes its spec asks
//! for (signed with its own admin key) and, for a Member joining a running
//! consortium, the proposal to admit it (signed with the consortium admin's
//! key), and, when such a Member is deleted, the proposal to remove it. Each
//! is decided afresh from the chain on every reconcile
//! ([`planning::plan_votes`](crate::planning::plan_votes),
//! [`planning::admission_proposal`](crate::planning::admission_proposal)), so each
//! transaction is submitted once. The Member controller ([`super::member`])
//! calls these; it runs the member's nodes.
//!
//! - `view`: the chain as one validator reports it ([`ChainView`]);
//! - `votes`: the member's votes ([`cast_votes`]);
//! - `admission`: the admission of a joining member ([`admit`], [`standing`]);
//! - `removal`: the removal of a deleted joining member ([`propose_removal`]).

mod admission;
mod removal;
mod view;
mod votes;

pub use admission::{
    admit, standing, Admission, ADMISSION_DECLINED, ADMISSION_NOT_PROPOSED, ADMISSION_PROPOSED,
    ADMISSION_REFUSED, AWAITING_VALIDATOR_SWITCH, VALIDATING,
};
pub use removal::{propose_removal, Removal};
pub use view::{read_chain, ChainView, ValidatorStanding};
pub use votes::cast_votes;
