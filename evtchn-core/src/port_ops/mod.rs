//! The port ops: the guest-visible pending/mask machinery, one module per
//! ABI behind the closed [`EventAbi`] enum (Xen's `evtchn_port_ops`).
//!
//! A domain starts on 2-level; its first EVTCHNOP_init_control builds the
//! FIFO state ([`Fifo`]) and only then switches the domain's `EventAbi` to
//! it, under the ABI lock (XSA-359); EVTCHNOP_reset switches back and drops
//! the FIFO state, unmapping its frames.
//!
//! Channel bookkeeping (`crate::ops`) decides *whether* a port is signalled;
//! the port ops decide *how*, by flipping bits on the guest's pages in
//! exactly Xen's order. They never call [`crate::Notify`]'s wake-ups
//! themselves: they return [`Wakeups`], which the caller acts on after
//! dropping every evtchn-core lock.

mod fifo;
mod two_level;

pub(crate) use fifo::{Fifo, QueueId};

use crate::abi::{
    EVTCHN_2L_NR_CHANNELS, EVTCHN_FIFO_NR_CHANNELS, Port, SharedInfo, VcpuId, VcpuInfo,
};
use crate::channel::Channel;
use crate::notify::Notify;
use crate::shared::SharedInfoView;
use crate::sync::Ordering;
use alloc::boxed::Box;

/// Which event ABI a domain uses, with the state the ABI needs.
pub(crate) enum EventAbi {
    /// The 2-level ABI: two 4096-bit bitmaps in shared_info plus per-vcpu
    /// selector words (spec §3).
    TwoLevel,
    /// The FIFO ABI: per-port event words in guest event-array pages and
    /// per-vcpu, per-priority queues (spec §4).
    Fifo(Box<Fifo>),
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

impl Wakeups {
    /// Both sets of wake-ups (a vcpu kicked by either, pollers of either
    /// port; `other` wins where both name one).
    pub(crate) fn merge(self, other: Self) -> Self {
        Self {
            kick_vcpu: other.kick_vcpu.or(self.kick_vcpu),
            poll_port: other.poll_port.or(self.poll_port),
        }
    }
}

/// Xen's `vcpu_mark_events_pending()`: test-and-set `evtchn_upcall_pending`
/// of `vcpu`; the vcpu to kick if it was clear. `evtchn_upcall_mask` is not
/// looked at here.
fn mark_events_pending(view: &dyn SharedInfoView, vcpu: VcpuId) -> Option<VcpuId> {
    let info = view.vcpu_info(vcpu)?;
    mark_info_pending(info, vcpu)
}

/// [`mark_events_pending`] on a vcpu_info the caller already looked up.
///
/// Xen test-and-sets bit 0 of the byte (a full barrier). A byte has no
/// locked bit-test-and-set on x86, so `fetch_or` on it compiles to a load
/// and a compare-and-swap loop; this does the same test-and-set as one
/// compare-and-swap from the value a guest leaves there, 0:
///
/// * 0 → 1: the bit was clear and is now set, exactly once per edge (a
///   concurrent setter's compare-and-swap fails), and the vcpu is kicked;
/// * it failed and bit 0 is set: the test-and-set would have found it
///   set and changed nothing; the failed compare-and-swap is a SeqCst
///   read of it, which is all the ABI needs here. The argument is the
///   selector load's in `two_level::raise_selector_in`: the caller's
///   locked set of the bit the guest exchanges right after clearing this
///   byte (the selector bit on 2-level, the ready bit on FIFO) came
///   first, so a guest clear after this read is followed by an exchange
///   that sees that bit;
/// * it failed with bit 0 clear (a guest that wrote another value into
///   the byte): the plain test-and-set, which keeps the other bits.
#[inline(always)]
fn mark_info_pending(info: &VcpuInfo, vcpu: VcpuId) -> Option<VcpuId> {
    let pending = &info.evtchn_upcall_pending;
    // SeqCst: Xen's test_and_set_bit() is a full barrier.
    match pending.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => Some(vcpu),
        Err(seen) if seen & 1 != 0 => None,
        Err(_) => (pending.fetch_or(1, Ordering::SeqCst) & 1 == 0).then_some(vcpu),
    }
}

/// The 2-level `set_pending` on its own, for senders that read the ABI
/// through the domain's ABI generation instead of the ABI lock (see
/// `Domain::set_pending`). `poll_port` is `Some` exactly when this call
/// turned the pending bit from 0 to 1. `info` finds `vcpu`'s vcpu_info,
/// only when the port must be raised, after the pending test-and-set (see
/// `Domain::vcpu_info_after_raise`).
#[inline]
pub(crate) fn two_level_set_pending<'info>(
    shared: &SharedInfo,
    port: Port,
    vcpu: VcpuId,
    info: impl FnOnce() -> Option<&'info VcpuInfo>,
) -> Wakeups {
    two_level::set_pending_in(shared, port, vcpu, info)
}

/// Step 1 of the 2-level `set_pending` on its own, for the lock-free
/// sender (see `Domain::send_lock_free`): `Some(true)` if this call set the
/// pending bit, `Some(false)` if it was set, `None` past the bitmaps.
#[inline]
pub(crate) fn two_level_test_and_set_pending(shared: &SharedInfo, port: Port) -> Option<bool> {
    two_level::test_and_set_pending(shared, port)
}

/// Steps 2 and 3 of the 2-level `set_pending` (mask, selector,
/// upcall_pending, pollers) for a port whose pending bit is set.
#[inline]
pub(crate) fn two_level_raise(
    view: &dyn SharedInfoView,
    shared: &SharedInfo,
    port: Port,
    vcpu: VcpuId,
) -> Wakeups {
    two_level::raise(view, shared, port, vcpu)
}

/// Step 2's mask test of the 2-level `set_pending` on its own, for the
/// lock-free sender (see `Domain::send_lock_free`), which needs the
/// vcpu_info only for an unmasked port: whether `port`, whose pending bit
/// the caller just set, is masked.
#[inline(always)]
pub(crate) fn two_level_is_masked(shared: &SharedInfo, port: Port) -> bool {
    two_level::is_masked_in(shared, port)
}

/// The rest of step 2 for an unmasked port: the selector of `port`'s word
/// in `info` (`vcpu`'s vcpu_info) and, if it was clear,
/// `evtchn_upcall_pending`. The vcpu to kick, if that went 0 → 1.
#[inline(always)]
pub(crate) fn two_level_raise_selector(
    info: &VcpuInfo,
    port: Port,
    vcpu: VcpuId,
) -> Option<VcpuId> {
    two_level::raise_selector_in(info, port, vcpu)
}

/// The 2-level `unmask` on its own, for callers that read the ABI through
/// the domain's ABI generation (see `Domain::unmask`), in a shared_info
/// page they looked up; `info` finds `vcpu`'s vcpu_info, only when the
/// port must be raised.
#[inline]
pub(crate) fn two_level_unmask<'info>(
    shared: &SharedInfo,
    port: Port,
    vcpu: VcpuId,
    info: impl FnOnce() -> Option<&'info VcpuInfo>,
) -> Wakeups {
    two_level::unmask_in(shared, port, vcpu, info)
}

/// The 2-level `clear_pending` on its own, for callers that hold the event
/// lock and so know the ABI from its generation (see `Domain::release_port`).
#[inline]
pub(crate) fn two_level_clear_pending(shared: &SharedInfo, port: Port) {
    two_level::clear_pending_in(shared, port);
}

impl EventAbi {
    /// Ports the ABI can address (the allocation limit is this minus one,
    /// or the domain's `max_evtchn_port` if lower).
    pub(crate) const fn nr_channels(&self) -> u32 {
        match self {
            Self::TwoLevel => EVTCHN_2L_NR_CHANNELS,
            Self::Fifo(_) => EVTCHN_FIFO_NR_CHANNELS,
        }
    }

    /// The FIFO state, if FIFO is the current ABI.
    pub(crate) fn fifo(&self) -> Option<&Fifo> {
        match self {
            Self::TwoLevel => None,
            Self::Fifo(fifo) => Some(fifo),
        }
    }

    /// Mark `port` pending toward `vcpu` (spec §3.3, §4.3). The caller holds
    /// the channel's lock (read or write). `notify` brackets the FIFO queue
    /// locks with interrupts off.
    #[inline]
    pub(crate) fn set_pending(
        &self,
        view: &dyn SharedInfoView,
        (port, channel): (Port, &Channel),
        vcpu: VcpuId,
        notify: &dyn Notify,
    ) -> Wakeups {
        match self {
            Self::TwoLevel => two_level::set_pending(view, port, vcpu),
            Self::Fifo(fifo) => fifo.set_pending(view, (port, channel), vcpu, notify),
        }
    }

    /// Clear `port`'s pending bit (used when a channel is freed). FIFO
    /// clears P only: a linked word stays linked until the guest unlinks it.
    pub(crate) fn clear_pending(&self, view: &dyn SharedInfoView, port: Port) {
        match self {
            Self::TwoLevel => two_level::clear_pending(view, port),
            Self::Fifo(fifo) => fifo.clear_pending(port),
        }
    }

    /// Unmask `port`, re-raising it toward `vcpu` if it is pending
    /// (spec §3.3, §4.4).
    pub(crate) fn unmask(
        &self,
        view: &dyn SharedInfoView,
        (port, channel): (Port, &Channel),
        vcpu: VcpuId,
        notify: &dyn Notify,
    ) -> Wakeups {
        match self {
            Self::TwoLevel => two_level::unmask(view, port, vcpu),
            Self::Fifo(fifo) => fifo.unmask(view, (port, channel), vcpu, notify),
        }
    }

    /// Whether `port` is pending.
    pub(crate) fn is_pending(&self, view: &dyn SharedInfoView, port: Port) -> bool {
        match self {
            Self::TwoLevel => two_level::is_pending(view, port),
            Self::Fifo(fifo) => fifo.is_pending(port),
        }
    }

    /// Whether `port` is masked (a FIFO port without an event word is).
    pub(crate) fn is_masked(&self, view: &dyn SharedInfoView, port: Port) -> bool {
        match self {
            Self::TwoLevel => two_level::is_masked(view, port),
            Self::Fifo(fifo) => fifo.is_masked(port),
        }
    }

    /// Whether a free `port` must not be handed out yet: under FIFO, its
    /// word is still LINKED (Xen: `evtchn_fifo_is_busy()`). Never under
    /// 2-level.
    pub(crate) fn is_busy(&self, port: Port) -> bool {
        match self {
            Self::TwoLevel => false,
            Self::Fifo(fifo) => fifo.is_busy(port),
        }
    }
}
