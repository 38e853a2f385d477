//! Processor features, control registers, MSRs and small instructions.

use raw_cpuid::CpuId;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
use x86_64::registers::model_specific::{Efer, EferFlags, Msr};

/// `IA32_APIC_BASE`.
pub const MSR_APIC_BASE: u32 = 0x1b;
/// `IA32_GS_BASE`.
pub const MSR_GS_BASE: u32 = 0xc000_0101;

/// What the CPU offers that Sluice uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct Features {
    /// Supervisor-mode execution prevention.
    pub has_smep: bool,
    /// Supervisor-mode access prevention.
    pub has_smap: bool,
    /// No-execute pages.
    pub has_nx: bool,
    /// x2APIC mode of the local APIC.
    pub has_x2apic: bool,
    /// Global pages.
    pub has_global_pages: bool,
    /// The TSC runs at a constant rate in every power state.
    pub has_invariant_tsc: bool,
    /// 1 GiB pages.
    pub has_huge_pages: bool,
    /// `fxsave`/`fxrstor` (every x86-64 CPU has them).
    pub has_fxsr: bool,
    /// SSE (every x86-64 CPU has it).
    pub has_sse: bool,
}

/// Reads the features from CPUID.
pub fn features() -> Features {
    let cpuid = CpuId::new();
    let basic = cpuid.get_feature_info();
    let extended = cpuid.get_extended_feature_info();
    let ext_fn = cpuid.get_extended_processor_and_feature_identifiers();
    let power = cpuid.get_advanced_power_mgmt_info();
    Features {
        has_smep: extended.as_ref().is_some_and(|e| e.has_smep()),
        has_smap: extended.as_ref().is_some_and(|e| e.has_smap()),
        has_nx: ext_fn.as_ref().is_some_and(|e| e.has_execute_disable()),
        has_x2apic: basic.as_ref().is_some_and(|b| b.has_x2apic()),
        has_global_pages: basic.as_ref().is_some_and(|b| b.has_pge()),
        has_invariant_tsc: power.as_ref().is_some_and(|p| p.has_invariant_tsc()),
        has_huge_pages: ext_fn.as_ref().is_some_and(|e| e.has_1gib_pages()),
        has_fxsr: basic.as_ref().is_some_and(|b| b.has_fxsave_fxstor()),
        has_sse: basic.as_ref().is_some_and(|b| b.has_sse()),
    }
}

/// The TSC frequency CPUID claims (leaf 0x15, else leaf 0x16), if any.
pub fn cpuid_tsc_hz() -> Option<u64> {
    let cpuid = CpuId::new();
    if let Some(info) = cpuid.get_tsc_info()
        && let Some(hz) = info.tsc_frequency()
        && hz != 0
    {
        return Some(hz);
    }
    let info = cpuid.get_processor_frequency_info()?;
    let mhz = u64::from(info.processor_base_frequency());
    (mhz != 0).then_some(mhz * 1_000_000)
}

/// The processor's brand string, for the boot log.
pub fn brand() -> Option<raw_cpuid::ProcessorBrandString> {
    CpuId::new().get_processor_brand_string()
}

/// Turns on what every CPU runs with: write protection in ring 0, NX,
/// global pages, SMEP/SMAP where present, and x87/SSE for guests.
///
/// Guests get the x87 FPU and SSE as on Xen: CR0.EM and CR0.TS clear (no
/// trap on their use: the scheduler switches the state eagerly, see
/// `fpu`), CR0.MP and CR0.NE set (native x87 error reporting, `#MF`), and
/// CR4.OSFXSR and CR4.OSXMMEXCPT set (SSE instructions, `fxsave`, and
/// `#XM` for unmasked SIMD exceptions). Sluice itself never uses these
/// registers (it is built soft-float). Panics if CPUID denies FXSR or SSE,
/// which every x86-64 CPU has: without them Sluice could not keep one
/// guest's x87 state from the next.
///
/// SMAP makes any hypervisor access to a guest (user) page fault unless the
/// guest-copy accessor opens it with `stac`; SMEP stops the hypervisor from
/// ever executing guest code.
pub fn enable_protections(features: &Features) {
    // SAFETY: setting EFER.NXE only makes bit 63 of page entries meaningful;
    // the boot code set it already and no entry relies on it being off.
    unsafe {
        Efer::update(|flags| flags.insert(EferFlags::NO_EXECUTE_ENABLE));
    }
    // SAFETY: WP makes ring 0 honour read-only pages; the hypervisor never
    // writes through a read-only mapping.
    unsafe {
        Cr0::update(|flags| flags.insert(Cr0Flags::WRITE_PROTECT));
    }
    assert!(
        features.has_fxsr && features.has_sse,
        "the CPU lacks FXSR or SSE: guests' x87/SSE state cannot be switched"
    );
    // SAFETY: EM/TS clear and MP/NE set only change how x87/SSE
    // instructions behave (no trap on use, errors as #MF); Sluice executes
    // none but `fxsave64`/`fxrstor64` (`fpu`), which these settings allow.
    unsafe {
        Cr0::update(|flags| {
            flags.remove(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
            flags.insert(Cr0Flags::MONITOR_COPROCESSOR | Cr0Flags::NUMERIC_ERROR);
        });
    }
    let mut cr4 = Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE;
    if features.has_global_pages {
        cr4 |= Cr4Flags::PAGE_GLOBAL;
    }
    if features.has_smep {
        cr4 |= Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION;
    }
    if features.has_smap {
        cr4 |= Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION;
    }
    // SAFETY: the hypervisor's mappings are all supervisor-only, so SMEP and
    // SMAP forbid nothing it does; PGE only changes TLB retention; OSFXSR
    // and OSXMMEXCPT only enable SSE for code that uses it (guests, and
    // `fpu`'s fxsave64/fxrstor64).
    unsafe {
        Cr4::update(|flags| flags.insert(cr4));
    }
    if features.has_smap {
        crate::guest_copy::note_smap_enabled();
    }
}

/// Whether SMEP and SMAP are on (CR4), for the boot log and self-tests.
pub fn protections_enabled() -> (bool, bool, bool) {
    let cr4 = Cr4::read();
    let nx = Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE);
    (
        nx,
        cr4.contains(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION),
        cr4.contains(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION),
    )
}

/// Reads the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc only reads the counter; CR4.TSD is clear in ring 0.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Reads a model-specific register.
///
/// # Safety
/// The MSR must exist on this CPU (else #GP) and reading it must have no
/// side effect the caller did not intend.
pub unsafe fn read_msr(msr: u32) -> u64 {
    // SAFETY: the caller guarantees the MSR exists and may be read.
    unsafe { Msr::new(msr).read() }
}

/// Writes a model-specific register.
///
/// # Safety
/// The MSR must exist and the value must keep every invariant the rest of
/// the hypervisor relies on (e.g. not move GS base away from the per-CPU
/// block).
pub unsafe fn write_msr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the write is valid and wanted.
    unsafe { Msr::new(msr).write(value) }
}

/// Enables interrupts.
#[inline]
pub fn enable_interrupts() {
    x86_64::instructions::interrupts::enable();
}

/// Disables interrupts.
#[inline]
pub fn disable_interrupts() {
    x86_64::instructions::interrupts::disable();
}

/// Whether interrupts are enabled.
#[inline]
pub fn interrupts_enabled() -> bool {
    x86_64::instructions::interrupts::are_enabled()
}

/// Runs `f` with interrupts off, restoring the previous state afterwards.
#[inline]
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(f)
}

/// Enables interrupts and halts until one arrives (atomically: an
/// interrupt between the two instructions still wakes the `hlt`).
#[inline]
pub fn enable_interrupts_and_halt() {
    x86_64::instructions::interrupts::enable_and_hlt();
}

/// Stops this CPU for good: interrupts off, `hlt` forever (an NMI returns
/// into the loop).
pub fn halt_forever() -> ! {
    loop {
        disable_interrupts();
        x86_64::instructions::hlt();
    }
}

/// The frame pointer of the caller's frame.
#[inline(always)]
pub fn frame_pointer() -> u64 {
    let rbp: u64;
    // SAFETY: reads a register, touches no memory.
    unsafe {
        core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags));
    }
    rbp
}

/// The current stack pointer.
#[inline(always)]
pub fn stack_pointer() -> u64 {
    let rsp: u64;
    // SAFETY: reads a register, touches no memory.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags));
    }
    rsp
}

/// Reads CR2 (the faulting address of the last page fault).
pub fn cr2() -> u64 {
    x86_64::registers::control::Cr2::read_raw()
}

/// Reads CR3: the physical address of the live top-level page table
/// (flag and PCID bits masked off).
#[inline]
pub fn cr3() -> u64 {
    cr3_raw() & 0x000f_ffff_ffff_f000
}

/// This CPU's RFLAGS (the self-tests check that SMAP was closed again:
/// AC clear).
pub fn rflags() -> u64 {
    x86_64::registers::rflags::read_raw()
}

/// CR3 as it is: the root's address with its flag (PWT, PCD) or PCID bits.
#[inline(always)]
pub fn cr3_raw() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 in ring 0 has no side effect.
    unsafe {
        core::arch::asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags));
    }
    value
}

/// Switches to the stack whose top is `stack_top` and calls `next(argument)`
/// there; the old stack is abandoned.
///
/// # Safety
/// `stack_top` must be the 16-byte aligned top of a mapped, writable stack
/// that nothing else uses, and nothing on the old stack may be referenced
/// again.
pub unsafe fn switch_stack(stack_top: u64, argument: u64, next: extern "C" fn(u64) -> !) -> ! {
    // SAFETY: the caller guarantees the new stack is valid and exclusive;
    // `next` never returns, so the abandoned frames are never used again.
    // A zero return address and %rbp end the backtrace there.
    unsafe {
        core::arch::asm!(
            "mov rsp, {stack}",
            "xor ebp, ebp",
            "push 0",
            "jmp {next}",
            stack = in(reg) stack_top,
            next = in(reg) next,
            in("rdi") argument,
            options(noreturn)
        );
    }
}
