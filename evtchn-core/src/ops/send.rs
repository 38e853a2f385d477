//! EVTCHNOP_send.

use crate::abi::{DomId, Errno, Port};
use crate::channel::{Channel, ChannelState, Consumer};
use crate::domain::{Domain, SendRest};
use crate::notify::{Notify, PirqHost};
use crate::registry::{DomainHandle, Domains};

impl<N: Notify, P: PirqHost> Domains<N, P> {
    /// EVTCHNOP_send (spec §2.5): on an interdomain port, set the *peer*
    /// pending toward the peer's notify vcpu (a Xen-attached peer gets
    /// [`Notify::notify_xen_consumer`] instead); on an IPI port, this port
    /// toward its vcpu; on an unbound port, nothing (rc 0). -EINVAL for an
    /// invalid, free, reserved, PIRQ, VIRQ or Xen-attached port.
    ///
    /// An IPI or loopback port of a 2-level domain takes no lock at all
    /// (crate doc, "Lock-free send"). Otherwise only the local channel's
    /// read lock is taken: every state change of an interdomain pair holds
    /// both channels' write locks, so the peer cannot change while it is
    /// held (spec §2.5), and its lock is not taken at all.
    ///
    /// This looks the caller up in the registry; a hypervisor that keeps a
    /// [`DomainHandle`] per domain calls [`Domains::send_from`] instead.
    pub fn send(&self, caller: DomId, port: Port) -> Result<(), Errno> {
        let domain = self.caller(caller)?;
        self.send_on(&domain, port)
    }

    /// [`Domains::send`] for the domain behind `caller`, without the
    /// registry lookup: the hot path of a guest's EVTCHNOP_send. Same
    /// answers, except that a handle of a destroyed domain (whose ports are
    /// all closed) gives -EINVAL where the by-id call gives -ESRCH.
    #[inline]
    pub fn send_from(&self, caller: &DomainHandle, port: Port) -> Result<(), Errno> {
        self.send_on(caller.domain(), port)
    }

    /// The send on `domain`, the caller's.
    #[inline(always)]
    fn send_on(&self, domain: &Domain, port: Port) -> Result<(), Errno> {
        // A free port and an invalid one both give -EINVAL here.
        let channel = domain.table.channel_for_send(port).ok_or(Errno::EINVAL)?;
        // IPI and loopback ports of a 2-level domain: no lock at all (see
        // the crate doc, "Lock-free send"); any rare case finishes in one
        // call out of line.
        match domain.send_lock_free((port, channel), &self.notify) {
            None => Ok(()),
            // Its port and channel in registers, as before the split.
            Some(SendRest::Locked(port, channel)) => self.send_locked(domain, (port, channel)),
            Some(rest) => self.finish_send(domain, rest),
        }
    }

    /// What [`Domain::send_lock_free`] left of a send: the locked path,
    /// the lock-free send through a view without a fixed page, or the rest
    /// of a lock-free send.
    #[cold]
    #[inline(never)]
    fn finish_send(&self, domain: &Domain, rest: SendRest<'_>) -> Result<(), Errno> {
        match rest {
            SendRest::Locked(port, channel) => self.send_locked(domain, (port, channel)),
            SendRest::ThroughView(port, channel) => {
                match domain.send_lock_free_through_view((port, channel), &self.notify) {
                    None => Ok(()),
                    Some(rest) => self.finish_send(domain, rest),
                }
            }
            SendRest::LockFree(rest) => {
                domain.finish_lock_free_send(rest, &self.notify);
                Ok(())
            }
        }
    }

    /// [`Domains::send`] under the channel's read lock: every state the
    /// lock-free path leaves to it (interdomain to another domain or to a
    /// Xen-attached peer, unbound, the errors) and FIFO domains.
    #[inline(never)]
    fn send_locked(&self, domain: &Domain, (port, channel): (Port, &Channel)) -> Result<(), Errno> {
        let state = channel.read();
        if state.is_xen_attached() {
            return Err(Errno::EINVAL);
        }
        match *state {
            ChannelState::Free
            | ChannelState::Reserved
            | ChannelState::Pirq { .. }
            | ChannelState::Virq { .. } => Err(Errno::EINVAL),
            ChannelState::Unbound { .. } => Ok(()),
            ChannelState::Ipi => {
                let wakeups =
                    domain.set_pending((port, channel), channel.notify_vcpu(), &self.notify);
                drop(state);
                domain.deliver(wakeups, &self.notify);
                Ok(())
            }
            ChannelState::Interdomain {
                remote,
                remote_port,
                ..
            } => {
                // Loopback borrows the caller; another domain is the one
                // bind_interdomain kept in this channel (it cannot be
                // destroyed meanwhile: destruction closes the peer port
                // first, which needs this channel's write lock).
                let is_loopback = remote == domain.domid;
                let peer: &Domain = if is_loopback {
                    domain
                } else if let Some(kept) = state.peer_domain() {
                    kept
                } else {
                    log::error!("{} {port}: interdomain peer {remote} missing", domain.domid);
                    return Ok(());
                };
                let Some(peer_channel) = peer.table.channel(remote_port) else {
                    return Ok(());
                };
                let peer_domid = peer.domid;
                // The peer's state is read without its lock: every writer of
                // an interdomain pair holds both channels' write locks, so it
                // cannot change while this channel's read lock is held (and
                // the peer's set_pending runs under a lock excluding its
                // writers, as the port ops require).
                match peer_channel.consumer_of_peer(&state) {
                    Consumer::Xen(consumer) => {
                        drop(state);
                        self.notify
                            .notify_xen_consumer(peer_domid, remote_port, consumer);
                    }
                    Consumer::Guest => {
                        let wakeups = peer.set_pending(
                            (remote_port, peer_channel),
                            peer_channel.notify_vcpu(),
                            &self.notify,
                        );
                        // Once the lock is dropped only the domain's id is
                        // safe to use, unless a reference is kept: keep one
                        // (an `Arc` clone) only when a poller must be woken,
                        // which is rare (see `Domain::deliver`).
                        let poll_port = wakeups.poll_port.filter(|_| peer.has_pollers());
                        let for_pollers = match (poll_port, is_loopback) {
                            (Some(_), false) => state.peer_domain().cloned(),
                            _ => None,
                        };
                        drop(state);
                        if let Some(vcpu) = wakeups.kick_vcpu {
                            self.notify.kick_vcpu(peer_domid, vcpu);
                        }
                        if let Some(polled) = poll_port {
                            let peer = for_pollers.as_deref().unwrap_or(domain);
                            peer.check_pollers(polled, &self.notify);
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Xen's `notify_via_xen_event_channel()`: the hypervisor signals the
    /// guest peer of its Xen-attached port `port` in `domid`. Dropped if the
    /// port is not an interdomain Xen-attached channel.
    pub fn notify_via_xen_channel(&self, domid: DomId, port: Port) {
        let Some(domain) = self.domain(domid) else {
            return;
        };
        let Some(channel) = domain.table.channel(port) else {
            return;
        };
        let Some(state) = channel.try_read() else {
            return;
        };
        let ChannelState::Interdomain {
            remote,
            remote_port,
            consumer: Consumer::Xen(_),
        } = *state
        else {
            return;
        };
        let Some(peer) = self.domain(remote) else {
            return;
        };
        let Some(peer_channel) = peer.table.channel(remote_port) else {
            return;
        };
        let wakeups = peer.set_pending(
            (remote_port, peer_channel),
            peer_channel.notify_vcpu(),
            &self.notify,
        );
        drop(state);
        peer.deliver(wakeups, &self.notify);
    }
}
