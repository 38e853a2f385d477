//! The start-up sequence of the bootstrap processor.
//!
//! Stage 1 runs on the boot stack under the boot page tables: descriptor
//! tables, multiboot information, console, TSC, frames, the hypervisor's
//! page tables, heap, guarded stacks. Stage 2 runs on the guarded stack:
//! ACPI, LAPIC and timer, IOAPIC, the other CPUs, then the self-test or
//! the (for now empty) domain list.

use arch::qemu::{self, ExitCode};

use crate::bootinfo::{self, BootInfo};
use crate::cmdline::{self, Options};
use crate::memory::{frames, heap, space};
use crate::{acpi, console, cpus, irq};

/// What stage 1 hands to stage 2.
struct Handoff {
    info: BootInfo,
    options: Options,
    features: arch::cpu::Features,
}

static HANDOFF: spin::Once<Handoff> = spin::Once::new();

fn fail(message: core::fmt::Arguments<'_>) -> ! {
    log::error!("{message}");
    qemu::exit(ExitCode::Fail)
}

/// Stage 1 (boot stack, boot page tables).
pub fn start(magic: u32, multiboot_info: u32) -> ! {
    arch::tsc::mark_boot();
    cpus::init_bsp_early();
    // Errors only until the command line says otherwise, so that a fault
    // while reading the loader's data is still reported.
    console::init(log::LevelFilter::Error);
    let parsed = bootinfo::parse(magic, multiboot_info);
    let options = match &parsed {
        Ok(info) => cmdline::parse(&info.cmdline),
        Err(_) => Options::default(),
    };
    // Measure the TSC before the first line, so every line has a time.
    let tsc_hz = arch::tsc::calibrate();
    console::set_level(options.log_level);
    console::set_colour(options.console_colour);
    log::info!("Sluice hypervisor {}", env!("CARGO_PKG_VERSION"));
    let info = match parsed {
        Ok(info) => info,
        Err(error) => fail(format_args!("cannot boot: {error:?}")),
    };
    log::info!("command line: \"{}\"", info.cmdline);
    if !options.rejected.is_empty() {
        log::warn!(
            "ignoring unknown or malformed options: {}",
            options.rejected
        );
    }

    match arch::cpu::cpuid_tsc_hz() {
        Some(claimed) => log::info!(
            "TSC: {} kHz measured against the PIT (CPUID says {} kHz)",
            tsc_hz / 1000,
            claimed / 1000
        ),
        None => log::info!("TSC: {} kHz measured against the PIT", tsc_hz / 1000),
    }
    let features = arch::cpu::features();
    if let Some(brand) = arch::cpu::brand() {
        log::info!("CPU: {}", brand.as_str().trim());
    }
    log::info!(
        "CPU features: nx={} smep={} smap={} x2apic={} pge={} invariant-tsc={} 1g-pages={}",
        features.has_nx,
        features.has_smep,
        features.has_smap,
        features.has_x2apic,
        features.has_global_pages,
        features.has_invariant_tsc,
        features.has_huge_pages
    );

    for region in &info.memory {
        log::info!(
            "memory {:#014x}-{:#014x} {:>6} KiB {}",
            region.start,
            region.end,
            (region.end - region.start) / 1024,
            region.kind.name()
        );
    }
    if info.dropped_regions != 0 {
        log::warn!("memory map: {} entries dropped", info.dropped_regions);
    }
    let image = arch::boot::image_layout();
    let image_phys = (
        arch::layout::image_virt_to_phys(image.start),
        arch::layout::image_virt_to_phys(image.end),
    );
    log::info!(
        "image {:#x}-{:#x} at {:#x}",
        image_phys.0,
        image_phys.1,
        image.start
    );
    let mut in_use = arrayvec::ArrayVec::<(u64, u64), { bootinfo::MAX_MODULES + 1 }>::new();
    in_use.push(image_phys);
    for module in &info.modules {
        let _ = in_use.try_push((module.start, module.end));
    }
    let frame_stats = frames::init(&info.memory, &in_use);
    log::info!(
        "frames: {} free ({} MiB)",
        frame_stats.free_frames,
        (frame_stats.free_frames * 4096) >> 20
    );

    let space_info = match space::build_and_activate(&info.memory) {
        Ok(space_info) => space_info,
        Err(error) => fail(format_args!(
            "cannot build the hypervisor page tables: {error:?}"
        )),
    };
    arch::cpu::enable_protections(&features);
    let (nx, smep, smap) = arch::cpu::protections_enabled();
    log::info!(
        "paging: own tables at {:#x}, direct map of {} MiB at {:#x}; nx={nx} smep={smep} smap={smap}",
        space_info.root,
        space_info.direct_map_bytes >> 20,
        arch::layout::DIRECT_MAP_BASE
    );
    match heap::init() {
        Ok((start, end)) => log::info!("heap: {} MiB at {start:#x}-{end:#x}", (end - start) >> 20),
        Err(error) => fail(format_args!("cannot set up the heap: {error:?}")),
    }
    let stack = match cpus::init_bsp_stacks() {
        Ok(stack) => stack,
        Err(error) => fail(format_args!(
            "cannot allocate the boot CPU's stacks: {error:?}"
        )),
    };
    HANDOFF.call_once(|| Handoff {
        info,
        options,
        features,
    });
    arch::stack::run_on(stack, 0, stage2)
}

/// Stage 2 (the bootstrap CPU's guarded stack).
extern "C" fn stage2(_: u64) -> ! {
    let Some(handoff) = HANDOFF.get() else {
        fail(format_args!("stage 2 without a hand-off"))
    };
    let boot_stack_used = arch::boot::boot_stack_high_water();
    log::debug!(
        "boot stack: {} KiB of {} KiB used",
        boot_stack_used / 1024,
        arch::boot::BOOT_STACK_SIZE / 1024
    );
    // The boot stack has no guard page: if it reached its last page it
    // may have run over `.bss` below it, so stop rather than trust memory.
    if boot_stack_used + 4096 > arch::boot::BOOT_STACK_SIZE {
        fail(format_args!(
            "the boot stack overflowed ({boot_stack_used} bytes used)"
        ));
    }
    let (rsdp, madt) = match acpi::discover() {
        Ok(found) => found,
        Err(error) => fail(format_args!("ACPI: {error:?}")),
    };
    log::info!(
        "ACPI: RSDP at {:#x} revision {}, {} at {:#x}",
        rsdp.address,
        rsdp.revision,
        if rsdp.is_xsdt { "XSDT" } else { "RSDT" },
        rsdp.root_table
    );
    log::info!(
        "MADT: {} CPUs (APIC ids {:?}), {} IOAPIC(s), LAPIC at {:#x}",
        madt.processors.len(),
        madt.processors
            .iter()
            .map(|cpu| cpu.apic_id)
            .collect::<alloc::vec::Vec<_>>(),
        madt.ioapics.len(),
        madt.lapic_address
    );
    for entry in &madt.overrides {
        log::debug!(
            "MADT: ISA IRQ {} -> GSI {} flags {:#x}",
            entry.irq,
            entry.gsi,
            entry.flags
        );
    }

    let apic = match cpus::init_bsp_apic(&handoff.features, &madt) {
        Ok(apic) => apic,
        Err(error) => fail(format_args!("cannot map the LAPIC: {error:?}")),
    };
    log::info!(
        "LAPIC: {:?} mode, boot CPU APIC id {}, timer {} kHz (divide by 16), ticking at {} Hz",
        apic.mode,
        apic.bsp_apic_id,
        apic.timer_hz / 1000,
        cpus::TIMER_HZ
    );
    let (ioapic_count, inputs) = irq::init(&madt);
    for entry in &madt.ioapics {
        log::info!(
            "IOAPIC {} at {:#x}, GSI base {}",
            entry.id,
            entry.address,
            entry.gsi_base
        );
    }
    log::info!("IOAPIC: {ioapic_count} mapped, {inputs} inputs, all masked");

    let Some(mut trampoline) = space::claim_trampoline_page(&handoff.info.memory) else {
        fail(format_args!(
            "the AP trampoline page {:#x} is not usable RAM",
            arch::smp::TRAMPOLINE_PHYS
        ))
    };
    let failures = cpus::start_application_processors(
        &handoff.features,
        &madt,
        &mut trampoline,
        apic.bsp_apic_id,
    );
    for failure in &failures {
        log::error!(
            "CPU with APIC id {} did not come up: {:?}",
            failure.apic_id,
            failure.reason
        );
    }
    let online = arch::percpu::online_count();
    let boot_ticks = arch::cpu::rdtsc().saturating_sub(arch::tsc::boot_tsc());
    let micros = arch::tsc::ticks_to_micros(boot_ticks);
    log::info!(
        "all CPUs up: {online} of {} online, {}.{:06} s after entry ({boot_ticks} TSC cycles)",
        madt.processors.len(),
        micros / 1_000_000,
        micros % 1_000_000
    );

    for (index, module) in handoff.info.modules.iter().enumerate() {
        log::info!(
            "module {index}: {:#x}-{:#x} \"{}\"",
            module.start,
            module.end,
            module.string
        );
    }
    let stats = frames::stats();
    log::info!(
        "frames: {} free of {}",
        stats.free_frames,
        stats.managed_frames
    );

    if let Some(name) = &handoff.options.selftest {
        run_selftest(name, &madt);
    }
    if !failures.is_empty() {
        fail(format_args!("{} CPU(s) failed to start", failures.len()));
    }
    if handoff.info.modules.is_empty() {
        log::info!("no domains run yet: no modules were given; exiting");
        qemu::exit(ExitCode::Pass)
    }
    start_domains(&handoff.info.modules, &handoff.options.static_channels)
}

/// Builds a domain from every module, then runs them; a module that does
/// not build is reported (naming it and why) and the others still run.
fn start_domains(
    modules: &[crate::bootinfo::Module],
    static_channels: &[crate::static_evtchn::StaticChannel],
) -> ! {
    arch::guest_entry::set_hooks(arch::guest_entry::GuestHooks {
        hypercall: crate::hypercall::on_hypercall,
        exception: crate::hypercall::on_guest_exception,
        before_return: crate::hypercall::before_return,
    });
    arch::idt::set_handler(arch::vectors::TIMER, crate::timers::on_tick);
    let mut built = 0;
    for (index, module) in modules.iter().enumerate() {
        match crate::domain::builder::build(index, module) {
            Ok(_) => built += 1,
            Err(error) => {
                crate::domain::note_failed_build();
                log::error!("module {index} \"{}\": not started: {error}", module.string);
            }
        }
    }
    if built == 0 {
        fail(format_args!("no domain could be built; exiting"));
    }
    crate::static_evtchn::connect_all(static_channels);
    crate::debug_keys::init();
    crate::sched::release_domains();
    for index in 0..arch::percpu::count() {
        if let Some(cpu) = arch::percpu::by_index(index)
            && index != arch::percpu::current().index()
        {
            arch::smp::kick(cpu);
        }
    }
    crate::sched::start_pcpu()
}

#[cfg(feature = "selftest")]
fn run_selftest(name: &str, madt: &acpi::Madt) -> ! {
    let code = crate::selftest::run(name, madt);
    qemu::exit(code)
}

#[cfg(not(feature = "selftest"))]
fn run_selftest(name: &str, _madt: &acpi::Madt) -> ! {
    fail(format_args!(
        "selftest={name} given, but this build has no self-tests (build with --features selftest)"
    ))
}
