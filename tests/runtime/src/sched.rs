//! `sched_op` (hypercall 29; spec §7.10): yield, block, poll, shutdown.

use core::mem::{offset_of, size_of};

use crate::errno::Errno;
use crate::hypercall::{hypercall2, nr};

/// SCHEDOP_yield.
pub const SCHEDOP_YIELD: u64 = 0;
/// SCHEDOP_block.
pub const SCHEDOP_BLOCK: u64 = 1;
/// SCHEDOP_shutdown.
pub const SCHEDOP_SHUTDOWN: u64 = 2;
/// SCHEDOP_poll.
pub const SCHEDOP_POLL: u64 = 3;
/// SCHEDOP_remote_shutdown.
pub const SCHEDOP_REMOTE_SHUTDOWN: u64 = 4;

/// Why a domain shuts down (SHUTDOWN_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ShutdownReason {
    /// SHUTDOWN_poweroff: every test passed.
    Poweroff = 0,
    /// SHUTDOWN_reboot: used on the Xen oracle so that QEMU exits.
    Reboot = 1,
    /// SHUTDOWN_crash: something failed.
    Crash = 3,
}

/// struct sched_shutdown (4 bytes).
#[repr(C)]
pub struct SchedShutdown {
    /// SHUTDOWN_* reason.
    pub reason: u32,
}

const _: () = assert!(size_of::<SchedShutdown>() == 4);
const _: () = assert!(offset_of!(SchedShutdown, reason) == 0);

/// struct sched_poll (24 bytes).
#[repr(C)]
pub struct SchedPoll {
    /// Guest pointer to an array of u32 ports.
    pub ports: u64,
    /// Number of ports in the array (at most 128).
    pub nr_ports: u32,
    /// Explicit padding.
    pub _pad: [u8; 4],
    /// Absolute system time in ns to give up at; 0 = never.
    pub timeout: u64,
}

const _: () = assert!(size_of::<SchedPoll>() == 24);
const _: () = assert!(offset_of!(SchedPoll, ports) == 0);
const _: () = assert!(offset_of!(SchedPoll, nr_ports) == 8);
const _: () = assert!(offset_of!(SchedPoll, timeout) == 16);

/// struct sched_remote_shutdown (8 bytes).
#[repr(C)]
pub struct SchedRemoteShutdown {
    /// The domain to shut down.
    pub domain_id: u16,
    /// Explicit padding.
    pub _pad: [u8; 2],
    /// SHUTDOWN_* reason.
    pub reason: u32,
}
const _: () = assert!(size_of::<SchedRemoteShutdown>() == 8);
const _: () = assert!(offset_of!(SchedRemoteShutdown, reason) == 4);

/// SCHEDOP_remote_shutdown of `domain_id`.
pub fn remote_shutdown(domain_id: u16, reason: ShutdownReason) -> Result<(), Errno> {
    let mut arg = SchedRemoteShutdown {
        domain_id,
        _pad: [0; 2],
        reason: reason as u32,
    };
    // SAFETY: the hypervisor reads 8 bytes from a live local.
    Errno::unit(unsafe { hypercall2(nr::SCHED_OP, SCHEDOP_REMOTE_SHUTDOWN, (&raw mut arg) as u64) })
}

/// Issues `sched_op(command, arg)` with a 32-byte argument; for tests of
/// unknown commands.
pub fn op_raw(command: u64, arg: &mut [u64; 4]) -> i64 {
    // SAFETY: the hypervisor reads or writes at most 32 bytes of a live
    // local array.
    unsafe { hypercall2(nr::SCHED_OP, command, arg.as_mut_ptr() as u64) }
}

/// Shuts the domain down; returns only if the hypervisor refused.
pub fn shutdown(reason: ShutdownReason) -> i64 {
    let mut arg = SchedShutdown {
        reason: reason as u32,
    };
    // SAFETY: the hypervisor reads 4 bytes from a live local.
    unsafe { hypercall2(nr::SCHED_OP, SCHEDOP_SHUTDOWN, (&raw mut arg) as u64) }
}

/// Gives up the CPU.
pub fn yield_now() -> Result<(), Errno> {
    // SAFETY: no memory argument.
    Errno::unit(unsafe { hypercall2(nr::SCHED_OP, SCHEDOP_YIELD, 0) })
}

/// Clears the vcpu's upcall mask and blocks until an event is pending
/// (spec §7.10: the upcall is delivered as the call returns).
pub fn block() -> Result<(), Errno> {
    // SAFETY: no memory argument.
    Errno::unit(unsafe { hypercall2(nr::SCHED_OP, SCHEDOP_BLOCK, 0) })
}

/// Blocks until one of `ports` is pending or system time `timeout_ns`
/// (absolute; 0 = never) passes.
pub fn poll(ports: &[u32], timeout_ns: u64) -> Result<(), Errno> {
    let mut arg = SchedPoll {
        ports: ports.as_ptr() as u64,
        nr_ports: ports.len() as u32,
        _pad: [0; 4],
        timeout: timeout_ns,
    };
    // SAFETY: the hypervisor reads the 24-byte local and `ports.len()` u32s
    // from a live slice.
    Errno::unit(unsafe { hypercall2(nr::SCHED_OP, SCHEDOP_POLL, (&raw mut arg) as u64) })
}
