//! System time (ns since boot) from the TSC, and the guest-visible time
//! records: vcpu_time_info (spec §3.1) and the wall clock (spec §3.2).
//!
//! System time is `scale(tsc − boot_tsc)` with Xen's scale: shift the delta
//! by `tsc_shift`, multiply by `tsc_to_system_mul` as a 32.32 fraction. The
//! hypervisor's timers and the guests' clocks use the same scale, so an
//! absolute deadline means the same instant on both sides.

use core::sync::atomic::Ordering;

use evtchn_core::abi::{SharedInfo, VcpuInfo};

/// vcpu_time_info flag: the TSC is stable across vcpus.
const XEN_PVCLOCK_TSC_STABLE: u8 = 1;

/// The TSC → ns scale.
#[derive(Clone, Copy, Debug)]
pub struct TscScale {
    /// 32.32 fixed-point multiplier.
    pub multiplier: u32,
    /// Shift applied to a TSC delta first (negative: right).
    pub shift: i8,
}

static SCALE: spin::Once<TscScale> = spin::Once::new();

/// Computes the scale from the calibrated TSC rate.
fn compute(tsc_hz: u64) -> TscScale {
    let tsc_hz = u128::from(tsc_hz.max(1));
    for shift in -31i8..=31 {
        // multiplier = 1e9 / hz / 2^shift, as a 32.32 fraction.
        let numerator = 1_000_000_000u128 << 32;
        let value = if shift >= 0 {
            numerator / (tsc_hz << shift)
        } else {
            (numerator << (-shift)) / tsc_hz
        };
        if (1u128 << 31..1u128 << 32).contains(&value) {
            return TscScale {
                multiplier: value as u32,
                shift,
            };
        }
    }
    TscScale {
        multiplier: u32::MAX,
        shift: 0,
    }
}

/// The scale (computed on first use from `arch::tsc::hz()`).
pub fn scale() -> TscScale {
    *SCALE.call_once(|| compute(arch::tsc::hz()))
}

/// Converts a TSC delta to ns.
pub fn tsc_delta_to_ns(delta: u64) -> u64 {
    let TscScale { multiplier, shift } = scale();
    let shifted = if shift >= 0 {
        delta << shift
    } else {
        delta >> (-shift)
    };
    ((u128::from(shifted) * u128::from(multiplier)) >> 32) as u64
}

/// System time now, ns since boot.
pub fn now_ns() -> u64 {
    tsc_delta_to_ns(arch::cpu::rdtsc().saturating_sub(arch::tsc::boot_tsc()))
}

/// Writes a vcpu's time record with the seqlock protocol (version odd while
/// writing, even after).
pub fn publish_vcpu_time(info: &VcpuInfo) {
    let TscScale { multiplier, shift } = scale();
    let version = info.time_version.load(Ordering::SeqCst);
    info.time_version
        .store(version.wrapping_add(1) | 1, Ordering::SeqCst);
    let tsc = arch::cpu::rdtsc();
    info.time_tsc_timestamp.store(tsc, Ordering::SeqCst);
    info.time_system_time.store(
        tsc_delta_to_ns(tsc.saturating_sub(arch::tsc::boot_tsc())),
        Ordering::SeqCst,
    );
    info.time_tsc_to_system_mul
        .store(multiplier, Ordering::SeqCst);
    info.time_tsc_shift.store(shift as u8, Ordering::SeqCst);
    info.time_flags
        .store(XEN_PVCLOCK_TSC_STABLE, Ordering::SeqCst);
    info.time_version.store(
        (version.wrapping_add(1) | 1).wrapping_add(1),
        Ordering::SeqCst,
    );
}

/// Writes the wall clock: boot time as seconds since the epoch, from the
/// CMOS real-time clock, with the seqlock protocol.
pub fn publish_wallclock(shared: &SharedInfo) {
    let boot_seconds = arch::rtc::read_unix_seconds()
        .unwrap_or(0)
        .saturating_sub(now_ns() / 1_000_000_000);
    let version = shared.wc_version.load(Ordering::SeqCst);
    shared
        .wc_version
        .store(version.wrapping_add(1) | 1, Ordering::SeqCst);
    shared.wc_sec.store(boot_seconds as u32, Ordering::SeqCst);
    shared
        .wc_sec_hi
        .store((boot_seconds >> 32) as u32, Ordering::SeqCst);
    shared.wc_nsec.store(0, Ordering::SeqCst);
    shared.wc_version.store(
        (version.wrapping_add(1) | 1).wrapping_add(1),
        Ordering::SeqCst,
    );
}
