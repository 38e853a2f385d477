//! Leaving QEMU through its `isa-debug-exit` device.
//!
//! QEMU is started with `-device isa-debug-exit,iobase=0xf4,iosize=0x04`; a
//! write of `v` to port 0xf4 ends QEMU with status `(v << 1) | 1`.

use x86_64::instructions::port::Port;

/// I/O port of QEMU's isa-debug-exit device.
const DEBUG_EXIT_PORT: u16 = 0xf4;

/// How the hypervisor ends the run (the project's exit-code contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Every domain (or self-test) passed: QEMU exits 33.
    Pass = 0x10,
    /// Something failed: QEMU exits 35.
    Fail = 0x11,
    /// Hypervisor panic or unexpected exception: QEMU exits 37.
    Panic = 0x12,
}

/// Ends the QEMU run with `code`; halts forever if no exit device answers.
pub fn exit(code: ExitCode) -> ! {
    let mut port = Port::<u32>::new(DEBUG_EXIT_PORT);
    // SAFETY: port 0xf4 is QEMU's debug-exit device (or nothing); the write
    // ends the VM and touches no memory.
    unsafe { port.write(u32::from(code as u8)) };
    crate::cpu::halt_forever()
}
