//! The image's entry point, its stack, the hand-off to the guest's `main`,
//! and the panic handler.
//!
//! The hypervisor starts vcpu 0 at `_start` (the ENTRY note) with `rsi` =
//! the virtual address of start_info (spec §7.9). `_start` zeroes .bss (a
//! loader should already have, but the runtime does not depend on it),
//! switches to the runtime's own 64 KiB stack and calls [`rust_start`], which
//! maps shared_info, runs the guest's `main` and then [`crate::tap::finish`].
//!
//! A guest supplies `main` with [`entry!`](crate::entry!):
//!
//! ```ignore
//! sluice_guest::entry!(main);
//! fn main(start_info: &'static sluice_guest::StartInfo) { /* tests */ }
//! ```

use core::arch::global_asm;

use crate::start_info::StartInfo;
use crate::{shared_info, tap};

/// Size of the runtime's stack.
pub const STACK_SIZE: usize = 64 * 1024;

global_asm!(
    r#"
    .pushsection .bss.sluice_stack, "aw", @nobits
    .balign 4096
sluice_stack_bottom:
    .skip {stack_size}
sluice_stack_top:
    .popsection

    .pushsection .text.entry, "ax"
    .globl _start
_start:
    cld
    mov r12, rsi
    lea rdi, [rip + __bss_start]
    lea rcx, [rip + __bss_end]
    sub rcx, rdi
    xor eax, eax
    rep stosb
    lea rsp, [rip + sluice_stack_top]
    xor ebp, ebp
    mov rdi, r12
    call {rust_start}
2:  ud2
    jmp 2b
    .popsection
    "#,
    stack_size = const STACK_SIZE,
    rust_start = sym rust_start,
);

unsafe extern "Rust" {
    /// The guest's main, defined by [`entry!`](crate::entry!).
    fn __sluice_guest_main(start_info: &'static StartInfo);
}

/// The first Rust code: maps shared_info, runs the guest, finishes.
extern "C" fn rust_start(start_info: *const StartInfo) -> ! {
    // SAFETY: the hypervisor passes the address of the start_info page in
    // rsi; it is mapped read-write for the guest's whole life and nothing
    // else writes it after entry.
    let start_info: &'static StartInfo = unsafe { &*start_info };
    crate::start_info::set(start_info);
    tap::init(start_info);
    if let Err(errno) = shared_info::map(start_info) {
        crate::println!("# runtime: mapping shared_info failed: {errno:?}");
    }
    // SAFETY: `entry!` defines `__sluice_guest_main` with exactly this
    // signature; a guest without it fails to link.
    unsafe { __sluice_guest_main(start_info) };
    tap::finish()
}

/// Declares the guest's `main`: `fn(&'static StartInfo)`. The runtime calls
/// it after mapping shared_info and, when it returns, prints the TAP plan and
/// summary and shuts the domain down with the verdict.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// The guest's entry, called by the runtime.
        #[unsafe(no_mangle)]
        pub fn __sluice_guest_main(start_info: &'static $crate::StartInfo) {
            let main: fn(&'static $crate::StartInfo) = $main;
            main(start_info)
        }
    };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::println!("Bail out! panic: {info}");
    tap::shutdown_failed()
}
