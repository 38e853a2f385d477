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
    /// The range must be mapped writable for the life of the system, `top`
    /// 16-byte aligned, and nothing else may use the memory, now or later.
    pub unsafe fn assume_exclusive(range: StackRange) -> Self {
        Self { range }
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
