//! The fatal path: one CPU reports, every other CPU stops, QEMU exits.
//!
//! The first CPU to enter claims the report; it stops the others with an
//! NMI broadcast, waits briefly for them to acknowledge, prints, and exits
//! with the panic code. A CPU that enters while another reports just halts.
//! A fault during the report itself exits at once.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::idt::{InterruptFrame, exception_name};
use crate::qemu::{self, ExitCode};
use crate::{backtrace, cpu, lapic, percpu, tsc};

/// Index + 1 of the CPU reporting; 0 while none is.
static OWNER: AtomicU32 = AtomicU32::new(0);
/// CPUs that took the stop NMI.
static STOPPED: AtomicU32 = AtomicU32::new(0);

/// What `enter` decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// This CPU reports.
    Reporter,
    /// This CPU faulted again while reporting.
    Nested,
}

/// Claims the fatal report for this CPU. Halts for good if another CPU
/// already owns it.
pub fn enter() -> Role {
    cpu::disable_interrupts();
    let me = percpu::current().index() + 1;
    match OWNER.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Role::Reporter,
        Err(owner) if owner == me => Role::Nested,
        Err(_) => cpu::halt_forever(),
    }
}

/// Whether this CPU is the one reporting a fatal error (the console uses
/// this to break a lock a stopped CPU may hold).
pub fn is_reporting() -> bool {
    let owner = OWNER.load(Ordering::Acquire);
    owner != 0 && owner == percpu::current().index() + 1
}

/// Stops every other CPU with an NMI and waits up to 100 ms for them;
/// returns how many of how many acknowledged.
pub fn stop_other_cpus() -> (u32, u32) {
    let others = percpu::online_count().saturating_sub(1);
    if others == 0 || !lapic::is_ready() {
        return (0, others);
    }
    lapic::send_nmi_to_others();
    let deadline = cpu::rdtsc().saturating_add(tsc::micros_to_ticks(100_000));
    while STOPPED.load(Ordering::Acquire) < others && cpu::rdtsc() < deadline {
        core::hint::spin_loop();
    }
    (STOPPED.load(Ordering::Acquire), others)
}

/// Logs the outcome of `stop_other_cpus`.
pub fn log_stopped((stopped, others): (u32, u32)) {
    if others != 0 {
        log::error!("stopped {stopped} of {others} other CPU(s)");
    }
}

/// NMI entry: stop here if another CPU is reporting, else it is an
/// unexpected NMI and fatal. Never returns (the interrupt entry relies on
/// it: `idt`).
pub fn nmi(frame: &InterruptFrame) -> ! {
    if OWNER.load(Ordering::Acquire) != 0 && !is_reporting() {
        // Release: pairs with the Acquire in `stop_other_cpus`.
        STOPPED.fetch_add(1, Ordering::Release);
        cpu::halt_forever();
    }
    exception(frame);
}

/// Reports an unexpected exception and ends the run.
pub fn exception(frame: &InterruptFrame) -> ! {
    if enter() == Role::Nested {
        qemu::exit(ExitCode::Panic);
    }
    let stopped = stop_other_cpus();
    dump(frame);
    log_stopped(stopped);
    qemu::exit(ExitCode::Panic)
}

/// Prints an exception frame: vector, name, error code, registers, CR2 and
/// a backtrace.
pub fn dump(frame: &InterruptFrame) {
    let cpu = percpu::current().index();
    log::error!(
        "FATAL: exception vector {} ({}) on cpu{cpu}, error code {:#x}",
        frame.vector,
        exception_name(frame.vector),
        frame.error_code
    );
    log::error!(
        "rip={:#018x} cs={:#06x} rflags={:#010x} rsp={:#018x} ss={:#06x}",
        frame.rip,
        frame.cs,
        frame.rflags,
        frame.rsp,
        frame.ss
    );
    log::error!("cr2={:#018x} cr3={:#018x}", cpu::cr2(), cpu::cr3());
    log::error!(
        "rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}",
        frame.rax,
        frame.rbx,
        frame.rcx,
        frame.rdx
    );
    log::error!(
        "rsi={:#018x} rdi={:#018x} rbp={:#018x} r8 ={:#018x}",
        frame.rsi,
        frame.rdi,
        frame.rbp,
        frame.r8
    );
    log::error!(
        "r9 ={:#018x} r10={:#018x} r11={:#018x} r12={:#018x}",
        frame.r9,
        frame.r10,
        frame.r11,
        frame.r12
    );
    log::error!(
        "r13={:#018x} r14={:#018x} r15={:#018x}",
        frame.r13,
        frame.r14,
        frame.r15
    );
    log::error!("backtrace:");
    log::error!("  #0  {:#018x}", frame.rip);
    backtrace::walk(frame.rbp, |depth, address| {
        log::error!("  #{:<2} {address:#018x}", depth + 1)
    });
}

/// Why a deliberate fault was not attempted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TouchError {
    /// The address is mapped; reading it would not fault.
    Mapped,
    /// The address is not mapped as the test needs.
    NotMappedAsExpected,
}

/// Reads `address`, which must be unmapped, to raise a page fault on
/// purpose (the fault self-tests): the fault is fatal, so this returns only
/// if the address turns out to be mapped.
pub fn touch_unmapped(address: u64) -> Result<core::convert::Infallible, TouchError> {
    if crate::paging::is_mapped(address) {
        return Err(TouchError::Mapped);
    }
    // SAFETY: nothing is mapped at `address` (checked above), so no Rust
    // object lives there to alias; the read faults and the fatal path ends
    // the run without returning here.
    unsafe {
        core::ptr::read_volatile(address as *const u64);
    }
    Err(TouchError::Mapped)
}

/// Writes to `address`, which must be mapped read-only (with CR0.WP on),
/// to check that write protection holds in ring 0: the fault is fatal.
pub fn write_read_only(address: u64) -> Result<core::convert::Infallible, TouchError> {
    let is_read_only = crate::paging::access(address).is_some_and(|access| !access.is_writable);
    let is_write_protect_on = x86_64::registers::control::Cr0::read()
        .contains(x86_64::registers::control::Cr0Flags::WRITE_PROTECT);
    if !is_read_only || !is_write_protect_on || !address.is_multiple_of(8) {
        return Err(TouchError::NotMappedAsExpected);
    }
    // SAFETY: the page is mapped read-only and CR0.WP makes ring 0 honour
    // that (both checked above), so the write cannot happen: it faults,
    // and the fatal path ends the run without returning here.
    unsafe {
        core::ptr::write_volatile(address as *mut u64, 0);
    }
    Err(TouchError::NotMappedAsExpected)
}

/// Calls `address`, which must be mapped no-execute, to check that NX
/// holds: the instruction fetch faults, fatally.
pub fn execute_no_execute(address: u64) -> Result<core::convert::Infallible, TouchError> {
    if !crate::paging::access(address).is_some_and(|access| access.is_no_execute) {
        return Err(TouchError::NotMappedAsExpected);
    }
    // SAFETY: the page is mapped no-execute (checked above; EFER.NXE is on
    // since boot), so the fetch at `address` faults before any instruction
    // there runs; the fatal path ends the run without returning here.
    unsafe {
        core::arch::asm!("call {}", in(reg) address, clobber_abi("C"));
    }
    Err(TouchError::NotMappedAsExpected)
}

/// Reads the user page at `address` directly, without opening SMAP, to
/// check that SMAP holds: the fault is fatal.
pub fn read_user_directly(address: u64) -> Result<core::convert::Infallible, TouchError> {
    let is_user = crate::paging::access(address).is_some_and(|access| access.is_user);
    let is_smap_on = x86_64::registers::control::Cr4::read()
        .contains(x86_64::registers::control::Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION);
    if !is_user || !is_smap_on || !address.is_multiple_of(8) {
        return Err(TouchError::NotMappedAsExpected);
    }
    // SAFETY: the page is a user page and CR4.SMAP is on with RFLAGS.AC
    // clear (only the guest-copy routine sets it), so the read cannot
    // happen: it faults, fatally.
    unsafe {
        core::ptr::read_volatile(address as *const u64);
    }
    Err(TouchError::NotMappedAsExpected)
}

/// Calls the executable user page at `address` to check that SMEP holds:
/// the fetch faults, fatally.
pub fn execute_user(address: u64) -> Result<core::convert::Infallible, TouchError> {
    let is_user_code = crate::paging::access(address)
        .is_some_and(|access| access.is_user && !access.is_no_execute);
    let is_smep_on = x86_64::registers::control::Cr4::read()
        .contains(x86_64::registers::control::Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION);
    if !is_user_code || !is_smep_on {
        return Err(TouchError::NotMappedAsExpected);
    }
    // SAFETY: the page is a user page and CR4.SMEP is on, so ring 0 cannot
    // fetch from it: the call faults before any instruction there runs.
    unsafe {
        core::arch::asm!("call {}", in(reg) address, clobber_abi("C"));
    }
    Err(TouchError::NotMappedAsExpected)
}
