//! Physical interrupt lines: the IOAPICs and ISA IRQ routing.

use alloc::vec::Vec;

use arch::ioapic::{IoApic, Polarity, Trigger};

use crate::acpi::{InterruptOverride, Madt};

struct Routing {
    ioapics: Vec<IoApic>,
    overrides: Vec<InterruptOverride>,
}

static ROUTING: spin::Once<Routing> = spin::Once::new();

/// Maps every IOAPIC in the MADT (all inputs masked) and remembers the
/// overrides. Returns how many IOAPICs and inputs there are.
pub fn init(madt: &Madt) -> (usize, u32) {
    let routing = ROUTING.call_once(|| {
        let mut ioapics = Vec::new();
        for entry in &madt.ioapics {
            match crate::memory::space::ioapic(entry.address, entry.gsi_base) {
                Ok(ioapic) => ioapics.push(ioapic),
                Err(error) => log::error!(
                    "IOAPIC {} at {:#x}: cannot map: {error:?}",
                    entry.id,
                    entry.address
                ),
            }
        }
        Routing {
            ioapics,
            overrides: madt.overrides.clone(),
        }
    });
    let inputs = routing.ioapics.iter().map(IoApic::entries).sum();
    (routing.ioapics.len(), inputs)
}

/// Where ISA IRQ `irq` arrives and how it signals: the MADT override if
/// any, else GSI = IRQ, edge, active high (ISA's defaults).
pub fn legacy_irq_line(irq: u8) -> (u32, Trigger, Polarity) {
    let overrides = ROUTING
        .get()
        .map(|routing| routing.overrides.as_slice())
        .unwrap_or(&[]);
    match overrides.iter().find(|entry| entry.irq == irq) {
        Some(entry) => {
            let polarity = match entry.flags & 0b11 {
                0b11 => Polarity::Low,
                _ => Polarity::High,
            };
            let trigger = match (entry.flags >> 2) & 0b11 {
                0b11 => Trigger::Level,
                _ => Trigger::Edge,
            };
            (entry.gsi, trigger, polarity)
        }
        None => (u32::from(irq), Trigger::Edge, Polarity::High),
    }
}

/// Routes ISA IRQ `irq` to `vector` on the CPU with APIC id `apic_id`.
/// Returns the GSI used, or `None` if no IOAPIC serves it.
pub fn route_legacy_irq(irq: u8, vector: u8, apic_id: u32) -> Option<u32> {
    let (gsi, trigger, polarity) = legacy_irq_line(irq);
    let routing = ROUTING.get()?;
    let ioapic = routing.ioapics.iter().find(|ioapic| ioapic.handles(gsi))?;
    ioapic
        .route(gsi, vector, apic_id, trigger, polarity)
        .then_some(gsi)
}

#[cfg_attr(
    not(feature = "selftest"),
    expect(dead_code, reason = "used by the ioapic self-test")
)]
/// Masks ISA IRQ `irq` again.
pub fn mask_legacy_irq(irq: u8) {
    let (gsi, _, _) = legacy_irq_line(irq);
    if let Some(routing) = ROUTING.get() {
        for ioapic in &routing.ioapics {
            ioapic.mask(gsi);
        }
    }
}

/// Number of GSIs the IOAPICs serve (Xen's `nr_irqs_gsi`).
pub fn gsi_count() -> u32 {
    ROUTING.get().map_or(0, |routing| {
        routing.ioapics.iter().map(IoApic::entries).sum()
    })
}

/// Routes `gsi` (an ISA line: trigger and polarity from the MADT) to
/// `vector` on the CPU with APIC id `apic_id`, unmasked. False if no
/// IOAPIC serves it.
pub fn route_gsi(gsi: u32, vector: u8, apic_id: u32) -> bool {
    let (trigger, polarity) = match u8::try_from(gsi) {
        Ok(irq) if irq < 16 => {
            let (_, trigger, polarity) = legacy_irq_line(irq);
            (trigger, polarity)
        }
        _ => (Trigger::Level, Polarity::Low),
    };
    ROUTING.get().is_some_and(|routing| {
        routing
            .ioapics
            .iter()
            .any(|ioapic| ioapic.route(gsi, vector, apic_id, trigger, polarity))
    })
}

/// Sends `gsi` to the CPU with APIC id `apic_id`, keeping the rest of its
/// route (and whether it is held). False if no IOAPIC serves it.
pub fn set_gsi_destination(gsi: u32, apic_id: u32) -> bool {
    ROUTING.get().is_some_and(|routing| {
        routing
            .ioapics
            .iter()
            .any(|ioapic| ioapic.set_destination(gsi, apic_id))
    })
}

/// Holds `gsi` masked, keeping its route (a PIRQ awaiting the guest's EOI).
pub fn hold_gsi(gsi: u32) {
    if let Some(routing) = ROUTING.get() {
        for ioapic in &routing.ioapics {
            ioapic.hold(gsi);
        }
    }
}

/// Unmasks `gsi` after [`hold_gsi`].
pub fn release_gsi(gsi: u32) {
    if let Some(routing) = ROUTING.get() {
        for ioapic in &routing.ioapics {
            ioapic.release(gsi);
        }
    }
}

/// Masks `gsi` and forgets its route.
pub fn mask_gsi(gsi: u32) {
    if let Some(routing) = ROUTING.get() {
        for ioapic in &routing.ioapics {
            ioapic.mask(gsi);
        }
    }
}
