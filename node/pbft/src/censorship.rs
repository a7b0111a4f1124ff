//! Catching a censoring primary.
//!
//! The request timer restarts on every commit, so a primary that keeps the
//! chain moving (other requests, or empty blocks) while it leaves one
//! request out forever is never suspected by it. The node therefore reports
//! the oldest request it holds that a committed block with room for it left
//! out ([`crate::Input::Overlooked`]), and a backup gives the primary one
//! request timeout to order it. Commits do not restart that timer; only a
//! different ticket, `None`, or a new view (each new primary gets a full
//! timeout) do. The watch is transient: after a restart the node reports
//! again.

use crate::replica::{Action, Replica};
use crate::timers::TimerId;

impl Replica {
    /// The node reported the oldest overlooked request (or that there is
    /// none).
    pub(crate) fn on_overlooked(&mut self, ticket: Option<u64>, out: &mut Vec<Action>) {
        if ticket == self.overlooked {
            return;
        }
        tracing::debug!(
            me = self.me,
            view = self.st.view,
            ?ticket,
            previous = ?self.overlooked,
            "overlooked request"
        );
        self.overlooked = ticket;
        self.arm_censorship_timer(out);
    }

    /// (Re)arms the censorship timer for a full request timeout while a
    /// backup in normal operation watches a ticket; cancels it otherwise.
    /// The primary does not suspect itself, and during a view change the
    /// view-change timer is the one that decides.
    pub(crate) fn arm_censorship_timer(&mut self, out: &mut Vec<Action>) {
        let watch = self.overlooked.is_some() && !self.is_primary() && !self.st.in_view_change;
        if watch {
            self.censorship_timer_armed = true;
            out.push(Action::SetTimer {
                id: TimerId::Censorship,
                after_ms: self.request_timeout_ms(),
            });
        } else {
            self.cancel_censorship_timer(out);
        }
    }

    pub(crate) fn cancel_censorship_timer(&mut self, out: &mut Vec<Action>) {
        if self.censorship_timer_armed {
            self.censorship_timer_armed = false;
            out.push(Action::CancelTimer {
                id: TimerId::Censorship,
            });
        }
    }

    pub(crate) fn on_censorship_timer(&mut self, out: &mut Vec<Action>) {
        if !self.censorship_timer_armed {
            return;
        }
        self.censorship_timer_armed = false;
        let Some(ticket) = self.overlooked else {
            return;
        };
        if self.st.in_view_change || self.is_primary() {
            return;
        }
        if self.fetching.is_some() || self.epoch_drained() {
            // Behind on state, or nothing left to order in this epoch: the
            // primary cannot be blamed yet. Look again one timeout later.
            self.arm_censorship_timer(out);
            return;
        }
        tracing::warn!(
            me = self.me,
            view = self.st.view,
            ticket,
            "primary keeps leaving a request out: suspected of censorship"
        );
        self.stats.censorship_suspected += 1;
        let next = self.st.view.saturating_add(1);
        self.start_view_change(next, out);
    }
}
