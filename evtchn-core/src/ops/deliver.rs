//! Delivery the hypervisor starts: per-vcpu and global VIRQs, PIRQs, the
//! upcall test on the way back into a guest, and marking a vcpu's upcall
//! pending. Everything here may run in interrupt context, so nothing spins:
//! the registry and the channel locks are only tried (see the crate doc).

use crate::abi::{DomId, Port, VcpuId, Virq};
use crate::channel::ChannelState;
use crate::domain::Domain;
use crate::notify::{Notify, PirqHost};
use crate::registry::{DomainHandle, Domains};
use crate::sync::Ordering;

impl<N: Notify, P: PirqHost> Domains<N, P> {
    /// Raise a per-vcpu VIRQ (Xen: `send_guest_vcpu_virq()`): discarded if
    /// the vcpu has no port bound to it, or if the channel is being changed
    /// at this instant (try-lock). A global VIRQ is ignored here.
    pub fn send_vcpu_virq(&self, domid: DomId, vcpu: VcpuId, virq: Virq) {
        // A global VIRQ here is a hypervisor bug; ignore it quietly rather
        // than log from interrupt context.
        if !virq.is_per_vcpu() {
            return;
        }
        if let Some(domain) = self.domain_from_interrupt(domid) {
            self.raise_virq(&domain, vcpu, virq);
        }
    }

    /// [`Domains::send_vcpu_virq`] to the domain behind `target`, without
    /// the registry lookup (the timer interrupt's path). Never spins.
    pub fn send_vcpu_virq_to(&self, target: &DomainHandle, vcpu: VcpuId, virq: Virq) {
        if !virq.is_per_vcpu() {
            return;
        }
        self.raise_virq(target.domain(), vcpu, virq);
    }

    /// Raise a global VIRQ (Xen: `send_guest_global_virq()`) in its handler
    /// domain, through the port in that domain's vcpu 0 table, toward the
    /// channel's notify vcpu.
    pub fn send_global_virq(&self, virq: Virq) {
        if virq.is_per_vcpu() {
            return;
        }
        let Some(handler) = self.virq_handler(virq) else {
            return;
        };
        if let Some(domain) = self.domain_from_interrupt(handler) {
            self.raise_virq(&domain, VcpuId(0), virq);
        }
    }

    fn raise_virq(&self, domain: &Domain, table_vcpu: VcpuId, virq: Virq) {
        let Some(slot) = domain
            .vcpu(table_vcpu)
            .and_then(|vcpu| vcpu.virq_to_port.get(virq.index()))
        else {
            return;
        };
        // Acquire: pairs with the Release that published the binding.
        let port = Port(slot.load(Ordering::Acquire));
        if port == Port::RESERVED {
            return;
        }
        let Some(channel) = domain.table.channel(port) else {
            return;
        };
        let wakeups = {
            // Interrupt context: never spin on the channel lock. A writer
            // means the channel is being created or closed: drop the event.
            let Some(state) = channel.try_read() else {
                return;
            };
            // The port may have been closed and reused since the load (for
            // a per-vcpu VIRQ possibly by the same VIRQ on another vcpu).
            let target = channel.notify_vcpu();
            if *state != (ChannelState::Virq { virq })
                || (virq.is_per_vcpu() && target != table_vcpu)
            {
                return;
            }
            domain.set_pending_from_interrupt((port, channel), target, &self.notify)
        };
        domain.deliver(wakeups, &self.notify);
    }

    /// Deliver a physical IRQ to the port bound to `pirq` (Xen:
    /// `send_guest_pirq()`), toward its notify vcpu; dropped if unbound or
    /// if the channel is being changed at this instant.
    pub fn send_pirq(&self, domid: DomId, pirq: u32) {
        let Some(domain) = self.domain_from_interrupt(domid) else {
            return;
        };
        let Some(slot) = domain.pirq_to_port.get(pirq as usize) else {
            return;
        };
        // Acquire: pairs with the Release in bind_pirq.
        let port = Port(slot.load(Ordering::Acquire));
        if port == Port::RESERVED {
            return;
        }
        let Some(channel) = domain.table.channel(port) else {
            return;
        };
        let wakeups = {
            let Some(state) = channel.try_read() else {
                return;
            };
            if *state != (ChannelState::Pirq { pirq }) {
                return;
            }
            domain.set_pending_from_interrupt((port, channel), channel.notify_vcpu(), &self.notify)
        };
        domain.deliver(wakeups, &self.notify);
    }

    /// Xen's `vcpu_mark_events_pending()`: set `evtchn_upcall_pending` of
    /// `vcpu` and, if it was clear, kick the vcpu. For the hypervisor's own
    /// paths that raise an upcall without a port (register_vcpu_info's
    /// spurious upcall). Nothing happens for an unknown domain or a vcpu
    /// without vcpu_info.
    pub fn vcpu_mark_events_pending(&self, domid: DomId, vcpu: VcpuId) {
        let Some(domain) = self.domain_from_interrupt(domid) else {
            return;
        };
        // A hypervisor calls this right after moving a vcpu_info: its
        // view may call it settled now. The event lock is only tried, as
        // everything here may run in interrupt context; missing it only
        // leaves senders on the view's dynamic call for this vcpu.
        if let Some(locked) = domain.event_lock.try_lock() {
            domain.settle_vcpu_info(&locked, vcpu);
        }
        let Some(info) = domain.shared.vcpu_info(vcpu) else {
            return;
        };
        // SeqCst test-and-set, as the port ops do (spec §3.3).
        if info.evtchn_upcall_pending.fetch_or(1, Ordering::SeqCst) & 1 == 0 {
            self.notify.kick_vcpu(domid, vcpu);
        }
    }

    /// Xen's `local_events_need_delivery()`: `evtchn_upcall_pending` set and
    /// `evtchn_upcall_mask` clear. The hypervisor asks this on every return
    /// to the guest to decide whether to bounce to the event callback.
    pub fn vcpu_has_deliverable_event(&self, domid: DomId, vcpu: VcpuId) -> bool {
        self.domain_from_interrupt(domid)
            .is_some_and(|domain| domain.vcpu_has_deliverable_event(vcpu))
    }
}
