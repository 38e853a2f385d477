//! Debug keys on the serial console, as Xen has them: COM1's receive
//! interrupt (ISA IRQ 4, routed through the IOAPIC to the boot CPU) reads
//! each key and runs its handler, which prints to the console.
//!
//! - `h`: the keys;
//! - `e`: every domain's event channels, in Xen's `'e'` format
//!   (evtchn-core's `dump_domain`);
//! - `q`: domains and vcpus (state, the pCPU each is on now, upcall
//!   pending and mask, the pCPUs `cpus=` allows, how many times it moved
//!   to another pCPU);
//! - `r`: the pCPUs' run queues (each vcpu is in the queue of the pCPU
//!   it is on now).
//!
//! As on Xen, a key that dumps also raises VIRQ_DEBUG on every vcpu of every
//! domain, so a guest that bound it can dump its own view. The handlers run
//! in the interrupt handler: on Sluice a hypercall runs with interrupts off,
//! so the interrupted code on this CPU holds no event-channel lock, and the
//! console lock is only ever held with interrupts off.

use core::fmt::{self, Write};

use arch::serial::{COM1, Serial};
use evtchn_core::{DomId, VcpuId, Virq};

use crate::domain::{self, MAX_DOMAINS};

/// The ISA IRQ of COM1.
const COM1_IRQ: u8 = 4;
/// The vector it arrives on.
const VECTOR: u8 = arch::vectors::LEGACY_IRQ_BASE + COM1_IRQ;

/// One key and what it does.
struct Key {
    key: u8,
    what: &'static str,
    run: fn(),
}

const KEYS: [Key; 4] = [
    Key {
        key: b'e',
        what: "dump evtchn info",
        run: dump_event_channels,
    },
    Key {
        key: b'h',
        what: "show this message",
        run: list_keys,
    },
    Key {
        key: b'q',
        what: "dump domain (and guest debug) info",
        run: dump_domains,
    },
    Key {
        key: b'r',
        what: "dump run queues",
        run: dump_run_queues,
    },
];

/// Routes COM1's receive interrupt to this CPU and turns it on.
pub fn init() {
    arch::idt::set_handler(VECTOR, on_serial_interrupt);
    let apic_id = arch::percpu::current().apic_id();
    match crate::irq::route_legacy_irq(COM1_IRQ, VECTOR, apic_id) {
        Some(gsi) => {
            Serial::new(COM1).enable_receive_interrupt();
            log::info!(
                "debug keys: COM1 IRQ {COM1_IRQ} -> GSI {gsi} -> vector {VECTOR:#x}; press 'h' for the list"
            );
        }
        None => log::warn!("debug keys: no IOAPIC serves ISA IRQ {COM1_IRQ}; keys are off"),
    }
}

fn on_serial_interrupt(_frame: &mut arch::idt::InterruptFrame) {
    let serial = Serial::new(COM1);
    // Bounded: a stuck "data ready" bit must not hold the CPU forever.
    for _ in 0..64 {
        let Some(key) = serial.read_byte() else {
            break;
        };
        handle(key);
    }
}

fn handle(key: u8) {
    let Some(entry) = KEYS.iter().find(|entry| entry.key == key) else {
        if key.is_ascii_graphic() {
            log::info!(
                "'{}' pressed -> no such key ('h' lists them)",
                char::from(key)
            );
        }
        return;
    };
    log::info!("'{}' pressed -> {}", char::from(key), entry.what);
    (entry.run)();
    if key != b'h' {
        raise_virq_debug();
    }
}

fn list_keys() {
    for entry in &KEYS {
        log::info!(" key '{}': {}", char::from(entry.key), entry.what);
    }
}

/// Every domain the registry holds now (without spinning).
fn each_domain(mut visit: impl FnMut(&domain::Domain)) {
    for id in 0..MAX_DOMAINS {
        if let Some(domain) = u16::try_from(id)
            .ok()
            .and_then(|id| domain::try_get(DomId(id)))
        {
            visit(&domain);
        }
    }
}

fn raise_virq_debug() {
    let events = crate::events::domains();
    each_domain(|domain| {
        for vcpu in domain.vcpus.iter() {
            match domain.events.get() {
                Some(handle) => events.send_vcpu_virq_to(handle, vcpu.id, Virq::DEBUG),
                None => events.send_vcpu_virq(domain.id, vcpu.id, Virq::DEBUG),
            }
        }
    });
}

fn dump_event_channels() {
    let events = crate::events::domains();
    each_domain(|domain| {
        let mut out = LineLog::default();
        let _ = events.dump_domain(domain.id, &mut out);
        out.finish();
    });
}

fn dump_domains() {
    each_domain(|domain| {
        log::info!(
            "General information for domain {}: privileged={} shutdown={} vcpus={}",
            domain.id.0,
            u8::from(domain.is_privileged()),
            domain.shutdown_reason().map_or(
                arrayvec::ArrayString::<16>::from("no").unwrap_or_default(),
                |reason| {
                    let mut text = arrayvec::ArrayString::new();
                    let _ = write!(text, "{reason:?}");
                    text
                }
            ),
            domain.vcpus.len()
        );
        for vcpu in domain.vcpus.iter() {
            let (pending, mask, selector) = domain
                .shared_info
                .vcpu_info
                .get(vcpu.id.0 as usize)
                .map_or((0, 0, 0), |info| {
                    // Relaxed: a snapshot for a person to read.
                    use core::sync::atomic::Ordering::Relaxed;
                    (
                        info.evtchn_upcall_pending.load(Relaxed),
                        info.evtchn_upcall_mask.load(Relaxed),
                        info.evtchn_pending_sel.load(Relaxed),
                    )
                });
            log::info!(
                "    VCPU{}: CPU{} state={:?} upcall_pend={pending:02x} upcall_mask={mask:02x} pending_sel={selector:#x} cpu_hard_affinity={{{}}} migrations={}",
                vcpu.id.0,
                vcpu.pcpu(),
                vcpu.state(),
                domain.affinity,
                vcpu.migrations.load(core::sync::atomic::Ordering::Relaxed)
            );
        }
    });
}

fn dump_run_queues() {
    crate::sched::for_each_run_queue(|pcpu, current, queue| {
        let mut line = arrayvec::ArrayString::<200>::new();
        let _ = write!(line, "CPU[{pcpu:02}] current=");
        let _ = write_vcpu(&mut line, current);
        let _ = write!(line, ", {} vcpu(s):", queue.len());
        for &entry in queue {
            let _ = line.try_push(' ');
            let _ = write_vcpu(&mut line, Some(entry));
        }
        log::info!("{line}");
    });
}

fn write_vcpu(out: &mut impl Write, vcpu: Option<(DomId, VcpuId)>) -> fmt::Result {
    match vcpu {
        Some((domain, vcpu)) => write!(out, "d{}v{}", domain.0, vcpu.0),
        None => write!(out, "idle"),
    }
}

/// A `fmt::Write` that logs each complete line.
#[derive(Default)]
struct LineLog {
    line: arrayvec::ArrayString<160>,
}

impl LineLog {
    fn finish(&mut self) {
        if !self.line.is_empty() {
            log::info!("{}", self.line);
            self.line.clear();
        }
    }
}

impl Write for LineLog {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for character in text.chars() {
            if character == '\n' {
                self.finish();
            } else if self.line.try_push(character).is_err() {
                self.finish();
                let _ = self.line.try_push(character);
            }
        }
        Ok(())
    }
}
