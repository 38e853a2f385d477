//! The entry symbol `arch`'s boot assembly calls on the boot stack.
#![allow(unsafe_code)]

/// Called by the boot code in long mode with the multiboot magic and the
/// physical address of the multiboot information structure.
#[unsafe(no_mangle)]
extern "C" fn sluice_main(magic: u32, multiboot_info: u32) -> ! {
    crate::startup::start(magic, multiboot_info)
}
