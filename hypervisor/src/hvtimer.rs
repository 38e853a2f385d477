//! Hypervisor-internal one-shot timers (Xen's `struct timer` for
//! hypervisor work, such as the 1 ms forced-EOI timer of a guest-bound
//! line): a deadline and a callback, nothing more.
//!
//! A [`Timer`] is a `static`; its deadline is absolute system time in ns
//! ([`crate::time::now_ns`]), 0 meaning "not armed". [`Timer::set`] arms or
//! re-arms it, [`Timer::stop`] disarms it; both are a store of an atomic,
//! callable from any context, interrupts on or off, with any lock held.
//!
//! Expiry: every pCPU's scheduler tick (in [`crate::timers::on_tick`],
//! the LAPIC timer's handler from the moment the domains start: each
//! interrupt of the periodic boot tick, and every 1 ms of the one-shot
//! timer a pCPU that runs vcpus programs; a self-test installs its own
//! handler) calls [`run_due`], which looks at every timer ever armed. A due timer is
//! claimed by swapping its deadline to 0 (a compare-exchange, so one pCPU
//! claims one arming), and its callback then runs on that pCPU, in the
//! tick's interrupt context: interrupts off, nothing else held. A callback
//! may therefore take interrupt-safe locks (those always held with
//! interrupts off), and must not block.
//!
//! Resolution: a deadline is seen at the first tick after it, on any pCPU:
//! within 1 ms on a pCPU that runs vcpus (`sched::GUEST_TICK_HZ`), within
//! 10 ms on one that never did (`cpus::TIMER_HZ`). A timer is never early.
//!
//! Races, which callbacks must expect: between the claim and the callback
//! (or while it waits for its lock) another pCPU may re-arm or stop the
//! timer. A callback that guards its state with a lock, under which the
//! timer is also armed and stopped, re-checks under that lock: if
//! [`Timer::is_active`] says it was armed again, the expiry it runs for is
//! stale and the new arming will run the callback again.
//!
//! Timers are registered on their first arming in a fixed table of
//! [`MAX_TIMERS`] slots (they are `static`, so a slot never dangles and is
//! never freed); [`Timer::set`] reports a full table. A user that cannot
//! handle that where it arms the timer (an interrupt handler) takes its
//! slot beforehand with [`Timer::register`], where it can still refuse.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// How many distinct timers the hypervisor may ever arm.
pub const MAX_TIMERS: usize = 16;

/// A hypervisor one-shot timer: a deadline and a callback.
pub struct Timer {
    /// Absolute system time (ns) it expires at; 0 = not armed.
    deadline_ns: AtomicU64,
    /// Runs once per expiry, with [`Timer::data`].
    callback: fn(usize),
    /// The callback's argument (which line, which object).
    data: usize,
    /// Whether it has a slot in the registry.
    registered: AtomicBool,
}

impl core::fmt::Debug for Timer {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("Timer")
            .field("deadline_ns", &self.deadline_ns.load(Ordering::Relaxed))
            .field("data", &self.data)
            .finish_non_exhaustive()
    }
}

/// The registry is full: the timer was not armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistryFull;

/// Every timer armed at least once.
static REGISTRY: [spin::Once<&'static Timer>; MAX_TIMERS] =
    [const { spin::Once::new() }; MAX_TIMERS];

impl Timer {
    /// A timer that runs `callback(data)` when it expires; not armed.
    pub const fn new(callback: fn(usize), data: usize) -> Self {
        Self {
            deadline_ns: AtomicU64::new(0),
            callback,
            data,
            registered: AtomicBool::new(false),
        }
    }

    /// Arms (or re-arms) the timer to expire at `deadline_ns` (system
    /// time; a past deadline expires at the next tick). Replaces any
    /// earlier deadline.
    pub fn set(&'static self, deadline_ns: u64) -> Result<(), RegistryFull> {
        self.register()?;
        // Release: what the caller did before arming is visible to the
        // callback on the pCPU that claims the expiry (Acquire there).
        self.deadline_ns
            .store(deadline_ns.max(1), Ordering::Release);
        Ok(())
    }

    /// Disarms the timer; an expiry already claimed still runs its
    /// callback (see the module doc).
    pub fn stop(&self) {
        self.deadline_ns.store(0, Ordering::Release);
    }

    /// Whether the timer is armed (its expiry not yet claimed).
    pub fn is_active(&self) -> bool {
        self.deadline_ns.load(Ordering::Acquire) != 0
    }

    /// Takes the timer's registry slot now (if it has none yet), so that
    /// no later [`Timer::set`] can fail. Does not arm it.
    pub fn register(&'static self) -> Result<(), RegistryFull> {
        if self.registered.load(Ordering::Acquire) {
            return Ok(());
        }
        // Interrupts off: a tick on this pCPU never finds a slot it is
        // filling itself half-done.
        arch::cpu::without_interrupts(|| {
            for slot in &REGISTRY {
                // `call_once` fills an empty slot with this timer; a filled
                // one (or one another pCPU is filling) yields its timer.
                let holder = slot.call_once(|| self);
                if core::ptr::eq(*holder, self) {
                    self.registered.store(true, Ordering::Release);
                    return Ok(());
                }
            }
            Err(RegistryFull)
        })
    }

    /// Claims the expiry if the timer is due at `now_ns`.
    fn claim(&self, now_ns: u64) -> bool {
        let deadline = self.deadline_ns.load(Ordering::Acquire);
        deadline != 0
            && now_ns >= deadline
            && self
                .deadline_ns
                .compare_exchange(deadline, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

/// Runs the callback of every timer due at `now_ns` (the LAPIC tick of
/// each pCPU; interrupts off). A slot being registered by another pCPU
/// right now is skipped until the next tick.
pub fn run_due(now_ns: u64) {
    for slot in &REGISTRY {
        let Some(timer) = slot.get() else {
            // Slots fill in order: the rest are empty.
            return;
        };
        if timer.claim(now_ns) {
            (timer.callback)(timer.data);
        }
    }
}
