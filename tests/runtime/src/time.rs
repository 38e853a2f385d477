//! System time from vcpu 0's `vcpu_time_info` (spec §3.1; wherever its
//! vcpu_info currently lives): nanoseconds since
//! the hypervisor booted, the clock `SCHEDOP_poll` and `set_timer_op`
//! deadlines use.

use core::sync::atomic::Ordering;

use crate::shared_info;

/// Reads the TSC.
pub fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` reads a counter; PV guests may execute it (CR4.TSD is
    // clear under Xen and Sluice).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Current system time in ns, or `None` before shared_info is mapped or
/// while the hypervisor has not published a time record (multiplier 0), so
/// that callers waiting on time fail instead of spinning forever.
///
/// `system_time + ((tsc - tsc_timestamp) << shift) * mul >> 32`, read under
/// the record's version seqlock.
pub fn now_ns() -> Option<u64> {
    vcpu_now_ns(0)
}

/// [`now_ns`] from `vcpu`'s own time record, which the hypervisor
/// publishes for each vcpu (and again on the pCPU a vcpu moves to): every
/// record tells the same system time, up to rounding.
pub fn vcpu_now_ns(vcpu: u32) -> Option<u64> {
    let time = &shared_info::vcpu_info(vcpu)?.time;
    loop {
        let version = time.version.load(Ordering::Acquire);
        if version & 1 != 0 {
            core::hint::spin_loop();
            continue;
        }
        let tsc_timestamp = time.tsc_timestamp.load(Ordering::Acquire);
        let system_time = time.system_time.load(Ordering::Acquire);
        let mul = time.tsc_to_system_mul.load(Ordering::Acquire);
        if mul == 0 {
            return None;
        }
        let shift = time.tsc_shift.load(Ordering::Acquire) as i8;
        let tsc = rdtsc();
        // Acquire above pairs with the hypervisor's version bump after its
        // writes; a changed version means we read a torn record.
        if time.version.load(Ordering::Acquire) != version {
            continue;
        }
        let mut delta = tsc.wrapping_sub(tsc_timestamp);
        if shift < 0 {
            delta >>= u32::from(shift.unsigned_abs());
        } else {
            delta <<= u32::from(shift.unsigned_abs());
        }
        let scaled = ((u128::from(delta) * u128::from(mul)) >> 32) as u64;
        return Some(system_time.wrapping_add(scaled));
    }
}
