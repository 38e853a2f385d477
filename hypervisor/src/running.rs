//! The vcpu each pCPU runs, for the paths every guest entry takes.
//!
//! A hypercall and every return to the guest need the calling domain and
//! vcpu. Looking the domain up by id costs its registry slot's lock and an
//! `Arc` reference each time; instead the scheduler records, in the pCPU's
//! own per-CPU block (`arch::percpu::PerCpu::running`: reached through GS,
//! two loads), the domain and vcpu it is about to run ([`set`]), and the
//! guest paths borrow them ([`with`]) for the time of one entry, with no
//! lock and no reference count touched.
//!
//! Ownership: the slot owns one strong reference to the domain (taken with
//! `Arc::into_raw` by [`set`], given back by the next [`set`] or
//! [`clear`]). Only the scheduler loop changes a slot, on its own pCPU, on
//! the idle stack, with interrupts off. A vcpu flow that borrowed from the
//! slot reaches that loop only by suspending (`sched::suspend` first takes
//! its own reference with [`pin`] and keeps it across the suspension) or
//! by leaving the vcpu for good (its frames are abandoned, never resumed).
//! So a borrow never outlives the domain. A suspended flow may be resumed
//! on another pCPU (the vcpu moved: `sched`); that pCPU [`set`]s its own
//! slot to the same domain first, so the flow's borrows stay backed, and
//! [`with`] reads the slot of the pCPU it runs on at each call, never one
//! kept from before a suspension.
//!
//! [`set`] also vouches to `arch::guest_copy` that the domain's page tables
//! map only the guest's own pages in the guest range, so guest copies skip
//! their page-table walk while those tables are live.
#![allow(unsafe_code)]

use alloc::sync::Arc;
use core::mem::ManuallyDrop;
use core::sync::atomic::{AtomicPtr, Ordering};

use arch::percpu;

use evtchn_core::abi::VcpuInfo;

use crate::domain::{Domain, Vcpu};

/// One pCPU's running vcpu: its domain (null = none), the vcpu itself
/// (an element of that domain's `vcpus`) and the vcpu_info it uses (null
/// = none), in its per-CPU block.
struct Slot {
    domain: &'static AtomicPtr<()>,
    vcpu: &'static AtomicPtr<()>,
    vcpu_info: &'static AtomicPtr<()>,
}

/// Indexes of the slot's words in `PerCpu::running`, for the one-load
/// reads of the guest paths (`percpu::running_word`).
const DOMAIN: usize = 0;
/// See [`DOMAIN`].
const VCPU: usize = 1;
/// See [`DOMAIN`].
const VCPU_INFO: usize = 2;

#[inline]
fn this_slot() -> Slot {
    // In the order of the indexes above.
    let [domain, vcpu, vcpu_info] = &percpu::current().running;
    Slot {
        domain,
        vcpu,
        vcpu_info,
    }
}

/// `info` as a slot value (null for none).
fn vcpu_info_pointer(info: Option<&'static VcpuInfo>) -> *mut () {
    info.map_or(core::ptr::null_mut(), |info| {
        core::ptr::from_ref(info).cast_mut().cast::<()>()
    })
}

/// Records that this pCPU runs `vcpu` of `domain` from now on. Only for the
/// scheduler loop, on its own pCPU, with interrupts off.
pub fn set(domain: &Arc<Domain>, vcpu: &Vcpu) {
    let slot = this_slot();
    debug_assert!(
        domain
            .vcpus
            .iter()
            .any(|candidate| core::ptr::eq(candidate, vcpu)),
        "the running vcpu belongs to the running domain"
    );
    // SAFETY: `domain.root` is a PV guest's page tables: the builder maps
    // every guest-range page of the domain USER at every level, and the
    // only way a guest changes them, update_va_mapping, installs only its
    // own frames (or its shared_info frame), with USER forced, and its
    // page-table frames read-only only. The guest may access all of those
    // as mapped; a copy into a read-only one faults as the guest's own
    // write would (CR0.WP holds in ring 0 too). `clear` withdraws the
    // vouch before this pCPU runs anything else.
    unsafe { arch::guest_copy::trust_user_only(domain.root) };
    let owned = Arc::into_raw(Arc::clone(domain)).cast_mut().cast::<()>();
    // Relaxed: only this pCPU reads its slot, and interrupts are off.
    slot.vcpu.store(
        core::ptr::from_ref(vcpu).cast_mut().cast::<()>(),
        Ordering::Relaxed,
    );
    slot.vcpu_info.store(
        vcpu_info_pointer(domain.vcpu_info(vcpu.id)),
        Ordering::Relaxed,
    );
    release(slot.domain.swap(owned, Ordering::Relaxed).cast::<Domain>());
}

/// Records that this pCPU runs no vcpu. Only for the scheduler loop, as
/// [`set`], and on the idle stack: the domain's last reference may go here,
/// so this must not run on one of its vcpus' stacks.
pub fn clear() {
    clear_after(|_| ());
}

/// [`clear`], handing `last` the vcpu the slot held first, if any (its
/// domain is alive until `last` returns). For the scheduler loop, as
/// [`clear`].
#[inline]
pub fn clear_after(last: impl FnOnce(&Vcpu)) {
    let slot = this_slot();
    arch::guest_copy::trust_no_tables();
    // Relaxed: as in `set`.
    let old = slot.domain.swap(core::ptr::null_mut(), Ordering::Relaxed);
    let vcpu = slot.vcpu.swap(core::ptr::null_mut(), Ordering::Relaxed);
    slot.vcpu_info
        .store(core::ptr::null_mut(), Ordering::Relaxed);
    if !old.is_null() && !vcpu.is_null() {
        // SAFETY: `set` stored `vcpu` together with `old`, as one of that
        // domain's `vcpus`, and the slot's reference in `old` keeps the
        // domain alive until `release` below.
        last(unsafe { &*vcpu.cast::<Vcpu>() });
    }
    release(old.cast::<Domain>());
}

/// Looks again for the vcpu_info `vcpu` of `domain` uses, if this pCPU
/// runs it (after VCPUOP_register_vcpu_info moved it). A vcpu that another
/// pCPU may have in its slot is down (the registration requires it), so
/// that pCPU looks afresh when it next [`set`]s it, or, if the vcpu is up
/// again before it left, on its next way back to the guest (the
/// registration bumps the domain's `tlb_generation`); until then its slot
/// may still name the old area, which stays mapped as long as the domain
/// (the legacy slots are in its shared_info page).
pub fn refresh_vcpu_info(domain: &Domain, vcpu: &Vcpu) {
    let slot = this_slot();
    // Relaxed: only this pCPU writes its slot (module doc).
    if core::ptr::eq(slot.vcpu.load(Ordering::Relaxed).cast::<Vcpu>(), vcpu) {
        slot.vcpu_info.store(
            vcpu_info_pointer(domain.vcpu_info(vcpu.id)),
            Ordering::Relaxed,
        );
    }
}

/// The vcpu_info of the vcpu this pCPU runs (`None` if it runs none, or
/// its vcpu has none), as [`Domain::vcpu_info`] gives it, without the look-up.
#[inline]
pub fn vcpu_info() -> Option<&'static VcpuInfo> {
    // Relaxed: only this pCPU writes its slot (module doc).
    let info = percpu::running_word::<VCPU_INFO>();
    // SAFETY: a non-null value was stored by `set` or `refresh_vcpu_info`
    // from a `&'static VcpuInfo` that `Domain::vcpu_info` handed out (a
    // vcpu_info in a frame the domain keeps for its life, which the
    // slot's reference keeps alive while this pCPU runs the vcpu).
    unsafe { info.cast::<VcpuInfo>().as_ref() }
}

/// Gives back the reference a slot held.
fn release(old: *mut Domain) {
    if old.is_null() {
        return;
    }
    // SAFETY: a non-null slot value came from `Arc::into_raw` in `set` and
    // is released exactly once, here, by the one swap that removed it.
    drop(unsafe { Arc::from_raw(old) });
}

/// Runs `body` with the domain and vcpu this pCPU runs (`None` if it runs
/// none). For vcpu flows (hypercalls, returns to the guest), where `body`
/// may suspend the vcpu or leave it, and for interrupt handlers, which
/// leave the slot alone (the scheduler loop is no interrupt handler).
/// Always inlined: two GS-relative loads, less than a call (a send's kick
/// asks it on every new event).
#[inline(always)]
pub fn with<R>(body: impl FnOnce(&Arc<Domain>, &Vcpu) -> R) -> Option<R> {
    // Relaxed (one GS-relative load each): only this pCPU writes its slot
    // (module doc).
    let domain = percpu::running_word::<DOMAIN>().cast::<Domain>();
    if domain.is_null() {
        return None;
    }
    let vcpu = percpu::running_word::<VCPU>().cast::<Vcpu>();
    // SAFETY: `domain` came from `Arc::into_raw` in `set`, and the domain
    // outlives this call (module doc: the slot's reference holds it while
    // the vcpu runs, `pin`'s across a suspension). ManuallyDrop: the
    // reference stays the slot's; `body` clones it if it keeps one.
    let domain = ManuallyDrop::new(unsafe { Arc::from_raw(domain) });
    // SAFETY: `set` stored `vcpu` together with `domain`, as one of its
    // `vcpus` (checked there in debug builds): it lives as long as `domain`.
    let vcpu = unsafe { &*vcpu };
    Some(body(&domain, vcpu))
}

/// A reference of its own to the domain this pCPU runs, which a vcpu flow
/// keeps across a suspension (module doc).
pub fn pin() -> Option<Arc<Domain>> {
    with(|domain, _| Arc::clone(domain))
}
