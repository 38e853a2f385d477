//! `selftest=panic` and `selftest=stackoverflow`: the two other ways the
//! hypervisor can die must be reported too.
//!
//! - `panic`: a deliberate `panic!` prints the message, its location and a
//!   backtrace, stops the other CPUs and exits with the panic code.
//! - `stackoverflow`: unbounded recursion runs into the stack's guard page;
//!   the page fault cannot be delivered on the overflowed stack, so the CPU
//!   raises #DF, which runs on its own IST stack and is reported (vector 8).

use core::hint::black_box;

use arch::qemu::ExitCode;

/// Panics on purpose.
#[expect(clippy::panic, reason = "the self-test checks the panic path")]
pub fn panic() -> ExitCode {
    log::info!("selftest panic: panicking on purpose");
    panic!("selftest panic: deliberate panic");
}

/// Recurses until the stack runs out.
pub fn stack_overflow() -> ExitCode {
    log::info!("selftest stackoverflow: recursing into the guard page");
    let depth = recurse(black_box(0));
    log::error!("selftest stackoverflow: FAILED: recursion returned at depth {depth}");
    ExitCode::Fail
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let mut buffer = [0u8; 512];
    buffer[0] = depth as u8;
    black_box(&mut buffer);
    if black_box(true) {
        return recurse(depth + 1) + u64::from(black_box(buffer)[0]);
    }
    depth
}
