//! PV domains: what a domain and its vcpus are, the registry of running
//! domains, and their end (shutdown, VIRQ_DOM_EXC, destruction, freeing by
//! the [`reaper`], and the run's exit code when the last one is gone).

pub mod builder;
pub mod config;
pub mod elf;
pub mod reaper;

use alloc::boxed::Box;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use arch::idt::InterruptFrame;
use evtchn_core::abi::{SharedInfo, VcpuInfo};
use evtchn_core::{DomId, Privilege, VcpuId, Virq};

use crate::memory::guest_frames::GuestFrame;

/// Domain ids Sluice accepts are below this.
pub const MAX_DOMAINS: usize = 64;

/// SHUTDOWN_* reasons (spec §7.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownReason {
    /// 0: the guest is done and well.
    Poweroff,
    /// 1.
    Reboot,
    /// 2.
    Suspend,
    /// 3: the guest (or Sluice on its behalf) gave up.
    Crash,
    /// 4.
    Watchdog,
    /// 5.
    SoftReset,
}

impl ShutdownReason {
    /// The reason for SCHEDOP_shutdown's `reason` word.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => Self::Poweroff,
            1 => Self::Reboot,
            2 => Self::Suspend,
            3 => Self::Crash,
            4 => Self::Watchdog,
            5 => Self::SoftReset,
            _ => return None,
        })
    }

    fn code(self) -> u8 {
        match self {
            Self::Poweroff => 0,
            Self::Reboot => 1,
            Self::Suspend => 2,
            Self::Crash => 3,
            Self::Watchdog => 4,
            Self::SoftReset => 5,
        }
    }
}

/// Where a vcpu is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum VcpuState {
    /// Not started (secondary vcpus before VCPUOP_up, or after down).
    Down = 0,
    /// Runs (or is about to run) on a pCPU.
    Running = 1,
    /// In SCHEDOP_block or SCHEDOP_poll, waiting in its pCPU's queue.
    Blocked = 2,
    /// Its domain is gone; it never runs again.
    Dead = 3,
}

impl VcpuState {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Running,
            2 => Self::Blocked,
            3 => Self::Dead,
            _ => Self::Down,
        }
    }
}

/// One virtual CPU. It starts on the pCPU the builder chose and may move
/// to another pCPU of its domain's affinity (`sched`).
pub struct Vcpu {
    /// Its id in the domain.
    pub id: VcpuId,
    /// The pCPUs it may run on (its domain's `cpus=`, less those not
    /// online).
    pub affinity: config::CpuSet,
    /// The pCPU (dense index) whose run queue holds it; changed only by
    /// `sched` when it moves, with both queues locked. Read with
    /// [`Vcpu::pcpu`].
    pub pcpu: AtomicU32,
    /// How many times it moved to another pCPU (`'q'` shows it).
    pub migrations: AtomicU64,
    /// A pCPU has taken it to run: set by that pCPU's scheduler loop
    /// when it picks the vcpu, cleared by the same loop once it is back
    /// on its idle stack (the vcpu's flow suspended or left). Only the
    /// holder may resume the vcpu's flow or enter it, so no two pCPUs are
    /// ever on its stack (`sched`).
    pub is_claimed: AtomicBool,
    /// Its hypervisor stack (the `syscall` entry and interrupts from the
    /// guest land there).
    pub stack: arch::guest_entry::VcpuStack,
    /// Its hypervisor flow while it waits for its pCPU (blocked or
    /// preempted).
    pub context: arch::stack::Context,
    state: AtomicU8,
    /// Set by VCPUOP_initialise (and for vcpu 0 by the builder); never
    /// cleared.
    pub is_initialised: AtomicBool,
    /// Serialises VCPUOP_initialise calls on this vcpu (Xen takes its
    /// domain lock there): its holder alone tests `is_initialised` and,
    /// while it is clear, writes the registers, callbacks and x87/SSE
    /// state the vcpu starts with.
    pub initialise_lock: spin::Mutex<()>,
    /// Up but never woken: VCPUOP_initialise with VGCF_online marks a down
    /// vcpu up without waking it, as Xen 4.17 does (it clears the vcpu's
    /// down flag and nothing else). Its state stays [`VcpuState::Down`],
    /// so it does not run, but VCPUOP_is_up answers 1 and VCPUOP_up,
    /// which wakes only a vcpu it brings up, leaves it so. VCPUOP_down
    /// then VCPUOP_up wakes it (`hypercall::vcpu_op`); of what else wakes
    /// a vcpu in Xen (an unpause: Sluice has no domain pause), nothing
    /// reaches it.
    pub up_unwoken: AtomicBool,
    /// The registers it starts with (vcpu 0: from the builder; others:
    /// VCPUOP_initialise).
    pub initial_frame: spin::Mutex<Option<InterruptFrame>>,
    /// Event callback address (0 = none).
    pub event_callback: AtomicU64,
    /// The event callback as the bounce enters it: `event_callback` when
    /// that is usable (non-zero and canonical), 0 when it is not or not
    /// yet known, so that the bounce tests one word (`upcall`). Set with
    /// `event_callback` by `upcall::register_event_callback` (set_callbacks,
    /// callback_op, VCPUOP_initialise); only the vcpu's own flow writes
    /// either once it runs, so the bounce never sees the two disagree.
    pub event_entry: AtomicU64,
    /// Failsafe callback address (0 = none).
    pub failsafe_callback: AtomicU64,
    /// Singleshot timer deadline, system time ns (0 = none).
    pub singleshot_deadline_ns: AtomicU64,
    /// Periodic timer period, ns (0 = stopped).
    pub periodic_period_ns: AtomicU64,
    /// When the last periodic tick was raised (or the timer started),
    /// system time ns: the next is due a period later (`timers`).
    pub periodic_last_ns: AtomicU64,
    /// SCHEDOP_poll timeout, system time ns (0 = none).
    pub poll_deadline_ns: AtomicU64,
    /// A wake-up arrived (kick, poller wake-up, timeout) since it blocked.
    pub has_wakeup: AtomicBool,
    /// The domain's `tlb_generation` this vcpu's pCPU last flushed for.
    pub tlb_generation: AtomicU64,
    /// Its x87/SSE registers while it is off every pCPU (`sched`: saved
    /// by the pCPU that ran it before that pCPU gives up its claim,
    /// loaded by the next holder right before the vcpu's flow resumes or
    /// enters the guest). Starts in the reset state, so a fresh vcpu sees
    /// nothing of a previous occupant of its pCPU. Only the claim holder
    /// locks it, and VCPUOP_initialise (under `initialise_lock`) before
    /// the vcpu first runs: never contended.
    pub fpu: spin::Mutex<arch::fpu::FxArea>,
}

impl Vcpu {
    fn new(
        id: VcpuId,
        affinity: config::CpuSet,
        pcpu: u32,
        stack: arch::guest_entry::VcpuStack,
    ) -> Self {
        Self {
            id,
            affinity,
            pcpu: AtomicU32::new(pcpu),
            migrations: AtomicU64::new(0),
            is_claimed: AtomicBool::new(false),
            stack,
            context: arch::stack::Context::new(),
            state: AtomicU8::new(VcpuState::Down as u8),
            is_initialised: AtomicBool::new(false),
            initialise_lock: spin::Mutex::new(()),
            up_unwoken: AtomicBool::new(false),
            initial_frame: spin::Mutex::new(None),
            event_callback: AtomicU64::new(0),
            event_entry: AtomicU64::new(0),
            failsafe_callback: AtomicU64::new(0),
            singleshot_deadline_ns: AtomicU64::new(0),
            periodic_period_ns: AtomicU64::new(0),
            periodic_last_ns: AtomicU64::new(0),
            poll_deadline_ns: AtomicU64::new(0),
            has_wakeup: AtomicBool::new(false),
            tlb_generation: AtomicU64::new(0),
            fpu: spin::Mutex::new(arch::fpu::FxArea::reset()),
        }
    }

    /// The pCPU (dense index) it runs on, or waits on to run.
    pub fn pcpu(&self) -> u32 {
        // SeqCst: pairs with the store of a move (`sched`), against the
        // SeqCst wake-up flags (no lost wake-up: `sched::kick`).
        self.pcpu.load(Ordering::SeqCst)
    }

    /// Its state.
    pub fn state(&self) -> VcpuState {
        // Acquire: pairs with the Release in `set_state`.
        VcpuState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Moves it from `from` to `to` if it is in `from`; says whether it did.
    pub fn transition(&self, from: VcpuState, to: VcpuState) -> bool {
        // AcqRel/Acquire: as `set_state` and `state`.
        self.state
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Moves it to `state` (a dead vcpu stays dead).
    pub fn set_state(&self, state: VcpuState) {
        let _ = self
            .state
            .fetch_update(Ordering::Release, Ordering::Acquire, |current| {
                (current != VcpuState::Dead as u8).then_some(state as u8)
            });
    }
}

/// A PV domain.
pub struct Domain {
    /// Its id.
    pub id: DomId,
    /// Privileged (`priv`) or not.
    pub privilege: Privilege,
    /// Its vcpus.
    pub vcpus: Box<[Vcpu]>,
    /// The pCPUs its vcpus may run on (`cpus=`, less those not online).
    pub affinity: config::CpuSet,
    /// Its memory frames sorted by address, to check "is this frame the
    /// guest's".
    frames_sorted: Box<[GuestFrame]>,
    /// Frames holding its page tables (mapped read-only for the guest).
    pub page_table_frames: Box<[GuestFrame]>,
    /// Its top-level page table.
    pub root: u64,
    /// The shared_info frame (Sluice's, not in the p2m).
    pub shared_info_frame: GuestFrame,
    /// The shared_info page.
    pub shared_info: &'static SharedInfo,
    /// Per vcpu, where its registered vcpu_info lives (frame physical
    /// address + offset), or 0 for its slot in shared_info
    /// (VCPUOP_register_vcpu_info); shared with evtchn-core's view.
    pub vcpu_info_areas: Arc<[AtomicU64]>,
    /// Console output not yet ended by a newline.
    pub console_line: spin::Mutex<arrayvec::ArrayVec<u8, 512>>,
    /// Serialises edits of its page tables.
    pub mm_lock: spin::Mutex<()>,
    /// Bumped when a page-table edit needs every vcpu's TLB flushed
    /// (UVMF_ALL, or a present entry replaced), and when one vcpu registers
    /// another's vcpu_info; each vcpu flushes, and looks up its vcpu_info
    /// again, on its way back to the guest when its `tlb_generation` lags.
    /// Also bumped when the domain shuts down and when a vcpu goes down:
    /// the way back looks for those only then.
    pub tlb_generation: AtomicU64,
    /// Its event-channel state in evtchn-core, kept by the builder right
    /// after `create_domain` so that hot paths (EVTCHNOP_send and friends,
    /// timer VIRQs, poll checks) skip evtchn-core's registry lookup.
    pub events: spin::Once<evtchn_core::DomainHandle>,
    /// The shared_info view handed to evtchn-core at creation, watched:
    /// once the domain is destroyed and freed, nothing may hold it (it
    /// reaches the shared_info frame and the guest's vcpu_info areas), and
    /// the [`reaper`] checks that nothing does before it frees them.
    pub shared_view: spin::Once<Weak<dyn evtchn_core::SharedInfoView>>,
    /// SHUTDOWN_* code + 1 once it shut down (0 = running).
    shutdown_code: AtomicU8,
    /// Vcpus still to stop before the domain is destroyed.
    live_vcpus: AtomicU32,
    /// Frames its build took from the allocator: what freeing it must
    /// give back ([`reaper`]).
    frames_taken: u64,
}

impl Domain {
    /// The vcpu `id`, if it exists.
    pub fn vcpu(&self, id: VcpuId) -> Option<&Vcpu> {
        self.vcpus.get(id.0 as usize)
    }

    /// The domain's memory frame at `phys`, if it is one.
    pub fn frame_at(&self, phys: u64) -> Option<GuestFrame> {
        let index = self
            .frames_sorted
            .binary_search_by_key(&phys, |frame| frame.phys())
            .ok()?;
        self.frames_sorted.get(index).copied()
    }

    /// Whether `mfn` is one of the domain's memory frames.
    pub fn owns_frame(&self, phys: u64) -> bool {
        self.frames_sorted
            .binary_search_by_key(&phys, |frame| frame.phys())
            .is_ok()
    }

    /// Its memory frames.
    pub fn memory_frames(&self) -> impl Iterator<Item = GuestFrame> + '_ {
        self.frames_sorted.iter().copied()
    }

    /// Whether `phys` holds one of its page tables.
    pub fn is_page_table_frame(&self, phys: u64) -> bool {
        self.page_table(phys).is_some()
    }

    /// The page-table frame at `phys`, if it is one of the domain's.
    pub fn page_table(&self, phys: u64) -> Option<GuestFrame> {
        self.page_table_frames
            .iter()
            .copied()
            .find(|frame| frame.phys() == phys)
    }

    /// The vcpu_info `vcpu` uses now: its registered area, else its slot in
    /// shared_info.
    pub fn vcpu_info(&self, vcpu: VcpuId) -> Option<&'static VcpuInfo> {
        vcpu_info_in(
            self.shared_info,
            &self.vcpu_info_areas,
            &self.frames_sorted,
            vcpu,
        )
    }

    /// Whether it is privileged.
    pub fn is_privileged(&self) -> bool {
        self.privilege == Privilege::Privileged
    }

    /// The reason it shut down, if it did.
    pub fn shutdown_reason(&self) -> Option<ShutdownReason> {
        match self.shutdown_code.load(Ordering::Acquire) {
            0 => None,
            code => ShutdownReason::from_code(u32::from(code - 1)),
        }
    }

    /// Whether it shut down (its vcpus must stop).
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown_code.load(Ordering::Acquire) != 0
    }
}

/// The vcpu_info `vcpu` uses, given the shared_info page, the registered
/// areas (0 = none) and the domain's frames sorted by address.
pub fn vcpu_info_in(
    shared_info: &'static SharedInfo,
    areas: &[AtomicU64],
    frames: &[GuestFrame],
    vcpu: VcpuId,
) -> Option<&'static VcpuInfo> {
    // SeqCst: pairs with the publication (which filled the area before),
    // and in the single order with evtchn-core's pending test-and-sets
    // and register_vcpu_info's `~0` store (see
    // `evtchn_core::SharedInfoView::vcpu_info`).
    match areas.get(vcpu.0 as usize)?.load(Ordering::SeqCst) {
        0 => shared_info.vcpu_info.get(vcpu.0 as usize),
        area => {
            let index = frames
                .binary_search_by_key(&(area & !0xfff), |frame| frame.phys())
                .ok()?;
            frames.get(index)?.vcpu_info_at(area & 0xfff)
        }
    }
}

/// Everything the builder hands over to make a [`Domain`].
pub struct DomainParts {
    /// Id.
    pub id: DomId,
    /// Privilege.
    pub privilege: Privilege,
    /// p2m.
    pub frames: Vec<GuestFrame>,
    /// Page-table frames.
    pub page_table_frames: Vec<GuestFrame>,
    /// Root table.
    pub root: u64,
    /// shared_info.
    pub shared_info_frame: GuestFrame,
    /// The pCPUs its vcpus may run on.
    pub affinity: config::CpuSet,
    /// (pCPU, hypervisor stack) per vcpu.
    pub vcpu_homes: Vec<(u32, arch::guest_entry::VcpuStack)>,
    /// Frames the build took from the allocator for the domain.
    pub frames_taken: u64,
}

impl Domain {
    /// Assembles a domain from the builder's parts.
    pub fn new(parts: DomainParts) -> Self {
        let mut frames_sorted = parts.frames;
        frames_sorted.sort_unstable();
        let vcpus: Vec<Vcpu> = parts
            .vcpu_homes
            .into_iter()
            .enumerate()
            .map(|(index, (pcpu, stack))| {
                Vcpu::new(VcpuId(index as u32), parts.affinity, pcpu, stack)
            })
            .collect();
        let live = vcpus.len() as u32;
        Self {
            id: parts.id,
            privilege: parts.privilege,
            vcpus: vcpus.into_boxed_slice(),
            affinity: parts.affinity,
            frames_sorted: frames_sorted.into_boxed_slice(),
            page_table_frames: parts.page_table_frames.into_boxed_slice(),
            root: parts.root,
            shared_info: parts.shared_info_frame.as_shared_info(),
            vcpu_info_areas: (0..live).map(|_| AtomicU64::new(0)).collect(),
            shared_info_frame: parts.shared_info_frame,
            console_line: spin::Mutex::new(arrayvec::ArrayVec::new()),
            mm_lock: spin::Mutex::new(()),
            tlb_generation: AtomicU64::new(0),
            events: spin::Once::new(),
            shared_view: spin::Once::new(),
            shutdown_code: AtomicU8::new(0),
            live_vcpus: AtomicU32::new(live),
            frames_taken: parts.frames_taken,
        }
    }
}

/// The registry: running domains by id.
static DOMAINS: [spin::RwLock<Option<Arc<Domain>>>; MAX_DOMAINS] =
    [const { spin::RwLock::new(None) }; MAX_DOMAINS];
/// Domains registered and not yet destroyed.
static LIVE_DOMAINS: AtomicU32 = AtomicU32::new(0);
/// Set when a domain ended other than by poweroff.
static ANY_FAILED: AtomicBool = AtomicBool::new(false);

/// The domain `id`, if it runs.
pub fn get(id: DomId) -> Option<Arc<Domain>> {
    DOMAINS.get(usize::from(id.0))?.read().clone()
}

/// The domain `id` without spinning (interrupt context): `None` if unknown
/// or if the registry slot is being changed right now.
pub fn try_get(id: DomId) -> Option<Arc<Domain>> {
    DOMAINS.get(usize::from(id.0))?.try_read()?.clone()
}

/// Registers a built domain; `false` if the id is taken or too large.
pub fn register(domain: Arc<Domain>) -> bool {
    let Some(slot) = DOMAINS.get(usize::from(domain.id.0)) else {
        return false;
    };
    arch::cpu::without_interrupts(|| {
        let mut slot = slot.write();
        if slot.is_some() {
            return false;
        }
        *slot = Some(domain);
        LIVE_DOMAINS.fetch_add(1, Ordering::AcqRel);
        true
    })
}

/// Whether a domain with this id runs.
pub fn exists(id: DomId) -> bool {
    get(id).is_some()
}

/// Marks a build failure (the run then cannot pass).
pub fn note_failed_build() {
    ANY_FAILED.store(true, Ordering::Release);
}

/// Shuts `domain` down with `reason` (the first reason is kept): its vcpus
/// stop at their next return to the hypervisor's scheduler. Returns whether
/// this call was the one that shut it down.
///
/// Each vcpu is stopped on its own pCPU, which the kick brings to its loop:
/// one that is down or never started is stopped there, and one whose flow
/// is suspended (blocked or preempted, even if down since) is resumed
/// first, so that the flow unwinds and lets go of its reference to the
/// domain. Stopping such a vcpu from elsewhere would abandon that flow
/// with its reference, and the domain could never be freed.
pub fn shut_down(domain: &Domain, reason: ShutdownReason) -> bool {
    let is_first = domain
        .shutdown_code
        .compare_exchange(0, reason.code() + 1, Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    if is_first {
        // The return path looks at the shutdown only when the generation
        // moved (`hypercall::return_to_guest`): bump it after the code,
        // before the kicks. AcqRel: pairs with its Acquire.
        domain.tlb_generation.fetch_add(1, Ordering::AcqRel);
        log::info!("d{}: shut down ({reason:?})", domain.id.0);
        for vcpu in domain.vcpus.iter() {
            crate::sched::kick(vcpu);
        }
    }
    is_first
}

/// Called by each vcpu as it stops for good (on its own pCPU). The last one
/// destroys the domain; the last domain ends the run.
pub fn vcpu_stopped(domain: &Domain, vcpu: &Vcpu) {
    // AcqRel: one caller wins even if two pCPUs stop the same vcpu.
    if vcpu.state.swap(VcpuState::Dead as u8, Ordering::AcqRel) == VcpuState::Dead as u8 {
        return;
    }
    // Dead for good: out of its run queue now, not when the domain is
    // destroyed (a domain that powered off stays until the run ends).
    crate::sched::unhost_vcpu(domain, vcpu);
    if domain.live_vcpus.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    destroy(domain);
}

/// The last vcpu of `domain` stopped. A crashed domain is destroyed: its
/// ports are closed (peers see their ends unbound), its id is free, and
/// its memory goes back to the frame allocator ([`reaper`]). A domain that
/// shut down otherwise stays, as on Xen until the toolstack reaps it, so
/// other domains' operations on it get Xen's answers (Sluice has no
/// toolstack). When the last domain has stopped, those are destroyed too,
/// and the run ends once every domain's memory is back.
fn destroy(domain: &Domain) {
    let reason = domain.shutdown_reason().unwrap_or(ShutdownReason::Crash);
    // Every vcpu has stopped: the shutdown is complete, and the handler of
    // VIRQ_DOM_EXC (the privileged domain unless another was named) hears
    // of it. Xen: __domain_finalise_shutdown() (Sluice has no suspend
    // event channel, so the VIRQ is sent for SHUTDOWN_suspend too).
    let events = crate::events::domains();
    events.send_global_virq(Virq::DOM_EXC);
    if reason != ShutdownReason::Poweroff {
        ANY_FAILED.store(true, Ordering::Release);
    }
    log_migrations(domain);
    if reason == ShutdownReason::Crash {
        kill(domain.id);
    } else {
        // Scenarios read this count to check that nothing leaked.
        let open = events.active_channels(domain.id).unwrap_or(0);
        log::info!(
            "d{}: all vcpus stopped, {open} event channels open",
            domain.id.0
        );
    }
    if LIVE_DOMAINS.fetch_sub(1, Ordering::AcqRel) == 1 {
        log::info!("all domains stopped: destroying those still there, then freeing them");
        for id in 0..MAX_DOMAINS as u16 {
            kill(DomId(id));
        }
        reaper::end_run_when_freed();
    }
}

/// One line saying how many times each vcpu moved to another pCPU
/// (`d1: vcpu moves: v0 0, v1 2, v2 5`; scenarios read it), split over
/// several lines for many vcpus.
fn log_migrations(domain: &Domain) {
    use core::fmt::Write;
    for chunk in domain.vcpus.chunks(16) {
        let mut line = arrayvec::ArrayString::<200>::new();
        for (number, vcpu) in chunk.iter().enumerate() {
            let separator = if number == 0 { "" } else { ", " };
            let _ = write!(
                line,
                "{separator}v{} {}",
                vcpu.id.0,
                vcpu.migrations.load(Ordering::Relaxed)
            );
        }
        log::info!("d{}: vcpu moves: {line}", domain.id.0);
    }
}

/// Destroys the domain `id` once its vcpus have all stopped (Xen:
/// domain_kill()): closes its event channels (peers see their ends
/// unbound), forgets its PIRQs, takes it out of the registry and of the run
/// queues (its timers no longer fire), and buries it for the [`reaper`],
/// which frees its memory when nothing can touch it any more. Returns
/// whether there was such a domain.
fn kill(id: DomId) -> bool {
    let Some(slot) = DOMAINS.get(usize::from(id.0)) else {
        return false;
    };
    let Some(domain) = get(id) else {
        return false;
    };
    let events = crate::events::domains();
    if let Err(errno) = events.destroy_domain(id) {
        log::warn!("d{}: event channels: destroy gave {errno}", id.0);
    }
    crate::pirq::forget_domain(id);
    for vcpu in domain.vcpus.iter() {
        vcpu.singleshot_deadline_ns.store(0, Ordering::Relaxed);
        vcpu.periodic_period_ns.store(0, Ordering::Relaxed);
        vcpu.poll_deadline_ns.store(0, Ordering::Relaxed);
    }
    crate::sched::unhost(&domain);
    let taken = arch::cpu::without_interrupts(|| slot.write().take());
    drop(taken);
    log::info!("d{}: destroyed", id.0);
    // Xen: domain_kill() tells the handler again once the domain is dying
    // (its ports closed, its id free).
    events.send_global_virq(Virq::DOM_EXC);
    reaper::bury(domain);
    true
}

/// Ends the run: pass if every domain powered off and gave back every
/// frame it took, fail otherwise.
pub fn finish_run() -> ! {
    if reaper::has_leak() {
        log::info!("all domains gone; at least one was not freed entirely: exiting with fail");
        arch::qemu::exit(arch::qemu::ExitCode::Fail)
    }
    if ANY_FAILED.load(Ordering::Acquire) {
        log::info!("all domains gone; at least one did not power off: exiting with fail");
        arch::qemu::exit(arch::qemu::ExitCode::Fail)
    }
    log::info!("all domains gone, every one powered off: exiting with pass");
    arch::qemu::exit(arch::qemu::ExitCode::Pass)
}

/// Crashes `domain` on behalf of the hypervisor (a guest fault it cannot
/// deliver), logging why.
pub fn crash(domain: &Domain, why: core::fmt::Arguments<'_>) {
    crate::console::guest_notice(domain.id, why);
    shut_down(domain, ShutdownReason::Crash);
}
