//! Interrupt vector assignments.

/// Double fault.
pub const DOUBLE_FAULT: u8 = 8;
/// Non-maskable interrupt (also how a panicking CPU stops the others).
pub const NMI: u8 = 2;
/// Machine check.
pub const MACHINE_CHECK: u8 = 18;
/// General protection fault.
pub const GENERAL_PROTECTION: u8 = 13;
/// Page fault.
pub const PAGE_FAULT: u8 = 14;
/// ISA IRQ `n` routed through the IOAPIC arrives at `LEGACY_IRQ_BASE + n`.
pub const LEGACY_IRQ_BASE: u8 = 0x30;
/// The LAPIC timer.
pub const TIMER: u8 = 0xf0;
/// The "kick" IPI: wakes a CPU or makes it look at its work.
pub const KICK: u8 = 0xf1;
/// LAPIC error interrupt.
pub const APIC_ERROR: u8 = 0xfe;
/// LAPIC spurious vector (no EOI).
pub const SPURIOUS: u8 = 0xff;
