//! vcpu_op (hypercall 24, spec §7.11) and set_timer_op (15, spec §7.12).

use core::sync::atomic::Ordering;

use arch::gdt::{FLAT_RING3_CS64, FLAT_RING3_DS};
use arch::guest_entry::is_canonical;
use arch::idt::InterruptFrame;
use evtchn_core::Errno;
use evtchn_core::abi::VcpuInfo;

use super::{Call, GuestIn, vcpu_of};
use crate::domain::{self, ShutdownReason, Vcpu, VcpuState};
use crate::timers;

const VCPUOP_INITIALISE: u64 = 0;
const VCPUOP_UP: u64 = 1;
const VCPUOP_DOWN: u64 = 2;
const VCPUOP_IS_UP: u64 = 3;
const VCPUOP_SET_PERIODIC_TIMER: u64 = 6;
const VCPUOP_STOP_PERIODIC_TIMER: u64 = 7;
const VCPUOP_SET_SINGLESHOT_TIMER: u64 = 8;
const VCPUOP_STOP_SINGLESHOT_TIMER: u64 = 9;
const VCPUOP_REGISTER_VCPU_INFO: u64 = 10;

/// Shortest periodic timer (Xen: 1 ms).
const MIN_PERIOD_NS: u64 = 1_000_000;
/// set_timer_op deadlines further ahead than this fire in 100 ms instead.
const TIMER_OP_MAX_AHEAD_NS: u64 = 1 << 50;
const TIMER_OP_FALLBACK_NS: u64 = 100_000_000;

/// vcpu_guest_context layout (spec §7.11).
mod context {
    pub const SIZE: usize = 5168;
    pub const FPU_CTXT: usize = 0;
    pub const FPU_CTXT_SIZE: usize = 512;
    pub const FLAGS: usize = 512;
    pub const USER_REGS: usize = 520;
    pub const KERNEL_SP: usize = 4976;
    pub const CTRLREG3: usize = 4984 + 3 * 8;
    pub const CTRLREG1: usize = 4984 + 8;
    pub const EVENT_CALLBACK: usize = 5112;
    pub const FAILSAFE_CALLBACK: usize = 5120;
    pub const SYSCALL_CALLBACK: usize = 5128;
    pub const VGCF_I387_VALID: u64 = 1 << 0;
    pub const VGCF_IN_KERNEL: u64 = 1 << 2;
    pub const VGCF_ONLINE: u64 = 1 << 5;
}

fn word(bytes: &[u8], offset: usize) -> u64 {
    let mut value = [0u8; 8];
    if let Some(source) = bytes.get(offset..offset + 8) {
        value.copy_from_slice(source);
    }
    u64::from_le_bytes(value)
}

/// `vcpu_op(cmd, vcpuid, arg)`.
pub fn vcpu_op(call: &mut Call<'_>) -> Result<u64, Errno> {
    let (command, argument) = (call.argument(0), call.guest_in(2));
    let target = vcpu_of(call.domain, call.argument(1))?;
    let is_self = target.id == call.vcpu.id;
    match command {
        VCPUOP_INITIALISE => initialise(call, argument),
        VCPUOP_UP => {
            if !target.is_initialised.load(Ordering::Acquire) {
                return Err(Errno::EINVAL);
            }
            // A vcpu initialised with VGCF_online is up already: as in
            // Xen, VCPUOP_up wakes only a vcpu it brings up, so it stays
            // unwoken (`Vcpu::up_unwoken`).
            if target.state() == VcpuState::Down && !target.up_unwoken.load(Ordering::Acquire) {
                target.set_state(VcpuState::Running);
                crate::sched::kick(target);
            }
            Ok(0)
        }
        VCPUOP_DOWN => {
            let others_up = call
                .domain
                .vcpus
                .iter()
                .filter(|vcpu| vcpu.id != target.id)
                .any(is_up);
            if !others_up {
                domain::shut_down(call.domain, ShutdownReason::Poweroff);
                return Ok(0);
            }
            // Down from up-but-unwoken: a VCPUOP_up now wakes it.
            target.up_unwoken.store(false, Ordering::Release);
            // A vcpu taking itself down leaves on its way back to the guest,
            // which records where VCPUOP_up resumes it (rax = 0 by then).
            target.set_state(VcpuState::Down);
            // The return path looks at the Down state only when the
            // generation moved (`hypercall::return_to_guest`): bump it after
            // the state, before the kick. AcqRel: pairs with its Acquire.
            call.domain.tlb_generation.fetch_add(1, Ordering::AcqRel);
            crate::sched::kick(target);
            Ok(0)
        }
        VCPUOP_IS_UP => Ok(u64::from(is_up(target))),
        VCPUOP_SET_PERIODIC_TIMER => {
            let mut bytes = [0u8; 8];
            argument.read(&mut bytes)?;
            let period = u64::from_le_bytes(bytes);
            if period < MIN_PERIOD_NS || period > i64::MAX as u64 {
                return Err(Errno::EINVAL);
            }
            timers::set_periodic(call.domain, target, period, is_self);
            Ok(0)
        }
        VCPUOP_STOP_PERIODIC_TIMER => {
            timers::stop_periodic(target);
            Ok(0)
        }
        VCPUOP_SET_SINGLESHOT_TIMER => {
            if !is_self {
                return Err(Errno::EINVAL);
            }
            let mut bytes = [0u8; 16];
            argument.read(&mut bytes)?;
            // VCPU_SSHOTTMR_future is ignored (Xen 4.17.3 on): a past
            // deadline fires at once.
            timers::set_singleshot(call.domain, target, word(&bytes, 0));
            Ok(0)
        }
        VCPUOP_STOP_SINGLESHOT_TIMER => {
            if !is_self {
                return Err(Errno::EINVAL);
            }
            target.singleshot_deadline_ns.store(0, Ordering::Relaxed);
            Ok(0)
        }
        VCPUOP_REGISTER_VCPU_INFO => register_vcpu_info(call, target, argument),
        _ => Err(Errno::ENOSYS),
    }
}

/// Whether VCPUOP_is_up calls `vcpu` up (Xen: its down flag is clear):
/// running, blocked, or initialised with VGCF_online and not yet woken.
fn is_up(vcpu: &Vcpu) -> bool {
    matches!(vcpu.state(), VcpuState::Running | VcpuState::Blocked)
        || vcpu.up_unwoken.load(Ordering::Acquire)
}

/// VCPUOP_register_vcpu_info (spec §3.6, Xen 4.17's checks in order): move
/// the vcpu's vcpu_info into a frame of the guest's, then raise the
/// spurious upcall Xen always raises.
fn register_vcpu_info(call: &mut Call<'_>, target: &Vcpu, argument: GuestIn) -> Result<u64, Errno> {
    let mut bytes = [0u8; 16];
    argument.read(&mut bytes)?;
    let mfn = word(&bytes, 0);
    let offset = word(&bytes, 8) & 0xffff_ffff;
    if offset > 4096 - 64 || !offset.is_multiple_of(8) {
        return Err(Errno::ENXIO);
    }
    let domain = call.domain;
    let Some(area) = domain.vcpu_info_areas.get(target.id.0 as usize) else {
        return Err(Errno::EINVAL);
    };
    if area.load(Ordering::Acquire) != 0 {
        return Err(Errno::EINVAL);
    }
    if target.id != call.vcpu.id && (target.state() != VcpuState::Down || is_up(target)) {
        return Err(Errno::EINVAL);
    }
    let phys = mfn.checked_mul(4096).ok_or(Errno::EINVAL)?;
    if domain.is_page_table_frame(phys) {
        return Err(Errno::EINVAL);
    }
    let frame = domain.frame_at(phys).ok_or(Errno::EINVAL)?;
    let new = frame.vcpu_info_at(offset).ok_or(Errno::ENXIO)?;
    // Tell evtchn-core first: until now its senders reach this vcpu's
    // legacy slot in shared_info at a fixed offset, without asking where
    // the vcpu_info is. Before the publication below and the `~0` store
    // that makes the guest rescan: a sender that still found the legacy
    // slot did its pending test-and-set before that store (see
    // `evtchn_core::SharedInfoView::vcpu_info`). Only now that every
    // check passed; a racing registration that loses the compare-and-swap
    // below means the other one moved it.
    if let Some(events) = domain.events.get() {
        events.vcpu_info_moves(target.id);
    }
    // Copy the current vcpu_info over (vcpus past the legacy slots start
    // zeroed and masked), publish its time record, then switch.
    match domain.vcpu_info(target.id) {
        Some(old) => copy_vcpu_info(old, new),
        None => new.evtchn_upcall_mask.store(1, Ordering::SeqCst),
    }
    crate::time::publish_vcpu_time(new);
    // SeqCst (Release would do for the contents): pairs with the SeqCst
    // load in `domain::vcpu_info_in`, in the single order with evtchn-core's
    // pending test-and-sets and the `~0` store below, so that a sender that
    // still finds the legacy slot set its bit before that store (see
    // `evtchn_core::SharedInfoView::vcpu_info`).
    if area
        .compare_exchange(0, phys | offset, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return Err(Errno::EINVAL);
    }
    crate::running::refresh_vcpu_info(domain, target);
    if target.id != call.vcpu.id {
        // The target is down, but may not have left its pCPU yet: a
        // VCPUOP_up before it does lets it run on with that pCPU's running
        // slot naming the old vcpu_info, where no event would reach it any
        // more. The generation bump makes it look again on its next way
        // back to the guest (`hypercall::catch_up`); AcqRel: ordered after
        // the area's publication above.
        domain.tlb_generation.fetch_add(1, Ordering::AcqRel);
    }
    new.evtchn_pending_sel.store(u64::MAX, Ordering::SeqCst);
    crate::events::domains().vcpu_mark_events_pending(domain.id, target.id);
    Ok(0)
}

fn copy_vcpu_info(old: &VcpuInfo, new: &VcpuInfo) {
    let order = Ordering::SeqCst;
    new.evtchn_upcall_pending
        .store(old.evtchn_upcall_pending.load(order), order);
    new.evtchn_upcall_mask
        .store(old.evtchn_upcall_mask.load(order), order);
    new.evtchn_pending_sel
        .store(old.evtchn_pending_sel.load(order), order);
    new.arch_cr2.store(old.arch_cr2.load(order), order);
}

/// VCPUOP_initialise: the vcpu's first registers and callbacks.
///
/// As Xen 4.17's `default_initialise_vcpu()`: the context is read from
/// the guest first (-EFAULT before anything else), then, under the
/// target's `initialise_lock` (Xen's domain lock), an initialised target
/// answers -EEXIST and any other one is checked and set up whole. Two
/// vcpus initialising the same vcpu at once are so serialised: one sets
/// every register, callback and the x87/SSE state, the other finds it
/// initialised and changes nothing. A context refused with -EINVAL changes
/// nothing either (every check comes before the first store). With
/// VGCF_online in the context's flags the vcpu is up but not woken
/// (`Vcpu::up_unwoken`).
/// VCPUOP_up needs no lock: the Release store of `is_initialised`, last,
/// publishes everything set here to whoever sees it set.
fn initialise(call: &mut Call<'_>, argument: GuestIn) -> Result<u64, Errno> {
    let target = vcpu_of(call.domain, call.argument(1))?;
    let mut bytes = alloc::vec![0u8; context::SIZE];
    argument.read(&mut bytes)?;
    let _serialised = target.initialise_lock.lock();
    // Relaxed would do under the lock (only its holder stores the flag);
    // Acquire keeps the one load every reader uses.
    if target.is_initialised.load(Ordering::Acquire) {
        return Err(Errno::EEXIST);
    }
    let (frame, fpu) = checked_context(call.domain, &bytes)?;
    // The target has never run (it is not initialised, so no VCPUOP_up
    // took it): no pCPU holds its claim, and only this lock's holder
    // writes these.
    *target.fpu.lock() = fpu;
    crate::upcall::register_event_callback(target, word(&bytes, context::EVENT_CALLBACK));
    target
        .failsafe_callback
        .store(word(&bytes, context::FAILSAFE_CALLBACK), Ordering::Relaxed);
    *target.initial_frame.lock() = Some(frame);
    // VGCF_online marks the vcpu up, and wakes nothing (Xen 4.17:
    // arch_set_info_guest() clears the down flag; no vcpu_wake()). Set
    // before the Release store below, so that whoever sees the vcpu
    // initialised sees it up. Without the flag it stays down (it is: no
    // VCPUOP_up takes an uninitialised vcpu).
    if word(&bytes, context::FLAGS) & context::VGCF_ONLINE != 0 {
        target.up_unwoken.store(true, Ordering::Release);
    }
    target.is_initialised.store(true, Ordering::Release);
    Ok(0)
}

/// The registers and x87/SSE state of a VCPUOP_initialise context in
/// `bytes`, after Xen 4.17's checks (arch_set_info_guest()): every
/// address the vcpu may be sent to canonical, a kernel-mode start or a
/// user-mode one with a kernel page table, and Sluice's page tables.
fn checked_context(
    domain: &domain::Domain,
    bytes: &[u8],
) -> Result<(InterruptFrame, arch::fpu::FxArea), Errno> {
    let regs = |index: usize| word(bytes, context::USER_REGS + index * 8);
    let rip = regs(16);
    let rsp = regs(19);
    let rflags = regs(18);
    let flags = word(bytes, context::FLAGS);
    let addresses = [
        rip,
        rsp,
        word(bytes, context::KERNEL_SP),
        word(bytes, context::EVENT_CALLBACK),
        word(bytes, context::FAILSAFE_CALLBACK),
        word(bytes, context::SYSCALL_CALLBACK),
    ];
    if !addresses.iter().all(|&address| is_canonical(address)) {
        return Err(Errno::EINVAL);
    }
    if flags & context::VGCF_IN_KERNEL == 0 && word(bytes, context::CTRLREG1) == 0 {
        return Err(Errno::EINVAL);
    }
    // Sluice's domains keep the page tables the builder made.
    if word(bytes, context::CTRLREG3) & !0xfff != domain.root {
        return Err(Errno::EINVAL);
    }
    let frame = InterruptFrame {
        r15: regs(0),
        r14: regs(1),
        r13: regs(2),
        r12: regs(3),
        rbp: regs(4),
        rbx: regs(5),
        r11: regs(6),
        r10: regs(7),
        r9: regs(8),
        r8: regs(9),
        rax: regs(10),
        rcx: regs(11),
        rdx: regs(12),
        rsi: regs(13),
        rdi: regs(14),
        rip,
        cs: u64::from(FLAT_RING3_CS64),
        // Xen 4.17 moves IOPL to the virtual IOPL and forces IF here
        // (arch_set_info_guest()), then clears VM on the way out, as on
        // every exit: the frame holds what the vcpu will run with. The
        // given IOPL is dropped: Sluice keeps no virtual IOPL
        // (PHYSDEVOP_set_iopl is checked and ignored, physdev.rs).
        rflags: super::callbacks::guest_rflags(rflags),
        rsp,
        ss: u64::from(FLAT_RING3_DS),
        vector: 0,
        error_code: 0,
    };
    Ok((frame, initial_fpu(bytes, flags)))
}

/// The x87/SSE state a vcpu starts from (Xen 4.17: arch_set_info_guest()
/// -> vcpu_setup_fpu()): with VGCF_i387_valid, the context's FXSAVE image,
/// with an `MXCSR` this CPU would refuse handled as Xen's restore does
/// (`FxArea::from_guest`); without it, the reset state. The target has
/// never run (it is not initialised), so no pCPU holds its registers.
fn initial_fpu(bytes: &[u8], flags: u64) -> arch::fpu::FxArea {
    let image = bytes
        .get(context::FPU_CTXT..context::FPU_CTXT + context::FPU_CTXT_SIZE)
        .and_then(|image| <&[u8; context::FPU_CTXT_SIZE]>::try_from(image).ok());
    match image {
        Some(image) if flags & context::VGCF_I387_VALID != 0 => {
            arch::fpu::FxArea::from_guest(image, arch::fpu::mxcsr_mask())
        }
        _ => arch::fpu::FxArea::reset(),
    }
}

/// `set_timer_op(deadline_ns)`: 0 cancels the singleshot timer; a negative
/// or far-future deadline fires in 100 ms instead (spec §7.12).
pub fn set_timer_op(call: &mut Call<'_>) -> Result<u64, Errno> {
    let deadline = call.argument(0);
    if deadline == 0 {
        call.vcpu.singleshot_deadline_ns.store(0, Ordering::Relaxed);
        return Ok(0);
    }
    let now = crate::time::now_ns();
    let deadline = if (deadline as i64) < 0 || deadline > now.saturating_add(TIMER_OP_MAX_AHEAD_NS)
    {
        now + TIMER_OP_FALLBACK_NS
    } else {
        deadline
    };
    timers::set_singleshot(call.domain, call.vcpu, deadline);
    Ok(0)
}
