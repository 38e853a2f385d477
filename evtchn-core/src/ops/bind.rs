//! Allocating and binding ports: alloc_unbound, bind_interdomain, bind_virq,
//! bind_ipi, bind_pirq, and the hypervisor's Xen-attached channels.

use alloc::sync::Arc;

use crate::abi::{DomId, EVTCHN_FIFO_PRIORITY_DEFAULT, Errno, EvtchnBindPirq, Port, VcpuId, Virq};
use crate::channel::{ChannelState, Consumer, XenConsumer};
use crate::domain::{Domain, PortChoice};
use crate::notify::{Notify, PirqHost, PirqSharing};
use crate::registry::{Domains, EventLocks};
use crate::sync::Ordering;

use super::check_target;

impl<N: Notify, P: PirqHost> Domains<N, P> {
    /// EVTCHNOP_alloc_unbound (spec §2.2): a port in `dom` that `remote_dom`
    /// may bind to. Allocation comes *before* the privilege check, so an
    /// unprivileged caller naming a full foreign domain gets -ENOSPC.
    /// DOMID_SELF in `remote_dom` means the caller (not `dom`); any other
    /// `remote_dom` is stored unvalidated.
    pub fn alloc_unbound(
        &self,
        caller: DomId,
        dom: DomId,
        remote_dom: DomId,
    ) -> Result<Port, Errno> {
        let caller = self.caller(caller)?;
        self.alloc_unbound_on(&caller, dom, remote_dom)
    }

    /// [`Domains::alloc_unbound`] once the caller is found.
    #[inline]
    pub(crate) fn alloc_unbound_on(
        &self,
        caller: &Arc<Domain>,
        dom: DomId,
        remote_dom: DomId,
    ) -> Result<Port, Errno> {
        // DOMID_SELF (what guests pass) borrows the caller: no reference
        // count taken and dropped.
        let looked_up;
        let target: &Domain = if dom == DomId::SELF {
            caller
        } else {
            looked_up = self.resolve(caller, dom)?;
            &looked_up
        };
        let remote = if remote_dom == DomId::SELF {
            caller.domid
        } else {
            remote_dom
        };
        self.alloc_unbound_with(
            target,
            PortChoice::Lowest,
            (remote, VcpuId(0)),
            Consumer::Guest,
            |target| check_target(caller, target),
        )
    }

    /// Xen's `alloc_unbound_xen_event_channel()`: an unbound port in `domid`,
    /// notifying `vcpu`, whose local end the hypervisor consumes
    /// (`consumer`); `remote` binds to it with bind_interdomain. The guest
    /// peer's sends reach [`Notify::notify_xen_consumer`]; the hypervisor
    /// signals the peer with [`Domains::notify_via_xen_channel`] and closes
    /// it with [`Domains::close_xen_channel`]. Guests cannot close, re-bind
    /// or poll it, and its status reads -EACCES (4.17).
    /// -ESRCH, -ENOENT for no such vcpu, then the allocation errors.
    pub fn alloc_unbound_xen(
        &self,
        domid: DomId,
        vcpu: VcpuId,
        remote: DomId,
        consumer: XenConsumer,
    ) -> Result<Port, Errno> {
        let target = self.domain(domid).ok_or(Errno::ESRCH)?;
        target.check_vcpu(vcpu)?;
        self.alloc_unbound_with(
            &target,
            PortChoice::Lowest,
            (remote, vcpu),
            Consumer::Xen(consumer),
            |_| Ok(()),
        )
    }

    /// A static event channel's first half (Xen's dom0less
    /// `alloc_static_evtchn()`): the hypervisor allocates exactly `port` in
    /// `domid`, unbound for `remote`. -ESRCH; -EINVAL while dying; -ENOSPC
    /// past the domain's limit; -EBUSY if the port is taken (port 0
    /// included); -ENOMEM. Storage up to the port is created as needed.
    pub fn alloc_unbound_at(&self, domid: DomId, port: Port, remote: DomId) -> Result<(), Errno> {
        let target = self.domain(domid).ok_or(Errno::ESRCH)?;
        self.alloc_unbound_with(
            &target,
            PortChoice::Exact(port),
            (remote, VcpuId(0)),
            Consumer::Guest,
            |_| Ok(()),
        )
        .map(|_| ())
    }

    #[inline]
    fn alloc_unbound_with(
        &self,
        target: &Domain,
        choice: PortChoice,
        (remote, notify_vcpu): (DomId, VcpuId),
        consumer: Consumer,
        permit: impl FnOnce(&Domain) -> Result<(), Errno>,
    ) -> Result<Port, Errno> {
        let locked = target.lock();
        // The common case first: a free port in bucket 0, nothing to
        // prepare. Same checks in the same order (allocation, then
        // `permit`), so the same answers.
        let found = match choice {
            PortChoice::Lowest => target.lowest_free_in_first_bucket(&locked),
            PortChoice::Exact(_) => None,
        };
        let (port, channel) = if let Some((port, channel)) = found {
            permit(target)?;
            // Commit: nothing below can fail.
            target.claim_first_bucket_port(&locked, port);
            (port, channel)
        } else {
            let prepared = target.prepare_port_choice(&locked, choice)?;
            permit(target)?;
            // Commit: nothing below can fail.
            let port = prepared.port;
            let channel = target.claim_port(&locked, prepared).ok_or(Errno::EINVAL)?;
            (port, channel)
        };
        *channel.write(target) = ChannelState::Unbound { remote, consumer };
        channel.set_notify_vcpu(notify_vcpu);
        channel.set_priority(EVTCHN_FIFO_PRIORITY_DEFAULT);
        if matches!(consumer, Consumer::Xen(_)) {
            // Only the event lock's holder writes the count.
            let xen = target.xen_channels.load(Ordering::Relaxed);
            target.xen_channels.store(xen + 1, Ordering::Relaxed);
        }
        Ok(port)
    }

    /// EVTCHNOP_bind_interdomain (spec §2.3): connect a new local port to
    /// `remote_port` of `remote_dom` (DOMID_SELF = loopback), which must be
    /// unbound and waiting for the caller. No privilege check: the unbound
    /// port naming the caller is the authorisation. The new local port is
    /// set pending at once, because a send from the peer while it was
    /// unbound was dropped.
    ///
    /// Sluice also refuses (-EINVAL) a remote domain that is being
    /// destroyed, whose ports are about to be closed anyway.
    pub fn bind_interdomain(
        &self,
        caller: DomId,
        remote_dom: DomId,
        remote_port: Port,
    ) -> Result<Port, Errno> {
        let local = self.caller(caller)?;
        let remote = self.resolve(&local, remote_dom)?;
        self.bind_interdomain_with(&local, PortChoice::Lowest, &remote, remote_port)
    }

    /// A static event channel's second half: the hypervisor binds exactly
    /// `local_port` of `local` to `remote_port` of `remote`, which must be
    /// unbound for `local`. The errors of [`Domains::alloc_unbound_at`] for
    /// the local port, then those of bind_interdomain. As with the guest
    /// op, the local port is set pending at once.
    pub fn bind_interdomain_at(
        &self,
        local: DomId,
        local_port: Port,
        remote: DomId,
        remote_port: Port,
    ) -> Result<(), Errno> {
        let local = self.domain(local).ok_or(Errno::ESRCH)?;
        let remote = self.domain(remote).ok_or(Errno::ESRCH)?;
        self.bind_interdomain_with(&local, PortChoice::Exact(local_port), &remote, remote_port)
            .map(|_| ())
    }

    fn bind_interdomain_with(
        &self,
        local: &Arc<Domain>,
        choice: PortChoice,
        remote: &Arc<Domain>,
        remote_port: Port,
    ) -> Result<Port, Errno> {
        // Lock order: lower domid's event lock -> higher domid's event lock.
        let locks = EventLocks::lock(local, remote);
        let prepared = local.prepare_port_choice(locks.first(), choice)?;
        let remote_channel = remote.table.channel(remote_port).ok_or(Errno::EINVAL)?;
        if locks.second().is_dying {
            return Err(Errno::EINVAL);
        }
        let remote_consumer = match *remote_channel.read() {
            ChannelState::Unbound {
                remote: expected,
                consumer,
            } if expected == local.domid => consumer,
            ChannelState::Unbound { .. }
            | ChannelState::Free
            | ChannelState::Reserved
            | ChannelState::Interdomain { .. }
            | ChannelState::Pirq { .. }
            | ChannelState::Virq { .. }
            | ChannelState::Ipi => return Err(Errno::EINVAL),
        };
        // Commit: nothing below can fail.
        let local_port = prepared.port;
        let local_channel = local
            .claim_port(locks.first(), prepared)
            .ok_or(Errno::EINVAL)?;
        let wakeups = {
            // Lock order: channel (lower domid, port) -> channel (higher).
            let local_first = (local.domid, local_port) < (remote.domid, remote_port);
            let (mut local_state, mut remote_state) = if local_first {
                let local_state = local_channel.write(local);
                (local_state, remote_channel.write(remote))
            } else {
                let remote_state = remote_channel.write(remote);
                (local_channel.write(local), remote_state)
            };
            *local_state = ChannelState::Interdomain {
                remote: remote.domid,
                remote_port,
                consumer: Consumer::Guest,
            };
            *remote_state = ChannelState::Interdomain {
                remote: local.domid,
                remote_port: local_port,
                consumer: remote_consumer,
            };
            // Each end's word for lock-free senders names its peer's
            // consumer (a loopback is lock-free only toward a guest port).
            local_state.set_peer_consumer(remote_consumer);
            remote_state.set_peer_consumer(Consumer::Guest);
            // Each end keeps the other domain for its senders (a loopback
            // needs none: the sender is the peer).
            if local.domid != remote.domid {
                local_state.set_peer_domain(remote.clone());
                remote_state.set_peer_domain(local.clone());
            }
            local_channel.set_notify_vcpu(VcpuId(0));
            local_channel.set_priority(EVTCHN_FIFO_PRIORITY_DEFAULT);
            local.set_pending(
                (local_port, local_channel),
                local_channel.notify_vcpu(),
                &self.notify,
            )
        };
        drop(locks);
        local.deliver(wakeups, &self.notify);
        Ok(local_port)
    }

    /// EVTCHNOP_bind_virq (spec §2.7): -EINVAL for a number ≥ 24 (or
    /// negative) or a global VIRQ on a vcpu other than 0, -ENOENT for no
    /// such vcpu, -EEXIST if already bound in that vcpu's table, then the
    /// allocation errors. In 4.17 any domain may bind a global VIRQ; only
    /// the handler domain's binding receives it.
    pub fn bind_virq(&self, caller: DomId, virq: u32, vcpu: VcpuId) -> Result<Port, Errno> {
        let domain = self.caller(caller)?;
        let virq = Virq::new(virq).ok_or(Errno::EINVAL)?;
        if !virq.is_per_vcpu() && vcpu != VcpuId(0) {
            return Err(Errno::EINVAL);
        }
        let slot = domain
            .vcpu(vcpu)
            .and_then(|state| state.virq_to_port.get(virq.index()))
            .ok_or(Errno::ENOENT)?;
        let locked = domain.lock();
        if slot.load(Ordering::Relaxed) != 0 {
            return Err(Errno::EEXIST);
        }
        let prepared = domain.prepare_port(&locked)?;
        // Commit: nothing below can fail.
        let port = prepared.port;
        let channel = domain.claim_port(&locked, prepared).ok_or(Errno::EINVAL)?;
        *channel.write(&domain) = ChannelState::Virq { virq };
        channel.set_notify_vcpu(vcpu);
        channel.set_priority(EVTCHN_FIFO_PRIORITY_DEFAULT);
        // Release: publish the binding last; pairs with the Acquire of
        // senders, who then find the channel bound.
        slot.store(port.0, Ordering::Release);
        Ok(port)
    }

    /// EVTCHNOP_bind_ipi (spec §2.8): -ENOENT for no such vcpu; the port
    /// notifies `vcpu` forever.
    pub fn bind_ipi(&self, caller: DomId, vcpu: VcpuId) -> Result<Port, Errno> {
        let domain = self.caller(caller)?;
        domain.check_vcpu(vcpu)?;
        let locked = domain.lock();
        let prepared = domain.prepare_port(&locked)?;
        let port = prepared.port;
        let channel = domain.claim_port(&locked, prepared).ok_or(Errno::EINVAL)?;
        // The vcpu is set under the write lock, before the guard publishes
        // the binding to lock-free senders, who read it without the lock.
        let mut state = channel.write(&domain);
        *state = ChannelState::Ipi;
        channel.set_notify_vcpu(vcpu);
        channel.set_priority(EVTCHN_FIFO_PRIORITY_DEFAULT);
        drop(state);
        Ok(port)
    }

    /// EVTCHNOP_bind_pirq (spec §2.9): -EINVAL for `pirq` ≥ nr_pirqs, -EPERM
    /// if the pirq is not mapped for the domain, -EEXIST if already bound,
    /// then the allocation errors, then the host binding's errors (-EINVAL,
    /// -EBUSY, -ENOMEM). A failed bind leaves no port and no host binding
    /// (XSA-46).
    pub fn bind_pirq(&self, caller: DomId, pirq: u32, flags: u32) -> Result<Port, Errno> {
        let domain = self.caller(caller)?;
        let slot = domain
            .pirq_to_port
            .get(pirq as usize)
            .ok_or(Errno::EINVAL)?;
        if !self.pirq_host.is_pirq_mapped(domain.domid, pirq) {
            return Err(Errno::EPERM);
        }
        let locked = domain.lock();
        if slot.load(Ordering::Relaxed) != 0 {
            return Err(Errno::EEXIST);
        }
        let prepared = domain.prepare_port(&locked)?;
        let sharing = if flags & EvtchnBindPirq::WILL_SHARE != 0 {
            PirqSharing::WillShare
        } else {
            PirqSharing::Exclusive
        };
        self.pirq_host.bind(domain.domid, pirq, sharing)?;
        // Commit: nothing below can fail.
        let port = prepared.port;
        let Some(channel) = domain.claim_port(&locked, prepared) else {
            self.pirq_host.unbind(domain.domid, pirq);
            return Err(Errno::EINVAL);
        };
        *channel.write(&domain) = ChannelState::Pirq { pirq };
        channel.set_notify_vcpu(VcpuId(0));
        channel.set_priority(EVTCHN_FIFO_PRIORITY_DEFAULT);
        // Release: pairs with the Acquire in send_pirq.
        slot.store(port.0, Ordering::Release);
        Ok(port)
    }
}
