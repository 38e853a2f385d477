//! `selftest=hvtimer`: the hypervisor's one-shot timers ([`crate::hvtimer`])
//! on the bootstrap CPU's LAPIC tick (1 kHz for the test): a timer fires
//! once, never before its deadline; a stopped timer never fires; a timer
//! re-armed to an earlier deadline fires once, for the new deadline, and
//! not again for the old one. Lateness is printed, not judged (TCG).
//! Last, the registry is filled: the timers past [`MAX_TIMERS`] are
//! refused ([`RegistryFull`]) and never fire, a timer registered before
//! still re-arms and fires once more, and a PIRQ bind, whose line's
//! forced-EOI timer has no slot, is refused (-ENOMEM) rather than leaving
//! the line without a forced EOI.

use core::sync::atomic::{AtomicU64, Ordering};

use arch::qemu::ExitCode;
use arch::{cpu, idt, lapic, tsc, vectors};

use evtchn_core::{DomId, Errno, PirqHost, PirqSharing};

use crate::hvtimer::{MAX_TIMERS, RegistryFull, Timer};
use crate::pirq::{self, HostPirqs};

/// The tick rate during the test.
const TEST_HZ: u32 = 1000;
/// How long the test waits for every deadline to pass (TSC time).
const WAIT_MICROS: u64 = 200_000;

/// The three timers' names, by callback argument.
const NAMES: [&str; 3] = ["plain", "stopped", "re-armed"];
/// Per timer: how often it fired, and the system time it last fired at.
static FIRED: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
static FIRED_AT: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

fn on_expiry(which: usize) {
    if let (Some(count), Some(at)) = (FIRED.get(which), FIRED_AT.get(which)) {
        at.store(crate::time::now_ns(), Ordering::Relaxed);
        count.fetch_add(1, Ordering::Relaxed);
    }
}

static PLAIN: Timer = Timer::new(on_expiry, 0);
static STOPPED: Timer = Timer::new(on_expiry, 1);
static REARMED: Timer = Timer::new(on_expiry, 2);

/// Expiries of the timers that fill the registry.
static FILLER_FIRED: AtomicU64 = AtomicU64::new(0);

fn on_filler_expiry(_which: usize) {
    FILLER_FIRED.fetch_add(1, Ordering::Relaxed);
}

/// More timers than the registry has slots left.
static FILLERS: [Timer; MAX_TIMERS] = [const { Timer::new(on_filler_expiry, 0) }; MAX_TIMERS];

/// The test's tick: what `timers::on_tick` does for hypervisor timers.
fn on_tick(_frame: &mut idt::InterruptFrame) {
    crate::hvtimer::run_due(crate::time::now_ns());
}

/// Runs the check on the bootstrap CPU.
pub fn run() -> ExitCode {
    idt::set_handler(vectors::TIMER, on_tick);
    if lapic::start_periodic_timer(TEST_HZ) == 0 {
        log::error!("selftest hvtimer: FAILED: the LAPIC timer is not calibrated");
        return ExitCode::Fail;
    }
    let now = crate::time::now_ns();
    let deadlines = [now + 3_000_000, now + 2_000_000, now + 5_000_000];
    // Interrupts are on when self-tests start: the stop is made before
    // any tick can look, however long this vCPU is descheduled here.
    let armed = cpu::without_interrupts(|| {
        let armed = PLAIN.set(deadlines[0]).is_ok()
            && STOPPED.set(deadlines[1]).is_ok()
            && REARMED.set(now + 50_000_000).is_ok()
            && REARMED.set(deadlines[2]).is_ok();
        STOPPED.stop();
        armed
    });
    cpu::enable_interrupts();
    tsc::delay_micros(WAIT_MICROS);
    cpu::disable_interrupts();
    lapic::start_periodic_timer(crate::cpus::TIMER_HZ);
    if !armed {
        log::error!("selftest hvtimer: FAILED: the timer registry is full");
        return ExitCode::Fail;
    }

    let mut passed = true;
    for (which, name) in NAMES.iter().enumerate() {
        let (Some(count), Some(at), Some(&deadline)) =
            (FIRED.get(which), FIRED_AT.get(which), deadlines.get(which))
        else {
            continue;
        };
        let count = count.load(Ordering::Relaxed);
        let at = at.load(Ordering::Relaxed);
        let expected = u64::from(which != 1);
        let late_us = at.saturating_sub(deadline) / 1000;
        log::info!(
            "selftest hvtimer: {name}: fired {count} time(s), expected {expected}{}",
            if count != 0 {
                alloc::format!("; {late_us} us after its deadline")
            } else {
                alloc::string::String::new()
            }
        );
        if count != expected || (count != 0 && at < deadline) {
            log::error!("selftest hvtimer: FAILED: {name}");
            passed = false;
        }
    }
    if passed {
        log::info!("selftest hvtimer: each timer fired once, none early; the stopped one never");
    }
    if full_registry() && passed {
        ExitCode::Pass
    } else {
        ExitCode::Fail
    }
}

/// Arms [`FILLERS`] (due at once) until the registry is full, then
/// re-arms [`PLAIN`]: the slots the three timers above left are taken,
/// every other filler is refused and never fires, and `PLAIN` (registered
/// already) fires once more. Returns whether all of that held.
fn full_registry() -> bool {
    let plain_before = FIRED
        .first()
        .map_or(0, |count| count.load(Ordering::Relaxed));
    let now = crate::time::now_ns();
    let (mut armed, mut refused) = (0, 0);
    let plain_armed = cpu::without_interrupts(|| {
        for filler in &FILLERS {
            match filler.set(now) {
                Ok(()) => armed += 1,
                Err(RegistryFull) => refused += 1,
            }
        }
        PLAIN.set(now + 1_000_000).is_ok()
    });
    lapic::start_periodic_timer(TEST_HZ);
    cpu::enable_interrupts();
    tsc::delay_micros(WAIT_MICROS / 4);
    cpu::disable_interrupts();
    lapic::start_periodic_timer(crate::cpus::TIMER_HZ);
    let filler_fired = FILLER_FIRED.load(Ordering::Relaxed);
    let plain_fired = FIRED
        .first()
        .map_or(0, |count| count.load(Ordering::Relaxed))
        - plain_before;
    let free = MAX_TIMERS - NAMES.len();
    log::info!(
        "selftest hvtimer: full registry: {armed} of {MAX_TIMERS} fillers armed (expected {free}), {refused} refused, {filler_fired} fired; the plain timer re-armed: {plain_armed}, fired {plain_fired} more time(s)"
    );
    let held = armed == free
        && refused == MAX_TIMERS - free
        && filler_fired == armed as u64
        && plain_armed
        && plain_fired == 1;
    if held {
        log::info!(
            "selftest hvtimer: a full registry refuses new timers and keeps running the registered ones"
        );
    } else {
        log::error!("selftest hvtimer: FAILED: full registry");
    }
    // The RTC line's timer has no slot (no line was bound in this boot).
    let domain = DomId(1);
    let mapped = pirq::map_gsi(domain, 8, 8);
    let bound = HostPirqs.bind(domain, 8, PirqSharing::WillShare);
    HostPirqs.unbind(domain, 8);
    pirq::forget_domain(domain);
    log::info!(
        "selftest hvtimer: with the registry full: map_pirq {mapped:?}, bind_pirq {bound:?}"
    );
    let refused = mapped == Ok(8) && bound == Err(Errno::ENOMEM);
    if refused {
        log::info!(
            "selftest hvtimer: a PIRQ bind is refused when its line's forced-EOI timer has no slot"
        );
    } else {
        log::error!("selftest hvtimer: FAILED: PIRQ bind with the registry full");
    }
    held && refused
}
