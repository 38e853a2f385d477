//! Deliberate hypervisor page faults, each caught and reported (vector 14,
//! error code, CR2, registers, backtrace), ending the run with the panic
//! code: `selftest=pagefault` reads the guard page under the stack,
//! `selftest=nx` calls into no-execute data, `selftest=wp` writes to code.

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

/// `ret` in read-only data: if NX did not hold, calling it would return.
static RETURN_INSTRUCTION: [u8; 8] = [0xc3; 8];

/// `selftest=nx`: calling into read-only data must fault on the
/// instruction fetch (error code 0x11: present, fetch).
pub fn run_no_execute() -> ExitCode {
    let address = RETURN_INSTRUCTION.as_ptr() as u64;
    log::info!("selftest nx: calling {address:#x} in read-only data");
    match arch::fatal::execute_no_execute(address) {
        Err(error) => {
            log::error!(
                "selftest nx: FAILED: {error:?}: the page is executable or the call returned"
            );
            ExitCode::Fail
        }
    }
}

/// `selftest=wp`: writing to the hypervisor's code must fault in ring 0
/// (error code 0x3: present, write).
pub fn run_write_protect() -> ExitCode {
    let address = (run_write_protect as *const () as u64) & !7;
    log::info!("selftest wp: writing to code at {address:#x}");
    match arch::fatal::write_read_only(address) {
        Err(error) => {
            log::error!(
                "selftest wp: FAILED: {error:?}: the code is writable or the write went through"
            );
            ExitCode::Fail
        }
    }
}
