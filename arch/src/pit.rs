//! The legacy 8254 PIT and 8259 PICs.
//!
//! The PIT is the reference clock for measuring the TSC (channel 2, gated
//! through port 0x61, its count read back, no interrupt) and a legacy interrupt source for
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

/// Starts channel 2 counting down from 0xffff (mode 0, gate raised
/// through port 0x61, no interrupt); it wraps after about 55 ms.
pub fn start_channel2_countdown() {
    let control = inb(0x61);
    // Gate low, speaker off.
    outb(0x61, control & !0x03);
    // Channel 2, lobyte/hibyte, mode 0, binary.
    outb(0x43, 0xb0);
    outb(0x42, 0xff);
    outb(0x42, 0xff);
    // Gate high: counting starts.
    outb(0x61, (control & !0x02) | 0x01);
}

/// Reads channel 2's current count (latched, so both bytes agree).
pub fn read_channel2() -> u16 {
    // Counter latch command for channel 2.
    outb(0x43, 0x80);
    let low = inb(0x42);
    let high = inb(0x42);
    u16::from_le_bytes([low, high])
}

/// Stops channel 2 (gate low).
pub fn stop_channel2() {
    let control = inb(0x61);
    outb(0x61, control & !0x03);
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
