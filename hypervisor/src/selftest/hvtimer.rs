//! `selftest=hvtimer`: the hypervisor's one-shot timers ([`crate::hvtimer`])
//! on the bootstrap CPU's LAPIC tick (1 kHz for the test): a timer fires
//! once, never before its deadline; a stopped timer never fires; a timer
//! re-armed to an earlier deadline fires once, for the new deadline, and
//! not again for the old one. Lateness is printed, not judged (TCG).

use core::sync::atomic::{AtomicU64, Ordering};

use arch::qemu::ExitCode;
use arch::{cpu, idt, lapic, tsc, vectors};

use crate::hvtimer::Timer;

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
    let armed = cpu::without_interrupts(|| {
        PLAIN.set(deadlines[0]).is_ok()
            && STOPPED.set(deadlines[1]).is_ok()
            && REARMED.set(now + 50_000_000).is_ok()
            && REARMED.set(deadlines[2]).is_ok()
    });
    STOPPED.stop();
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
        ExitCode::Pass
    } else {
        ExitCode::Fail
    }
}
