//! The `'e'` debug-key dump: per domain, one line per allocated port with
//! the fields Xen prints (`domain_dump_evtchn_info()`), so reports from
//! Sluice read like reports from Xen.

use core::fmt::{self, Write};

use crate::abi::{DomId, EVTCHN_FIFO_BUSY, EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_LINKED, Port};
use crate::channel::{ChannelState, Consumer};
use crate::notify::{Notify, PirqHost};
use crate::registry::Domains;
use crate::sync::Ordering;

/// Xen's internal state number (ECS_*) for the `s=` field.
const fn internal_state(state: &ChannelState) -> u32 {
    match state {
        ChannelState::Free => 0,
        ChannelState::Reserved => 1,
        ChannelState::Unbound { .. } => 2,
        ChannelState::Interdomain { .. } => 3,
        ChannelState::Pirq { .. } => 4,
        ChannelState::Virq { .. } => 5,
        ChannelState::Ipi => 6,
    }
}

impl<N: Notify, P: PirqHost> Domains<N, P> {
    /// Write the `'e'` dump of one domain:
    ///
    /// ```text
    /// Event channel information for domain 1:
    /// Polling vCPUs: {1}
    ///     port [p/m/s]
    ///        1 [1/0/1]: s=3 n=0 x=0 d=2 p=1
    /// ```
    ///
    /// `p`/`m`/`s`: pending, masked, and the selector bit of the port's word
    /// in the notify vcpu (FIFO: `B` if BUSY, then LINK or `-`; `?` without
    /// an event word); `s=` the internal state (ECS_*), `n=` the notify
    /// vcpu, `x=` the Xen consumer (0 = guest), then `d=`/`p=` (peer),
    /// `p=`/`i=` (pirq and host IRQ) or `v=` (virq).
    pub fn dump_domain(&self, domid: DomId, out: &mut impl Write) -> fmt::Result {
        let Some(domain) = self.domain(domid) else {
            return Ok(());
        };
        writeln!(out, "Event channel information for domain {}:", domid.0)?;
        write!(out, "Polling vCPUs: {{")?;
        let mut separator = "";
        for (word_index, word) in domain.poll_mask.iter().enumerate() {
            let mut bits = word.load(Ordering::Relaxed);
            while bits != 0 {
                write!(
                    out,
                    "{separator}{}",
                    word_index as u32 * 64 + bits.trailing_zeros()
                )?;
                separator = ",";
                bits &= bits - 1;
            }
        }
        writeln!(out, "}}")?;
        writeln!(out, "    port [p/m/s]")?;
        let view = &*domain.shared;
        for port in 1..domain.table.valid_evtchns() {
            let port = Port(port);
            let Some(channel) = domain.table.channel(port) else {
                continue;
            };
            let info = channel.info();
            if !info.state.is_allocated() {
                continue;
            }
            let consumer = match info.state.consumer() {
                Consumer::Guest => 0,
                Consumer::Xen(consumer) => consumer.0,
            };
            let abi = domain.abi();
            write!(
                out,
                "    {:4} [{}/{}/",
                port.0,
                u8::from(abi.is_pending(view, port)),
                u8::from(abi.is_masked(view, port)),
            )?;
            // The ABI's own column (Xen: print_state): the selector bit for
            // 2-level; BUSY and LINK (or `?` without an event word) for FIFO.
            match abi.fifo() {
                None => {
                    let selector = view.vcpu_info(info.notify_vcpu).is_some_and(|vcpu| {
                        vcpu.evtchn_pending_sel.load(Ordering::Relaxed)
                            & (1u64 << ((port.0 / 64) % 64))
                            != 0
                    });
                    write!(out, "{}", u8::from(selector))?;
                }
                Some(fifo) => match fifo.raw_word(port) {
                    None => write!(out, "?     ")?,
                    Some(word) => {
                        let busy = if word & EVTCHN_FIFO_BUSY != 0 {
                            'B'
                        } else {
                            ' '
                        };
                        if word & EVTCHN_FIFO_LINKED != 0 {
                            write!(out, "{busy} {:<4}", word & EVTCHN_FIFO_LINK_MASK)?;
                        } else {
                            write!(out, "{busy} -   ")?;
                        }
                    }
                },
            }
            drop(abi);
            write!(
                out,
                "]: s={} n={} x={}",
                internal_state(&info.state),
                info.notify_vcpu.0,
                consumer
            )?;
            match info.state {
                ChannelState::Unbound { remote, .. } => write!(out, " d={}", remote.0)?,
                ChannelState::Interdomain {
                    remote,
                    remote_port,
                    ..
                } => write!(out, " d={} p={}", remote.0, remote_port.0)?,
                ChannelState::Pirq { pirq } => {
                    write!(out, " p={pirq}")?;
                    if let Some(irq) = self.pirq_host.host_irq(domid, pirq) {
                        write!(out, " i={irq}")?;
                    }
                }
                ChannelState::Virq { virq } => write!(out, " v={}", virq.number())?,
                ChannelState::Free | ChannelState::Reserved | ChannelState::Ipi => {}
            }
            writeln!(out)?;
        }
        Ok(())
    }
}
