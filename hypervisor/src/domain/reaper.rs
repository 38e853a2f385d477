//! Freeing destroyed domains: their memory frames (page tables among
//! them), their shared_info frame and their vcpus' hypervisor stacks go
//! back to the frame allocator once nothing can touch them any more, and
//! the count is checked against what the domain's build took.
//!
//! A destroyed domain is unreachable at once (`super::kill`): its event
//! channels are closed (evtchn-core has let go of its FIFO pages and its
//! shared_info view), it is out of the registry and of the run queues, so
//! no new lookup finds it and its timers no longer fire. But for a while
//! a pCPU may still touch it: the pCPU that stopped its last vcpu runs on
//! that vcpu's stack with the domain's page tables loaded; another may
//! have them loaded still, idle since it last ran one of its vcpus; any
//! pCPU may hold its mappings in its TLB (guest mappings may be global);
//! a hypercall or interrupt on another pCPU may have looked it up just
//! before. So it is buried here and freed after two grace periods, as
//! RCU frees (Xen defers `complete_domain_destroy()` the same way):
//!
//! * A pCPU is at a *quiescent point* when it runs its scheduler loop (on
//!   its idle stack, no vcpu flow in hand, having loaded the hypervisor's
//!   own page tables: [`on_idle`]) or when it takes its timer interrupt
//!   from a guest (it runs a live domain's vcpu then, with that domain's
//!   tables: a dead domain's vcpus never run again: [`on_guest_tick`]).
//!   While something is buried, each quiescent point flushes the pCPU's
//!   whole TLB, global entries included, and records the generation it
//!   has seen.
//! * Grace period 1 (every online pCPU has passed a quiescent point since
//!   the burial): no pCPU runs on the domain's vcpu stacks (a vcpu flow is
//!   left for the loop, never for another vcpu), none holds a suspended
//!   flow there (a stopping vcpu's flow is resumed until it leaves; vcpus
//!   move between pCPUs, but never those of a domain shutting down, and a
//!   move only changes which pCPU resumes a flow: the pCPU that takes a
//!   vcpu does so from its loop, past its quiescent point, and holds the
//!   domain by a reference of its own until it runs the vcpu), none
//!   has its tables loaded or its mappings cached, and no hypercall or
//!   interrupt that started before the burial still runs (each ends
//!   before its pCPU reaches a quiescent point; a blocked hypercall holds
//!   only its own, living, domain). The last `Arc` must be the
//!   graveyard's: checked (`Arc::try_unwrap`), else it waits. The memory
//!   and shared_info frames are freed; the stacks are unmapped.
//! * Grace period 2: every pCPU has flushed its TLB since the unmap, so no
//!   stale translation of a stack page is left; the stack frames are freed.
//!
//! Then the frames given back are compared with what the build took
//! (`frames_taken`, measured on the allocator): a difference is a leak,
//! logged as an error, and the run fails. When the last domain is gone
//! the run ends only once every domain is freed this way.
//!
//! This module opts out of `deny(unsafe_code)` to free frames and release
//! stacks: the grace periods above are the argument that nothing uses
//! them any more.
#![allow(unsafe_code)]

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use arch::percpu::{self, MAX_CPUS};
use evtchn_core::{DomId, Virq};

use super::{Domain, Vcpu};
use crate::memory::guest_frames::GuestFrame;
use crate::memory::{frames, space};

/// Where a buried domain is.
enum Stage {
    /// Unreachable; waits for grace period 1 and for the last reference.
    Buried(Arc<Domain>),
    /// Memory freed and stacks unmapped; waits for grace period 2.
    StacksUnmapped(Freed),
}

/// What freeing a domain gave back so far.
struct Freed {
    id: DomId,
    taken: u64,
    memory: u64,
    shared_info: u64,
    stack_frames: Vec<u64>,
}

struct Grave {
    stage: Stage,
    /// The generation every online pCPU must have seen.
    generation: u64,
    /// When it was buried, system time ns.
    since_ns: u64,
}

/// Buried domains not yet freed.
static GRAVES: spin::Mutex<Vec<Grave>> = spin::Mutex::new(Vec::new());
/// How many (quiescent points do nothing while it is 0).
static BURIED: AtomicU32 = AtomicU32::new(0);
/// Bumped to start a grace period.
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// Per pCPU, the generation it saw at its last quiescent point.
static SEEN: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// The last domain is gone: the run ends once every grave is empty.
static IS_ENDING: AtomicBool = AtomicBool::new(false);
/// A domain gave back fewer or more frames than its build took.
static HAS_LEAK: AtomicBool = AtomicBool::new(false);
/// A pCPU found the graveyard empty at the end and is ending the run: the
/// others, which may see the same at the same time, leave it to that one.
static IS_FINISHING: AtomicBool = AtomicBool::new(false);
/// How long the end of the run waits for a domain to become freeable.
const END_LIMIT_NS: u64 = 5_000_000_000;

fn start_grace_period() -> u64 {
    // SeqCst: ordered after the caller's unmapping or unlinking and
    // against the SeqCst load in `quiescent`: a pCPU that sees the new
    // generation passed its quiescent point after both.
    GENERATION.fetch_add(1, Ordering::SeqCst) + 1
}

fn grace_period_over(generation: u64) -> bool {
    (0..percpu::count())
        .filter(|&index| percpu::by_index(index).is_some_and(|cpu| cpu.is_online()))
        .all(|index| {
            SEEN.get(index as usize)
                .is_some_and(|seen| seen.load(Ordering::SeqCst) >= generation)
        })
}

/// Wakes every other pCPU so that it passes a quiescent point soon.
fn kick_others() {
    let me = percpu::current().index();
    for index in 0..percpu::count() {
        if index != me
            && let Some(cpu) = percpu::by_index(index)
            && cpu.is_online()
        {
            arch::smp::kick(cpu);
        }
    }
}

/// Takes a destroyed domain (unreachable: see the module doc) and frees
/// it when nothing can touch it any more.
pub fn bury(domain: Arc<Domain>) {
    // SeqCst: counted before the grace period starts, so a pCPU that sees
    // the new generation also sees work to do.
    BURIED.fetch_add(1, Ordering::SeqCst);
    let grave = Grave {
        stage: Stage::Buried(domain),
        generation: start_grace_period(),
        since_ns: crate::time::now_ns(),
    };
    arch::cpu::without_interrupts(|| GRAVES.lock().push(grave));
    kick_others();
}

/// The last domain is gone: the run ends (pass or fail) once every buried
/// domain is freed.
pub fn end_run_when_freed() {
    IS_ENDING.store(true, Ordering::SeqCst);
    kick_others();
}

fn quiescent() {
    // SeqCst: pairs with `start_grace_period`.
    let generation = GENERATION.load(Ordering::SeqCst);
    arch::paging::flush_everything();
    if let Some(seen) = SEEN.get(percpu::current().index() as usize) {
        seen.store(generation, Ordering::SeqCst);
    }
}

/// This pCPU runs its scheduler loop, on its idle stack with interrupts
/// off and no vcpu flow in hand: a quiescent point. Frees what is due and
/// ends the run when the last domain is freed.
pub fn on_idle() {
    if BURIED.load(Ordering::SeqCst) == 0 {
        return;
    }
    // Leave whatever domain's tables this pCPU ran last: it may be dead.
    let root = space::hypervisor_root();
    if root != 0 && arch::cpu::cr3() & !0xfff != root {
        let _ = arch::guest_entry::switch_page_tables(root);
    }
    quiescent();
    reap();
}

/// This pCPU took its timer interrupt in a guest: a quiescent point.
pub fn on_guest_tick() {
    if BURIED.load(Ordering::SeqCst) != 0 {
        quiescent();
    }
}

fn reap() {
    // One pCPU reaps at a time; the others pass by.
    let Some(mut graves) = GRAVES.try_lock() else {
        return;
    };
    let now = crate::time::now_ns();
    let mut started_grace_period = false;
    let mut kept = Vec::new();
    for grave in core::mem::take(&mut *graves) {
        if !grace_period_over(grave.generation) {
            kept.push(grave);
            continue;
        }
        match grave.stage {
            Stage::Buried(domain) => match Arc::try_unwrap(domain) {
                Ok(domain) => {
                    let freed = free_memory(domain);
                    kept.push(Grave {
                        stage: Stage::StacksUnmapped(freed),
                        generation: start_grace_period(),
                        since_ns: grave.since_ns,
                    });
                    started_grace_period = true;
                }
                // Still referenced: wait for the holder to let go.
                Err(domain) => kept.push(Grave {
                    stage: Stage::Buried(domain),
                    ..grave
                }),
            },
            Stage::StacksUnmapped(freed) => finish(freed),
        }
    }
    *graves = kept;
    // Read under the lock: the last domains are buried before the flag is
    // set, so an empty graveyard seen with the flag set is truly the end.
    let is_ending = IS_ENDING.load(Ordering::SeqCst);
    if is_ending {
        for grave in graves.iter() {
            if now.saturating_sub(grave.since_ns) > END_LIMIT_NS {
                report_stuck(grave);
                HAS_LEAK.store(true, Ordering::SeqCst);
                super::finish_run();
            }
        }
    }
    let is_done = is_ending && graves.is_empty();
    drop(graves);
    if started_grace_period {
        kick_others();
    }
    // SeqCst swap: exactly one pCPU checks the count and ends the run.
    if is_done && !IS_FINISHING.swap(true, Ordering::SeqCst) {
        check_baseline();
        super::finish_run();
    }
}

/// The allocator's state before the first domain was built.
struct Baseline {
    free_frames: u64,
    hypervisor_frames: u64,
}

static BASELINE: spin::Once<Baseline> = spin::Once::new();

/// Records the allocator's state before the first domain is built (the
/// builder calls it before each build; only the first counts).
pub fn note_baseline() {
    BASELINE.call_once(|| Baseline {
        free_frames: frames::stats().free_frames,
        hypervisor_frames: space::hypervisor_frames(),
    });
}

/// Every domain is freed: the allocator must be where it was before the
/// first build, less what the hypervisor took since for itself (pCPU idle
/// stacks, vmap tables). This catches frames taken for a domain after
/// its build, which the per-domain count cannot see.
fn check_baseline() {
    let stats = frames::stats();
    let Some(baseline) = BASELINE.get() else {
        return;
    };
    let kept = space::hypervisor_frames().saturating_sub(baseline.hypervisor_frames);
    let expected = baseline.free_frames.saturating_sub(kept);
    if stats.free_frames == expected {
        log::info!(
            "every domain is freed: {} frames free, as before the first build ({}) less {kept} the hypervisor took since for itself",
            stats.free_frames,
            baseline.free_frames
        );
    } else {
        log::error!(
            "frame leak: {} frames free after every domain is freed, expected {expected} ({} before the first build, less {kept} the hypervisor took since for itself)",
            stats.free_frames,
            baseline.free_frames
        );
        HAS_LEAK.store(true, Ordering::SeqCst);
    }
}

fn report_stuck(grave: &Grave) {
    match &grave.stage {
        Stage::Buried(domain) => log::error!(
            "d{}: not freed: {} references left or a pCPU never passed a quiescent point",
            domain.id.0,
            Arc::strong_count(domain) - 1
        ),
        Stage::StacksUnmapped(freed) => log::error!(
            "d{}: vcpu stacks not freed: a pCPU never passed a quiescent point",
            freed.id.0
        ),
    }
}

/// What freeing takes apart (the rest of the domain is dropped with it).
struct Parts {
    id: DomId,
    taken: u64,
    vcpus: alloc::boxed::Box<[Vcpu]>,
    memory: alloc::boxed::Box<[GuestFrame]>,
    shared_info: GuestFrame,
    shared_view: Option<alloc::sync::Weak<dyn evtchn_core::SharedInfoView>>,
}

fn take_apart(domain: Domain) -> Parts {
    let Domain {
        id,
        frames_taken,
        vcpus,
        frames_sorted,
        shared_info_frame,
        shared_view,
        ..
    } = domain;
    // Everything else (vcpu_info areas, console line, the evtchn-core
    // handle) is dropped here, before any frame goes back.
    Parts {
        id,
        taken: frames_taken,
        vcpus,
        memory: frames_sorted,
        shared_info: shared_info_frame,
        shared_view: shared_view.get().cloned(),
    }
}

/// Grace period 1 is over and `domain` is the last reference: frees its
/// memory and shared_info frames, unmaps its vcpu stacks.
fn free_memory(domain: Domain) -> Freed {
    let parts = take_apart(domain);
    // The view reaches the shared_info frame and the vcpu_info areas in
    // the guest's memory: while anything holds it, none of them may go.
    let is_view_released = is_shared_view_released(parts.id, parts.shared_view.as_ref());
    let (memory_frames, shared_info_frame) = if is_view_released {
        (parts.memory.as_ref(), Some(parts.shared_info))
    } else {
        (&[] as &[GuestFrame], None)
    };
    let mut memory = 0;
    for frame in memory_frames {
        // SAFETY: the frame came from the allocator for this domain alone
        // (the builder) and grace period 1 is over: no pCPU has the
        // domain's tables loaded or its mappings in its TLB, no hypervisor
        // path still holds a view of it (evtchn-core let go at destroy,
        // checked above through the watched shared_info view; the domain
        // struct is ours alone and its views were dropped in
        // `take_apart`), and no other domain can map it.
        if unsafe { frames::free(frame.phys()) } {
            memory += 1;
        }
    }
    let shared_info = shared_info_frame.map_or(0, |frame| {
        // SAFETY: as above; the shared_info frame is never in the p2m, and
        // the guest's mapping of it went with its tables.
        u64::from(unsafe { frames::free(frame.phys()) })
    });
    let mut stack_frames = Vec::new();
    for vcpu in parts.vcpus.into_vec() {
        let Vcpu { stack, .. } = vcpu;
        // SAFETY: grace period 1 is over: no pCPU runs on this stack or
        // holds a suspended flow on it (a stopping vcpu is resumed until it
        // leaves for the loop), and none returns to the guest through it
        // (its TSS stack is reset whenever a live vcpu runs, and the vcpu
        // never runs again).
        let range = unsafe { stack.into_stack().release() };
        stack_frames.extend(space::unmap_stack(range));
    }
    Freed {
        id: parts.id,
        taken: parts.taken,
        memory,
        shared_info,
        stack_frames,
    }
}

/// Whether nothing holds domain `id`'s shared_info view any more (`view`
/// watches the one evtchn-core got; `None`: it never got one). Called
/// when the domain is freed: evtchn-core let go of it when the domain was
/// destroyed, and grace period 1 has ended every hypercall or interrupt
/// that could still hold a handle to the domain's event state. A view
/// still held is a leak (and freeing what it reaches would let evtchn-core
/// write freed frames): reported as an error, and the run fails.
pub fn is_shared_view_released(
    id: DomId,
    view: Option<&alloc::sync::Weak<dyn evtchn_core::SharedInfoView>>,
) -> bool {
    let holders = view.map_or(0, alloc::sync::Weak::strong_count);
    if holders == 0 {
        return true;
    }
    log::error!(
        "d{}: leak: its shared_info view is still held ({holders} reference(s)) after it was destroyed; its memory and shared_info frames are kept",
        id.0
    );
    HAS_LEAK.store(true, Ordering::SeqCst);
    false
}

/// Grace period 2 is over: frees the stack frames and checks the count.
fn finish(freed: Freed) {
    let mut stack = 0;
    for &phys in &freed.stack_frames {
        // SAFETY: unmapped since grace period 2 began; every pCPU has
        // flushed its whole TLB since, and nothing else maps a stack.
        if unsafe { space::free_stack_frame(phys) } {
            stack += 1;
        }
    }
    let total = freed.memory + freed.shared_info + stack;
    let free_now = frames::stats().free_frames;
    if total == freed.taken {
        log::info!(
            "d{}: freed {total} frames ({} memory and page tables, {} shared_info, {stack} vcpu stack), as many as its build took; {free_now} frames free",
            freed.id.0,
            freed.memory,
            freed.shared_info
        );
    } else {
        log::error!(
            "d{}: frame leak: its build took {} frames, freeing it gave back {total} ({} memory and page tables, {} shared_info, {stack} vcpu stack)",
            freed.id.0,
            freed.taken,
            freed.memory,
            freed.shared_info
        );
        HAS_LEAK.store(true, Ordering::SeqCst);
    }
    // SeqCst: the count drops after the frames are back.
    BURIED.fetch_sub(1, Ordering::SeqCst);
    // Xen: complete_domain_destroy() tells the handler a last time.
    crate::events::domains().send_global_virq(Virq::DOM_EXC);
}

/// Gives back what a failed build took (`builder::Taken`): its memory
/// and shared_info frames and its vcpu stacks. Returns how many frames
/// went back.
pub fn free_unused_build(taken: super::builder::Taken) -> u64 {
    let mut given_back = 0;
    let frames = taken.memory.iter().copied().chain(taken.shared_info);
    for frame in frames {
        // SAFETY: the frame came from the allocator for this build alone,
        // and the build failed before any domain owned it: nothing maps it
        // but the bootstrap tables the build wrote into the same frames
        // (never loaded on any CPU), and no view of it outlived the build.
        if unsafe { frames::free(frame.phys()) } {
            given_back += 1;
        }
    }
    let mut stack_frames = Vec::new();
    for (_, stack) in taken.stacks {
        // SAFETY: the stack was allocated by this build and no vcpu was
        // ever made of it: no CPU ran on it or loaded it into its TSS.
        let range = unsafe { stack.into_stack().release() };
        stack_frames.extend(space::unmap_stack(range));
    }
    // Only this CPU mapped and touched the stacks; after this
    // flush no CPU holds a translation of them that any code could use:
    // their addresses are never handed out again.
    arch::paging::flush_everything();
    for phys in stack_frames {
        // SAFETY: unmapped above and flushed from this CPU's TLB, the only
        // one that used the addresses; nothing else refers to the frame.
        if unsafe { space::free_stack_frame(phys) } {
            given_back += 1;
        }
    }
    given_back
}

/// After [`free_unused_build`]: the allocator must be back at
/// `expected_free` frames (what it had before the failed build of module
/// `index`, less the vmap tables the hypervisor keeps); else a leak,
/// logged as an error, and the run fails.
pub fn check_failed_build(index: usize, given_back: u64, expected_free: u64) {
    let free = frames::stats().free_frames;
    if free == expected_free {
        log::info!(
            "module {index}: the failed build gave back every frame it took ({given_back} held for the domain); {free} frames free, as before it"
        );
    } else {
        log::error!(
            "module {index}: frame leak: the failed build gave back {given_back} frames; {free} frames free, {expected_free} before it"
        );
        HAS_LEAK.store(true, Ordering::SeqCst);
    }
}

/// Whether some domain's frames did not all come back.
pub fn has_leak() -> bool {
    HAS_LEAK.load(Ordering::SeqCst)
}
