//! Closing ports: EVTCHNOP_close, EVTCHNOP_reset / reset_cont, and the
//! close that domain destruction runs on every port.

use crate::abi::{DomId, EVTCHNS_PER_BUCKET, Errno, Port, VcpuId};
use crate::channel::{Channel, ChannelKind, ChannelState, Consumer};
use crate::domain::{Domain, EventLocked};
use crate::notify::{Notify, PirqHost};
use crate::registry::{Domains, EventLocks};
use alloc::sync::Arc;

use crate::sync::{MutexGuard, Ordering};

use super::{CloseBy, ResetMode, check_target};

impl<N: Notify, P: PirqHost> Domains<N, P> {
    /// EVTCHNOP_close (spec §2.4): -EINVAL for an invalid, free or reserved
    /// port (so port 0) and for a Xen-attached channel. The pending bit is
    /// cleared, the mask bit kept; an interdomain peer becomes unbound,
    /// waiting for the closer, and may be bound again.
    pub fn close(&self, caller: DomId, port: Port) -> Result<(), Errno> {
        let domain = self.caller(caller)?;
        self.close_port(&domain, port, CloseBy::Guest)
    }

    /// Xen's `free_xen_event_channel()`: the hypervisor closes one of its
    /// Xen-attached channels (any other channel works too). A guest peer
    /// becomes unbound. -ESRCH, -EINVAL for an invalid, free or reserved port.
    pub fn close_xen_channel(&self, domid: DomId, port: Port) -> Result<(), Errno> {
        let domain = self.domain(domid).ok_or(Errno::ESRCH)?;
        self.close_port(&domain, port, CloseBy::Hypervisor)
    }

    /// Xen's `evtchn_close()`.
    ///
    /// The common case, an unbound or IPI port (nothing to undo but the
    /// port itself, no peer to lock), is served here; every other state
    /// goes on to [`Domains::close_bound_port`] with the event lock still
    /// held. Inlined into the hypervisor's hot handler (through
    /// `close_from`): measured, that saves close 26 instructions and costs
    /// the send rows, which share the handler's frame, one.
    #[inline]
    pub(crate) fn close_port(
        &self,
        domain: &Arc<Domain>,
        port: Port,
        by: CloseBy,
    ) -> Result<(), Errno> {
        let channel = domain.table.channel(port).ok_or(Errno::EINVAL)?;
        let locked = domain.lock();
        // Under the event lock the summary word gives the state's kind and
        // consumer exactly, without the channel's lock.
        let (kind, consumer) = channel.kind_under_event_lock();
        let is_xen_attached = matches!(consumer, Consumer::Xen(_));
        if matches!(kind, ChannelKind::Unbound | ChannelKind::Ipi)
            && !(is_xen_attached && by == CloseBy::Guest)
        {
            // Straight to the write lock, without reading the state under
            // the read lock first.
            let mut own_state = channel.write(domain);
            domain.release_port(&locked, (port, channel), is_xen_attached);
            *own_state = ChannelState::Free;
            return Ok(());
        }
        self.close_bound_port(domain, (port, channel), by, locked)
    }

    /// [`Domains::close_port`] of any state but a guest's unbound or IPI
    /// port, entered with the domain's event lock held (`locked`).
    #[inline(never)]
    fn close_bound_port(
        &self,
        domain: &Arc<Domain>,
        (port, channel): (Port, &Channel),
        by: CloseBy,
        locked: MutexGuard<'_, EventLocked>,
    ) -> Result<(), Errno> {
        // The peer domain of an interdomain channel, once known. Its event
        // lock must be taken in domid order, so on discovering it we drop
        // ours, take both, and look again. If the channel was closed and
        // re-bound elsewhere meanwhile, the answer is -EINVAL, as if we had
        // seen it free (it was, in between), which is what Xen does.
        let mut peer: Option<Arc<Domain>> = None;
        let mut held = Some(locked);
        loop {
            let peer_now = peer.clone();
            // Lock order: lower domid's event lock -> higher domid's.
            let locks = match (held.take(), &peer_now) {
                (Some(locked), _) => EventLocks::One(locked),
                (None, None) => EventLocks::lock(domain, domain),
                (None, Some(peer)) => EventLocks::lock(domain, peer),
            };
            // Under the event lock the summary word gives the state's kind
            // and consumer exactly, without the channel's lock.
            let (kind, consumer) = channel.kind_under_event_lock();
            let is_xen_attached = matches!(consumer, Consumer::Xen(_));
            if is_xen_attached && by == CloseBy::Guest {
                return Err(Errno::EINVAL);
            }
            match kind {
                ChannelKind::Free | ChannelKind::Reserved => return Err(Errno::EINVAL),
                ChannelKind::Unbound
                | ChannelKind::Ipi
                | ChannelKind::Interdomain
                | ChannelKind::Pirq
                | ChannelKind::Virq => {}
            }
            let state = *channel.read();
            match state {
                ChannelState::Free | ChannelState::Reserved => return Err(Errno::EINVAL),
                ChannelState::Unbound { .. } | ChannelState::Ipi => {}
                ChannelState::Pirq { pirq } => {
                    self.pirq_host.unbind(domain.domid, pirq);
                    if let Some(slot) = domain.pirq_to_port.get(pirq as usize) {
                        // Release: pairs with the Acquire in send_pirq; the
                        // map is cleared before the channel is freed, and a
                        // sender that still read the old port re-checks the
                        // channel's state under its lock.
                        slot.store(0, Ordering::Release);
                    }
                }
                ChannelState::Virq { virq } => {
                    // Per-vcpu VIRQs live in their vcpu's table, the others
                    // in vcpu 0's (even if moved with bind_vcpu).
                    let table_vcpu = if virq.is_per_vcpu() {
                        channel.notify_vcpu()
                    } else {
                        VcpuId(0)
                    };
                    if let Some(slot) = domain
                        .vcpu(table_vcpu)
                        .and_then(|vcpu| vcpu.virq_to_port.get(virq.index()))
                    {
                        // Release: pairs with the Acquire in raise_virq;
                        // cleared before the channel is freed (a sender
                        // holding the old port re-checks the state).
                        slot.store(0, Ordering::Release);
                    }
                }
                ChannelState::Interdomain {
                    remote,
                    remote_port,
                    ..
                } => {
                    let peer_domain = if remote == domain.domid {
                        domain.clone()
                    } else {
                        match &peer {
                            Some(known) => known.clone(),
                            None => {
                                peer = Some(self.domain(remote).ok_or(Errno::EINVAL)?);
                                drop(locks);
                                continue;
                            }
                        }
                    };
                    // The peer we locked must be the one the channel names
                    // and must point back (a destroyed domain whose id was
                    // reused does not).
                    let peer_channel = peer_domain
                        .table
                        .channel(remote_port)
                        .filter(|_| peer_domain.domid == remote)
                        .filter(|peer_channel| {
                            matches!(*peer_channel.read(),
                                ChannelState::Interdomain { remote: back, remote_port: back_port, .. }
                                    if back == domain.domid && back_port == port)
                        });
                    let Some(peer_channel) = peer_channel else {
                        return Err(Errno::EINVAL);
                    };
                    // Lock order: channel (lower domid, port) -> channel (higher).
                    let self_first = (domain.domid, port) < (remote, remote_port);
                    let (mut own_state, mut peer_state) = if self_first {
                        let own_state = channel.write(domain);
                        (own_state, peer_channel.write(&peer_domain))
                    } else {
                        let peer_state = peer_channel.write(&peer_domain);
                        (channel.write(domain), peer_state)
                    };
                    let peer_consumer = peer_state.consumer();
                    *peer_state = ChannelState::Unbound {
                        remote: domain.domid,
                        consumer: peer_consumer,
                    };
                    domain.release_port(locks.first(), (port, channel), state.is_xen_attached());
                    *own_state = ChannelState::Free;
                    return Ok(());
                }
            }
            let mut own_state = channel.write(domain);
            domain.release_port(locks.first(), (port, channel), state.is_xen_attached());
            *own_state = ChannelState::Free;
            return Ok(());
        }
    }

    /// EVTCHNOP_reset and EVTCHNOP_reset_cont (spec §2.12): close every
    /// guest channel of `dom` as the guest would (Xen-attached ones stay).
    ///
    /// -ESRCH, then -EPERM (TARGET), then -EINVAL if the target is another
    /// domain not paused by the controller, then -EBUSY for a reset while one
    /// is in progress or a continue while none is. Every 64th port asks
    /// [`Notify::should_preempt`]; if it says so the cursor is kept and the
    /// result is [`Errno::ERESTART`], which the hypervisor turns into a
    /// continuation with cmd 14 (XSA-344). -EAGAIN if channels were opened
    /// meanwhile.
    pub fn reset(&self, caller: DomId, dom: DomId, mode: ResetMode) -> Result<(), Errno> {
        let caller = self.caller(caller)?;
        let target = self.resolve(&caller, dom)?;
        check_target(&caller, &target)?;
        // Acquire: pairs with the AcqRel of pause_by_controller.
        if target.domid != caller.domid && target.controller_pauses.load(Ordering::Acquire) == 0 {
            return Err(Errno::EINVAL);
        }
        let mut port = {
            let mut locked = target.lock();
            let start = match mode {
                ResetMode::Continue => locked.reset_cursor,
                ResetMode::Start if locked.reset_cursor == 0 => 1,
                ResetMode::Start => 0,
            };
            if start == 0 {
                return Err(Errno::EBUSY);
            }
            locked.reset_cursor = locked.reset_cursor.max(start);
            start
        };
        // Acquire on the active count: pairs with the Release decrements in
        // release_port, so a Xen-attached close seen here is seen whole.
        while target.table.is_valid(Port(port))
            && target.active_channels.load(Ordering::Acquire)
                > target.xen_channels.load(Ordering::Relaxed)
        {
            // A free or Xen-attached port gives -EINVAL: skipped.
            let _ = self.close_port(&target, Port(port), CloseBy::Guest);
            if port % EVTCHNS_PER_BUCKET == 0 && self.notify.should_preempt() {
                target.lock().reset_cursor = port;
                return Err(Errno::ERESTART);
            }
            port += 1;
        }
        let mut locked = target.lock();
        locked.reset_cursor = 0;
        if target.active_channels.load(Ordering::Relaxed)
            > target.xen_channels.load(Ordering::Relaxed)
        {
            return Err(Errno::EAGAIN);
        }
        // Back to 2-level, dropping every FIFO mapping (spec §2.12 step 5).
        target.leave_fifo(locked);
        Ok(())
    }
}
