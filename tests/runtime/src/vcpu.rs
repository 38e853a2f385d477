//! `vcpu_op` (hypercall 24; spec §7.11): the subset the runtime uses.

use core::mem::{offset_of, size_of};

use crate::errno::Errno;
use crate::hypercall::{hypercall3, nr};

/// VCPUOP_up.
pub const VCPUOP_UP: u64 = 1;
/// VCPUOP_down.
pub const VCPUOP_DOWN: u64 = 2;
/// VCPUOP_is_up: returns 1 or 0.
pub const VCPUOP_IS_UP: u64 = 3;
/// VCPUOP_set_periodic_timer.
pub const VCPUOP_SET_PERIODIC_TIMER: u64 = 6;
/// VCPUOP_stop_periodic_timer.
pub const VCPUOP_STOP_PERIODIC_TIMER: u64 = 7;
/// VCPUOP_set_singleshot_timer.
pub const VCPUOP_SET_SINGLESHOT_TIMER: u64 = 8;
/// VCPUOP_stop_singleshot_timer.
pub const VCPUOP_STOP_SINGLESHOT_TIMER: u64 = 9;

/// struct vcpu_set_periodic_timer (8 bytes).
#[repr(C)]
pub struct VcpuSetPeriodicTimer {
    /// The period in ns.
    pub period_ns: u64,
}
const _: () = assert!(size_of::<VcpuSetPeriodicTimer>() == 8);

/// struct vcpu_set_singleshot_timer (16 bytes).
#[repr(C)]
pub struct VcpuSetSingleshotTimer {
    /// Absolute system time in ns.
    pub timeout_abs_ns: u64,
    /// Bit 0 VCPU_SSHOTTMR_future.
    pub flags: u32,
    /// Explicit padding.
    pub _pad: [u8; 4],
}

const _: () = assert!(size_of::<VcpuSetSingleshotTimer>() == 16);
const _: () = assert!(offset_of!(VcpuSetSingleshotTimer, flags) == 8);

/// Whether `vcpu` is up: `Ok(true/false)`, or `Err(ENOENT)` if the domain has
/// no such vcpu.
pub fn is_up(vcpu: u32) -> Result<bool, Errno> {
    // SAFETY: VCPUOP_is_up takes no memory argument.
    let rc = unsafe { hypercall3(nr::VCPU_OP, VCPUOP_IS_UP, u64::from(vcpu), 0) };
    Errno::result(rc).map(|up| up != 0)
}

/// Whether the domain has a vcpu `vcpu` (up or down).
pub fn exists(vcpu: u32) -> bool {
    is_up(vcpu).is_ok()
}

/// Stops `vcpu`'s periodic VIRQ_TIMER.
pub fn stop_periodic_timer(vcpu: u32) -> Result<(), Errno> {
    // SAFETY: no memory argument.
    Errno::unit(unsafe { hypercall3(nr::VCPU_OP, VCPUOP_STOP_PERIODIC_TIMER, u64::from(vcpu), 0) })
}

/// Arms the calling vcpu's singleshot timer at absolute time `deadline_ns`.
pub fn set_singleshot_timer(vcpu: u32, deadline_ns: u64) -> Result<(), Errno> {
    let mut arg = VcpuSetSingleshotTimer {
        timeout_abs_ns: deadline_ns,
        flags: 0,
        _pad: [0; 4],
    };
    // SAFETY: the hypervisor reads 16 bytes from a live local.
    Errno::unit(unsafe {
        hypercall3(
            nr::VCPU_OP,
            VCPUOP_SET_SINGLESHOT_TIMER,
            u64::from(vcpu),
            (&raw mut arg) as u64,
        )
    })
}

/// VCPUOP_up: starts an initialised vcpu.
pub fn up(vcpu: u32) -> Result<(), Errno> {
    // SAFETY: no memory argument.
    Errno::unit(unsafe { hypercall3(nr::VCPU_OP, VCPUOP_UP, u64::from(vcpu), 0) })
}

/// Sets `vcpu`'s periodic VIRQ_TIMER period.
pub fn set_periodic_timer(vcpu: u32, period_ns: u64) -> Result<(), Errno> {
    let mut arg = VcpuSetPeriodicTimer { period_ns };
    // SAFETY: the hypervisor reads 8 bytes from a live local.
    Errno::unit(unsafe {
        hypercall3(
            nr::VCPU_OP,
            VCPUOP_SET_PERIODIC_TIMER,
            u64::from(vcpu),
            (&raw mut arg) as u64,
        )
    })
}

/// Stops `vcpu`'s singleshot timer (the calling vcpu only).
pub fn stop_singleshot_timer(vcpu: u32) -> Result<(), Errno> {
    // SAFETY: no memory argument.
    Errno::unit(unsafe {
        hypercall3(
            nr::VCPU_OP,
            VCPUOP_STOP_SINGLESHOT_TIMER,
            u64::from(vcpu),
            0,
        )
    })
}

/// `set_timer_op(deadline)` (hypercall 15): the calling vcpu's singleshot
/// timer at absolute system time `deadline_ns`; 0 stops it (spec §7.12).
pub fn set_timer_op(deadline_ns: u64) -> Result<(), Errno> {
    // SAFETY: no memory argument.
    Errno::unit(unsafe { crate::hypercall::hypercall2(nr::SET_TIMER_OP, deadline_ns, 0) })
}

/// VCPUOP_down: stops `vcpu` (the last vcpu up powers the domain off).
pub fn down(vcpu: u32) -> Result<(), Errno> {
    // SAFETY: no memory argument.
    Errno::unit(unsafe { hypercall3(nr::VCPU_OP, VCPUOP_DOWN, u64::from(vcpu), 0) })
}
