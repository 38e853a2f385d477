//! The legacy 8254 PIT and 8259 PICs.
//!
//! The PIT is the reference clock for measuring the TSC (channel 2, gated
//! through port 0x61, polled, no interrupt) and a legacy interrupt source for
//! testing IOAPIC routing (channel 0 on ISA IRQ 0). The 8259 PICs are
//! remapped away from the exception vectors and masked: Sluice routes legacy
//! lines through the IOAPIC.

use x86_64::instructions::port::Port;

/// The PIT's input clock, in Hz.
pub const PIT_HZ: u64 = 1_193_182;

fn outb(port: u16, value: u8) {
    let mut port = Port::<u8>::new(port);
    // SAFETY: the callers only touch the PIT (0x40-0x43), the PICs
    // (0x20/0x21/0xa0/0xa1) and the system control port 0x61, which this
    // module alone programs; port writes have no memory effects.
    unsafe { port.write(value) }
}

fn inb(port: u16) -> u8 {
    let mut port = Port::<u8>::new(port);
    // SAFETY: as in `outb`; reading these ports has no memory effects.
    unsafe { port.read() }
}

/// Remaps both 8259 PICs to vectors 0x20..0x30 and masks every line.
pub fn disable_legacy_pic() {
    // ICW1: init, expect ICW4.
    outb(0x20, 0x11);
    outb(0xa0, 0x11);
    // ICW2: vector offsets.
    outb(0x21, 0x20);
    outb(0xa1, 0x28);
    // ICW3: slave on IRQ 2.
    outb(0x21, 0x04);
    outb(0xa1, 0x02);
    // ICW4: 8086 mode.
    outb(0x21, 0x01);
    outb(0xa1, 0x01);
    // Mask everything.
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
}

/// Busy-waits `ticks` PIT cycles on channel 2 and returns the TSC at start
/// and end of the wait.
///
/// Channel 2 counts down once in mode 0 with its gate raised through port
/// 0x61; OUT2 (bit 5 of 0x61) goes high when the count reaches zero.
pub fn measure_tsc_over_pit_ticks(ticks: u16) -> (u64, u64) {
    let control = inb(0x61);
    // Gate low, speaker off.
    outb(0x61, control & !0x03);
    // Channel 2, lobyte/hibyte, mode 0, binary.
    outb(0x43, 0xb0);
    outb(0x42, (ticks & 0xff) as u8);
    outb(0x42, (ticks >> 8) as u8);
    let start = crate::cpu::rdtsc();
    // Gate high: counting starts.
    outb(0x61, (control & !0x02) | 0x01);
    let mut spins: u64 = 0;
    while inb(0x61) & 0x20 == 0 {
        spins += 1;
        if spins > 100_000_000 {
            break;
        }
        core::hint::spin_loop();
    }
    let end = crate::cpu::rdtsc();
    outb(0x61, control & !0x03);
    (start, end)
}

/// Starts PIT channel 0 as a rate generator at about `hz` interrupts per
/// second on ISA IRQ 0.
pub fn start_periodic(hz: u32) {
    let divisor = (PIT_HZ / u64::from(hz.max(19))).min(0xffff) as u16;
    // Channel 0, lobyte/hibyte, mode 2 (rate generator), binary.
    outb(0x43, 0x34);
    outb(0x40, (divisor & 0xff) as u8);
    outb(0x40, (divisor >> 8) as u8);
}

/// Stops PIT channel 0 (mode 0 with a count that is never reloaded).
pub fn stop_periodic() {
    outb(0x43, 0x30);
    outb(0x40, 0);
    outb(0x40, 0);
}
