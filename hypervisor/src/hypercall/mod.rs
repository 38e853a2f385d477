//! Hypercall dispatch and the hooks `arch` calls for guests (spec §7).
//!
//! A hypercall arrives as the guest's [`InterruptFrame`]: number in `rax`,
//! arguments in `rdi, rsi, rdx, r10, r8`; the result goes back in `rax`
//! (negative errno on failure). Every guest pointer goes through
//! `arch::guest_copy` through typed handles ([`GuestIn`], [`GuestOut`],
//! [`GuestInOut`]); a bad one gives
//! -EFAULT. Numbers Sluice does not serve give -ENOSYS.
//!
//! The path is short on purpose (`cargo xtask bench` times it): `arch`'s
//! `syscall` entry calls [`on_hypercall`] directly, which finds the calling
//! domain, vcpu and vcpu_info in the per-CPU running slot (`running`, one
//! GS-relative load each), serves the call (the hot handlers inline into
//! it) and then, in the same frame, does [`before_return`]'s checks: the
//! pCPU's return hint (preemption, `sched::maybe_preempt`), the domain's
//! generation (shutdown, Down, a flush: [`return_to_guest`]) and a
//! pending upcall, one compare each, the rare work out of line. The entry
//! returns with `sysretq` when the frame is still the one `syscall` made.

mod callbacks;
mod console;
mod evtchn;
mod guest;
mod memory;
mod physdev;
mod sched_op;
mod vcpu_op;
mod version;

use alloc::sync::Arc;
use core::sync::atomic::Ordering;

use arch::idt::InterruptFrame;
use evtchn_core::{Errno, VcpuId};

use crate::domain::{self, Domain, Vcpu, VcpuState};
use crate::sched;
pub use guest::{GuestIn, GuestInOut, GuestOut};

/// The hypercall numbers Sluice serves (spec §7.1).
mod number {
    pub const SET_CALLBACKS: u64 = 4;
    pub const UPDATE_VA_MAPPING: u64 = 14;
    pub const SET_TIMER_OP: u64 = 15;
    pub const XEN_VERSION: u64 = 17;
    pub const CONSOLE_IO: u64 = 18;
    pub const IRET: u64 = 23;
    pub const VCPU_OP: u64 = 24;
    pub const SCHED_OP: u64 = 29;
    pub const CALLBACK_OP: u64 = 30;
    pub const EVENT_CHANNEL_OP: u64 = 32;
    pub const PHYSDEV_OP: u64 = 33;
}

/// What a hypercall handler sees.
pub struct Call<'a> {
    /// The calling domain.
    pub domain: &'a Arc<Domain>,
    /// The calling vcpu.
    pub vcpu: &'a Vcpu,
    /// The guest's registers.
    pub frame: &'a mut InterruptFrame,
}

impl Call<'_> {
    /// Argument `index` (0..5: rdi, rsi, rdx, r10, r8).
    pub fn argument(&self, index: usize) -> u64 {
        match index {
            0 => self.frame.rdi,
            1 => self.frame.rsi,
            2 => self.frame.rdx,
            3 => self.frame.r10,
            _ => self.frame.r8,
        }
    }

    /// Argument `index` as guest memory the call only reads.
    pub fn guest_in(&self, index: usize) -> GuestIn {
        GuestIn(self.argument(index))
    }

    /// Argument `index` as guest memory the call only writes.
    pub fn guest_out(&self, index: usize) -> GuestOut {
        GuestOut(self.argument(index))
    }

    /// Argument `index` as guest memory the call reads and writes back.
    pub fn guest_in_out(&self, index: usize) -> GuestInOut {
        GuestInOut(self.argument(index))
    }
}

/// A result as the guest sees it in `rax`.
fn to_rax(result: Result<u64, Errno>) -> u64 {
    match result {
        Ok(value) => value,
        Err(errno) => (-(errno as i64)) as u64,
    }
}

/// The `hypercall` hook: serves the call in `frame.rax`, then does the
/// work of [`before_return`] (which `arch` calls only after interrupts and
/// exceptions), with the calling vcpu found once.
pub extern "C" fn on_hypercall(frame: &mut InterruptFrame) {
    let served = crate::running::with(|domain, vcpu| {
        serve(domain, vcpu, frame);
        return_to_guest(domain, vcpu, frame);
    });
    if served.is_none() {
        frame.rax = to_rax(Err(Errno::ENOSYS));
    }
}

/// Serves the hypercall whose number is in `frame.rax`.
///
/// The hot ones (xen_version, the null hypercall; iret, the end of every
/// upcall; event_channel_op) inline here, each building its [`Call`] in
/// its own arm, where it folds into registers; the rest go to
/// [`serve_other`], out of line, so the [`Call`] that their handlers take
/// in memory is built only on their path. Each arm turns its handler's
/// result into the guest's `rax` itself, so the arms meet on one register
/// rather than on a `Result` in memory.
#[inline(always)]
fn serve(domain: &Arc<Domain>, vcpu: &Vcpu, frame: &mut InterruptFrame) {
    let rax = match frame.rax {
        number::XEN_VERSION => to_rax(version::xen_version(&mut Call {
            domain,
            vcpu,
            frame: &mut *frame,
        })),
        // iret rewrites the whole frame, rax included.
        number::IRET => {
            return callbacks::iret(&mut Call {
                domain,
                vcpu,
                frame,
            });
        }
        number::EVENT_CHANNEL_OP => to_rax(evtchn::event_channel_op(&mut Call {
            domain,
            vcpu,
            frame: &mut *frame,
        })),
        // Past the last number Sluice serves: answered here, without
        // the out-of-line call.
        number if number > number::PHYSDEV_OP => to_rax(Err(Errno::ENOSYS)),
        _ => return serve_other(domain, vcpu, frame),
    };
    frame.rax = rax;
}

/// The hypercalls [`serve`] does not inline, and unknown numbers below
/// the last one Sluice serves.
#[inline(never)]
fn serve_other(domain: &Arc<Domain>, vcpu: &Vcpu, frame: &mut InterruptFrame) {
    let call = &mut Call {
        domain,
        vcpu,
        frame,
    };
    let rax = match call.frame.rax {
        number::SET_CALLBACKS => to_rax(callbacks::set_callbacks(call)),
        number::UPDATE_VA_MAPPING => to_rax(memory::update_va_mapping(call)),
        number::SET_TIMER_OP => to_rax(vcpu_op::set_timer_op(call)),
        number::CONSOLE_IO => to_rax(console::console_io(call)),
        number::VCPU_OP => to_rax(vcpu_op::vcpu_op(call)),
        number::SCHED_OP => to_rax(sched_op::sched_op(call)),
        number::CALLBACK_OP => to_rax(callbacks::callback_op(call)),
        number::PHYSDEV_OP => to_rax(physdev::physdev_op(call)),
        _ => to_rax(Err(Errno::ENOSYS)),
    };
    call.frame.rax = rax;
}

/// The `exception` hook: a guest fault. With no trap table (Sluice does not
/// serve set_trap_table yet) the domain crashes; its state is printed.
pub fn on_guest_exception(frame: &mut InterruptFrame) {
    let Some((domain, vcpu_id)) = sched::current() else {
        return;
    };
    let cr2 = if frame.vector == u64::from(arch::vectors::PAGE_FAULT) {
        arch::cpu::cr2()
    } else {
        0
    };
    crate::console::guest_notice(
        domain.id,
        format_args!(
            "*** vcpu {}: unhandled exception {} ({}) error {:#x} at rip={:#x} rsp={:#x} rflags={:#x} cr2={:#x}: crashing the domain",
            vcpu_id.0,
            frame.vector,
            arch::idt::exception_name(frame.vector),
            frame.error_code,
            frame.rip,
            frame.rsp,
            frame.rflags,
            cr2
        ),
    );
    crate::console::guest_notice(
        domain.id,
        format_args!(
            "    rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}",
            frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp
        ),
    );
    domain::shut_down(&domain, domain::ShutdownReason::Crash);
}

/// The `before_return` hook (after an interrupt or an exception taken in
/// the guest): stop the vcpu if its domain is shutting down or it went
/// down, else inject a pending upcall (spec §3.4).
pub fn before_return(frame: &mut InterruptFrame) {
    crate::running::with(|domain, vcpu| return_to_guest(domain, vcpu, frame));
}

/// [`before_return`] for the running `vcpu` of `domain`. The checks that
/// rarely fire stay inline as single loads; what they do when they fire is
/// out of line, so the common return (nothing to do) is short; inlined
/// into the hypercall hook, whose frame it shares.
///
/// One compare stands for three rare conditions: the domain's
/// `tlb_generation` moves on when a page-table edit needs a flush or a
/// vcpu_info moves, and also when the domain shuts down
/// (`domain::shut_down`) and when a vcpu is taken down (VCPUOP_down), each
/// bumped after the store that makes its condition true and before the
/// kick that sends the vcpu this way. Those are the only ways the three
/// become true, so a vcpu whose generation is current has none to act on,
/// and one whose generation lags looks at all three ([`attend`]).
#[inline(always)]
fn return_to_guest(domain: &Arc<Domain>, vcpu: &Vcpu, frame: &mut InterruptFrame) {
    sched::maybe_preempt(domain, vcpu);
    // Acquire: pairs with the AcqRel bumps, so a vcpu that sees one also
    // sees the shutdown code, the Down state or the edit stored before
    // it. Only this vcpu's own flow writes its `tlb_generation`.
    let generation = domain.tlb_generation.load(Ordering::Acquire);
    if vcpu.tlb_generation.load(Ordering::Relaxed) != generation {
        attend(domain, vcpu, frame, generation);
    }
    // A bounce that cannot be made crashes the domain and stops the vcpu
    // itself (out of line): nothing to check after it here.
    crate::upcall::deliver_pending(vcpu, frame);
}

/// The domain's `tlb_generation` moved on since this vcpu last looked
/// ([`return_to_guest`]): stop the vcpu if its domain is shutting down or
/// it went down, else flush and look up its vcpu_info again. The
/// generation it records is the one loaded before these checks, so a bump
/// that comes after them is seen at the next return.
#[cold]
#[inline(never)]
fn attend(domain: &Arc<Domain>, vcpu: &Vcpu, frame: &InterruptFrame, generation: u64) {
    if domain.is_shutting_down() {
        leave_dead(domain, vcpu);
    }
    if vcpu.state() == VcpuState::Down {
        leave_down(domain, vcpu, frame);
    }
    catch_up(domain, vcpu, generation);
}

/// The vcpu's domain shut down: the vcpu stops for good.
#[cold]
#[inline(never)]
fn leave_dead(domain: &Arc<Domain>, vcpu: &Vcpu) -> ! {
    sched::leave_vcpu(Arc::clone(domain), vcpu.id, VcpuState::Dead)
}

/// The vcpu went down: it stops, keeping `frame` to resume from.
#[cold]
#[inline(never)]
fn leave_down(domain: &Arc<Domain>, vcpu: &Vcpu, frame: &InterruptFrame) -> ! {
    // VCPUOP_up resumes it here. This flow is the vcpu's live state: it
    // replaces any frame recorded earlier (a flow that was suspended and
    // resumed in between never consumed that one).
    *vcpu.initial_frame.lock() = Some(frame.clone());
    sched::leave_vcpu(Arc::clone(domain), vcpu.id, VcpuState::Down)
}

/// The domain's page tables changed since this vcpu last flushed, or a
/// vcpu_info moved, or (nothing to do here then) the domain shut down or
/// a vcpu went down (`Domain::tlb_generation`).
fn catch_up(domain: &Domain, vcpu: &Vcpu, generation: u64) {
    vcpu.tlb_generation.store(generation, Ordering::Relaxed);
    // Global entries included: the guest may have set G (memory.rs).
    arch::paging::flush_everything();
    // This pCPU's running slot may still name the vcpu_info this vcpu used
    // before another vcpu registered a new one for it (vcpu_op.rs).
    crate::running::refresh_vcpu_info(domain, vcpu);
}

/// The vcpu `id` of the caller's domain, or -ENOENT.
pub fn vcpu_of(domain: &Domain, id: u64) -> Result<&Vcpu, Errno> {
    u32::try_from(id)
        .ok()
        .and_then(|id| domain.vcpu(VcpuId(id)))
        .ok_or(Errno::ENOENT)
}
