//! The IOAPIC: routing a global system interrupt (GSI) to a vector on a CPU.

use crate::cpu;

const REG_VERSION: u32 = 0x01;
const REG_REDIRECTION_BASE: u32 = 0x10;
const REDIRECTION_MASKED: u64 = 1 << 16;
const REDIRECTION_LEVEL: u64 = 1 << 15;
const REDIRECTION_ACTIVE_LOW: u64 = 1 << 13;

/// How a line signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Edge triggered.
    Edge,
    /// Level triggered.
    Level,
}

/// Active level of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polarity {
    /// Active high.
    High,
    /// Active low.
    Low,
}

/// One IOAPIC, mapped uncached.
#[derive(Debug)]
pub struct IoApic {
    base: u64,
    gsi_base: u32,
    entries: u32,
    lock: spin::Mutex<()>,
}

impl IoApic {
    /// The IOAPIC whose register window is mapped (uncached) at `base_virt`
    /// and whose first input is `gsi_base`. Masks every input.
    ///
    /// # Safety
    /// `base_virt` must map the IOAPIC's MMIO page, uncached, for 'static,
    /// and nothing else may program this IOAPIC.
    pub unsafe fn new(base_virt: u64, gsi_base: u32) -> Self {
        let mut ioapic = Self {
            base: base_virt,
            gsi_base,
            entries: 0,
            lock: spin::Mutex::new(()),
        };
        ioapic.entries = ((ioapic.read(REG_VERSION) >> 16) & 0xff) + 1;
        for input in 0..ioapic.entries {
            ioapic.write_entry(input, REDIRECTION_MASKED);
        }
        ioapic
    }

    /// Number of inputs.
    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// First GSI.
    pub fn gsi_base(&self) -> u32 {
        self.gsi_base
    }

    /// Whether `gsi` is one of this IOAPIC's inputs.
    pub fn handles(&self, gsi: u32) -> bool {
        gsi >= self.gsi_base && gsi - self.gsi_base < self.entries
    }

    fn read(&self, register: u32) -> u32 {
        cpu::without_interrupts(|| {
            let _guard = self.lock.lock();
            // SAFETY: `new`'s contract: `base` maps the IOAPIC; IOREGSEL is
            // at +0 and IOWIN at +0x10; the lock keeps the pair atomic.
            unsafe {
                core::ptr::write_volatile(self.base as *mut u32, register);
            }
            // SAFETY: as above.
            unsafe { core::ptr::read_volatile((self.base + 0x10) as *const u32) }
        })
    }

    fn write(&self, register: u32, value: u32) {
        cpu::without_interrupts(|| {
            let _guard = self.lock.lock();
            // SAFETY: as in `read`.
            unsafe {
                core::ptr::write_volatile(self.base as *mut u32, register);
            }
            // SAFETY: as in `read`.
            unsafe { core::ptr::write_volatile((self.base + 0x10) as *mut u32, value) }
        });
    }

    fn write_entry(&self, input: u32, value: u64) {
        let register = REG_REDIRECTION_BASE + input * 2;
        // Mask first, then the high half, then the low half with the final
        // mask bit, so the entry is never live half-written.
        self.write(register, REDIRECTION_MASKED as u32);
        self.write(register + 1, (value >> 32) as u32);
        self.write(register, value as u32);
    }

    /// Routes `gsi` to `vector` on the CPU with APIC id `apic_id` (physical
    /// destination, fixed delivery), unmasked. Returns false if `gsi` is
    /// not this IOAPIC's.
    pub fn route(
        &self,
        gsi: u32,
        vector: u8,
        apic_id: u32,
        trigger: Trigger,
        polarity: Polarity,
    ) -> bool {
        if !self.handles(gsi) {
            return false;
        }
        let mut value = u64::from(vector) | (u64::from(apic_id & 0xff) << 56);
        if trigger == Trigger::Level {
            value |= REDIRECTION_LEVEL;
        }
        if polarity == Polarity::Low {
            value |= REDIRECTION_ACTIVE_LOW;
        }
        self.write_entry(gsi - self.gsi_base, value);
        true
    }

    /// Sets the mask bit of `gsi`'s routed entry, keeping its vector and
    /// destination (a PIRQ's line held until the guest's EOI). Returns
    /// false if `gsi` is not this IOAPIC's.
    pub fn hold(&self, gsi: u32) -> bool {
        self.update_mask_bit(gsi, |low| low | REDIRECTION_MASKED as u32)
    }

    /// Clears the mask bit of `gsi`'s routed entry (see [`IoApic::hold`]).
    /// Returns false if `gsi` is not this IOAPIC's.
    pub fn release(&self, gsi: u32) -> bool {
        self.update_mask_bit(gsi, |low| low & !(REDIRECTION_MASKED as u32))
    }

    /// Sends `gsi`'s routed entry to the CPU with APIC id `apic_id`,
    /// keeping its vector, trigger, polarity and mask bit. Only the high
    /// half (the destination) is written, so the line is never masked on
    /// the way: an edge that arrives meanwhile is delivered to the old or
    /// the new CPU, never dropped. Returns false if `gsi` is not this
    /// IOAPIC's.
    pub fn set_destination(&self, gsi: u32, apic_id: u32) -> bool {
        if !self.handles(gsi) {
            return false;
        }
        let register = REG_REDIRECTION_BASE + (gsi - self.gsi_base) * 2;
        self.write(register + 1, (apic_id & 0xff) << 24);
        true
    }

    fn update_mask_bit(&self, gsi: u32, change: impl Fn(u32) -> u32) -> bool {
        if !self.handles(gsi) {
            return false;
        }
        let register = REG_REDIRECTION_BASE + (gsi - self.gsi_base) * 2;
        // The low half holds the vector, trigger, polarity and mask bit;
        // rewriting it alone leaves the destination as routed.
        cpu::without_interrupts(|| {
            let low = self.read(register);
            self.write(register, change(low));
        });
        true
    }

    /// Masks `gsi`.
    pub fn mask(&self, gsi: u32) {
        if self.handles(gsi) {
            self.write_entry(gsi - self.gsi_base, REDIRECTION_MASKED);
        }
    }
}
