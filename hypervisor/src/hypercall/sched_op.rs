//! sched_op (hypercall 29, spec §7.10): yield, block, shutdown, poll,
//! remote_shutdown, shutdown_code.

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use evtchn_core::{DomId, Errno, PollOutcome, Port};

use super::{Call, GuestIn};
use crate::domain::{self, ShutdownReason};
use crate::sched::{self, WakeReason};

const SCHEDOP_YIELD: u64 = 0;
const SCHEDOP_BLOCK: u64 = 1;
const SCHEDOP_SHUTDOWN: u64 = 2;
const SCHEDOP_POLL: u64 = 3;
const SCHEDOP_REMOTE_SHUTDOWN: u64 = 4;
const SCHEDOP_SHUTDOWN_CODE: u64 = 5;
/// Most ports one poll may name.
const POLL_MAX_PORTS: u64 = 128;

fn read_u32(address: GuestIn) -> Result<u32, Errno> {
    let mut bytes = [0u8; 4];
    address.read(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

/// `sched_op(cmd, arg)`.
pub fn sched_op(call: &mut Call<'_>) -> Result<u64, Errno> {
    let argument = call.guest_in(1);
    match call.argument(0) {
        SCHEDOP_YIELD => {
            sched::yield_now(call.domain, call.vcpu);
            Ok(0)
        }
        SCHEDOP_BLOCK => block(call),
        SCHEDOP_SHUTDOWN => {
            let reason = ShutdownReason::from_code(read_u32(argument)?).ok_or(Errno::EINVAL)?;
            domain::shut_down(call.domain, reason);
            Ok(0)
        }
        SCHEDOP_POLL => poll(call, argument),
        SCHEDOP_REMOTE_SHUTDOWN => {
            let mut bytes = [0u8; 8];
            argument.read(&mut bytes)?;
            let target = DomId(u16::from_le_bytes([bytes[0], bytes[1]]));
            let code = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            let target = domain::get(target).ok_or(Errno::ESRCH)?;
            if !call.domain.is_privileged() && target.id != call.domain.id {
                return Err(Errno::EPERM);
            }
            let reason = ShutdownReason::from_code(code).ok_or(Errno::EINVAL)?;
            domain::shut_down(&target, reason);
            Ok(0)
        }
        SCHEDOP_SHUTDOWN_CODE => {
            ShutdownReason::from_code(read_u32(argument)?).ok_or(Errno::EINVAL)?;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// SCHEDOP_block: clear the upcall mask, wait unless an upcall is pending;
/// the upcall is delivered as the call returns.
fn block(call: &mut Call<'_>) -> Result<u64, Errno> {
    let (domain, vcpu) = (call.domain, call.vcpu);
    let Some(info) = domain.vcpu_info(vcpu.id) else {
        return Ok(0);
    };
    info.evtchn_upcall_mask.store(0, Ordering::SeqCst);
    // Looked up at each check: the vcpu_info may move meanwhile
    // (VCPUOP_register_vcpu_info while the vcpu is down).
    let reason = sched::block_until(domain, vcpu, &|| {
        domain
            .vcpu_info(vcpu.id)
            .is_some_and(|info| info.evtchn_upcall_pending.load(Ordering::SeqCst) != 0)
    });
    if reason == WakeReason::Ready {
        crate::timers::on_switch_in(domain, vcpu);
    }
    Ok(0)
}

/// SCHEDOP_poll(struct sched_poll { ports, nr_ports, timeout }).
fn poll(call: &mut Call<'_>, argument: GuestIn) -> Result<u64, Errno> {
    let mut bytes = [0u8; 24];
    argument.read(&mut bytes)?;
    let word = |index: usize| {
        let mut value = [0u8; 8];
        value.copy_from_slice(bytes.get(index * 8..index * 8 + 8).unwrap_or(&[0; 8]));
        u64::from_le_bytes(value)
    };
    // A timeout with the top bit set is negative system time: it has passed
    // (0 stays "no timeout").
    let (ports_address, nr_ports, timeout_ns) = (
        word(0),
        word(1) & 0xffff_ffff,
        crate::timers::from_guest_deadline(word(2)),
    );
    if nr_ports > POLL_MAX_PORTS {
        return Err(Errno::EINVAL);
    }
    let mut raw = [0u8; POLL_MAX_PORTS as usize * 4];
    let raw = raw.get_mut(..nr_ports as usize * 4).ok_or(Errno::EINVAL)?;
    GuestIn(ports_address).read(raw)?;
    let ports: Vec<Port> = raw
        .chunks_exact(4)
        .map(|chunk| Port(u32::from_le_bytes(chunk.try_into().unwrap_or([0; 4]))))
        .collect();
    let (domain, vcpu) = (call.domain, call.vcpu);
    let events = crate::events::domains();
    let outcome = events.poll(domain.id, vcpu.id, &ports);
    if outcome != Ok(PollOutcome::Block) {
        return outcome.map(|_| 0);
    }
    crate::timers::set_poll_deadline(vcpu, timeout_ns);
    // Printed once the vcpu shows as polling (a dump from now on lists it),
    // so that a test can wait for this line rather than guess.
    log::trace!(
        "d{}v{} blocks in SCHEDOP_poll on port(s) {:?}",
        domain.id.0,
        vcpu.id.0,
        ports.iter().map(|port| port.0).collect::<Vec<_>>()
    );
    let reason = sched::block_until(domain, vcpu, &|| {
        !events.is_polling(domain.id, vcpu.id)
            || match domain.events.get() {
                Some(handle) => handle.has_deliverable_event(vcpu.id),
                None => events.vcpu_has_deliverable_event(domain.id, vcpu.id),
            }
            || (timeout_ns != 0 && crate::time::now_ns() >= timeout_ns)
    });
    vcpu.poll_deadline_ns.store(0, Ordering::Relaxed);
    events.poll_finish(domain.id, vcpu.id);
    if reason == WakeReason::Ready {
        crate::timers::on_switch_in(domain, vcpu);
    }
    Ok(0)
}
