//! Bringing up every CPU: the bootstrap processor's tables, stacks and
//! LAPIC, then each application processor with INIT-SIPI-SIPI.
//!
//! Every CPU gets its own GDT/TSS, a 64 KiB kernel stack and 16 KiB IST
//! stacks for #DF, NMI and #MC, each under an unmapped guard page, a LAPIC
//! timer ticking at `TIMER_HZ`, `syscall` set up for guests, and then runs
//! its scheduler loop (`sched`), which idles in `hlt` until it hosts a vcpu.

use alloc::boxed::Box;
use alloc::vec::Vec;

use arch::cpu::{self, Features};
use arch::gdt::{CpuTables, IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI};
use arch::paging::MapError;
use arch::percpu::{self, PerCpu};
use arch::smp::{ApStart, StartError, TrampolinePage};
use arch::stack::Stack;
use arch::{idt, lapic, pit};

use crate::acpi::Madt;
use crate::memory::space;

/// Kernel stack size per CPU, in pages.
pub const STACK_PAGES: u64 = 16;
/// IST stack size, in pages.
pub const IST_PAGES: u64 = 4;
/// Rate of every CPU's periodic LAPIC timer.
pub const TIMER_HZ: u32 = 100;
/// How long an AP may take to report in (TCG is slow).
const AP_TIMEOUT_MICROS: u64 = 5_000_000;

/// The bootstrap CPU's GDT/TSS (static: needed before the heap exists).
static BSP_TABLES: CpuTables = CpuTables::new();

/// A CPU's stacks.
#[derive(Debug)]
pub struct CpuStacks {
    /// The kernel stack.
    pub kernel: Stack,
    /// #DF, NMI and #MC stacks.
    pub ist: [Stack; 3],
}

fn allocate_stacks() -> Result<CpuStacks, MapError> {
    Ok(CpuStacks {
        kernel: space::allocate_stack(STACK_PAGES)?,
        ist: [
            space::allocate_stack(IST_PAGES)?,
            space::allocate_stack(IST_PAGES)?,
            space::allocate_stack(IST_PAGES)?,
        ],
    })
}

/// First thing on the bootstrap CPU: per-CPU block, GDT/TSS (early IST
/// stacks in `.bss`) and IDT, so that any fault from here on is reported.
pub fn init_bsp_early() {
    let bsp = percpu::bsp();
    percpu::install(bsp);
    let loaded = arch::boot::take_early_ist_stacks().map(|stacks| BSP_TABLES.load(stacks));
    if !matches!(loaded, Some(Ok(()))) {
        // Called twice: a bug, and nothing can be printed yet.
        arch::qemu::exit(arch::qemu::ExitCode::Panic);
    }
    bsp.set_tables(&BSP_TABLES);
    idt::load();
}

/// Gives the bootstrap CPU guarded IST stacks and returns a guarded
/// kernel stack for the caller to switch to.
pub fn init_bsp_stacks() -> Result<Stack, MapError> {
    let CpuStacks { kernel, ist } = allocate_stacks()?;
    for (slot, stack) in [IST_DOUBLE_FAULT, IST_NMI, IST_MACHINE_CHECK]
        .into_iter()
        .zip(ist)
    {
        if BSP_TABLES.set_ist(slot, stack).is_err() {
            log::error!("IST {slot}: the boot CPU's tables are not this CPU's");
        }
    }
    Ok(kernel)
}

/// How the LAPICs were set up.
#[derive(Clone, Copy, Debug)]
pub struct ApicSetup {
    /// x2APIC or xAPIC.
    pub mode: lapic::Mode,
    /// The bootstrap CPU's APIC id.
    pub bsp_apic_id: u32,
    /// LAPIC timer ticks per second (divide by 16).
    pub timer_hz: u64,
}

/// Masks the 8259s, enables the bootstrap CPU's LAPIC (x2APIC if the CPU
/// has it), calibrates the LAPIC timer against the TSC and starts it.
pub fn init_bsp_apic(features: &Features, madt: &Madt) -> Result<ApicSetup, MapError> {
    pit::disable_legacy_pic();
    let interface = if features.has_x2apic {
        lapic::Interface::X2Apic
    } else {
        // IA32_APIC_BASE is where this CPU's LAPIC really is; the MADT's
        // address is only a fallback.
        let phys = match lapic::mmio_phys() {
            0 => madt.lapic_address,
            phys => phys,
        };
        lapic::Interface::XApic(space::map_xapic(phys)?)
    };
    let mode = lapic::select(interface);
    lapic::enable();
    let bsp_apic_id = lapic::id();
    percpu::bsp().set_apic_id(bsp_apic_id);
    let timer_hz = lapic::calibrate_timer(10_000);
    lapic::start_periodic_timer(TIMER_HZ);
    arch::guest_entry::init_cpu();
    percpu::bsp().mark_online();
    cpu::enable_interrupts();
    Ok(ApicSetup {
        mode,
        bsp_apic_id,
        timer_hz,
    })
}

/// One application processor that did not come up.
#[derive(Clone, Copy, Debug)]
pub struct ApFailure {
    /// Its APIC id.
    pub apic_id: u32,
    /// Why.
    pub reason: ApFailureReason,
}

/// Why an AP did not come up.
#[derive(Clone, Copy, Debug)]
#[expect(
    dead_code,
    reason = "the fields are read through Debug in the boot log"
)]
pub enum ApFailureReason {
    /// No memory for its stacks or the trampoline tables.
    Memory(MapError),
    /// The start-up sequence failed.
    Start(StartError),
}

/// Starts every enabled processor in the MADT other than the bootstrap one:
/// INIT to all, then start-up IPIs one CPU at a time.
/// Returns the failures (empty if all came up).
pub fn start_application_processors(
    features: &Features,
    madt: &Madt,
    trampoline: &mut TrampolinePage,
    bsp_apic_id: u32,
) -> Vec<ApFailure> {
    let mut failures = Vec::new();
    let trampoline_tables = match space::trampoline_tables() {
        Ok(tables) => tables,
        Err(error) => {
            for processor in madt.processors.iter().filter(|p| p.apic_id != bsp_apic_id) {
                failures.push(ApFailure {
                    apic_id: processor.apic_id,
                    reason: ApFailureReason::Start(error),
                });
            }
            return failures;
        }
    };
    arch::smp::init_all(
        madt.processors
            .iter()
            .map(|processor| processor.apic_id)
            .filter(|&apic_id| apic_id != bsp_apic_id)
            .take(percpu::MAX_CPUS - 1),
    );
    let mut next_index = 1;
    for processor in madt.processors.iter().filter(|p| p.apic_id != bsp_apic_id) {
        if next_index as usize >= percpu::MAX_CPUS {
            log::warn!(
                "CPU with APIC id {} left offline: Sluice supports {} CPUs",
                processor.apic_id,
                percpu::MAX_CPUS
            );
            continue;
        }
        let stacks = match allocate_stacks() {
            Ok(stacks) => stacks,
            Err(error) => {
                failures.push(ApFailure {
                    apic_id: processor.apic_id,
                    reason: ApFailureReason::Memory(error),
                });
                continue;
            }
        };
        let cpu: &'static PerCpu = Box::leak(Box::new(PerCpu::new(next_index, processor.apic_id)));
        let start = ApStart {
            cpu,
            tables: CpuTables::new_leaked(),
            kernel_stack: stacks.kernel,
            ist: stacks.ist,
            features: *features,
            next: ap_main,
        };
        // Indexes stay unique even if a CPU fails to start (and shows up
        // late).
        next_index += 1;
        match arch::smp::start_ap(
            trampoline,
            &trampoline_tables,
            processor.apic_id,
            start,
            AP_TIMEOUT_MICROS,
        ) {
            Ok(()) => {
                // Wait for the AP's own "online" (after its timer starts).
                let deadline = cpu::rdtsc() + arch::tsc::micros_to_ticks(AP_TIMEOUT_MICROS);
                while !cpu.is_online() && cpu::rdtsc() < deadline {
                    core::hint::spin_loop();
                }
            }
            Err(error) => failures.push(ApFailure {
                apic_id: processor.apic_id,
                reason: ApFailureReason::Start(error),
            }),
        }
    }
    failures
}

/// Where an AP goes once `arch` set it up: start its timer, report in, idle.
fn ap_main(cpu: &'static PerCpu) -> ! {
    lapic::start_periodic_timer(TIMER_HZ);
    arch::guest_entry::init_cpu();
    cpu.mark_online();
    log::info!("cpu{} online (APIC id {})", cpu.index(), cpu.apic_id());
    crate::sched::start_pcpu()
}

/// Idles: interrupts on, `hlt` until the next one, forever.
pub fn idle() -> ! {
    loop {
        cpu::enable_interrupts_and_halt();
    }
}
