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
