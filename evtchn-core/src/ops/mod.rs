//! The EVTCHNOPs, as methods of [`crate::Domains`], one file per op group,
//! plus the byte-level dispatcher.
//!
//! Every op checks in Xen's order (the order picks the errno, spec §2),
//! prepares whatever can fail (storage, a host IRQ binding), and only then
//! commits in a step that cannot fail: a failing op leaves every table as it
//! was (XSA-47).

mod bind;
mod close;
mod deliver;
mod dispatch;
mod fifo;
mod poll;
mod query;
mod send;

pub use dispatch::Reply;
pub use poll::{PollOutcome, SCHEDOP_POLL_MAX_PORTS};

use crate::abi::Errno;
use crate::domain::Domain;

/// Who closes a channel: a guest cannot close Xen-attached channels, the
/// hypervisor (domain destruction) closes everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseBy {
    Guest,
    Hypervisor,
}

/// Whether a reset starts or continues (EVTCHNOP_reset vs reset_cont).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResetMode {
    /// EVTCHNOP_reset: start a reset (-EBUSY if one is in progress).
    Start,
    /// EVTCHNOP_reset_cont: continue a preempted reset (-EBUSY if none is).
    Continue,
}

/// The default XSM policy's TARGET rule (spec §0): the caller acts on itself,
/// or is privileged; otherwise -EPERM.
pub(crate) fn check_target(caller: &Domain, target: &Domain) -> Result<(), Errno> {
    if caller.domid == target.domid || caller.is_privileged() {
        Ok(())
    } else {
        Err(Errno::EPERM)
    }
}
