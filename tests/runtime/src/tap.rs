//! TAP output and the finish path.
//!
//! Each check prints one numbered line, `ok 7 - <behaviour>` or
//! `not ok 7 - <behaviour>` followed by `#` lines with what was expected and
//! what was seen. [`finish`] prints the plan (`1..N`, at the end, which TAP
//! allows), a summary and a verdict line, then shuts the domain down:
//! SHUTDOWN_poweroff if everything passed, SHUTDOWN_crash otherwise (brief).
//!
//! With the word `xen-oracle` on the guest's command line a passing guest
//! uses SHUTDOWN_reboot instead: Xen halts the machine on dom0 poweroff and
//! QEMU would keep running, while a reboot with `-no-reboot` ends QEMU.

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::sched::{self, ShutdownReason};
use crate::start_info::StartInfo;

/// Number of the next test line.
static NEXT: AtomicU32 = AtomicU32::new(1);
/// Lines that said `not ok`.
static FAILED: AtomicU32 = AtomicU32::new(0);
/// Lines that were skipped.
static SKIPPED: AtomicU32 = AtomicU32::new(0);
/// Whether a passing guest reboots instead of powering off.
static REBOOT_ON_PASS: AtomicBool = AtomicBool::new(false);

/// The command-line word that selects the Xen-oracle finish.
pub const XEN_ORACLE_ARG: &str = "xen-oracle";

/// Reads the finish mode from the command line (called by the runtime).
pub fn init(start_info: &StartInfo) {
    REBOOT_ON_PASS.store(start_info.has_arg(XEN_ORACLE_ARG), Ordering::SeqCst);
}

/// Records one result and prints its line; returns `passed`.
pub fn report(passed: bool, description: fmt::Arguments<'_>) -> bool {
    let number = NEXT.fetch_add(1, Ordering::SeqCst);
    if passed {
        crate::println!("ok {number} - {description}");
    } else {
        FAILED.fetch_add(1, Ordering::SeqCst);
        crate::println!("not ok {number} - {description}");
    }
    passed
}

/// Records a skipped test (counts as passing in TAP).
pub fn skip(description: fmt::Arguments<'_>, reason: &str) {
    let number = NEXT.fetch_add(1, Ordering::SeqCst);
    SKIPPED.fetch_add(1, Ordering::SeqCst);
    crate::println!("ok {number} - {description} # SKIP {reason}");
}

/// Reports a comparison; on failure prints expected and got as diagnostics.
pub fn report_eq<T: fmt::Debug + PartialEq>(
    got: &T,
    expected: &T,
    description: fmt::Arguments<'_>,
) -> bool {
    let passed = got == expected;
    report(passed, description);
    if !passed {
        crate::println!("#   expected: {expected:?}");
        crate::println!("#        got: {got:?}");
    }
    passed
}

/// Checks a condition: `check!(cond, "behaviour {}", x)`.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($description:tt)+) => {
        $crate::tap::report($cond, ::core::format_args!($($description)+))
    };
}

/// Checks equality, printing expected vs got on failure:
/// `check_eq!(got, expected, "behaviour")`.
#[macro_export]
macro_rules! check_eq {
    ($got:expr, $expected:expr, $($description:tt)+) => {
        $crate::tap::report_eq(&$got, &$expected, ::core::format_args!($($description)+))
    };
}

/// Lines printed so far.
pub fn tests_run() -> u32 {
    NEXT.load(Ordering::SeqCst) - 1
}

/// Lines that failed so far.
pub fn tests_failed() -> u32 {
    FAILED.load(Ordering::SeqCst)
}

/// Prints the plan, the summary and the verdict, then shuts down with it.
pub fn finish() -> ! {
    let run = tests_run();
    let failed = tests_failed();
    let skipped = SKIPPED.load(Ordering::SeqCst);
    crate::println!("1..{run}");
    crate::println!(
        "# {} passed, {failed} failed, {skipped} skipped",
        run - failed
    );
    if failed == 0 && run > 0 {
        let reason = if REBOOT_ON_PASS.load(Ordering::SeqCst) {
            ShutdownReason::Reboot
        } else {
            ShutdownReason::Poweroff
        };
        crate::println!("# verdict: PASS ({reason:?})");
        shutdown_forever(reason)
    } else {
        crate::println!("# verdict: FAIL");
        shutdown_forever(ShutdownReason::Crash)
    }
}

/// Shuts down with SHUTDOWN_crash (used on panic and fatal runtime errors).
pub fn shutdown_failed() -> ! {
    shutdown_forever(ShutdownReason::Crash)
}

fn shutdown_forever(reason: ShutdownReason) -> ! {
    let rc = sched::shutdown(reason);
    crate::println!("# runtime: SCHEDOP_shutdown returned {rc}");
    loop {
        let _ = sched::yield_now();
    }
}
