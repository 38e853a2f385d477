//! `selftest=pirq-eoi`: the EOI state machine of a guest line
//! ([`crate::pirq`]) on the real RTC line (GSI 8, 64 Hz), without guests.
//! Two domain ids with no domain behind them (their events go nowhere)
//! map and share the line, and the test plays both guests' hypercalls and
//! the forced-EOI timer's expiries itself: its ticks run no hypervisor
//! timer, so nothing forces an EOI unless the test says so. That makes
//! visible what no guest can see at 64 Hz with a 1 ms forced EOI:
//!
//! - the line is held after an interrupt for as long as a binder owes its
//!   EOI (no interrupt for 100 ms, six RTC periods), through one sharer's
//!   PHYSDEVOP_eoi, and released by the last one (the next period
//!   interrupts);
//! - an expiry whose timer an interrupt has armed again since it was
//!   claimed forces nothing (Xen's `timer_is_active` check);
//! - a due expiry forces the EOI of both sharers: the line interrupts
//!   again without any PHYSDEVOP_eoi; the late EOIs that follow answer 0
//!   and count for nothing, so the next interrupt is held again until
//!   both sharers EOI it;
//! - unbinding a sharer that owes an EOI completes it;
//! - once the last binder is gone, an expiry does nothing and the line
//!   stays quiet.

use arch::qemu::ExitCode;
use arch::{cpu, tsc};
use evtchn_core::{DomId, PirqHost, PirqSharing};

use crate::pirq::{self, HostPirqs};

/// The line and the pirq both domains map it to.
const GSI: u32 = 8;
const PIRQ: u32 = 8;
/// The two sharers (no domains with these ids exist during self-tests).
const FIRST: DomId = DomId(1);
const SECOND: DomId = DomId(2);
/// Longest wait for an interrupt of the unmasked line (64 Hz: 15.6 ms).
const ARRIVAL_MICROS: u64 = 2_000_000;
/// How long a held line must stay quiet: six RTC periods.
const HELD_MICROS: u64 = 100_000;
/// The polling step of both waits.
const STEP_MICROS: u64 = 500;

/// Waits until `count` guest-line interrupts have been taken.
fn arrives(count: u64) -> bool {
    let mut waited = 0;
    while pirq::interrupts_taken() < count {
        if waited >= ARRIVAL_MICROS {
            return false;
        }
        tsc::delay_micros(STEP_MICROS);
        waited += STEP_MICROS;
    }
    true
}

/// Whether no interrupt beyond `count` arrives for [`HELD_MICROS`].
fn stays_held(count: u64) -> bool {
    let mut waited = 0;
    while waited < HELD_MICROS {
        if pirq::interrupts_taken() != count {
            return false;
        }
        tsc::delay_micros(STEP_MICROS);
        waited += STEP_MICROS;
    }
    pirq::interrupts_taken() == count
}

/// The interrupts taken, counting each RTC period that got through once.
///
/// QEMU's RTC raises IRQ 8 at every period whether or not register C was
/// read, and its IOAPIC latches every raise of an unmasked edge pin. So a
/// period that ends after the LAPIC has taken an interrupt but before the
/// handler's mask reaches the IOAPIC is latched in the LAPIC's IRR and
/// taken right after the first interrupt's EOI: the mask cannot recall
/// it. Under host load the vcpu thread can be descheduled in that window
/// for longer than a period (15.6 ms). Such an edge arrives together with
/// the interrupt it follows, before the test looks; a line that is not
/// held interrupts again one period later, inside the hold window.
struct Taken {
    /// Interrupts the test has accounted for.
    seen: u64,
    /// Of those, edges latched before a hold took effect.
    latched: u64,
}

impl Taken {
    /// Waits for the next interrupt, then accounts for it and for at most
    /// one edge latched behind it.
    fn next(&mut self) -> bool {
        if !arrives(self.seen + 1) {
            return false;
        }
        self.seen += 1;
        if pirq::interrupts_taken() == self.seen + 1 {
            self.seen += 1;
            self.latched += 1;
            log::info!(
                "selftest pirq-eoi: an RTC edge latched before the line was masked arrived with the interrupt"
            );
        }
        true
    }

    /// Whether the line stays quiet for [`HELD_MICROS`].
    fn held(&self) -> bool {
        stays_held(self.seen)
    }
}

/// The checks so far, and whether all passed.
struct Checks {
    passed: bool,
}

impl Checks {
    fn check(&mut self, what: &str, held: bool) {
        if held {
            log::info!("selftest pirq-eoi: ok - {what}");
        } else {
            log::error!("selftest pirq-eoi: FAILED - {what}");
            self.passed = false;
        }
    }
}

/// Runs the checks on the bootstrap CPU (where the line is routed: the
/// binders have no vcpu 0).
pub fn run() -> ExitCode {
    // The event-channel registry is built here, not first from the
    // line's interrupt handler.
    let _ = crate::events::domains();
    let mut checks = Checks { passed: true };
    checks.check(
        "both domains map GSI 8 to pirq 8",
        pirq::map_gsi(FIRST, GSI as i32, PIRQ as i32) == Ok(PIRQ)
            && pirq::map_gsi(SECOND, GSI as i32, PIRQ as i32) == Ok(PIRQ),
    );
    let base = pirq::interrupts_taken();
    let mut taken = Taken {
        seen: base,
        latched: 0,
    };
    let forced_before = pirq::forced_eois();
    // Interrupts are on when self-tests start: both bind before the first
    // interrupt can be taken, so that it finds both owing its EOI.
    let bound = cpu::without_interrupts(|| {
        HostPirqs.bind(FIRST, PIRQ, PirqSharing::WillShare).is_ok()
            && HostPirqs.bind(SECOND, PIRQ, PirqSharing::WillShare).is_ok()
    });
    checks.check("both bind it with BIND_PIRQ__WILL_SHARE", bound);
    cpu::enable_interrupts();

    checks.check("an interrupt arrives", taken.next());
    checks.check("the line is held while both owe their EOI", taken.held());
    // As an expiry claimed before an interrupt re-armed the timer would.
    cpu::without_interrupts(|| pirq::run_eoi_timer_callback(GSI));
    checks.check(
        "an expiry of a timer armed again since forces nothing",
        pirq::forced_eois() == forced_before && taken.held(),
    );
    checks.check(
        "the first sharer's PHYSDEVOP_eoi is rc 0",
        pirq::eoi(FIRST, PIRQ).is_ok(),
    );
    checks.check(
        "the line stays held while the second owes its EOI",
        taken.held(),
    );
    checks.check(
        "a second PHYSDEVOP_eoi of the first sharer is rc 0 and releases nothing",
        pirq::eoi(FIRST, PIRQ).is_ok() && taken.held(),
    );
    checks.check(
        "the second sharer's PHYSDEVOP_eoi is rc 0",
        pirq::eoi(SECOND, PIRQ).is_ok(),
    );
    checks.check(
        "the last EOI releases the line: the next period interrupts",
        taken.next(),
    );

    // Both owe the EOI of that interrupt, so the line stays held while the
    // forced-EOI deadline passes; a tick then claims the expiry and forces
    // the EOI. The late EOIs follow before the next interrupt can be taken
    // here, so they find nothing owed.
    tsc::delay_micros(2 * pirq::FORCED_EOI_NS / 1000);
    let (late_first, late_second) = cpu::without_interrupts(|| {
        crate::hvtimer::run_due(crate::time::now_ns());
        (pirq::eoi(FIRST, PIRQ), pirq::eoi(SECOND, PIRQ))
    });
    checks.check(
        "a due expiry forces the EOI of both sharers",
        pirq::forced_eois() == forced_before + 1,
    );
    checks.check(
        "both late PHYSDEVOP_eois are rc 0",
        late_first.is_ok() && late_second.is_ok(),
    );
    checks.check(
        "the forced EOI released the line: the next period interrupts",
        taken.next(),
    );
    checks.check(
        "the late EOIs counted for nothing: the new interrupt is held",
        taken.held(),
    );
    checks.check(
        "the second sharer EOIs it; the line stays held for the first",
        pirq::eoi(SECOND, PIRQ).is_ok() && taken.held(),
    );
    HostPirqs.unbind(FIRST, PIRQ);
    checks.check(
        "unbinding the first sharer completes its EOI: the line interrupts",
        taken.next(),
    );
    checks.check(
        "the second sharer, bound alone, owes the new one: held",
        taken.held(),
    );
    HostPirqs.unbind(SECOND, PIRQ);
    cpu::without_interrupts(|| {
        crate::hvtimer::run_due(crate::time::now_ns());
        pirq::run_eoi_timer_callback(GSI);
    });
    checks.check(
        "with the last binder gone an expiry forces nothing and the line stays quiet",
        pirq::forced_eois() == forced_before + 1 && taken.held(),
    );
    cpu::disable_interrupts();
    pirq::forget_domain(FIRST);
    pirq::forget_domain(SECOND);

    log::info!(
        "selftest pirq-eoi: {} interrupts taken, {} forced EOI(s); {} more edge(s) latched before a mask",
        pirq::interrupts_taken() - base - taken.latched,
        pirq::forced_eois() - forced_before,
        taken.latched
    );
    if checks.passed {
        log::info!(
            "selftest pirq-eoi: the line is held until every sharer's EOI or the forced EOI, and released once"
        );
        ExitCode::Pass
    } else {
        ExitCode::Fail
    }
}
