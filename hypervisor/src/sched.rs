//! Running vcpus on pCPUs: per-pCPU round-robin queues, and idle pCPUs
//! that take work from busy ones inside each vcpu's affinity.
//!
//! The builder spreads vcpus over the pCPUs their domain's affinity allows
//! (`cpus=` on the module line, default every online pCPU), round-robin
//! across domains, and puts each in its pCPU's queue. Each pCPU runs a loop
//! on its idle stack that picks the next vcpu of its queue that can run,
//! round-robin: one that was preempted, one that blocked and has been
//! woken, or one that is up but has not started (entered afresh from its
//! initial registers). A vcpu that blocks (SCHEDOP_block, SCHEDOP_poll)
//! suspends its hypervisor flow into its context and lets the loop run; a
//! vcpu still running after its time slice (10 ms) is preempted the same
//! way, when another vcpu of the pCPU can run, at its first return to the
//! guest (from an interrupt or a hypercall) that the pCPU's tick flagged
//! ([`maybe_preempt`]), at the latest the return from the first tick past
//! the slice's end. A vcpu that stops (its domain shut down, VCPUOP_down)
//! leaves its stack for good.
//!
//! Migration (Xen's credit scheduler steals the same way): a pCPU with
//! nothing to run in its own queue looks, before it halts, at the queues
//! of the other pCPUs that are busy running a vcpu, and takes the first
//! vcpu there that can run, is not running, belongs to a domain that is
//! not shutting down, and whose affinity holds this pCPU: it moves the
//! vcpu's entry into its own queue (both queues locked, lower index
//! first), records the vcpu's new pCPU, and runs it. A busy pCPU offers
//! work the other way: when a vcpu is woken while its pCPU runs another
//! one, [`kick`] also wakes an idle pCPU of the vcpu's affinity, which
//! then takes it. Idle pCPUs that ran vcpus also look at every tick (1
//! ms). A pinned vcpu (affinity of one pCPU) never moves.
//!
//! What follows a vcpu when it moves:
//! - its flow: the context holds only a stack pointer into the vcpu's own
//!   stack, and the new pCPU resumes it after loading the per-CPU state
//!   that any switch-in loads ([`run`]: the running slot, TSS rsp0 and the
//!   `syscall` stack top, the domain's page tables). The stack must never
//!   be used by two pCPUs: a pCPU *claims* a vcpu ([`Vcpu::is_claimed`])
//!   before it resumes or enters it, and releases the claim only at the
//!   top of its loop, on its idle stack, once the vcpu's flow is suspended
//!   or gone. Nothing on a vcpu's stack names the pCPU it runs on across a
//!   suspension (`suspend` drops its per-CPU references before it
//!   switches, and its callers re-derive anything per-CPU after it);
//! - its TLB: the new pCPU may cache translations of the domain older than
//!   the vcpu's last flush (another of its vcpus ran there earlier), so it
//!   flushes everything before the vcpu runs;
//! - its time record: republished by the new pCPU with the version
//!   protocol (the claim makes that pCPU the only writer), as Xen does
//!   when a vcpu changes pCPU; the TSC scale is one for every pCPU;
//! - its timers: deadlines are the vcpu's own (absolute system time), and
//!   each pCPU's timer interrupt scans the vcpus of its queue, so a
//!   pending deadline fires on whichever pCPU holds the vcpu at the time;
//!   the pCPU that takes it arms its LAPIC timer for them ([`arrive`],
//!   `timers::on_arrive`) before it runs it;
//! - its x87/SSE registers (switched eagerly, as Xen does for PV vcpus):
//!   from the moment [`run`] loads them from the vcpu's `fpu` area (right
//!   before the flow resumes or enters the guest) until the loop is back
//!   on its idle stack, that pCPU's registers are the vcpu's (Sluice is
//!   soft-float and never touches them itself: `arch::fpu`). The loop
//!   then saves them into the area, before it releases the claim (a
//!   [`run`] that gave up before loading them clears the slot without a
//!   save); so the next holder, on whatever pCPU, loads what the vcpu
//!   left, and no vcpu ever runs with another's state. Both happen at
//!   every switch, even when the same vcpu comes back to the same pCPU:
//!   skipping them would need a per-pCPU owner that goes stale when the
//!   vcpu moves away and back, or when a destroyed domain's vcpu memory
//!   is reused, and the pair costs little next to a switch;
//! - wake-ups: [`kick`] reads the vcpu's pCPU when it sends the IPI (see
//!   there why none is lost);
//! - the PIRQ lines routed to it (`EVTCHNOP_bind_vcpu`, or a first bind
//!   by its vcpu 0): sent to the new pCPU by [`arrive`] (`pirq`).
//!
//! Wake-ups: [`kick`] sets the vcpu's `has_wakeup` and, if the vcpu's pCPU
//! is another one, sends it the kick IPI, which ends its `hlt` or
//! interrupts its guest so that the return path injects a pending upcall.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arch::percpu::{self, MAX_CPUS};
use evtchn_core::{DomId, VcpuId};

use crate::domain::{self, Domain, Vcpu, VcpuState};

/// A pCPU's run queue: the vcpus it hosts, behind a lock that is only
/// ever held with interrupts off (its guard turns them off), so that the
/// tick of the queue's own pCPU may wait for it: another pCPU holds it
/// only for one short look (moving a vcpu, looking for one to take,
/// `host`/`unhost`), with interrupts off and no lock that an interrupt
/// handler holds. The tick must not skip its scan of deadlines when it
/// finds the queue held: idle pCPUs look into busy pCPUs' queues at each
/// of their own ticks, and the two ticks keep their phase, so a tick that
/// skipped could keep skipping.
struct RunQueue(spin::Mutex<Vec<(DomId, VcpuId)>>);

/// Interrupts off until it is dropped (then back on if they were).
struct InterruptsOff {
    were_enabled: bool,
}

impl InterruptsOff {
    fn new() -> Self {
        let were_enabled = arch::cpu::interrupts_enabled();
        arch::cpu::disable_interrupts();
        Self { were_enabled }
    }
}

impl Drop for InterruptsOff {
    fn drop(&mut self) {
        if self.were_enabled {
            arch::cpu::enable_interrupts();
        }
    }
}

/// A locked [`RunQueue`]; interrupts stay off while it lives.
struct RunQueueGuard<'a> {
    // Declared first, so dropped first: unlocked before interrupts may
    // come back on.
    list: spin::MutexGuard<'a, Vec<(DomId, VcpuId)>>,
    _interrupts_off: InterruptsOff,
}

impl RunQueue {
    const fn new() -> Self {
        Self(spin::Mutex::new(Vec::new()))
    }

    /// Locks it, with interrupts off.
    fn lock(&self) -> RunQueueGuard<'_> {
        let interrupts_off = InterruptsOff::new();
        RunQueueGuard {
            list: self.0.lock(),
            _interrupts_off: interrupts_off,
        }
    }

    /// Locks it if it is free, with interrupts off.
    fn try_lock(&self) -> Option<RunQueueGuard<'_>> {
        let interrupts_off = InterruptsOff::new();
        Some(RunQueueGuard {
            list: self.0.try_lock()?,
            _interrupts_off: interrupts_off,
        })
    }
}

impl core::ops::Deref for RunQueueGuard<'_> {
    type Target = Vec<(DomId, VcpuId)>;

    fn deref(&self) -> &Self::Target {
        &self.list
    }
}

impl core::ops::DerefMut for RunQueueGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.list
    }
}

/// A pCPU's scheduling state.
struct Pcpu {
    /// The vcpus it hosts, in creation order.
    vcpus: RunQueue,
    /// How many (a pCPU with one vcpu never preempts).
    hosted_count: AtomicUsize,
    /// The vcpu running now: `(domid << 32 | vcpu) + 1`, 0 = none.
    current: AtomicU64,
    /// Where the round-robin search starts next.
    cursor: AtomicUsize,
    /// When the current vcpu's time slice started (system time ns).
    slice_start_ns: AtomicU64,
    /// Its idle stack.
    idle: spin::Once<arch::stack::IdleStack>,
}

static PCPUS: [Pcpu; MAX_CPUS] = [const {
    Pcpu {
        vcpus: RunQueue::new(),
        hosted_count: AtomicUsize::new(0),
        current: AtomicU64::new(0),
        cursor: AtomicUsize::new(0),
        slice_start_ns: AtomicU64::new(0),
        idle: spin::Once::new(),
    }
}; MAX_CPUS];

/// Set once every boot module is built (and static channels are bound):
/// until then no pCPU picks a vcpu, so no domain runs while another one it
/// may name does not exist yet (Xen's dom0less builds all, then unpauses).
static DOMAINS_RELEASED: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// Lets the pCPUs run the built domains.
pub fn release_domains() {
    // Release: pairs with the Acquire in `pick`; the domains' state is
    // published before any pCPU runs them.
    DOMAINS_RELEASED.store(true, Ordering::Release);
}

/// The scheduler tick rate of a pCPU once it runs vcpus (`timers`): time
/// slices and `hvtimer` resolve to it (the periodic VIRQ_TIMER, singleshot
/// and poll deadlines fire when due, between ticks).
pub const GUEST_TICK_HZ: u32 = 1000;

/// A time slice.
const SLICE_NS: u64 = 10_000_000;

fn encode(domid: DomId, vcpu: VcpuId) -> u64 {
    ((u64::from(domid.0) << 32) | u64::from(vcpu.0)) + 1
}

fn decode(value: u64) -> Option<(DomId, VcpuId)> {
    let value = value.checked_sub(1)?;
    Some((DomId((value >> 32) as u16), VcpuId(value as u32)))
}

fn this_pcpu() -> Option<&'static Pcpu> {
    PCPUS.get(percpu::current().index() as usize)
}

/// pCPUs whose queue holds two vcpus or more: with none, no vcpu waits for
/// a busy pCPU, so idle pCPUs skip looking for work and wake-ups skip
/// offering it (a hint: read Relaxed; a pCPU that misses a change looks
/// again at its next tick).
static CROWDED: AtomicUsize = AtomicUsize::new(0);

/// One more vcpu in `pcpu`'s queue.
fn add_hosted(pcpu: &Pcpu) {
    if pcpu.hosted_count.fetch_add(1, Ordering::Relaxed) == 1 {
        CROWDED.fetch_add(1, Ordering::Relaxed);
    }
}

/// One vcpu less in `pcpu`'s queue.
fn remove_hosted(pcpu: &Pcpu) {
    if pcpu.hosted_count.fetch_sub(1, Ordering::Relaxed) == 2 {
        CROWDED.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Records that `vcpu` of `domain` starts in its pCPU's queue.
pub fn host(domain: &Domain, vcpu: &Vcpu) {
    if let Some(pcpu) = PCPUS.get(vcpu.pcpu() as usize) {
        pcpu.vcpus.lock().push((domain.id, vcpu.id));
        add_hosted(pcpu);
    }
}

/// Forgets the vcpus of a destroyed domain: its pCPUs no longer look at
/// them (for time slices, timers, or to run them). Every vcpu has stopped
/// (it is dead), and a dead vcpu never moves, so each is in the queue its
/// `pcpu` names.
pub fn unhost(domain: &Domain) {
    for vcpu in domain.vcpus.iter() {
        unhost_vcpu(domain, vcpu);
    }
}

/// Takes `vcpu` out of its pCPU's queue (if still there): a vcpu that
/// stopped for good (dead) is never run again, and left queued it would
/// keep its pCPU looking at it (time slices, timers, stealing). A dead
/// vcpu never moves, so its pCPU is the one whose queue holds it.
pub fn unhost_vcpu(domain: &Domain, vcpu: &Vcpu) {
    let Some(pcpu) = PCPUS.get(vcpu.pcpu() as usize) else {
        return;
    };
    let entry = (domain.id, vcpu.id);
    let was_hosted = {
        let mut list = pcpu.vcpus.lock();
        let before = list.len();
        list.retain(|&hosted| hosted != entry);
        list.len() != before
    };
    if was_hosted {
        remove_hosted(pcpu);
    }
}

/// The vcpu running on this pCPU, from interrupt context (never spins).
pub fn hosted_from_interrupt() -> Option<(Arc<Domain>, VcpuId)> {
    let (domid, vcpu) = decode(this_pcpu()?.current.load(Ordering::Acquire))?;
    Some((domain::try_get(domid)?, vcpu))
}

/// The vcpu running on this pCPU (the caller of a hypercall).
pub fn current() -> Option<(Arc<Domain>, VcpuId)> {
    let (domid, vcpu) = decode(this_pcpu()?.current.load(Ordering::Acquire))?;
    Some((domain::get(domid)?, vcpu))
}

/// Calls `each` for every vcpu this pCPU hosts, from this pCPU's timer
/// interrupt. It waits for the queue if another pCPU holds it (moving a
/// vcpu, or looking for one to take): never for long, and never for this
/// pCPU itself, which holds its queue only with interrupts off
/// ([`RunQueue`]). `each` must not lock a run queue.
pub fn for_each_hosted_from_interrupt(mut each: impl FnMut(&Arc<Domain>, &Vcpu)) {
    let Some(pcpu) = this_pcpu() else {
        return;
    };
    let list = pcpu.vcpus.lock();
    for &(domid, vcpu_id) in list.iter() {
        if let Some(domain) = domain::try_get(domid)
            && let Some(vcpu) = domain.vcpu(vcpu_id)
        {
            each(&domain, vcpu);
        }
    }
}

/// For the `'r'` debug key: calls `each` with every pCPU's index, the vcpu
/// it runs now, and the vcpus it hosts in round-robin order (a pCPU whose
/// list is being changed this instant is skipped: interrupt context).
pub fn for_each_run_queue(
    mut each: impl FnMut(usize, Option<(DomId, VcpuId)>, &[(DomId, VcpuId)]),
) {
    for index in 0..percpu::count() as usize {
        let Some(pcpu) = PCPUS.get(index) else {
            continue;
        };
        let Some(list) = pcpu.vcpus.try_lock() else {
            continue;
        };
        each(index, decode(pcpu.current.load(Ordering::Acquire)), &list);
    }
}

/// Wakes `vcpu`: a blocked vcpu becomes eligible to run and re-checks why it
/// waits, a running one on another pCPU gets the kick IPI so that it passes
/// the upcall check. If its pCPU is busy with another vcpu, an idle pCPU of
/// its affinity is woken too, to take it (module doc). A leaf.
///
/// No wake-up is lost to a move. The caller made the reason visible first
/// (an event's pending bits, SeqCst in evtchn-core; a poll deadline); the
/// store of `has_wakeup` and the load of the vcpu's pCPU here are SeqCst,
/// as are the store of a move and, after it, the checks the vcpu makes on
/// its new pCPU (the `has_wakeup` swap and the readiness check of
/// [`block_until`], the upcall check on the way back to the guest). So
/// either this load sees the new pCPU, which gets the IPI, or the move's
/// store comes later in the single order of SeqCst operations, and so do
/// the vcpu's checks, which then see the wake-up. A vcpu moves only while
/// it can run and no pCPU runs it, and its new pCPU runs it right away, so
/// an IPI that reaches the old pCPU only costs that pCPU a look at its
/// queue.
pub fn kick(vcpu: &Vcpu) {
    // SeqCst: see above; pairs with the swap in `block_until` and the
    // loads in `can_run`.
    vcpu.has_wakeup.store(true, Ordering::SeqCst);
    let home = vcpu.pcpu();
    // Relaxed: a hint (`CROWDED`).
    if CROWDED.load(Ordering::Relaxed) != 0 {
        kick_and_offer(vcpu, home);
    } else {
        kick_pcpu(home);
    }
}

/// Sends the kick IPI to pCPU `home` unless it is this one.
#[inline]
fn kick_pcpu(home: u32) {
    if home != percpu::current().index()
        && let Some(cpu) = percpu::by_index(home)
    {
        arch::smp::kick(cpu);
    }
}

/// [`kick`] while some pCPU's queue holds several vcpus: kicks `home`,
/// and if it runs another vcpu, also wakes one idle pCPU of `vcpu`'s
/// affinity (not this one, whose loop runs when the caller is done), to
/// take it.
#[inline(never)]
fn kick_and_offer(vcpu: &Vcpu, home: u32) {
    kick_pcpu(home);
    // Relaxed: hints; the idle pCPU re-checks everything under the locks.
    let is_waiting = !vcpu.is_claimed.load(Ordering::Relaxed)
        && PCPUS
            .get(home as usize)
            .is_some_and(|pcpu| pcpu.current.load(Ordering::Relaxed) != 0);
    if !is_waiting || vcpu.affinity.count() < 2 {
        return;
    }
    let me = percpu::current().index();
    let idle = vcpu.affinity.iter().find(|&index| {
        index != home
            && index != me
            && PCPUS.get(index as usize).is_some_and(|pcpu| {
                pcpu.idle.get().is_some() && pcpu.current.load(Ordering::Relaxed) == 0
            })
    });
    if let Some(cpu) = idle.and_then(percpu::by_index)
        && cpu.is_online()
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

/// Blocks `vcpu` until `is_ready()`, the domain shuts down or the vcpu is
/// taken down; meanwhile its pCPU runs other vcpus or halts. `has_wakeup`
/// is cleared before each check and any wake-up sets it, so a wake-up
/// between the check and the suspension is not lost (the loop resumes a
/// blocked vcpu whose flag is set).
pub fn block_until(domain: &Domain, vcpu: &Vcpu, is_ready: &dyn Fn() -> bool) -> WakeReason {
    loop {
        arch::cpu::disable_interrupts();
        if domain.is_shutting_down() {
            vcpu.transition(VcpuState::Blocked, VcpuState::Running);
            return WakeReason::Stopping;
        }
        if vcpu.state() == VcpuState::Down {
            return WakeReason::Down;
        }
        // SeqCst: pairs with the store in `kick` (no lost wake-up, even
        // across a move: see there).
        vcpu.has_wakeup.swap(false, Ordering::SeqCst);
        if is_ready() {
            vcpu.transition(VcpuState::Blocked, VcpuState::Running);
            return WakeReason::Ready;
        }
        vcpu.transition(VcpuState::Running, VcpuState::Blocked);
        suspend(vcpu);
    }
}

/// Suspends the running vcpu's hypervisor flow and runs the pCPU's loop;
/// returns when a loop resumes it: this pCPU's, or another one's if the
/// vcpu moved meanwhile. Callers must not keep anything per-CPU across it
/// (a `&Pcpu`, the running slot's borrows of another vcpu, a CPU index).
fn suspend(vcpu: &Vcpu) {
    // The flow may hold borrows from `running`'s slot, which the loop
    // hands to the next vcpu: keep the domain alive until it resumes (on
    // whatever pCPU: the domain is the same, and the new pCPU's slot holds
    // it from then on).
    let _domain = crate::running::pin();
    // The idle stack of the pCPU the flow is suspended on: looked up here
    // and not kept, since the flow may resume on another pCPU.
    match this_pcpu().and_then(|pcpu| pcpu.idle.get()) {
        Some(idle) => idle.suspend_into(&vcpu.context, pcpu_loop),
        // No idle stack (cannot happen once the pCPU started): wait here.
        None => arch::cpu::enable_interrupts_and_halt(),
    }
}

/// Preempts the running vcpu (interrupted in the guest, or returning from
/// a hypercall) if its time slice is over and another vcpu of this pCPU
/// can run.
///
/// Every return to the guest comes here, so the common case is one load
/// and a branch: this pCPU's return hint (`PerCpu::return_hint`), which
/// only [`on_tick`] sets, and only when this pCPU hosts several vcpus and
/// the running one's slice ends before the next tick. From that tick on,
/// every return looks at the clock ([`preempt_if_due`]), so a vcpu is
/// still preempted at its first return to the guest at or after the end
/// of its slice, as when every return looked. A slice that began after
/// the tick that set the hint clears it ([`run`]), so a hint never
/// outlives the slice it was set for.
#[inline]
pub fn maybe_preempt(domain: &Domain, vcpu: &Vcpu) {
    if percpu::is_return_hint_set() {
        preempt_if_due(domain, vcpu);
    }
}

/// The tick period of a pCPU that runs vcpus.
pub const TICK_NS: u64 = 1_000_000_000 / GUEST_TICK_HZ as u64;

/// From this pCPU's LAPIC tick (interrupt context, interrupts off): sets
/// the return hint if several vcpus share this pCPU and the running
/// one's slice ends before the next tick ([`maybe_preempt`]). A queue
/// that grew to two since the last tick is seen here (within one tick).
pub fn on_tick(now_ns: u64) {
    let Some(pcpu) = this_pcpu() else {
        return;
    };
    // Relaxed: this pCPU's own slice, and the count is a hint re-read by
    // `preempt_if_due`; the next tick looks again.
    if pcpu.hosted_count.load(Ordering::Relaxed) > 1
        && now_ns
            .saturating_sub(pcpu.slice_start_ns.load(Ordering::Relaxed))
            .saturating_add(TICK_NS)
            >= SLICE_NS
    {
        // Relaxed: read by this pCPU only, and not before this interrupt
        // returns (interrupts are off until then).
        percpu::current().return_hint.store(true, Ordering::Relaxed);
    }
}

/// [`maybe_preempt`] once the hint is set. The hint stays set while the
/// slice is not over yet, or the queue is held by another pCPU this
/// instant (the next return looks again); it is cleared when this
/// pCPU hosts one vcpu, or when the slice ends (a new one starts here, or
/// the vcpu is suspended and [`run`] starts the next one's).
#[inline(never)]
fn preempt_if_due(domain: &Domain, vcpu: &Vcpu) {
    let Some(pcpu) = this_pcpu() else {
        return;
    };
    let hint = &percpu::current().return_hint;
    // Relaxed: only this pCPU writes its hint, with interrupts off.
    if pcpu.hosted_count.load(Ordering::Relaxed) <= 1 {
        hint.store(false, Ordering::Relaxed);
        return;
    }
    let now = crate::time::now_ns();
    if now.saturating_sub(pcpu.slice_start_ns.load(Ordering::Relaxed)) < SLICE_NS {
        return;
    }
    let Some(has_other) = has_other_to_run(pcpu, domain, vcpu) else {
        return;
    };
    hint.store(false, Ordering::Relaxed);
    if has_other {
        // `pcpu` is this pCPU's; the vcpu may resume on another one, so
        // nothing after the suspension may use it.
        suspend(vcpu);
    } else {
        pcpu.slice_start_ns.store(now, Ordering::Relaxed);
    }
}

/// Whether a vcpu of `pcpu`'s queue other than `vcpu` can run; `None` if
/// the queue is held by another pCPU this instant (never waited for).
fn has_other_to_run(pcpu: &Pcpu, domain: &Domain, vcpu: &Vcpu) -> Option<bool> {
    let list = pcpu.vcpus.try_lock()?;
    Some(list.iter().any(|&(domid, vcpu_id)| {
        (domid, vcpu_id) != (domain.id, vcpu.id)
            && domain::get(domid)
                .is_some_and(|other| other.vcpu(vcpu_id).is_some_and(|v| can_run(&other, v)))
    }))
}

/// SCHEDOP_yield from the running `vcpu`: if another vcpu of this pCPU
/// can run, the caller is suspended as if its time slice were over (it
/// stays runnable, and the round-robin loop runs the others first);
/// otherwise it carries on at once. Called from the hypercall, on the
/// vcpu's stack.
pub fn yield_now(domain: &Domain, vcpu: &Vcpu) {
    let Some(pcpu) = this_pcpu() else {
        return;
    };
    if pcpu.hosted_count.load(Ordering::Relaxed) <= 1 {
        return;
    }
    if has_other_to_run(pcpu, domain, vcpu) == Some(true) {
        // As in `preempt_if_due`: nothing per-CPU is used after this.
        suspend(vcpu);
    }
}

/// Whether the loop would pick `vcpu` (if no other pCPU holds it).
fn can_run(domain: &Domain, vcpu: &Vcpu) -> bool {
    if domain.is_shutting_down() {
        return vcpu.state() != VcpuState::Dead;
    }
    match vcpu.state() {
        VcpuState::Running => vcpu.context.is_suspended() || vcpu.initial_frame.lock().is_some(),
        VcpuState::Blocked => {
            // SeqCst: pairs with the store in `kick`.
            vcpu.context.is_suspended() && vcpu.has_wakeup.load(Ordering::SeqCst)
        }
        VcpuState::Down | VcpuState::Dead => false,
    }
}

/// Leaves the current vcpu for good (its domain shut down, or it went
/// down): marks it and runs this pCPU's loop. Called on the vcpu's stack
/// with nothing on it still needed.
pub fn leave_vcpu(domain: Arc<Domain>, vcpu: VcpuId, state: VcpuState) -> ! {
    if let Some(vcpu) = domain.vcpu(vcpu) {
        match state {
            VcpuState::Dead => domain::vcpu_stopped(&domain, vcpu),
            // The caller saw the vcpu down (VCPUOP_down) and recorded where
            // VCPUOP_up resumes it; the state stays as it is now. If a
            // VCPUOP_up came since, the vcpu is up again, and the loop below
            // enters it from that record at once; storing Down here would
            // undo an up that already answered 0, and the vcpu would stay
            // down.
            VcpuState::Down => {}
            VcpuState::Running | VcpuState::Blocked => vcpu.set_state(state),
        }
    }
    drop(domain);
    run_idle_loop()
}

/// Switches this pCPU to its idle stack and its loop.
pub fn run_idle_loop() -> ! {
    arch::cpu::disable_interrupts();
    if let Some(pcpu) = this_pcpu() {
        pcpu.current.store(0, Ordering::Release);
        // `running`'s slot is cleared by the loop, on the idle stack: the
        // domain's last reference may go with it, and this runs on one of
        // its vcpus' stacks.
        if let Some(idle) = pcpu.idle.get() {
            idle.restart(0, pcpu_loop)
        }
    }
    // No idle stack: nothing better than halting with interrupts on.
    crate::cpus::idle()
}

/// Gives this pCPU an idle stack and enters its loop.
pub fn start_pcpu() -> ! {
    let Some(pcpu) = this_pcpu() else {
        crate::cpus::idle()
    };
    match crate::memory::space::allocate_stack(4) {
        Ok(stack) => pcpu
            .idle
            .call_once(|| arch::stack::IdleStack::new(stack))
            .restart(0, pcpu_loop),
        Err(error) => {
            log::error!("cpu{}: no idle stack: {error:?}", percpu::current().index());
            crate::cpus::idle()
        }
    }
}

/// Claims `vcpu` for this pCPU (module doc): only the holder resumes or
/// enters it. `false` if another pCPU holds it.
#[inline]
fn claim(vcpu: &Vcpu) -> bool {
    // Acquire: pairs with the Release in `release_claim`: whatever the
    // last holder did on the vcpu's stack happened before.
    vcpu.is_claimed
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
}

/// This pCPU is done with `vcpu` (it was the last one in the running
/// slot; the loop is on its idle stack): saves its x87/SSE registers, then
/// gives up the claim. The save comes before the release, so the next
/// holder (this pCPU or another) loads what the vcpu left (module doc).
fn switch_out(vcpu: &Vcpu) {
    vcpu.fpu.lock().save();
    release_claim(vcpu);
}

/// Loads `vcpu`'s x87/SSE registers on this pCPU, which holds its claim,
/// right before its flow resumes or it enters the guest.
#[inline]
fn switch_in_fpu(vcpu: &Vcpu) {
    vcpu.fpu.lock().restore();
}

/// Gives up this pCPU's claim on `vcpu`: it no longer runs on its stack.
#[inline]
fn release_claim(vcpu: &Vcpu) {
    // Release: pairs with the Acquire in `claim`.
    vcpu.is_claimed.store(false, Ordering::Release);
}

/// The next vcpu this pCPU can run, round-robin, claimed.
fn pick(pcpu: &Pcpu) -> Option<(Arc<Domain>, VcpuId)> {
    if !DOMAINS_RELEASED.load(Ordering::Acquire) {
        return None;
    }
    let list = pcpu.vcpus.lock();
    let count = list.len();
    let start = pcpu.cursor.load(Ordering::Relaxed);
    for offset in 0..count {
        let index = (start + offset) % count;
        let Some(&(domid, vcpu_id)) = list.get(index) else {
            continue;
        };
        let Some(domain) = domain::get(domid) else {
            continue;
        };
        let Some(vcpu) = domain.vcpu(vcpu_id) else {
            continue;
        };
        // Only this pCPU claims the vcpus of its queue while it holds the
        // queue's lock (a pCPU that takes one away needs the lock too), so
        // the claims below succeed; they are checked all the same.
        if domain.is_shutting_down() && !vcpu.context.is_suspended() {
            // Never started, down, or parked: it stops here.
            if vcpu.state() != VcpuState::Dead && claim(vcpu) {
                drop(list);
                domain::vcpu_stopped(&domain, vcpu);
                release_claim(vcpu);
                return None;
            }
            continue;
        }
        if can_run(&domain, vcpu) && claim(vcpu) {
            pcpu.cursor.store(index + 1, Ordering::Relaxed);
            return Some((domain, vcpu_id));
        }
    }
    None
}

/// This pCPU (`me`) has nothing of its own to run: takes a vcpu that can
/// run from the queue of a pCPU busy with another one, inside the vcpu's
/// affinity, and moves it into its own queue (module doc). Returns it
/// claimed, with the pCPU it came from.
#[inline(never)]
fn steal(me: u32) -> Option<(Arc<Domain>, VcpuId, u32)> {
    if !DOMAINS_RELEASED.load(Ordering::Acquire) {
        return None;
    }
    let own = PCPUS.get(me as usize)?;
    let count = percpu::count();
    for step in 1..count {
        let from = (me + step) % count;
        let Some(victim) = PCPUS.get(from as usize) else {
            continue;
        };
        // An idle pCPU runs its own queue soon (it was kicked); one with a
        // single vcpu has nothing waiting. Relaxed: hints, re-checked
        // under the locks through each vcpu's claim.
        if victim.current.load(Ordering::Relaxed) == 0
            || victim.hosted_count.load(Ordering::Relaxed) < 2
        {
            continue;
        }
        // Lock order: the lower-indexed pCPU's queue -> the higher one's
        // (no other path holds two) -> the registry slot (read, in
        // `domain::get`) -> a vcpu's `initial_frame` (in `can_run`). All
        // with interrupts off ([`RunQueue`]); of interrupt handlers, only
        // a pCPU's tick waits for a queue, its own, holding nothing else.
        let (low, high) = if me < from {
            (own, victim)
        } else {
            (victim, own)
        };
        let mut low = low.vcpus.lock();
        let mut high = high.vcpus.lock();
        let (own_list, victim_list) = if me < from {
            (&mut *low, &mut *high)
        } else {
            (&mut *high, &mut *low)
        };
        for position in 0..victim_list.len() {
            let Some(&(domid, vcpu_id)) = victim_list.get(position) else {
                continue;
            };
            let Some(domain) = domain::get(domid) else {
                continue;
            };
            // A shutting-down domain's vcpus are stopped by their own
            // pCPUs (`domain::shut_down`).
            if domain.is_shutting_down() {
                continue;
            }
            let Some(vcpu) = domain.vcpu(vcpu_id) else {
                continue;
            };
            if !vcpu.affinity.contains(me) || !claim(vcpu) {
                continue;
            }
            if !can_run(&domain, vcpu) {
                release_claim(vcpu);
                continue;
            }
            let entry = victim_list.remove(position);
            own_list.push(entry);
            remove_hosted(victim);
            add_hosted(own);
            // SeqCst: pairs with the load in `kick` (no lost wake-up).
            vcpu.pcpu.store(me, Ordering::SeqCst);
            vcpu.migrations.fetch_add(1, Ordering::Relaxed);
            return Some((domain, vcpu_id, from));
        }
    }
    None
}

/// What a pCPU does for a vcpu it took from another pCPU, before running
/// it: forget any translation of the domain older than the vcpu's last
/// flush (the vcpu's `tlb_generation` speaks of the pCPU it ran on), arm
/// this pCPU's LAPIC timer for its pending deadlines (`timers`), and
/// republish its time record on this pCPU (the claim makes this pCPU the
/// only writer; the TSC scale is the same everywhere, so this keeps Xen's
/// protocol rather than correcting anything).
#[inline(never)]
fn arrive(domain: &Domain, vcpu: &Vcpu, from: u32) {
    crate::timers::on_arrive(domain, vcpu);
    arch::paging::flush_everything();
    crate::pirq::vcpu_moved(domain.id, vcpu.id, percpu::current().index());
    if let Some(info) = domain.vcpu_info(vcpu.id) {
        crate::time::publish_vcpu_time(info);
    }
    log::debug!(
        "d{}v{} moves from pCPU {from} to pCPU {} (moves so far: {})",
        domain.id.0,
        vcpu.id.0,
        percpu::current().index(),
        vcpu.migrations.load(Ordering::Relaxed)
    );
}

/// The pCPU loop: run the next vcpu of its queue that can run, else one
/// taken from a busy pCPU, else halt.
extern "C" fn pcpu_loop(_: u64) -> ! {
    loop {
        arch::cpu::disable_interrupts();
        let Some(pcpu) = this_pcpu() else {
            crate::cpus::idle()
        };
        pcpu.current.store(0, Ordering::Release);
        // On the idle stack: the vcpu this pCPU ran last (its flow
        // suspended, or left for good) is off its stack, and another pCPU
        // may take it now. Its x87/SSE registers are saved first, while
        // this pCPU still holds the claim (module doc).
        crate::running::clear_after(switch_out);
        crate::domain::reaper::on_idle();
        let next = match pick(pcpu) {
            Some(next) => Some(next),
            None if CROWDED.load(Ordering::Relaxed) != 0 => {
                steal(percpu::current().index()).map(|(domain, vcpu_id, from)| {
                    if let Some(vcpu) = domain.vcpu(vcpu_id) {
                        arrive(&domain, vcpu, from);
                    }
                    (domain, vcpu_id)
                })
            }
            None => None,
        };
        // One call site, so that `run` stays inlined in the loop.
        if let Some((domain, vcpu_id)) = next {
            run(pcpu, domain, vcpu_id);
        }
        arch::cpu::enable_interrupts_and_halt();
    }
}

/// Runs `vcpu_id` of `domain`, claimed, on this pCPU: resumes its suspended
/// flow, or enters it afresh. Returns only if it could not (the claim given
/// up). The `Arc` is dropped before the switch (the loop's frames are
/// abandoned, and a reference left there would keep a destroyed domain
/// from ever being freed); the registry keeps the domain alive meanwhile,
/// and its vcpu stack stays until this pCPU has passed a quiescent point
/// (`domain::reaper`).
fn run(pcpu: &Pcpu, domain: Arc<Domain>, vcpu_id: VcpuId) {
    let Some(vcpu) = domain.vcpu(vcpu_id) else {
        return;
    };
    crate::timers::start_guest_tick();
    pcpu.current
        .store(encode(domain.id, vcpu.id), Ordering::Release);
    crate::running::set(&domain, vcpu);
    pcpu.slice_start_ns
        .store(crate::time::now_ns(), Ordering::Relaxed);
    // A new slice: a hint set for the last one is stale (`maybe_preempt`).
    // Relaxed: this pCPU's own, interrupts off.
    percpu::current()
        .return_hint
        .store(false, Ordering::Relaxed);
    arch::guest_entry::set_vcpu_stack(vcpu.stack.top());
    if vcpu.context.is_suspended() {
        #[cfg(feature = "selftest")]
        crate::selftest::spoiled_tables::before_resume(&domain);
        if arch::guest_entry::switch_page_tables(domain.root).is_err() {
            domain::crash(
                &domain,
                format_args!("*** page tables lost their hypervisor slots"),
            );
            // The flow must still end, or the loop picks the vcpu again
            // and again (a stopping domain's suspended vcpu can run) and
            // the domain never finishes dying (the flow also holds a
            // reference to it). Resumed on the hypervisor's own tables,
            // which map no guest address (a guest copy on its way out
            // fails with -EFAULT), it sees its domain shutting down on
            // the way back to the guest and leaves for good.
            if arch::guest_entry::switch_page_tables(crate::memory::space::hypervisor_root())
                .is_err()
            {
                log::error!(
                    "d{}v{}: cannot be stopped: no page tables to resume it on",
                    domain.id.0,
                    vcpu.id.0
                );
            } else if let Some(flow) = vcpu.context.take() {
                switch_in_fpu(vcpu);
                drop(domain);
                flow.resume();
            }
        } else {
            if vcpu.state() == VcpuState::Running {
                crate::timers::on_switch_in(&domain, vcpu);
            }
            if let Some(flow) = vcpu.context.take() {
                switch_in_fpu(vcpu);
                drop(domain);
                flow.resume();
            }
        }
    } else {
        // Looked at again now that any move is stored: a vcpu taken from
        // another pCPU may have been taken down, or its domain shut down,
        // since `steal` looked, and the kick that follows such a change
        // may have read the pCPU it left. Entered anyway, it would run
        // guest code until this pCPU's next interrupt; left alone, this
        // pCPU's loop parks it (down) or stops it (shutting down). Either
        // the kick read the new pCPU, or its read came before the move's
        // SeqCst store (a locked, fully ordering instruction on x86), and
        // so did the change, which these loads, after that store, see.
        let may_enter = vcpu.state() == VcpuState::Running && !domain.is_shutting_down();
        let frame = if may_enter {
            vcpu.initial_frame.lock().take()
        } else {
            None
        };
        if let Some(mut frame) = frame {
            log::debug!(
                "d{}v{} enters the guest on pCPU {}",
                domain.id.0,
                vcpu.id.0,
                percpu::current().index()
            );
            crate::timers::on_switch_in(&domain, vcpu);
            // As every return to the guest: an upcall due now runs before
            // the first instruction (`upcall::deliver_before_entry`). If
            // it cannot, the domain crashed and the vcpu is not entered.
            let entry = crate::upcall::deliver_before_entry(&domain, vcpu, &mut frame)
                .then(|| arch::guest_entry::prepare_entry(&frame, &vcpu.stack, domain.root));
            match entry {
                None => {}
                Some(Ok(entry)) => {
                    switch_in_fpu(vcpu);
                    drop(domain);
                    entry.enter();
                }
                Some(Err(error)) => domain::crash(
                    &domain,
                    format_args!("vcpu {} cannot be entered: {error:?}", vcpu.id.0),
                ),
            }
        }
    }
    pcpu.current.store(0, Ordering::Release);
    crate::running::clear();
    release_claim(vcpu);
}
