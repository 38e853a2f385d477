//! The local APIC: x2APIC through MSRs when the CPU has it, else xAPIC
//! through its MMIO page. EOI, IPIs, INIT/SIPI and the timer.
//!
//! The timer runs periodic (a fixed rate: boot, idle pCPUs that never ran
//! a vcpu, the self-tests) or one-shot (a pCPU that runs vcpus programs
//! each expiry itself: `hypervisor::timers`). One-shot rather than
//! TSC-deadline mode: QEMU 7.2 under TCG does not offer TSC-deadline
//! (CPUID.1:ECX bit 24 is clear with `-cpu max`, and `-cpu
//! max,+tsc-deadline` is refused: "TCG doesn't support requested
//! feature"), while the one-shot mode exists on every LAPIC. Its count comes from the
//! calibrated rate ([`count_for_ns`]), rounded up; a calibration that is
//! off can only move an expiry, and its user re-checks the time when the
//! interrupt comes (an early one is re-armed for the rest).

use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crate::cpu;
use crate::vectors;

const MODE_NONE: u8 = 0;
const MODE_XAPIC: u8 = 1;
const MODE_X2APIC: u8 = 2;

/// Which interface every CPU uses (all CPUs use the same).
static MODE: AtomicU8 = AtomicU8::new(MODE_NONE);
/// Virtual address of the xAPIC MMIO page (xAPIC mode only).
static XAPIC_BASE: AtomicU64 = AtomicU64::new(0);
/// Timer ticks per second at divide-by-16, as calibrated.
static TIMER_HZ: AtomicU64 = AtomicU64::new(0);

// Register offsets (xAPIC MMIO; x2APIC MSR = 0x800 + offset / 16).
const REG_ID: u32 = 0x020;
const REG_TPR: u32 = 0x080;
const REG_EOI: u32 = 0x0b0;
const REG_SVR: u32 = 0x0f0;
const REG_ESR: u32 = 0x280;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
const REG_LVT_TIMER: u32 = 0x320;
const REG_LVT_ERROR: u32 = 0x370;
const REG_TIMER_INITIAL: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3e0;

const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const LVT_MASKED: u32 = 1 << 16;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// Timer mode bits 18:17 = 00.
const LVT_TIMER_ONE_SHOT: u32 = 0;
const DIVIDE_BY_16: u32 = 0b0011;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_FIXED: u32 = 0b000 << 8;
const ICR_NMI: u32 = 0b100 << 8;
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;
const ICR_ALL_BUT_SELF: u32 = 0b11 << 18;

/// The interface chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// MMIO at the given physical address.
    XApic,
    /// MSRs.
    X2Apic,
}

/// Physical address of the LAPIC MMIO page, from `IA32_APIC_BASE`.
pub fn mmio_phys() -> u64 {
    // SAFETY: IA32_APIC_BASE exists on every CPU with a LAPIC (all x86_64).
    let base = unsafe { cpu::read_msr(cpu::MSR_APIC_BASE) };
    base & 0x000f_ffff_ffff_f000
}

/// Where the xAPIC register page is mapped.
#[derive(Debug)]
pub struct XApicWindow {
    virt: u64,
}

impl XApicWindow {
    /// The LAPIC page mapped at `virt`.
    ///
    /// # Safety
    /// `virt` must map the local APIC's 4 KiB register page (the physical
    /// address in `IA32_APIC_BASE`), uncached, for the life of the system.
    pub unsafe fn new(virt: u64) -> Self {
        Self { virt }
    }
}

/// How every CPU talks to its LAPIC.
#[derive(Debug)]
pub enum Interface {
    /// x2APIC (MSRs); only if CPUID says the CPU has it.
    X2Apic,
    /// xAPIC through its register page.
    XApic(XApicWindow),
}

/// Chooses the interface for every CPU. Call once on the BSP before
/// `enable`.
pub fn select(interface: Interface) -> Mode {
    match interface {
        Interface::X2Apic => {
            MODE.store(MODE_X2APIC, Ordering::Release);
            Mode::X2Apic
        }
        Interface::XApic(window) => {
            XAPIC_BASE.store(window.virt, Ordering::Relaxed);
            MODE.store(MODE_XAPIC, Ordering::Release);
            Mode::XApic
        }
    }
}

/// Whether `select` ran.
pub fn is_ready() -> bool {
    MODE.load(Ordering::Acquire) != MODE_NONE
}

fn read(register: u32) -> u32 {
    match MODE.load(Ordering::Acquire) {
        MODE_X2APIC => {
            // SAFETY: x2APIC mode is enabled on this CPU (`enable`), so the
            // 0x800.. MSRs exist; reads of these registers have no effects.
            unsafe { cpu::read_msr(0x800 + register / 16) as u32 }
        }
        MODE_XAPIC => {
            let address = XAPIC_BASE.load(Ordering::Relaxed) + u64::from(register);
            // SAFETY: the xAPIC page is mapped uncached at XAPIC_BASE
            // (`XApicWindow::new`'s contract), and `register` is a valid
            // aligned register offset inside it.
            unsafe { core::ptr::read_volatile(address as *const u32) }
        }
        _ => 0,
    }
}

fn write(register: u32, value: u32) {
    match MODE.load(Ordering::Acquire) {
        MODE_X2APIC => {
            // SAFETY: as in `read`; the registers written here are the
            // documented LAPIC registers with values this module builds.
            unsafe { cpu::write_msr(0x800 + register / 16, u64::from(value)) }
        }
        MODE_XAPIC => {
            let address = XAPIC_BASE.load(Ordering::Relaxed) + u64::from(register);
            // SAFETY: as in `read`.
            unsafe { core::ptr::write_volatile(address as *mut u32, value) }
        }
        _ => {}
    }
}

/// Enables this CPU's LAPIC in the selected mode: software-enabled with the
/// spurious vector, all priorities accepted, timer masked, errors to
/// `APIC_ERROR`.
pub fn enable() {
    // SAFETY: IA32_APIC_BASE exists; reading it has no effects.
    let base = unsafe { cpu::read_msr(cpu::MSR_APIC_BASE) };
    let mut wanted = base | APIC_BASE_ENABLE;
    if MODE.load(Ordering::Acquire) == MODE_X2APIC {
        wanted |= APIC_BASE_X2APIC;
    }
    if wanted != base {
        // SAFETY: setting EN (and EXTD in x2APIC mode, after EN) is the
        // architected way to enable the LAPIC; the base address is kept.
        unsafe { cpu::write_msr(cpu::MSR_APIC_BASE, base | APIC_BASE_ENABLE) };
        // SAFETY: as above; xAPIC -> x2APIC with EN already set is legal.
        unsafe { cpu::write_msr(cpu::MSR_APIC_BASE, wanted) };
    }
    write(REG_TPR, 0);
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(vectors::TIMER));
    write(REG_LVT_ERROR, u32::from(vectors::APIC_ERROR));
    write(REG_ESR, 0);
    write(REG_SVR, 0x100 | u32::from(vectors::SPURIOUS));
    write(REG_EOI, 0);
}

/// This CPU's APIC id.
pub fn id() -> u32 {
    match MODE.load(Ordering::Acquire) {
        MODE_X2APIC => read(REG_ID),
        _ => read(REG_ID) >> 24,
    }
}

/// Signals end of interrupt.
pub fn eoi() {
    write(REG_EOI, 0);
}

fn send_icr(destination: u32, low: u32) {
    cpu::without_interrupts(|| match MODE.load(Ordering::Acquire) {
        MODE_X2APIC => {
            // SAFETY: x2APIC is enabled; ICR (MSR 0x830) takes the
            // destination in bits 63:32 and the command in 31:0.
            unsafe { cpu::write_msr(0x830, (u64::from(destination) << 32) | u64::from(low)) }
        }
        MODE_XAPIC => {
            write(REG_ICR_HIGH, destination << 24);
            write(REG_ICR_LOW, low);
            let mut spins = 0u32;
            while read(REG_ICR_LOW) & ICR_DELIVERY_PENDING != 0 && spins < 1_000_000 {
                spins += 1;
                core::hint::spin_loop();
            }
        }
        _ => {}
    });
}

/// Sends fixed-vector IPI `vector` to the CPU with APIC id `apic_id`.
pub fn send_ipi(apic_id: u32, vector: u8) {
    send_icr(apic_id, ICR_LEVEL_ASSERT | ICR_FIXED | u32::from(vector));
}

/// Sends an NMI to every CPU but this one.
pub fn send_nmi_to_others() {
    send_icr(0, ICR_LEVEL_ASSERT | ICR_NMI | ICR_ALL_BUT_SELF);
}

/// Sends INIT to `apic_id`.
pub fn send_init(apic_id: u32) {
    send_icr(apic_id, ICR_LEVEL_ASSERT | ICR_INIT);
}

/// Sends a start-up IPI to `apic_id`: it starts in real mode at
/// `page * 4096`.
pub fn send_startup(apic_id: u32, page: u8) {
    send_icr(apic_id, ICR_LEVEL_ASSERT | ICR_STARTUP | u32::from(page));
}

/// Measures the timer rate (divide by 16) against the TSC over windows of
/// `micros` and remembers it; returns ticks per second.
///
/// Each window brackets the timer's start and its final read between two
/// TSC reads and uses the bracket midpoints; of three windows the one with
/// the tightest brackets wins (a descheduled vCPU widens a bracket).
pub fn calibrate_timer(micros: u64) -> u64 {
    let tsc_hz = crate::tsc::hz();
    let mut best: Option<(u64, u64)> = None;
    for _ in 0..3 {
        write(REG_TIMER_DIVIDE, DIVIDE_BY_16);
        write(REG_LVT_TIMER, LVT_MASKED | u32::from(vectors::TIMER));
        let before_start = cpu::rdtsc();
        write(REG_TIMER_INITIAL, u32::MAX);
        let after_start = cpu::rdtsc();
        crate::tsc::delay_micros(micros);
        let before_read = cpu::rdtsc();
        let remaining = read(REG_TIMER_CURRENT);
        let after_read = cpu::rdtsc();
        write(REG_TIMER_INITIAL, 0);
        let counted = u64::from(u32::MAX - remaining);
        let elapsed = (before_read + after_read) / 2 - (before_start + after_start) / 2;
        let slack = (after_start - before_start) + (after_read - before_read);
        if elapsed == 0 || tsc_hz == 0 {
            continue;
        }
        let hz = (u128::from(counted) * u128::from(tsc_hz) / u128::from(elapsed)) as u64;
        if best.is_none_or(|(best_slack, _)| slack < best_slack) {
            best = Some((slack, hz));
        }
    }
    let hz = best.map_or(0, |(_, hz)| hz);
    TIMER_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// Calibrated timer rate (ticks per second at divide by 16).
pub fn timer_hz() -> u64 {
    TIMER_HZ.load(Ordering::Relaxed)
}

/// Starts this CPU's timer firing `TIMER` periodically, `hz` times a second.
/// Returns the initial count used (0 if uncalibrated).
pub fn start_periodic_timer(hz: u32) -> u32 {
    let count = (timer_hz() / u64::from(hz.max(1))).clamp(1, u64::from(u32::MAX)) as u32;
    if timer_hz() == 0 {
        return 0;
    }
    write(REG_TIMER_DIVIDE, DIVIDE_BY_16);
    write(
        REG_LVT_TIMER,
        LVT_TIMER_PERIODIC | u32::from(vectors::TIMER),
    );
    write(REG_TIMER_INITIAL, count);
    count
}

/// Timer clocks (at the calibrated `hz`, divide by 16) for `delta_ns`
/// nanoseconds, rounded up so that an expiry is never before the time
/// asked for (at this rate), and clamped to what the initial-count
/// register holds: at least 1 (0 would stop the timer; a delta of 0 asks
/// for the earliest expiry) and at most `u32::MAX` (an expiry further
/// out comes early, and its user re-arms then for the rest).
pub fn count_for_ns(delta_ns: u64, hz: u64) -> u32 {
    // u128: ns (up to 2^64) times a rate (up to 2^64) cannot overflow.
    let clocks = (u128::from(delta_ns) * u128::from(hz)).div_ceil(1_000_000_000);
    clocks.clamp(1, u128::from(u32::MAX)) as u32
}

/// Puts this CPU's timer in one-shot mode, not counting: it fires once per
/// [`arm_one_shot`]. Returns false (and leaves the timer as it was) if the
/// timer is not calibrated.
pub fn start_one_shot_timer() -> bool {
    if timer_hz() == 0 {
        return false;
    }
    write(REG_TIMER_DIVIDE, DIVIDE_BY_16);
    write(
        REG_LVT_TIMER,
        LVT_TIMER_ONE_SHOT | u32::from(vectors::TIMER),
    );
    write(REG_TIMER_INITIAL, 0);
    true
}

/// Arms this CPU's one-shot timer ([`start_one_shot_timer`]) to fire once,
/// `delta_ns` from now (rounded up to a timer clock, at least one clock:
/// [`count_for_ns`]); replaces any expiry armed before. The caller keeps
/// interrupts off if it must know which arming the next interrupt is for.
pub fn arm_one_shot(delta_ns: u64) {
    write(REG_TIMER_INITIAL, count_for_ns(delta_ns, timer_hz()));
}

/// Stops this CPU's timer.
pub fn stop_timer() {
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(vectors::TIMER));
    write(REG_TIMER_INITIAL, 0);
}

#[cfg(test)]
mod tests {
    use super::count_for_ns;

    /// QEMU's LAPIC timer: 1 GHz, divided by 16.
    const QEMU_HZ: u64 = 62_500_000;

    #[test]
    fn count_rounds_up_never_short() {
        // 16 ns per clock: 1 ns already needs a whole clock, 17 needs two.
        assert_eq!(count_for_ns(1, QEMU_HZ), 1);
        assert_eq!(count_for_ns(16, QEMU_HZ), 1);
        assert_eq!(count_for_ns(17, QEMU_HZ), 2);
        assert_eq!(count_for_ns(1_000_000, QEMU_HZ), 62_500);
        for delta in [3u64, 999, 20_000, 123_457, 9_999_999] {
            let count = u64::from(count_for_ns(delta, QEMU_HZ));
            // The expiry (count clocks) is at or after the delta, and less
            // than one clock after it.
            assert!(
                count * 1_000_000_000 >= delta * QEMU_HZ,
                "{delta} ns: {count}"
            );
            assert!(
                (count - 1) * 1_000_000_000 < delta * QEMU_HZ,
                "{delta} ns: {count}"
            );
        }
    }

    #[test]
    fn count_is_never_zero() {
        // 0 in the initial count stops the timer: an expiry due now must
        // still come.
        assert_eq!(count_for_ns(0, QEMU_HZ), 1);
        assert_eq!(count_for_ns(0, 0), 1);
        assert_eq!(count_for_ns(5, 0), 1);
    }

    #[test]
    fn count_clamps_far_deadlines_without_overflow() {
        // 2^32 clocks at 62.5 MHz is about 68.7 s: anything further is the
        // register's maximum (an early expiry, re-armed by its user).
        assert_eq!(count_for_ns(69_000_000_000, QEMU_HZ), u32::MAX);
        assert_eq!(count_for_ns(u64::MAX, QEMU_HZ), u32::MAX);
        assert_eq!(count_for_ns(u64::MAX, u64::MAX), u32::MAX);
        assert_eq!(count_for_ns(68_000_000_000, QEMU_HZ), 4_250_000_000);
    }
}
