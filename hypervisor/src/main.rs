//! The Sluice hypervisor image.
#![no_std]
#![no_main]

/// Placeholder until the boot path lands.
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
