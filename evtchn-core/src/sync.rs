//! The seam between evtchn-core and its synchronisation primitives.
//!
//! Every atomic, lock and one-time slot the crate uses comes from here, so a
//! model checker can swap them: a normal build uses `core` atomics and the
//! `spin` crate; a build with `--cfg loom` uses loom's atomics, mutex and
//! rwlock. (`Arc` stays `alloc`'s: it only owns domains and shared pages,
//! and the public API hands `Arc<dyn SharedInfoView>` across, which loom's
//! `Arc` cannot coerce to.) (`OnceSlot` under loom is `std::sync::OnceLock`: bucket
//! publication is not modelled by loom, only compiled.)
//!
//! The wrappers expose only what the crate needs: `lock`, `read`, `try_read`,
//! `write`, `get`, `call_once`. Nothing here disables interrupts; see the
//! crate doc for why no lock is ever spun on from interrupt context.

#[cfg(not(loom))]
pub use core::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering,
};
#[cfg(loom)]
pub use loom::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering,
};

#[cfg(not(loom))]
mod imp {
    /// A spinning mutual-exclusion lock.
    pub type Mutex<T> = spin::Mutex<T>;
    /// Guard of [`Mutex`].
    pub type MutexGuard<'a, T> = spin::MutexGuard<'a, T>;
    /// A spinning reader-writer lock that prefers writers: `write`, unless
    /// it finds the lock free, first takes spin's upgradeable lock, which turns new readers away, then
    /// waits for the readers inside to leave. Without that, a flood of
    /// readers (a guest sending on a port as fast as it can) could keep the
    /// count above zero and starve a close of the peer port for ever.
    pub struct RwLock<T>(spin::RwLock<T>);

    impl<T> RwLock<T> {
        /// A new unlocked rwlock.
        pub const fn new(value: T) -> Self {
            Self(spin::RwLock::new(value))
        }
        /// Shared lock, waiting while a writer holds or awaits it.
        #[inline]
        pub fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read()
        }
        /// Shared lock if no writer holds or awaits it.
        #[inline]
        pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
            self.0.try_read()
        }
        /// Exclusive lock: at once if the lock is free (one
        /// compare-and-swap), else announce the writer, then wait for the
        /// readers inside to leave.
        #[inline]
        pub fn write(&self) -> RwLockWriteGuard<'_, T> {
            if let Some(guard) = self.0.try_write() {
                return guard;
            }
            self.write_contended()
        }
        #[cold]
        #[inline(never)]
        fn write_contended(&self) -> RwLockWriteGuard<'_, T> {
            self.0.upgradeable_read().upgrade()
        }
    }
    /// Shared guard of [`RwLock`].
    pub type RwLockReadGuard<'a, T> = spin::RwLockReadGuard<'a, T>;
    /// Exclusive guard of [`RwLock`].
    pub type RwLockWriteGuard<'a, T> = spin::RwLockWriteGuard<'a, T>;

    /// A slot written once and then read without locking (`get` is an
    /// Acquire load that pairs with the Release inside `call_once`).
    pub struct OnceSlot<T>(spin::Once<T>);

    impl<T> Default for OnceSlot<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<T> OnceSlot<T> {
        /// An empty slot.
        pub const fn new() -> Self {
            Self(spin::Once::new())
        }
        /// The value, if the slot was filled.
        #[inline]
        pub fn get(&self) -> Option<&T> {
            self.0.get()
        }
        /// Fill the slot with `f()` unless it is already filled.
        pub fn call_once(&self, f: impl FnOnce() -> T) -> &T {
            self.0.call_once(f)
        }
    }
}

#[cfg(loom)]
#[expect(
    clippy::unwrap_used,
    reason = "a poisoned lock under loom is a failed model run"
)]
mod imp {
    /// loom's mutex behind the spin-style interface.
    pub struct Mutex<T>(loom::sync::Mutex<T>);
    /// Guard of [`Mutex`].
    pub type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;
    impl<T> Mutex<T> {
        /// A new unlocked mutex.
        pub fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }
        /// Lock, waiting as long as needed.
        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap()
        }
        /// Lock if free.
        pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok()
        }
    }

    /// loom's rwlock behind the spin-style interface.
    pub struct RwLock<T>(loom::sync::RwLock<T>);
    /// Shared guard of [`RwLock`].
    pub type RwLockReadGuard<'a, T> = loom::sync::RwLockReadGuard<'a, T>;
    /// Exclusive guard of [`RwLock`].
    pub type RwLockWriteGuard<'a, T> = loom::sync::RwLockWriteGuard<'a, T>;
    impl<T> RwLock<T> {
        /// A new unlocked rwlock.
        pub fn new(value: T) -> Self {
            Self(loom::sync::RwLock::new(value))
        }
        /// Shared lock, waiting as long as needed.
        pub fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read().unwrap()
        }
        /// Shared lock if no writer holds it.
        pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
            self.0.try_read().ok()
        }
        /// Exclusive lock, waiting as long as needed.
        pub fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write().unwrap()
        }
    }

    /// A slot written once (not modelled by loom).
    pub struct OnceSlot<T>(std::sync::OnceLock<T>);

    impl<T> Default for OnceSlot<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<T> OnceSlot<T> {
        /// An empty slot.
        pub const fn new() -> Self {
            Self(std::sync::OnceLock::new())
        }
        /// The value, if the slot was filled.
        pub fn get(&self) -> Option<&T> {
            self.0.get()
        }
        /// Fill the slot with `f()` unless it is already filled.
        pub fn call_once(&self, f: impl FnOnce() -> T) -> &T {
            self.0.get_or_init(f)
        }
    }
}

pub use imp::{Mutex, MutexGuard, OnceSlot, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Marks a shared-page test-and-set that is followed by a plain read of
/// another word (set_pending: pending then mask; unmask: mask then
/// pending). Both are `SeqCst`, so the read cannot be satisfied before the
/// read-modify-write (on x86 the `lock`ed instruction is a full barrier):
/// nothing to emit. loom models `SeqCst` accesses only as acquire/release
/// and would report a store-buffering outcome that cannot happen; under
/// `cfg(loom)` this is a `SeqCst` fence, which loom does model.
#[inline(always)]
pub fn after_test_and_set() {
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// Marks a `SeqCst` store that the protocol puts in the single order
/// before the accesses that follow it (the announcement that a vcpu_info
/// moves, `Domain::vcpu_info_moves`). On x86 a `SeqCst` store is an
/// `xchg`, a full barrier: nothing to emit. Under `cfg(loom)` a `SeqCst`
/// fence, for the reason given at [`after_test_and_set`].
#[inline(always)]
pub fn after_seqcst_store() {
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}
