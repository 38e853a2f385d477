//! The panic handler: a panic is a hypervisor bug. Stop every other CPU,
//! print the message, location and a backtrace, exit with the panic code.

use arch::fatal::{self, Role};
use arch::qemu::{self, ExitCode};

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    if fatal::enter() == Role::Nested {
        qemu::exit(ExitCode::Panic);
    }
    let stopped = fatal::stop_other_cpus();
    let cpu = arch::percpu::current().index();
    match info.location() {
        Some(location) => log::error!(
            "PANIC on cpu{cpu} at {}:{}:{}: {}",
            location.file(),
            location.line(),
            location.column(),
            info.message()
        ),
        None => log::error!("PANIC on cpu{cpu}: {}", info.message()),
    }
    arch::backtrace::log(arch::cpu::frame_pointer());
    fatal::log_stopped(stopped);
    qemu::exit(ExitCode::Panic)
}
