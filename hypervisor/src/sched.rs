//! Running vcpus on pCPUs.
//!
//! Sluice's scheduler is the simplest one that keeps Xen's semantics for
//! the test domains: the builder gives every vcpu a pCPU of its own, so a
//! vcpu never waits for a pCPU. Each pCPU runs a loop on its idle stack
//! that enters its vcpu once the vcpu is up (vcpu 0 at once, others after
//! VCPUOP_up), and halts otherwise. A vcpu that blocks (SCHEDOP_block,
//! SCHEDOP_poll) waits in `hlt` on its own hypervisor stack, with
//! interrupts on, until a wake-up; a vcpu that stops (its domain shut
//! down, VCPUOP_down) leaves its stack for the pCPU's idle loop.
//!
//! Wake-ups: [`kick`] sets the vcpu's `has_wakeup` and, if the vcpu's pCPU
//! is another one, sends it the kick IPI. That IPI ends a `hlt`, and when
//! it interrupts the guest the return path injects any pending upcall.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use arch::percpu::{self, MAX_CPUS};
use evtchn_core::{DomId, VcpuId};

use crate::domain::{self, Domain, Vcpu, VcpuState};

/// The vcpu each pCPU hosts: `(domid << 32 | vcpu) + 1`, 0 = none.
static HOSTED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Each pCPU's idle stack.
static IDLE_STACKS: [spin::Once<arch::stack::IdleStack>; MAX_CPUS] =
    [const { spin::Once::new() }; MAX_CPUS];

fn encode(domid: DomId, vcpu: VcpuId) -> u64 {
    ((u64::from(domid.0) << 32) | u64::from(vcpu.0)) + 1
}

fn decode(value: u64) -> Option<(DomId, VcpuId)> {
    let value = value.checked_sub(1)?;
    Some((DomId((value >> 32) as u16), VcpuId(value as u32)))
}

fn this_cpu() -> usize {
    percpu::current().index() as usize
}

/// Records that `vcpu` of `domain` lives on its pCPU.
pub fn host(domain: &Domain, vcpu: &Vcpu) {
    if let Some(slot) = HOSTED.get(vcpu.pcpu as usize) {
        slot.store(encode(domain.id, vcpu.id), Ordering::Release);
    }
}

/// The vcpu this pCPU hosts, from interrupt context (never spins).
pub fn hosted_from_interrupt() -> Option<(Arc<Domain>, VcpuId)> {
    let (domid, vcpu) = decode(HOSTED.get(this_cpu())?.load(Ordering::Acquire))?;
    Some((domain::try_get(domid)?, vcpu))
}

/// The vcpu running on this pCPU (the caller of a hypercall).
pub fn current() -> Option<(Arc<Domain>, VcpuId)> {
    let (domid, vcpu) = decode(HOSTED.get(this_cpu())?.load(Ordering::Acquire))?;
    Some((domain::get(domid)?, vcpu))
}

/// Wakes `vcpu`: a blocked vcpu re-checks why it waits, a running one on
/// another pCPU gets the kick IPI so that it passes the upcall check. A leaf.
pub fn kick(vcpu: &Vcpu) {
    // Release: pairs with the Acquire swap in `block_until`.
    vcpu.has_wakeup.store(true, Ordering::Release);
    if vcpu.pcpu as usize != this_cpu()
        && let Some(cpu) = percpu::by_index(vcpu.pcpu)
    {
        arch::smp::kick(cpu);
    }
}

/// Why a blocked vcpu stopped waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeReason {
    /// The condition holds.
    Ready,
    /// The domain is shutting down: the caller must stop the vcpu.
    Stopping,
    /// The vcpu was taken down (VCPUOP_down): the return path parks it.
    Down,
}

/// Blocks `vcpu` on this pCPU (interrupts on, in `hlt`) until `is_ready()`,
/// the domain shuts down or the vcpu is taken down. The check runs with
/// interrupts off before each `hlt`, and `sti; hlt` lets no interrupt slip
/// between them, so a wake-up cannot be lost. The vcpu is `Blocked`
/// meanwhile and `Running` again after a `Ready` wake-up.
pub fn block_until(domain: &Domain, vcpu: &Vcpu, is_ready: &dyn Fn() -> bool) -> WakeReason {
    if !vcpu.transition(VcpuState::Running, VcpuState::Blocked) {
        return WakeReason::Down;
    }
    loop {
        arch::cpu::disable_interrupts();
        if domain.is_shutting_down() {
            return WakeReason::Stopping;
        }
        if vcpu.state() == VcpuState::Down {
            return WakeReason::Down;
        }
        if is_ready() {
            vcpu.transition(VcpuState::Blocked, VcpuState::Running);
            return WakeReason::Ready;
        }
        arch::cpu::enable_interrupts_and_halt();
    }
}

/// Leaves the current vcpu for good (its domain shut down, or it went
/// down): marks it and runs this pCPU's idle loop. Called on the vcpu's
/// stack with nothing on it still needed.
pub fn leave_vcpu(domain: Arc<Domain>, vcpu: VcpuId, state: VcpuState) -> ! {
    if let Some(vcpu) = domain.vcpu(vcpu) {
        match state {
            VcpuState::Dead => domain::vcpu_stopped(&domain, vcpu),
            VcpuState::Down | VcpuState::Running | VcpuState::Blocked => vcpu.set_state(state),
        }
    }
    drop(domain);
    run_idle_loop()
}

/// Switches this pCPU to its idle stack and its loop.
pub fn run_idle_loop() -> ! {
    arch::cpu::disable_interrupts();
    match IDLE_STACKS.get(this_cpu()).and_then(spin::Once::get) {
        Some(stack) => stack.restart(0, pcpu_loop),
        // No idle stack: nothing better than halting with interrupts on.
        None => crate::cpus::idle(),
    }
}

/// Gives this pCPU an idle stack and enters its loop.
pub fn start_pcpu() -> ! {
    match crate::memory::space::allocate_stack(4) {
        Ok(stack) => match IDLE_STACKS.get(this_cpu()) {
            Some(slot) => slot
                .call_once(|| arch::stack::IdleStack::new(stack))
                .restart(0, pcpu_loop),
            None => crate::cpus::idle(),
        },
        Err(error) => {
            log::error!("cpu{}: no idle stack: {error:?}", this_cpu());
            crate::cpus::idle()
        }
    }
}

/// The pCPU loop: enter the hosted vcpu once it is up, else halt.
extern "C" fn pcpu_loop(_: u64) -> ! {
    loop {
        arch::cpu::disable_interrupts();
        if let Some((domain, vcpu_id)) = current()
            && let Some(vcpu) = domain.vcpu(vcpu_id)
        {
            if domain.is_shutting_down() {
                if vcpu.state() != VcpuState::Dead {
                    domain::vcpu_stopped(&domain, vcpu);
                }
            } else if vcpu.state() == VcpuState::Running {
                let frame = vcpu.initial_frame.lock().take();
                if let Some(frame) = frame {
                    crate::timers::on_switch_in(&domain, vcpu);
                    let error = arch::guest_entry::enter_guest(&frame, &vcpu.stack, domain.root);
                    domain::crash(
                        &domain,
                        format_args!("vcpu {} cannot be entered: {error:?}", vcpu_id.0),
                    );
                }
            }
        }
        arch::cpu::enable_interrupts_and_halt();
    }
}
