//! The interfaces the hypervisor implements for evtchn-core: waking vcpus
//! ([`Notify`]) and the physical side of PIRQs ([`PirqHost`]).

use crate::abi::{DomId, Errno, Port, VcpuId};
use crate::channel::XenConsumer;

/// How evtchn-core tells the hypervisor that a vcpu has something to do.
///
/// evtchn-core calls these **with none of its locks held** (the port ops
/// return the wake-ups due and the caller acts on them after unlocking;
/// the interrupt bracket below is the one exception),
/// and implementations must be leaves: set flags, send an IPI, never call
/// back into evtchn-core or take a lock an evtchn-core caller might hold.
/// They may be called from interrupt context (timer VIRQ, PIRQ delivery).
pub trait Notify: Send + Sync {
    /// Xen's `vcpu_kick()`: `evtchn_upcall_pending` of `vcpu` just went from
    /// 0 to 1. Unblock the vcpu if it is blocked (this also ends a poll) and,
    /// if it is running on another pCPU, make it re-check for events before
    /// it next enters the guest.
    fn kick_vcpu(&self, domain: DomId, vcpu: VcpuId);

    /// Xen's `vcpu_unblock()` of a poller (spec §3.5): `vcpu` was polling a
    /// port that just became pending (masked or not). evtchn-core has
    /// already cleared its poll state.
    fn wake_poller(&self, domain: DomId, vcpu: VcpuId);

    /// An event arrived on a Xen-attached channel (the peer of a guest's
    /// interdomain send). The default does nothing.
    fn notify_xen_consumer(&self, domain: DomId, port: Port, consumer: XenConsumer) {
        let _ = (domain, port, consumer);
    }

    /// Xen's `hypercall_preempt_check()`, asked every 64 ports while a reset
    /// closes channels: `true` makes the reset stop and return
    /// [`Errno::ERESTART`] (the hypervisor re-issues the hypercall as
    /// EVTCHNOP_reset_cont). The default never preempts.
    fn should_preempt(&self) -> bool {
        false
    }

    /// Disable interrupts on this pCPU and say whether they were enabled
    /// (Xen's `local_irq_save()`). The FIFO ABI's queue locks are taken by
    /// spinning, also from interrupt context, so evtchn-core holds them with
    /// interrupts off: this and [`Notify::restore_interrupts`] bracket each
    /// such section, and are the only `Notify` methods it calls with a lock
    /// of its own held. The default does nothing and answers
    /// [`InterruptState::Disabled`], which is right where nothing interrupts
    /// (host tests); a hypervisor that delivers VIRQs or PIRQs from
    /// interrupt handlers must implement both.
    fn disable_interrupts(&self) -> InterruptState {
        InterruptState::Disabled
    }

    /// Restore what [`Notify::disable_interrupts`] found (Xen's
    /// `local_irq_restore()`). The default does nothing.
    fn restore_interrupts(&self, previous: InterruptState) {
        let _ = previous;
    }
}

/// Whether interrupts were enabled when [`Notify::disable_interrupts`] ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InterruptState {
    /// They were enabled: restoring enables them again.
    Enabled,
    /// They were already disabled: restoring leaves them so.
    Disabled,
}

/// Whether a PIRQ binder accepts sharing the line (BIND_PIRQ__WILL_SHARE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PirqSharing {
    /// The binder wants the line to itself.
    Exclusive,
    /// The binder passed BIND_PIRQ__WILL_SHARE.
    WillShare,
}

/// The physical side of PIRQs, implemented by the hypervisor (Xen's
/// `irq.c`). evtchn-core calls these with the domain's event lock held:
/// implementations must not call back into evtchn-core.
pub trait PirqHost: Send + Sync {
    /// Whether `pirq` is mapped to a host IRQ that `domain` may use
    /// (`pirq_access_permitted()`); if not, bind_pirq gives -EPERM.
    fn is_pirq_mapped(&self, domain: DomId, pirq: u32) -> bool;

    /// Attach the domain to the host IRQ behind `pirq`
    /// (`pirq_guest_bind()`): -EINVAL if there is no IRQ descriptor, -EBUSY
    /// if the line is used by the hypervisor or sharing is refused, -ENOMEM.
    /// On error nothing may remain attached (XSA-46).
    fn bind(&self, domain: DomId, pirq: u32, sharing: PirqSharing) -> Result<(), Errno>;

    /// Detach the domain from the host IRQ (`pirq_guest_unbind()`),
    /// completing any EOI it still owes.
    fn unbind(&self, domain: DomId, pirq: u32);

    /// The port now notifies `vcpu`: retarget the host IRQ's affinity to its
    /// pCPU. The default does nothing.
    fn set_affinity(&self, domain: DomId, pirq: u32, vcpu: VcpuId) {
        let _ = (domain, pirq, vcpu);
    }

    /// The host IRQ behind `pirq`, for the debug dump (`i=`). The default
    /// knows none.
    fn host_irq(&self, domain: DomId, pirq: u32) -> Option<u32> {
        let _ = (domain, pirq);
        None
    }
}

/// A [`PirqHost`] with no physical IRQs: every bind_pirq gives -EPERM.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPirqs;

impl PirqHost for NoPirqs {
    fn is_pirq_mapped(&self, _domain: DomId, _pirq: u32) -> bool {
        false
    }
    fn bind(&self, _domain: DomId, _pirq: u32, _sharing: PirqSharing) -> Result<(), Errno> {
        Err(Errno::EPERM)
    }
    fn unbind(&self, _domain: DomId, _pirq: u32) {}
}
