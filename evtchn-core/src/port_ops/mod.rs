//! The port ops: the guest-visible pending/mask machinery, one module per
//! ABI behind the closed [`EventAbi`] enum (Xen's `evtchn_port_ops`).
//!
//! FIFO will be a second variant carrying its per-domain state (event-array
//! pages, per-vcpu control blocks and queues); the domain's current ABI then
//! becomes switchable under the event lock, with the FIFO state published
//! before the switch (XSA-358, XSA-359). Callers need not change.
//!
//! Channel bookkeeping (`crate::ops`) decides *whether* a port is signalled;
//! the port ops decide *how*, by flipping bits on the shared page in exactly
//! Xen's order. They never call [`crate::Notify`] themselves: they return
//! [`Wakeups`], which the caller acts on after dropping every evtchn-core
//! lock.

mod two_level;

use crate::abi::{EVTCHN_2L_NR_CHANNELS, Port, VcpuId};
use crate::shared::SharedInfoView;

/// Which event ABI a domain uses. FIFO will be a second variant; channel
/// logic only ever calls the methods below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventAbi {
    /// The 2-level ABI: two 4096-bit bitmaps in shared_info plus per-vcpu
    /// selector words (spec §3).
    TwoLevel,
}

/// What must happen after a port op, once no evtchn-core lock is held.
#[must_use = "wakeups must be delivered through Notify"]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wakeups {
    /// `evtchn_upcall_pending` went from 0 to 1 on this vcpu: kick it.
    pub kick_vcpu: Option<VcpuId>,
    /// The port became pending: wake vcpus polling it (spec §3.5).
    pub poll_port: Option<Port>,
}

impl EventAbi {
    /// Ports the ABI can address (the allocation limit is this minus one,
    /// or the domain's `max_evtchn_port` if lower).
    pub const fn nr_channels(&self) -> u32 {
        match self {
            Self::TwoLevel => EVTCHN_2L_NR_CHANNELS,
        }
    }

    /// Mark `port` pending toward `vcpu` (spec §3.3 set_pending).
    pub fn set_pending(&self, view: &dyn SharedInfoView, port: Port, vcpu: VcpuId) -> Wakeups {
        match self {
            Self::TwoLevel => two_level::set_pending(view, port, vcpu),
        }
    }

    /// Clear `port`'s pending bit (used when a channel is freed).
    pub fn clear_pending(&self, view: &dyn SharedInfoView, port: Port) {
        match self {
            Self::TwoLevel => two_level::clear_pending(view, port),
        }
    }

    /// Unmask `port`, re-raising it toward `vcpu` if it is pending
    /// (spec §3.3 unmask).
    pub fn unmask(&self, view: &dyn SharedInfoView, port: Port, vcpu: VcpuId) -> Wakeups {
        match self {
            Self::TwoLevel => two_level::unmask(view, port, vcpu),
        }
    }

    /// Whether `port` is pending.
    pub fn is_pending(&self, view: &dyn SharedInfoView, port: Port) -> bool {
        match self {
            Self::TwoLevel => two_level::is_pending(view, port),
        }
    }

    /// Whether `port` is masked.
    pub fn is_masked(&self, view: &dyn SharedInfoView, port: Port) -> bool {
        match self {
            Self::TwoLevel => two_level::is_masked(view, port),
        }
    }
}
