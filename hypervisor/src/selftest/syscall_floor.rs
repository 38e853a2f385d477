//! `selftest=syscall-floor`: the floor probe of `cargo xtask bench`, a bare
//! `syscall` → `sysretq` round trip through Sluice's guest entry.
//!
//! A ring-3 loop (no guest kernel, no hypercall page) reads the TSC, runs
//! `syscall`, reads the TSC again and hands the difference to the next
//! `syscall` in `rdi`. The hypercall hook (the only one `arch` calls for
//! a `syscall`) only stores that sample and returns, so the way back is
//! the `sysretq` exit. What is timed is therefore the entry (swapgs, the
//! frame built on the vcpu stack), one hook call, the exit and the TSC
//! reads around them: the least any hypercall costs. Under `-icount shift=0` the
//! TSC counts retired instructions, so the numbers are instruction counts.
//! Prints `bench syscall-floor median=<cycles> p99=<cycles> cycles`.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arch::guest_entry::GuestHooks;
use arch::idt::InterruptFrame;
use arch::qemu::ExitCode;

/// Samples kept, after [`WARM_UP`] ignored ones (as the bench guest).
const SAMPLES: usize = 2001;
const WARM_UP: usize = 64;

/// ```text
/// 0:  rdtsc; shl rdx, 32; or rax, rdx; mov rbx, rax
/// c:  mov rdi, r12          ; the previous sample (0 at first)
/// f:  syscall
/// 11: rdtsc; shl rdx, 32; or rax, rdx; sub rax, rbx
/// 1d: mov r12, rax
/// 20: jmp 0
/// ```
const CODE: [u8; 34] = [
    0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xd0, 0x48, 0x89, 0xc3, 0x4c, 0x89, 0xe7, 0x0f,
    0x05, 0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xd0, 0x48, 0x29, 0xd8, 0x49, 0x89, 0xc4,
    0xeb, 0xde,
];

static CALLS: AtomicUsize = AtomicUsize::new(0);
static TIMES: [AtomicU64; SAMPLES] = [const { AtomicU64::new(0) }; SAMPLES];

/// Stores the sample the loop passes in `rdi` (the first call has none).
extern "C" fn on_syscall(frame: &mut InterruptFrame) {
    // Relaxed: one CPU runs the loop and reads the samples.
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    if let Some(slot) = call
        .checked_sub(1 + WARM_UP)
        .and_then(|sample| TIMES.get(sample))
    {
        slot.store(frame.rdi, Ordering::Relaxed);
    }
    if call == WARM_UP + SAMPLES {
        report();
    }
}

fn report() -> ! {
    let mut samples = alloc::vec::Vec::with_capacity(SAMPLES);
    samples.extend(TIMES.iter().map(|time| time.load(Ordering::Relaxed)));
    samples.sort_unstable();
    let median = samples.get(SAMPLES / 2).copied().unwrap_or(0);
    let p99 = samples.get(SAMPLES * 99 / 100).copied().unwrap_or(0);
    log::info!("bench syscall-floor median={median} p99={p99} cycles");
    log::info!("selftest syscall-floor: {SAMPLES} round trips timed");
    arch::qemu::exit(ExitCode::Pass)
}

fn on_exception(frame: &mut InterruptFrame) {
    log::error!(
        "selftest syscall-floor: exception {} ({}) at {:#x}",
        frame.vector,
        arch::idt::exception_name(frame.vector),
        frame.rip
    );
    arch::qemu::exit(ExitCode::Fail)
}

fn on_return(_frame: &mut InterruptFrame) {}

/// Runs the probe; returns only on failure to set it up.
pub fn run() -> ExitCode {
    super::syscall_probe::enter_ring3(
        "syscall-floor",
        &CODE,
        GuestHooks {
            hypercall: on_syscall,
            exception: on_exception,
            before_return: on_return,
        },
    )
}
