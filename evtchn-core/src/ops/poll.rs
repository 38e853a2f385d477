//! The event-channel half of SCHEDOP_poll (spec §7.10, §3.5).
//!
//! The hypervisor owns blocking and the timeout; evtchn-core owns the poll
//! bookkeeping that senders look at. The sequence, as in Xen's `do_poll()`:
//! the hypervisor marks the vcpu blocked, copies the port array in, and
//! calls [`Domains::poll`]. `Ready` (or an error) means unblock and return
//! at once; `Block` means stay blocked until [`Notify::wake_poller`] or
//! [`Notify::kick_vcpu`] or the timer, then call [`Domains::poll_finish`].
//! Because the poll bit is set before the ports are checked (with a full
//! fence between), an event racing with the check either is seen by it or
//! sees the poll bit and wakes the vcpu: no lost wake-up.

use crate::abi::{DomId, Errno, Port, VcpuId};
use crate::notify::{Notify, PirqHost};
use crate::registry::Domains;
use crate::sync::Ordering;

/// Most ports one SCHEDOP_poll may name.
pub const SCHEDOP_POLL_MAX_PORTS: usize = 128;

/// What the hypervisor does after [`Domains::poll`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PollOutcome {
    /// An event is already there (or a wake-up already came): return 0 now.
    Ready,
    /// Stay blocked; a wake-up or the timeout ends the poll.
    Block,
}

impl<N: Notify, P: PirqHost> Domains<N, P> {
    /// Start polling `ports` on `vcpu` (spec §7.10 steps 1–5): -EINVAL for
    /// more than 128 ports, or for a port that is invalid, free, reserved or
    /// Xen-attached (checked in order; an earlier pending port wins). A
    /// pending port (masked or not), or an upcall the vcpu could take now,
    /// gives `Ready`. -ESRCH / -ENOENT for an unknown domain or vcpu.
    pub fn poll(&self, domid: DomId, vcpu: VcpuId, ports: &[Port]) -> Result<PollOutcome, Errno> {
        if ports.len() > SCHEDOP_POLL_MAX_PORTS {
            return Err(Errno::EINVAL);
        }
        let domain = self.domain(domid).ok_or(Errno::ESRCH)?;
        let state = domain.vcpu(vcpu).ok_or(Errno::ENOENT)?;
        let (word, bit) = domain.poll_bit(vcpu).ok_or(Errno::ENOENT)?;
        state.poll_port.store(-1, Ordering::SeqCst);
        // SeqCst: the poll bit must be visible before the ports are read;
        // pairs with the SeqCst load in check_pollers.
        word.fetch_or(bit, Ordering::SeqCst);
        let outcome = (|| {
            // Someone woke us between setting the flags and here.
            if state.poll_port.load(Ordering::SeqCst) == 0 || word.load(Ordering::SeqCst) & bit == 0
            {
                return Ok(PollOutcome::Ready);
            }
            if domain.vcpu_has_deliverable_event(vcpu) {
                return Ok(PollOutcome::Ready);
            }
            for &port in ports {
                let channel = domain.table.channel(port).ok_or(Errno::EINVAL)?;
                let channel_state = channel.read();
                if !channel_state.is_usable() {
                    return Err(Errno::EINVAL);
                }
                if domain.abi().is_pending(&*domain.shared, port) {
                    return Ok(PollOutcome::Ready);
                }
            }
            Ok(PollOutcome::Block)
        })();
        match outcome {
            Ok(PollOutcome::Block) => {
                if let [only] = ports {
                    // Narrow the wake-up to that port; a concurrent waker
                    // that already cleared our bit stays authoritative.
                    let _ = state.poll_port.compare_exchange(
                        -1,
                        i64::from(only.0),
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                }
            }
            Ok(PollOutcome::Ready) | Err(_) => {
                state.poll_port.store(0, Ordering::SeqCst);
                word.fetch_and(!bit, Ordering::SeqCst);
            }
        }
        outcome
    }

    /// End a poll (woken, timed out, or abandoned): clear the vcpu's poll
    /// state so senders stop waking it.
    pub fn poll_finish(&self, domid: DomId, vcpu: VcpuId) {
        let Some(domain) = self.domain(domid) else {
            return;
        };
        if let (Some(state), Some((word, bit))) = (domain.vcpu(vcpu), domain.poll_bit(vcpu)) {
            state.poll_port.store(0, Ordering::SeqCst);
            word.fetch_and(!bit, Ordering::SeqCst);
        }
    }

    /// Whether `vcpu` is currently registered as polling.
    pub fn is_polling(&self, domid: DomId, vcpu: VcpuId) -> bool {
        self.domain(domid)
            .and_then(|domain| {
                let (word, bit) = domain.poll_bit(vcpu)?;
                Some(word.load(Ordering::SeqCst) & bit != 0)
            })
            .unwrap_or(false)
    }
}
