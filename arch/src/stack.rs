//! Stacks as owned tokens.
//!
//! A [`Stack`] can only be made by code that vouches (unsafely) that the
//! memory is mapped, writable and used by nothing else; everything that
//! hands a stack to the CPU (TSS IST slots, the AP trampoline, a stack
//! switch) takes one by value, so those operations are safe.

use crate::percpu::StackRange;

/// A mapped, writable stack that nothing else uses.
#[derive(Debug)]
pub struct Stack {
    range: StackRange,
}

impl Stack {
    /// Takes ownership of the stack `[bottom, top)`.
    ///
    /// # Safety
    /// The range must be mapped writable until the stack is given up with
    /// [`Stack::release`] (for good if never), `top` 16-byte aligned, and
    /// nothing else may use the memory meanwhile.
    pub unsafe fn assume_exclusive(range: StackRange) -> Self {
        Self { range }
    }

    /// Gives up the stack: returns its range for its memory to be unmapped
    /// and reused.
    ///
    /// # Safety
    /// No CPU runs on the stack, holds a suspended flow on it, or will enter
    /// it through a TSS or per-CPU stack pointer (every CPU must have
    /// passed a point where it could not, since the last use).
    pub unsafe fn release(self) -> StackRange {
        self.range
    }

    /// Its extent.
    pub fn range(&self) -> StackRange {
        self.range
    }

    /// One past its highest address (where the CPU starts pushing).
    pub fn top(&self) -> u64 {
        self.range.top
    }
}

/// Moves this CPU onto `stack` and continues in `next(argument)`; the
/// current stack is abandoned.
pub fn run_on(stack: Stack, argument: u64, next: extern "C" fn(u64) -> !) -> ! {
    // SAFETY: `Stack` guarantees mapped, writable, exclusive memory with an
    // aligned top; the token is consumed, so nothing else will use it;
    // `next` never returns, so the abandoned frames are never used again.
    unsafe { crate::cpu::switch_stack(stack.top(), argument, next) }
}

/// A pCPU's idle stack: the stack its scheduler loop restarts on whenever it
/// leaves a vcpu for good.
#[derive(Debug)]
pub struct IdleStack {
    stack: Stack,
}

impl IdleStack {
    /// Dedicates `stack` to a pCPU's scheduler loop.
    pub fn new(stack: Stack) -> Self {
        Self { stack }
    }

    /// Restarts `next(argument)` from the top of the idle stack, abandoning
    /// whatever ran there before (the loop never returns, and `next` gets
    /// only a number, so no reference into the old frames survives).
    pub fn restart(&self, argument: u64, next: extern "C" fn(u64) -> !) -> ! {
        // SAFETY: the stack is mapped, writable and exclusive (`Stack`);
        // it serves only this pCPU's loop, whose earlier frames are dead
        // once it is restarted, since `next` never returns.
        unsafe { crate::cpu::switch_stack(self.stack.top(), argument, next) }
    }
}

/// A suspended flow of execution on some 'static hypervisor stack (a
/// vcpu's, in the middle of a hypercall or an interrupt): its saved stack
/// pointer, or 0 when there is nothing to resume.
#[derive(Debug, Default)]
pub struct Context {
    saved_rsp: core::sync::atomic::AtomicU64,
}

/// [`resume`] found no suspended flow in the context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NothingToResume;

// sluice_suspend(save = rdi, idle top = rsi, next = rdx): push the
// callee-saved registers, store rsp, then start `next(0)` afresh on the
// idle stack. sluice_resume(rsp = rdi): the reverse; the `ret` returns from
// the sluice_suspend call that saved it.
core::arch::global_asm!(
    r#"
    .section .text.sluice_context, "ax"
    .balign 16
    .global sluice_suspend
sluice_suspend:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    mov [rdi], rsp
    mov rsp, rsi
    xor ebp, ebp
    push 0
    xor edi, edi
    jmp rdx

    .balign 16
    .global sluice_resume
sluice_resume:
    mov rsp, rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
    .text
"#
);

unsafe extern "C" {
    fn sluice_suspend(save: *mut u64, idle_top: u64, next: extern "C" fn(u64) -> !);
    fn sluice_resume(saved_rsp: u64) -> !;
}

impl Context {
    /// An empty context.
    pub const fn new() -> Self {
        Self {
            saved_rsp: core::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether a suspended flow waits in it.
    pub fn is_suspended(&self) -> bool {
        // Acquire: pairs with the store by `suspend_into` (via the asm).
        self.saved_rsp.load(core::sync::atomic::Ordering::Acquire) != 0
    }
}

impl IdleStack {
    /// Suspends the running flow into `context` and starts `next(0)` afresh
    /// on the idle stack; returns when someone [`resume`]s the context.
    /// Interrupts must be off (they stay off across the switch).
    pub fn suspend_into(&self, context: &Context, next: extern "C" fn(u64) -> !) {
        crate::cpu::disable_interrupts();
        // SAFETY: the registers the C ABI requires preserved are saved on
        // the current (mapped, 'static) stack and the stack pointer in
        // `context`; the idle stack is exclusive to this pCPU's loop, whose
        // earlier frames are dead (`next` never returns); `resume` restores
        // exactly this state and returns here.
        unsafe { sluice_suspend(context.saved_rsp.as_ptr(), self.stack.top(), next) }
    }
}

/// Resumes the flow suspended in `context` (which is then empty); the
/// current flow is abandoned. Call it from an idle loop, with interrupts
/// off, on the CPU that suspended the flow or on another one once that CPU
/// has left the flow's stack (see [`SuspendedFlow::resume`]).
pub fn resume(context: &Context) -> Result<core::convert::Infallible, NothingToResume> {
    match context.take() {
        Some(flow) => flow.resume(),
        None => Err(NothingToResume),
    }
}

/// A suspended flow taken out of its [`Context`], about to be resumed: the
/// context can then go away (whatever owns it may be dropped first, which
/// the abandoned frames of the caller could never do).
#[derive(Debug)]
pub struct SuspendedFlow {
    saved_rsp: u64,
    /// Resumed on the CPU that took it (which need not be the one that
    /// suspended it).
    _not_send: core::marker::PhantomData<*const ()>,
}

impl Context {
    /// Takes the suspended flow out (the context is then empty), if any.
    pub fn take(&self) -> Option<SuspendedFlow> {
        // AcqRel: pairs with the store by `suspend_into`; the swap to 0
        // makes this the only taker.
        let saved_rsp = self.saved_rsp.swap(0, core::sync::atomic::Ordering::AcqRel);
        (saved_rsp != 0).then_some(SuspendedFlow {
            saved_rsp,
            _not_send: core::marker::PhantomData,
        })
    }
}

impl SuspendedFlow {
    /// Resumes it; the current flow is abandoned. Call it from an idle
    /// loop, on the CPU that suspended the flow or on another one. The
    /// suspending CPU stops touching the flow's stack at the store of its
    /// stack pointer (it switches to its idle stack next), but the caller
    /// must still know that CPU is past that point (the hypervisor's
    /// scheduler releases a vcpu to other CPUs only from its idle loop).
    /// The flow finds the CPU's per-CPU block through GS as always, so it
    /// must not have kept per-CPU addresses across the suspension.
    pub fn resume(self) -> ! {
        crate::cpu::disable_interrupts();
        // SAFETY: `saved_rsp` was stored by `suspend_into` on a CPU's flow
        // (this CPU's, or another's that has left that stack since: the
        // caller's duty, above), whose stack is 'static (or kept until
        // every CPU has passed a point where it holds no flow on it:
        // `Stack::release`) and untouched since; `take` made this the only
        // resumption; the frames above it are live and complete.
        unsafe { sluice_resume(self.saved_rsp) }
    }
}
