//! `event_channel_op` (hypercall 32; spec §1, §2): the ABI structs, declared
//! here independently of Sluice's `evtchn-core` and asserted against the
//! spec's numbers (STYLE §3), and one wrapper per op.
//!
//! Wrappers return `Result<_, Errno>` so tests compare against the errno the
//! spec names; [`op`] issues any command with any argument, for tests of
//! unknown commands. The bind wrappers, bind_vcpu, close and reset tell the
//! upcall path which vcpu each of this domain's ports notifies.

use core::mem::{offset_of, size_of};

use crate::errno::Errno;
use crate::hypercall::{hypercall2, nr};
use crate::upcall;

/// A domain id (domid_t).
pub type DomId = u16;
/// An event-channel port (evtchn_port_t).
pub type Port = u32;

/// The calling domain, in domain arguments.
pub const DOMID_SELF: DomId = 0x7ff0;

/// EVTCHNOP command numbers (spec §1.1).
pub mod cmd {
    /// EVTCHNOP_bind_interdomain.
    pub const BIND_INTERDOMAIN: u32 = 0;
    /// EVTCHNOP_bind_virq.
    pub const BIND_VIRQ: u32 = 1;
    /// EVTCHNOP_bind_pirq.
    pub const BIND_PIRQ: u32 = 2;
    /// EVTCHNOP_close.
    pub const CLOSE: u32 = 3;
    /// EVTCHNOP_send.
    pub const SEND: u32 = 4;
    /// EVTCHNOP_status.
    pub const STATUS: u32 = 5;
    /// EVTCHNOP_alloc_unbound.
    pub const ALLOC_UNBOUND: u32 = 6;
    /// EVTCHNOP_bind_ipi.
    pub const BIND_IPI: u32 = 7;
    /// EVTCHNOP_bind_vcpu.
    pub const BIND_VCPU: u32 = 8;
    /// EVTCHNOP_unmask.
    pub const UNMASK: u32 = 9;
    /// EVTCHNOP_reset.
    pub const RESET: u32 = 10;
    /// EVTCHNOP_init_control.
    pub const INIT_CONTROL: u32 = 11;
    /// EVTCHNOP_expand_array.
    pub const EXPAND_ARRAY: u32 = 12;
    /// EVTCHNOP_set_priority.
    pub const SET_PRIORITY: u32 = 13;
    /// EVTCHNOP_reset_cont.
    pub const RESET_CONT: u32 = 14;
}

/// EVTCHNSTAT_* values reported by EVTCHNOP_status (spec §1.3).
pub mod stat {
    /// Free or reserved.
    pub const CLOSED: u32 = 0;
    /// Waiting for a peer.
    pub const UNBOUND: u32 = 1;
    /// Connected to a peer port.
    pub const INTERDOMAIN: u32 = 2;
    /// Bound to a physical IRQ.
    pub const PIRQ: u32 = 3;
    /// Bound to a virtual IRQ.
    pub const VIRQ: u32 = 4;
    /// Bound to an IPI.
    pub const IPI: u32 = 5;
}

/// VIRQ numbers used by the tests (spec §5).
pub mod virq {
    /// Per-vcpu timer.
    pub const TIMER: u32 = 0;
    /// Per-vcpu debug key.
    pub const DEBUG: u32 = 1;
    /// Global emergency console.
    pub const CONSOLE: u32 = 2;
    /// Global domain-exception notification.
    pub const DOM_EXC: u32 = 3;
    /// Number of VIRQs.
    pub const NR_VIRQS: u32 = 24;
}

/// struct evtchn_alloc_unbound (8 bytes).
#[repr(C)]
#[derive(Default)]
pub struct EvtchnAllocUnbound {
    /// IN: the domain the port is allocated in.
    pub dom: DomId,
    /// IN: the domain allowed to bind to it.
    pub remote_dom: DomId,
    /// OUT: the new port.
    pub port: Port,
}
const _: () = assert!(size_of::<EvtchnAllocUnbound>() == 8);
const _: () = assert!(offset_of!(EvtchnAllocUnbound, dom) == 0);
const _: () = assert!(offset_of!(EvtchnAllocUnbound, remote_dom) == 2);
const _: () = assert!(offset_of!(EvtchnAllocUnbound, port) == 4);

/// struct evtchn_bind_interdomain (12 bytes).
#[repr(C)]
#[derive(Default)]
pub struct EvtchnBindInterdomain {
    /// IN: the remote domain.
    pub remote_dom: DomId,
    /// Explicit padding.
    pub _pad: [u8; 2],
    /// IN: the remote domain's unbound port.
    pub remote_port: Port,
    /// OUT: the new local port.
    pub local_port: Port,
}
const _: () = assert!(size_of::<EvtchnBindInterdomain>() == 12);
const _: () = assert!(offset_of!(EvtchnBindInterdomain, remote_dom) == 0);
const _: () = assert!(offset_of!(EvtchnBindInterdomain, remote_port) == 4);
const _: () = assert!(offset_of!(EvtchnBindInterdomain, local_port) == 8);

/// struct evtchn_bind_virq (12 bytes).
#[repr(C)]
#[derive(Default)]
pub struct EvtchnBindVirq {
    /// IN: VIRQ number.
    pub virq: u32,
    /// IN: vcpu to notify.
    pub vcpu: u32,
    /// OUT: the new port.
    pub port: Port,
}
const _: () = assert!(size_of::<EvtchnBindVirq>() == 12);
const _: () = assert!(offset_of!(EvtchnBindVirq, virq) == 0);
const _: () = assert!(offset_of!(EvtchnBindVirq, vcpu) == 4);
const _: () = assert!(offset_of!(EvtchnBindVirq, port) == 8);

/// struct evtchn_bind_pirq (12 bytes).
#[repr(C)]
#[derive(Default)]
pub struct EvtchnBindPirq {
    /// IN: the PIRQ.
    pub pirq: u32,
    /// IN: bit 0 BIND_PIRQ__WILL_SHARE.
    pub flags: u32,
    /// OUT: the new port.
    pub port: Port,
}
const _: () = assert!(size_of::<EvtchnBindPirq>() == 12);
const _: () = assert!(offset_of!(EvtchnBindPirq, flags) == 4);
const _: () = assert!(offset_of!(EvtchnBindPirq, port) == 8);

/// struct evtchn_bind_ipi (8 bytes).
#[repr(C)]
#[derive(Default)]
pub struct EvtchnBindIpi {
    /// IN: vcpu to notify.
    pub vcpu: u32,
    /// OUT: the new port.
    pub port: Port,
}
const _: () = assert!(size_of::<EvtchnBindIpi>() == 8);
const _: () = assert!(offset_of!(EvtchnBindIpi, vcpu) == 0);
const _: () = assert!(offset_of!(EvtchnBindIpi, port) == 4);

/// struct evtchn_close / evtchn_send / evtchn_unmask (4 bytes).
#[repr(C)]
#[derive(Default)]
pub struct EvtchnPort {
    /// IN: the port.
    pub port: Port,
}
const _: () = assert!(size_of::<EvtchnPort>() == 4);
const _: () = assert!(offset_of!(EvtchnPort, port) == 0);

/// struct evtchn_status (24 bytes).
#[repr(C)]
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvtchnStatus {
    /// IN: domain to query.
    pub dom: DomId,
    /// Explicit padding.
    pub _pad: [u8; 2],
    /// IN: port to query.
    pub port: Port,
    /// OUT: EVTCHNSTAT_*.
    pub status: u32,
    /// OUT: vcpu notified.
    pub vcpu: u32,
    /// OUT: the union, as raw words: unbound `dom` (u16 at +16),
    /// interdomain `dom` (u16 at +16) and `port` (u32 at +20), pirq/virq
    /// (u32 at +16). See the accessors.
    pub u: [u32; 2],
}
const _: () = assert!(size_of::<EvtchnStatus>() == 24);
const _: () = assert!(offset_of!(EvtchnStatus, dom) == 0);
const _: () = assert!(offset_of!(EvtchnStatus, port) == 4);
const _: () = assert!(offset_of!(EvtchnStatus, status) == 8);
const _: () = assert!(offset_of!(EvtchnStatus, vcpu) == 12);
const _: () = assert!(offset_of!(EvtchnStatus, u) == 16);

impl EvtchnStatus {
    /// `u.unbound.dom` / `u.interdomain.dom`.
    pub fn remote_dom(&self) -> DomId {
        (self.u[0] & 0xffff) as DomId
    }
    /// `u.interdomain.port`.
    pub fn remote_port(&self) -> Port {
        self.u[1]
    }
    /// `u.virq`.
    pub fn virq(&self) -> u32 {
        self.u[0]
    }
    /// `u.pirq`.
    pub fn pirq(&self) -> u32 {
        self.u[0]
    }
}

/// struct evtchn_bind_vcpu (8 bytes).
#[repr(C)]
#[derive(Default)]
pub struct EvtchnBindVcpu {
    /// IN: the port.
    pub port: Port,
    /// IN: the vcpu to notify from now on.
    pub vcpu: u32,
}
const _: () = assert!(size_of::<EvtchnBindVcpu>() == 8);
const _: () = assert!(offset_of!(EvtchnBindVcpu, port) == 0);
const _: () = assert!(offset_of!(EvtchnBindVcpu, vcpu) == 4);

/// struct evtchn_reset (2 bytes), also used by reset_cont.
#[repr(C)]
#[derive(Default)]
pub struct EvtchnReset {
    /// IN: the domain to reset.
    pub dom: DomId,
}
const _: () = assert!(size_of::<EvtchnReset>() == 2);

/// struct evtchn_init_control (24 bytes).
#[repr(C)]
#[derive(Default)]
pub struct EvtchnInitControl {
    /// IN: frame holding the control block.
    pub control_gfn: u64,
    /// IN: byte offset of the block in that frame.
    pub offset: u32,
    /// IN: the vcpu.
    pub vcpu: u32,
    /// OUT: link bits (17).
    pub link_bits: u8,
    /// Explicit padding.
    pub _pad: [u8; 7],
}
const _: () = assert!(size_of::<EvtchnInitControl>() == 24);
const _: () = assert!(offset_of!(EvtchnInitControl, control_gfn) == 0);
const _: () = assert!(offset_of!(EvtchnInitControl, offset) == 8);
const _: () = assert!(offset_of!(EvtchnInitControl, vcpu) == 12);
const _: () = assert!(offset_of!(EvtchnInitControl, link_bits) == 16);

/// struct evtchn_expand_array (8 bytes).
#[repr(C)]
#[derive(Default)]
pub struct EvtchnExpandArray {
    /// IN: frame of the new event-array page.
    pub array_gfn: u64,
}
const _: () = assert!(size_of::<EvtchnExpandArray>() == 8);

/// struct evtchn_set_priority (8 bytes).
#[repr(C)]
#[derive(Default)]
pub struct EvtchnSetPriority {
    /// IN: the port.
    pub port: Port,
    /// IN: FIFO priority, 0 highest .. 15 lowest.
    pub priority: u32,
}
const _: () = assert!(size_of::<EvtchnSetPriority>() == 8);
const _: () = assert!(offset_of!(EvtchnSetPriority, priority) == 4);

/// Issues EVTCHNOP `command` with `arg` and returns the raw result.
///
/// `T` must be the op's argument struct (or any plain struct for tests of
/// unknown commands): the hypervisor reads it and, on success, may write
/// back at most the size the spec gives for `command`.
pub fn op<T>(command: u32, arg: &mut T) -> i64 {
    // SAFETY: `arg` is a live, exclusive reference to a repr(C) struct of
    // integers; every op copies in and out at most its struct's size, and the
    // structs above have exactly the spec's sizes. Any byte pattern the
    // hypervisor writes is a valid value of these integer fields.
    unsafe {
        hypercall2(
            nr::EVENT_CHANNEL_OP,
            u64::from(command),
            (arg as *mut T) as u64,
        )
    }
}

/// Issues EVTCHNOP `command` with a raw argument address, for tests of the
/// hypervisor's guest-pointer checks.
///
/// # Safety
///
/// The hypervisor may write the op's result at `address` if the op
/// succeeds: `address` must be unmapped, read-only, outside the guest's
/// range, or memory the caller is prepared to have written.
pub unsafe fn op_raw(command: u32, address: u64) -> i64 {
    // SAFETY: the caller guarantees what a write at `address` may hit.
    unsafe { hypercall2(nr::EVENT_CHANNEL_OP, u64::from(command), address) }
}

/// Records a new local port's notify vcpu for the upcall path; returns the
/// port.
fn bound(port: Port, vcpu: u32) -> Port {
    upcall::set_port_owner(port, vcpu);
    port
}

/// EVTCHNOP_alloc_unbound: a port in `dom` that `remote_dom` may bind to.
pub fn alloc_unbound(dom: DomId, remote_dom: DomId) -> Result<Port, Errno> {
    let mut arg = EvtchnAllocUnbound {
        dom,
        remote_dom,
        port: 0,
    };
    let port = Errno::unit(op(cmd::ALLOC_UNBOUND, &mut arg)).map(|()| arg.port)?;
    if dom == DOMID_SELF {
        upcall::set_port_owner(port, 0);
    }
    Ok(port)
}

/// EVTCHNOP_bind_interdomain: connect a new local port to `remote_port`.
pub fn bind_interdomain(remote_dom: DomId, remote_port: Port) -> Result<Port, Errno> {
    let mut arg = EvtchnBindInterdomain {
        remote_dom,
        _pad: [0; 2],
        remote_port,
        local_port: 0,
    };
    Errno::unit(op(cmd::BIND_INTERDOMAIN, &mut arg)).map(|()| bound(arg.local_port, 0))
}

/// EVTCHNOP_bind_virq.
pub fn bind_virq(virq: u32, vcpu: u32) -> Result<Port, Errno> {
    let mut arg = EvtchnBindVirq {
        virq,
        vcpu,
        port: 0,
    };
    Errno::unit(op(cmd::BIND_VIRQ, &mut arg)).map(|()| bound(arg.port, vcpu))
}

/// EVTCHNOP_bind_pirq (notify vcpu 0).
pub fn bind_pirq(pirq: u32, flags: u32) -> Result<Port, Errno> {
    let mut arg = EvtchnBindPirq {
        pirq,
        flags,
        port: 0,
    };
    Errno::unit(op(cmd::BIND_PIRQ, &mut arg)).map(|()| bound(arg.port, 0))
}

/// EVTCHNOP_bind_ipi.
pub fn bind_ipi(vcpu: u32) -> Result<Port, Errno> {
    let mut arg = EvtchnBindIpi { vcpu, port: 0 };
    Errno::unit(op(cmd::BIND_IPI, &mut arg)).map(|()| bound(arg.port, vcpu))
}

/// EVTCHNOP_close.
pub fn close(port: Port) -> Result<(), Errno> {
    Errno::unit(op(cmd::CLOSE, &mut EvtchnPort { port }))?;
    upcall::set_port_owner(port, 0);
    Ok(())
}

/// EVTCHNOP_send.
pub fn send(port: Port) -> Result<(), Errno> {
    Errno::unit(op(cmd::SEND, &mut EvtchnPort { port }))
}

/// EVTCHNOP_unmask.
pub fn unmask(port: Port) -> Result<(), Errno> {
    Errno::unit(op(cmd::UNMASK, &mut EvtchnPort { port }))
}

/// EVTCHNOP_status of `port` in `dom`.
pub fn status(dom: DomId, port: Port) -> Result<EvtchnStatus, Errno> {
    let mut arg = EvtchnStatus {
        dom,
        port,
        ..EvtchnStatus::default()
    };
    Errno::unit(op(cmd::STATUS, &mut arg)).map(|()| arg)
}

/// EVTCHNOP_bind_vcpu.
pub fn bind_vcpu(port: Port, vcpu: u32) -> Result<(), Errno> {
    Errno::unit(op(cmd::BIND_VCPU, &mut EvtchnBindVcpu { port, vcpu }))?;
    upcall::set_port_owner(port, vcpu);
    Ok(())
}

/// EVTCHNOP_reset of `dom`.
pub fn reset(dom: DomId) -> Result<(), Errno> {
    Errno::unit(op(cmd::RESET, &mut EvtchnReset { dom }))?;
    if dom == DOMID_SELF {
        upcall::clear_port_owners();
    }
    Ok(())
}

/// EVTCHNOP_reset_cont of `dom` (normally only issued by a continuation).
pub fn reset_cont(dom: DomId) -> Result<(), Errno> {
    Errno::unit(op(cmd::RESET_CONT, &mut EvtchnReset { dom }))
}

/// EVTCHNOP_init_control; returns `link_bits` on success.
pub fn init_control(control_gfn: u64, offset: u32, vcpu: u32) -> Result<u8, Errno> {
    let mut arg = EvtchnInitControl {
        control_gfn,
        offset,
        vcpu,
        ..EvtchnInitControl::default()
    };
    Errno::unit(op(cmd::INIT_CONTROL, &mut arg)).map(|()| arg.link_bits)
}

/// EVTCHNOP_expand_array.
pub fn expand_array(array_gfn: u64) -> Result<(), Errno> {
    Errno::unit(op(cmd::EXPAND_ARRAY, &mut EvtchnExpandArray { array_gfn }))
}

/// EVTCHNOP_set_priority.
pub fn set_priority(port: Port, priority: u32) -> Result<(), Errno> {
    Errno::unit(op(
        cmd::SET_PRIORITY,
        &mut EvtchnSetPriority { port, priority },
    ))
}
