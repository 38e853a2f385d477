//! `selftest=pagefault`: a deliberate hypervisor page fault, on the guard
//! page under the current stack, must be caught and reported (vector 14,
//! CR2, registers, backtrace) and end the run with the panic code.

use arch::qemu::ExitCode;

/// Faults on purpose; returns only if the guard page is mapped (a failure).
pub fn run() -> ExitCode {
    let rsp = arch::cpu::stack_pointer();
    // The stack is 16 pages above its guard page.
    let stack_bottom = (rsp & !0xfff) - (crate::cpus::STACK_PAGES - 1) * 4096;
    let mut guard = stack_bottom - 4096;
    // Find the lowest mapped page of this stack, then the page below it.
    let mut page = rsp & !0xfff;
    while arch::paging::is_mapped(page - 4096) && page > stack_bottom - 4096 {
        page -= 4096;
    }
    if !arch::paging::is_mapped(page - 4096) {
        guard = page - 4096;
    }
    log::info!(
        "selftest pagefault: reading the guard page at {:#x} below the stack",
        guard + 0x10
    );
    match arch::fatal::touch_unmapped(guard + 0x10) {
        Err(error) => {
            log::error!("selftest pagefault: FAILED: {error:?}: the guard page is mapped");
            ExitCode::Fail
        }
    }
}
