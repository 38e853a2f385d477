//! PIRQs: host interrupt lines handed to guests through event channels
//! (Xen's `arch/x86/irq.c` guest side and `physdev.c` map/unmap; spec §6).
//!
//! The pieces:
//! - the lines a domain may be given ([`GUEST_LINES`]; Xen's
//!   `irq_access_permitted()`): only the CMOS RTC's periodic interrupt,
//!   GSI 8, which Sluice itself drives (it is the simplest source QEMU
//!   has; COM1's IRQ 4 is the debug-key console's);
//! - each domain's pirq → GSI mappings, made by `PHYSDEVOP_map_pirq`
//!   ([`map_gsi`]) and removed by `PHYSDEVOP_unmap_pirq` ([`unmap`]);
//! - per line, the domains bound to it (evtchn-core's `EVTCHNOP_bind_pirq`
//!   calls [`HostPirqs`]' [`PirqHost::bind`]), each with an "EOI owed" mark,
//!   and the count in flight (Xen's `irq_guest_action_t`).
//!
//! Acknowledgement (Xen's ACKTYPE_UNMASK, used for every line): the
//! interrupt handler acknowledges the device (RTC register C), marks every
//! binder as owing an EOI, holds the line masked at the IOAPIC, arms the
//! line's 1 ms forced-EOI timer ([`FORCED_EOI_NS`], a
//! [`crate::hvtimer`] timer) and sends each binder's port with
//! evtchn-core's `send_pirq`. When the
//! last binder owing one sends `PHYSDEVOP_eoi` ([`eoi`]) the timer is
//! stopped and the line unmasked. If the timer expires first, the EOI is
//! forced, as on Xen: every binder's mark is cleared and the line unmasked,
//! so that a slow or hostile guest sharing the line (BIND_PIRQ__WILL_SHARE)
//! cannot starve the others; the slow guest itself receives the next
//! interrupt while still handling the last. A late `PHYSDEVOP_eoi` then
//! finds no mark and does nothing (rc 0, as any EOI with nothing owed);
//! if the line interrupted again meanwhile, it counts for the new
//! interrupt, as on Xen. Closing the port (or unmapping the pirq)
//! completes an EOI still owed; the last binder leaving stops the timer.
//! Sluice has no `PHYSDEVOP_pirq_eoi_gmfn` bitmap (it answers -ENOSYS),
//! so nothing else tracks the marks.
//!
//! Xen would not hold this line: its `pirq_acktype()` gives an
//! "IO-APIC-edge" line such as the RTC's ACKTYPE_NONE (acknowledged at
//! once in the handler: no mark, nothing in flight, no timer, and an
//! EOI that does nothing), and keeps ACKTYPE_UNMASK for level lines and
//! the legacy PIC. Sluice serves its one line as ACKTYPE_UNMASK on
//! purpose: it has no level line to hand out, and this is the only way to
//! run Xen's hold, shared-EOI and forced-EOI rules on real interrupts
//! (`selftest=pirq-eoi` and the `pirq-*` scenarios check them). A guest
//! cannot tell the two apart at 64 Hz: `irq_status_query` reports
//! needs_eoi for every PV pirq on Xen too, every EOI answers 0, and the
//! hold never outlasts the forced EOI (1-2 ms), well inside an RTC period.
//!
//! Affinity (Xen's `pirq_guest_bind()` and `pirq_set_affinity()`): the
//! first binder routes the line to the pCPU hosting its vcpu 0, and
//! `EVTCHNOP_bind_vcpu` of a pirq port ([`PirqHost::set_affinity`]) sends
//! it to the pCPU hosting the new notify vcpu, so that the interrupt is
//! taken where its upcall runs (no IPI on the way). With several binders
//! the last move wins, as on Xen. When that vcpu later moves to another
//! pCPU (`sched` steals it), the line follows it there ([`vcpu_moved`];
//! Xen's `evtchn_move_pirqs()` from `vcpu_migrate()`).
//!
//! Locking: one table lock, always held with interrupts off
//! ([`IrqSafeMutex`]): the interrupt handler and the forced-EOI timer's
//! callback (which runs in a LAPIC tick) take it too. Under it only the
//! IOAPIC's register lock, the CMOS lock and the console's line lock are
//! taken (each also only with interrupts off), and the timer armed or
//! stopped (atomics; the line's first bind takes the timer's slot in the
//! timer registry, a leaf, and is refused if there is none, so that the
//! handler's arming cannot fail). The table is fixed-size, so nothing under the lock allocates:
//! the heap's lock, which boot code holds with interrupts on, is never
//! wanted by a path that an interrupt can enter. evtchn-core calls [`HostPirqs`]
//! under a domain's event lock; nothing here calls back into evtchn-core
//! with the table lock held (the handler drops it before `send_pirq`,
//! which only *tries* evtchn-core's locks), and the timer's callback
//! calls no one. So the order is always event lock → table lock →
//! IOAPIC or console, and a pCPU holding the table lock is never
//! interrupted by a path that wants it.
//!
//! The forced EOI against the other paths (each under the table lock):
//! an interrupt re-arms the timer, so an expiry claimed before it finds
//! the timer active again and leaves the new marks to the new expiry
//! (Xen's `timer_is_active` check); an EOI that leaves nothing owed stops
//! the timer, so a claimed expiry finds nothing in flight; unbind removes
//! its binder before the callback can look, and the last binder stops
//! the timer. The timers are `static` and name their line by GSI, so no
//! expiry outlives the state it works on.
//!
//! `selftest=pirq-eoi` checks this state machine on the real line, with
//! two domain ids sharing it and ticks that run no hypervisor timer.

use core::sync::atomic::{AtomicU64, Ordering};

use arch::idt::InterruptFrame;
use arch::percpu::MAX_CPUS;
use arrayvec::ArrayVec;
use evtchn_core::{DomId, Errno, PirqHost, PirqSharing, VcpuId};

use crate::domain::MAX_DOMAINS;
use crate::domain::builder::NR_PIRQS;
use crate::hvtimer::Timer;

/// What drives a line Sluice hands to guests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineDevice {
    /// The CMOS RTC's periodic interrupt (ISA IRQ 8).
    RtcPeriodic,
}

/// A host line a domain may be given.
#[derive(Clone, Copy, Debug)]
struct GuestLine {
    gsi: u32,
    device: LineDevice,
    /// Its forced-EOI timer, whose callback's argument is the GSI. A
    /// `static`, so an expiry never points at freed line state: the
    /// callback looks the line up by GSI under the table lock.
    eoi_timer: &'static Timer,
}

/// The lines guests may map: GSI 8, the RTC. Sluice programs and
/// acknowledges the RTC itself (a PV guest has no port I/O), so the guest
/// sees only the interrupts.
const GUEST_LINES: [GuestLine; 1] = [GuestLine {
    gsi: 8,
    device: LineDevice::RtcPeriodic,
    eoi_timer: &RTC_EOI_TIMER,
}];

/// The RTC line's forced-EOI timer.
static RTC_EOI_TIMER: Timer = Timer::new(on_eoi_timer, 8);

/// RTC rate select while a guest is bound: 32768 >> (10 - 1) = 64 Hz.
const RTC_RATE: u8 = 10;

/// Domains one line can be shared by (Xen 4.17: the `irq-max-guests`
/// boot option, 16 by default; the fixed IRQ_MAX_GUESTS, 7, before 4.15).
const MAX_BINDERS: usize = 4;

/// Mappings the table holds at most: [`map_gsi`] gives a domain at most
/// one pirq per guest line.
const MAX_MAPPINGS: usize = MAX_DOMAINS * GUEST_LINES.len();

/// How long after an interrupt the line's EOI is forced if a binder still
/// owes one (Xen: 1 ms, `MILLISECS(1)` in `__do_IRQ_guest()`).
pub const FORCED_EOI_NS: u64 = 1_000_000;

/// Xen's MAP_PIRQ_TYPE_GSI.
pub const MAP_PIRQ_TYPE_GSI: i32 = 1;

/// A domain's pirq → GSI mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mapping {
    domain: DomId,
    pirq: u32,
    gsi: u32,
}

/// A domain bound to a line.
#[derive(Clone, Copy, Debug)]
struct Binder {
    domain: DomId,
    pirq: u32,
    /// The line interrupted since this binder's last PHYSDEVOP_eoi (Xen's
    /// `pirq->masked`).
    owes_eoi: bool,
}

/// A line's guest-side state (Xen's `irq_guest_action_t`).
#[derive(Debug)]
struct LineState {
    line: GuestLine,
    binders: ArrayVec<Binder, MAX_BINDERS>,
    /// Decided by the first binder.
    sharing: PirqSharing,
    /// Binders that still owe an EOI.
    in_flight: u32,
    /// The pCPU (dense index) the line is routed to.
    pcpu: u32,
    /// The vcpu whose pCPU that is (the first binder's vcpu 0, then the
    /// vcpu of the last `EVTCHNOP_bind_vcpu`): when it moves, the line
    /// follows ([`vcpu_moved`]).
    follows: (DomId, VcpuId),
}

impl LineState {
    fn vector(&self) -> u8 {
        arch::vectors::LEGACY_IRQ_BASE + self.line.gsi as u8
    }

    /// One binder no longer owes its EOI; the last one unmasks the line.
    fn complete_eoi(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.unmask();
        }
    }

    /// Nothing is owed any more (Xen's `desc->handler->end` for
    /// ACKTYPE_UNMASK): the forced-EOI timer is stopped and the line
    /// unmasked.
    fn unmask(&mut self) {
        self.line.eoi_timer.stop();
        match self.line.device {
            // A period that ended while the line was held latched the
            // RTC's flag (and, on real hardware, holds IRQ 8 high):
            // acknowledge it so the next period raises a fresh edge.
            LineDevice::RtcPeriodic => {
                arch::rtc::acknowledge();
            }
        }
        crate::irq::release_gsi(self.line.gsi);
    }

    /// The forced EOI (Xen's `irq_guest_eoi_timer_fn()`): every binder's
    /// "EOI owed" mark is cleared, each counted off `in_flight`, and the
    /// line unmasked. Returns how many binders still owed their EOI.
    fn force_eoi(&mut self) -> u32 {
        let mut forced = 0;
        for binder in &mut self.binders {
            if binder.owes_eoi {
                binder.owes_eoi = false;
                forced += 1;
            }
        }
        if self.in_flight != forced {
            // Every mark is counted once in `in_flight`, so this cannot
            // happen; the line is unmasked all the same.
            log::warn!(
                "pirq: GSI {}: {} in flight but {forced} binder(s) marked at the forced EOI",
                self.line.gsi,
                self.in_flight
            );
        }
        self.in_flight = 0;
        self.unmask();
        forced
    }
}

struct Table {
    mappings: ArrayVec<Mapping, MAX_MAPPINGS>,
    lines: ArrayVec<LineState, { GUEST_LINES.len() }>,
    /// Per domain id: its pirqs were forgotten ([`forget_domain`]), so it
    /// is being destroyed and [`map_gsi`] must not map into it; cleared
    /// when a domain is built under the id ([`new_domain`]).
    is_forgotten: [bool; MAX_DOMAINS],
}

/// A spin lock held with interrupts off: its guard disables them before
/// taking the lock and restores them after releasing it.
struct IrqSafeMutex<T>(spin::Mutex<T>);

/// The guard of an [`IrqSafeMutex`].
struct IrqSafeGuard<'a, T> {
    guard: Option<spin::MutexGuard<'a, T>>,
    were_enabled: bool,
}

impl<T> IrqSafeMutex<T> {
    fn lock(&self) -> IrqSafeGuard<'_, T> {
        let were_enabled = arch::cpu::interrupts_enabled();
        arch::cpu::disable_interrupts();
        IrqSafeGuard {
            guard: Some(self.0.lock()),
            were_enabled,
        }
    }
}

impl<T> core::ops::Deref for IrqSafeGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match &self.guard {
            Some(guard) => guard,
            None => unreachable!("the guard is only taken in drop"),
        }
    }
}

impl<T> core::ops::DerefMut for IrqSafeGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        match &mut self.guard {
            Some(guard) => guard,
            None => unreachable!("the guard is only taken in drop"),
        }
    }
}

impl<T> Drop for IrqSafeGuard<'_, T> {
    fn drop(&mut self) {
        drop(self.guard.take());
        if self.were_enabled {
            arch::cpu::enable_interrupts();
        }
    }
}

static TABLE: IrqSafeMutex<Table> = IrqSafeMutex(spin::Mutex::new(Table {
    mappings: ArrayVec::new_const(),
    lines: ArrayVec::new_const(),
    is_forgotten: [false; MAX_DOMAINS],
}));

/// Interrupts taken on guest lines.
static INTERRUPTS: AtomicU64 = AtomicU64::new(0);
/// Interrupts taken on guest lines, by the pCPU that took them.
static INTERRUPTS_ON: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Forced EOIs: expiries of a line's timer that found EOIs still owed.
static FORCED_EOIS: AtomicU64 = AtomicU64::new(0);

/// The pCPU (dense index) hosting `vcpu` of `domain`, and its APIC id.
fn host_cpu(domain: DomId, vcpu: VcpuId) -> Option<(u32, u32)> {
    online_cpu(crate::domain::get(domain)?.vcpu(vcpu)?.pcpu())
}

/// pCPU `pcpu` and its APIC id, if it is online.
fn online_cpu(pcpu: u32) -> Option<(u32, u32)> {
    let cpu = arch::percpu::by_index(pcpu).filter(|cpu| cpu.is_online())?;
    Some((pcpu, cpu.apic_id()))
}

/// `vcpu` of `domain` now runs on pCPU `pcpu` (the scheduler moved it):
/// every line that follows it is sent there, as Xen's `vcpu_migrate()`
/// moves the vcpu's PIRQs (`evtchn_move_pirqs()`), so that the interrupt
/// is taken where the upcall runs rather than kicked over by an IPI.
/// Called by the pCPU that took the vcpu, with interrupts off.
pub fn vcpu_moved(domain: DomId, vcpu: VcpuId, pcpu: u32) {
    let Some((pcpu, apic_id)) = online_cpu(pcpu) else {
        return;
    };
    let mut table = TABLE.lock();
    for state in table.lines.iter_mut() {
        if state.follows != (domain, vcpu) || state.binders.is_empty() || state.pcpu == pcpu {
            continue;
        }
        let gsi = state.line.gsi;
        let from = state.pcpu;
        if crate::irq::set_gsi_destination(gsi, apic_id) {
            state.pcpu = pcpu;
            log::info!(
                "pirq: GSI {gsi} follows d{}v{}, which moved from pCPU {from} to pCPU {pcpu}",
                domain.0,
                vcpu.0
            );
        }
    }
}

/// `"21 (pCPU 0: 1, pCPU 1: 20)"`: guest-line interrupts so far, by pCPU.
struct InterruptCounts;

impl core::fmt::Display for InterruptCounts {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(formatter, "{}", INTERRUPTS.load(Ordering::Relaxed))?;
        let mut separator = " (";
        for (pcpu, count) in INTERRUPTS_ON.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            if count != 0 {
                write!(formatter, "{separator}pCPU {pcpu}: {count}")?;
                separator = ", ";
            }
        }
        if separator == ", " {
            formatter.write_str(")")?;
        }
        Ok(())
    }
}

fn guest_line(gsi: u32) -> Option<GuestLine> {
    GUEST_LINES.iter().copied().find(|line| line.gsi == gsi)
}

impl Table {
    fn mapping(&self, domain: DomId, pirq: u32) -> Option<&Mapping> {
        self.mappings
            .iter()
            .find(|mapping| mapping.domain == domain && mapping.pirq == pirq)
    }

    fn line(&mut self, gsi: u32) -> Option<&mut LineState> {
        self.lines.iter_mut().find(|state| state.line.gsi == gsi)
    }

    /// Detaches `domain`'s `pirq` from its line, completing an EOI it
    /// owes; the last binder stops the device and masks the line.
    /// Nothing happens if it is not bound.
    fn detach(&mut self, domain: DomId, pirq: u32) {
        let Some(gsi) = self.mapping(domain, pirq).map(|mapping| mapping.gsi) else {
            return;
        };
        let Some(state) = self.line(gsi) else {
            return;
        };
        let Some(index) = state
            .binders
            .iter()
            .position(|binder| binder.domain == domain && binder.pirq == pirq)
        else {
            return;
        };
        let binder = state.binders.remove(index);
        if state.binders.is_empty() {
            match state.line.device {
                LineDevice::RtcPeriodic => arch::rtc::stop_periodic(),
            }
            crate::irq::mask_gsi(gsi);
            state.in_flight = 0;
            state.line.eoi_timer.stop();
        } else if binder.owes_eoi {
            state.complete_eoi();
        }
        log::info!(
            "pirq: d{} pirq {pirq} unbound from GSI {gsi}; guest-line interrupts so far: {}; forced EOIs so far: {}",
            domain.0,
            InterruptCounts,
            FORCED_EOIS.load(Ordering::Relaxed)
        );
    }
}

/// Sluice's [`PirqHost`]: the table above, as evtchn-core sees it.
pub struct HostPirqs;

impl PirqHost for HostPirqs {
    fn is_pirq_mapped(&self, domain: DomId, pirq: u32) -> bool {
        TABLE
            .lock()
            .mapping(domain, pirq)
            .is_some_and(|mapping| guest_line(mapping.gsi).is_some())
    }

    /// Xen's `pirq_guest_bind()`: the first binder routes the line to the
    /// pCPU hosting its vcpu 0 (the port's notify vcpu; the boot CPU if
    /// that is unknown) and starts the device; later binders must all
    /// share. -ENOMEM if the line's forced-EOI timer finds the hypervisor
    /// timer registry full.
    fn bind(&self, domain: DomId, pirq: u32, sharing: PirqSharing) -> Result<(), Errno> {
        // Looked up before the table lock, which stays a leaf.
        let home = host_cpu(domain, VcpuId(0));
        let mut table = TABLE.lock();
        let gsi = table
            .mapping(domain, pirq)
            .map(|mapping| mapping.gsi)
            .ok_or(Errno::EINVAL)?;
        let line = guest_line(gsi).ok_or(Errno::EINVAL)?;
        if table.line(gsi).is_none() {
            table
                .lines
                .try_push(LineState {
                    line,
                    binders: ArrayVec::new(),
                    sharing,
                    in_flight: 0,
                    pcpu: 0,
                    follows: (domain, VcpuId(0)),
                })
                .map_err(|_| Errno::ENOMEM)?;
        }
        let state = table.line(gsi).ok_or(Errno::EINVAL)?;
        let binder = Binder {
            domain,
            pirq,
            owes_eoi: false,
        };
        if state.binders.is_empty() {
            // The handler arms the forced-EOI timer and cannot refuse an
            // interrupt: without a registry slot a line would be held for
            // as long as any binder likes, so the bind is refused here
            // (Xen: -ENOMEM when the guest action cannot be allocated).
            line.eoi_timer.register().map_err(|_| Errno::ENOMEM)?;
            let vector = state.vector();
            let bsp = arch::percpu::bsp();
            let (pcpu, apic_id) = home.unwrap_or((bsp.index(), bsp.apic_id()));
            arch::idt::set_handler(vector, on_line_interrupt);
            if !crate::irq::route_gsi(gsi, vector, apic_id) {
                return Err(Errno::EINVAL);
            }
            state.sharing = sharing;
            state.in_flight = 0;
            state.pcpu = pcpu;
            state.follows = (domain, VcpuId(0));
            state.binders.push(binder);
            match line.device {
                LineDevice::RtcPeriodic => arch::rtc::start_periodic(RTC_RATE),
            }
            log::info!(
                "pirq: d{} pirq {pirq} bound to GSI {gsi} (vector {vector:#x} -> pCPU {pcpu}; RTC periodic at {} Hz)",
                domain.0,
                arch::rtc::periodic_hz(RTC_RATE)
            );
            return Ok(());
        }
        if state.sharing == PirqSharing::Exclusive || sharing == PirqSharing::Exclusive {
            return Err(Errno::EBUSY);
        }
        state.binders.try_push(binder).map_err(|_| Errno::EBUSY)?;
        log::info!("pirq: d{} pirq {pirq} shares GSI {gsi}", domain.0);
        Ok(())
    }

    fn unbind(&self, domain: DomId, pirq: u32) {
        TABLE.lock().detach(domain, pirq);
    }

    /// Xen's `pirq_set_affinity()` from `EVTCHNOP_bind_vcpu`: the line of
    /// a bound pirq is sent to the pCPU hosting `vcpu` (its IOAPIC entry's
    /// destination rewritten; vector, mask and EOI state stay).
    fn set_affinity(&self, domain: DomId, pirq: u32, vcpu: VcpuId) {
        // Looked up before the table lock, which stays a leaf; the vcpu's
        // pCPU is read again under it (an atomic load): a move stores the
        // new pCPU before its `vcpu_moved` takes the lock, so either that
        // call finds this line following the vcpu, or this read sees it.
        let Some(target) = crate::domain::get(domain) else {
            return;
        };
        let Some(target_vcpu) = target.vcpu(vcpu) else {
            return;
        };
        let mut table = TABLE.lock();
        let Some((pcpu, apic_id)) = online_cpu(target_vcpu.pcpu()) else {
            return;
        };
        let Some(gsi) = table.mapping(domain, pirq).map(|mapping| mapping.gsi) else {
            return;
        };
        let Some(state) = table.line(gsi) else {
            return;
        };
        if !state
            .binders
            .iter()
            .any(|binder| binder.domain == domain && binder.pirq == pirq)
        {
            return;
        }
        let from = state.pcpu;
        state.follows = (domain, vcpu);
        if crate::irq::set_gsi_destination(gsi, apic_id) {
            state.pcpu = pcpu;
            log::info!(
                "pirq: d{} pirq {pirq} (GSI {gsi}) follows d{}v{} from pCPU {from} to pCPU {pcpu}",
                domain.0,
                domain.0,
                vcpu.0
            );
        }
    }

    fn host_irq(&self, domain: DomId, pirq: u32) -> Option<u32> {
        TABLE
            .lock()
            .mapping(domain, pirq)
            .map(|mapping| mapping.gsi)
    }
}

/// The interrupt handler of every guest line (interrupts off; the LAPIC
/// EOI follows). Xen: `do_IRQ_guest()`.
fn on_line_interrupt(frame: &mut InterruptFrame) {
    let tsc = arch::cpu::rdtsc();
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    if let Some(count) = INTERRUPTS_ON.get(arch::percpu::current().index() as usize) {
        count.fetch_add(1, Ordering::Relaxed);
    }
    let gsi = (frame.vector as u32).wrapping_sub(u32::from(arch::vectors::LEGACY_IRQ_BASE));
    // For the IRQ-to-upcall latency: the pirq guest prints its upcalls' TSC.
    log::trace!("pirq: GSI {gsi} interrupt at tsc {tsc}");
    let mut targets = ArrayVec::<(DomId, u32), MAX_BINDERS>::new();
    {
        let mut table = TABLE.lock();
        let Some(state) = table.line(gsi) else {
            return;
        };
        match state.line.device {
            LineDevice::RtcPeriodic => {
                arch::rtc::acknowledge();
            }
        }
        for binder in &mut state.binders {
            if !binder.owes_eoi {
                binder.owes_eoi = true;
                state.in_flight += 1;
            }
            targets.push((binder.domain, binder.pirq));
        }
        if state.in_flight != 0 {
            crate::irq::hold_gsi(gsi);
            // Xen re-arms the timer on every delivery: 1 ms from now.
            let timer = state.line.eoi_timer;
            if timer.set(crate::time::now_ns() + FORCED_EOI_NS).is_err() {
                log::warn!("pirq: GSI {gsi}: no hypervisor timer left; no forced EOI");
            }
        }
    }
    let domains = crate::events::domains();
    for (domain, pirq) in targets {
        domains.send_pirq(domain, pirq);
    }
}

/// The forced-EOI timer of the line `gsi` expired (the LAPIC tick of some
/// pCPU; interrupts off). If EOIs are still owed, and no interrupt re-armed
/// the timer since this expiry was claimed (Xen checks both), the EOI is
/// forced: every binder's mark cleared, the line unmasked.
///
/// Locking: the table lock only, as every other path; the timer is armed
/// and stopped under it, so `is_active` here is exact. Against an EOI on
/// another pCPU the lock orders the two: the EOI first leaves nothing in
/// flight (the expiry does nothing), the expiry first leaves the binder
/// owing nothing (the EOI does nothing and answers 0). Against unbind and
/// domain destruction: binders leave the line under the lock, so this
/// never sees one that is gone, and it touches no domain.
fn on_eoi_timer(gsi: usize) {
    let Ok(gsi) = u32::try_from(gsi) else {
        return;
    };
    let mut table = TABLE.lock();
    let Some(state) = table.line(gsi) else {
        return;
    };
    if state.in_flight == 0 || state.line.eoi_timer.is_active() {
        return;
    }
    let forced = state.force_eoi();
    let total = FORCED_EOIS.fetch_add(1, Ordering::Relaxed) + 1;
    log::debug!(
        "pirq: GSI {gsi}: forced EOI ({total} so far): {forced} of {} binder(s) had not sent PHYSDEVOP_eoi within 1 ms",
        state.binders.len()
    );
}

/// Guest-line interrupts taken so far (for the `pirq-eoi` self-test).
#[cfg(feature = "selftest")]
pub fn interrupts_taken() -> u64 {
    INTERRUPTS.load(Ordering::Relaxed)
}

/// Guest-line interrupts taken so far on pCPU `pcpu` (for the
/// `pirq-follow` self-test).
#[cfg(feature = "selftest")]
pub fn interrupts_taken_on(pcpu: u32) -> u64 {
    INTERRUPTS_ON
        .get(pcpu as usize)
        .map_or(0, |count| count.load(Ordering::Relaxed))
}

/// Forced EOIs so far (for the `pirq-eoi` self-test).
#[cfg(feature = "selftest")]
pub fn forced_eois() -> u64 {
    FORCED_EOIS.load(Ordering::Relaxed)
}

/// Runs the forced-EOI timer's callback for `gsi` as an expiry claimed
/// earlier would, whether or not the timer has been armed again since
/// (for the `pirq-eoi` self-test; interrupts off, as in a tick).
#[cfg(feature = "selftest")]
pub fn run_eoi_timer_callback(gsi: u32) {
    on_eoi_timer(gsi as usize);
}

/// `PHYSDEVOP_eoi` from `domain` for `pirq` (spec §6.2; Xen:
/// `pirq_guest_eoi()`): -EINVAL if `pirq` ≥ nr_pirqs or the domain has no
/// such pirq (neither mapped nor bound); rc 0 even with no EOI owed (a
/// second EOI, or one after the forced EOI: nothing is unmasked twice and
/// nothing counted below zero).
pub fn eoi(domain: DomId, pirq: u32) -> Result<(), Errno> {
    if pirq >= NR_PIRQS {
        return Err(Errno::EINVAL);
    }
    let mut table = TABLE.lock();
    let Some(gsi) = table.mapping(domain, pirq).map(|mapping| mapping.gsi) else {
        drop(table);
        return match crate::events::domains().pirq_port(domain, pirq) {
            Some(_) => Ok(()),
            None => Err(Errno::EINVAL),
        };
    };
    if let Some(state) = table.line(gsi)
        && let Some(binder) = state
            .binders
            .iter_mut()
            .find(|binder| binder.domain == domain && binder.pirq == pirq)
        && binder.owes_eoi
    {
        binder.owes_eoi = false;
        state.complete_eoi();
    }
    Ok(())
}

/// Whether more than one domain is bound to `domain`'s `pirq`
/// (XENIRQSTAT_shared).
pub fn is_shared(domain: DomId, pirq: u32) -> bool {
    let mut table = TABLE.lock();
    let Some(gsi) = table.mapping(domain, pirq).map(|mapping| mapping.gsi) else {
        return false;
    };
    table.line(gsi).is_some_and(|state| state.binders.len() > 1)
}

/// `PHYSDEVOP_map_pirq` of type GSI for `target`, asked by a privileged
/// caller (spec §6.2; Xen: `allocate_and_map_gsi_pirq()` then
/// `map_domain_pirq()`, whose check order this follows). `requested` < 0
/// asks for the identity pirq (pirq = GSI, as Linux dom0 passes anyway).
/// Returns the pirq.
///
/// Errors: GSI outside the IOAPICs' inputs → -EINVAL; the GSI already
/// mapped to another pirq of `target` → -EEXIST; a line Sluice does not
/// hand out → -EPERM; pirq ≥ nr_pirqs → -EINVAL; identity pirq taken →
/// -ENOSPC; the table full (it has room for one mapping per domain and
/// line, all a domain can get) → -ENOSPC. A pirq already mapped to a *different* GSI keeps its mapping
/// and the call answers 0, as Xen 4.17 does (XSA-46: an in-use pirq is
/// never remapped).
///
/// The caller found `target` alive, but without a lock that keeps it so:
/// it may be destroyed meanwhile, and its pirqs forgotten
/// ([`forget_domain`]) before this call takes the table lock. A mapping
/// made then would outlive the domain (a stale entry that no destroy
/// removes, and that a later domain under the id would inherit). So a
/// domain whose pirqs were forgotten is refused here, under the lock that
/// orders this call against the forgetting: -ESRCH, as the caller's own
/// look-up answers once the destroy is done.
pub fn map_gsi(target: DomId, gsi: i32, requested: i32) -> Result<u32, Errno> {
    let gsi = u32::try_from(gsi)
        .ok()
        .filter(|&gsi| gsi < crate::irq::gsi_count())
        .ok_or(Errno::EINVAL)?;
    let mut table = TABLE.lock();
    if table
        .is_forgotten
        .get(usize::from(target.0))
        .is_none_or(|&is_forgotten| is_forgotten)
    {
        return Err(Errno::ESRCH);
    }
    let existing = table
        .mappings
        .iter()
        .find(|mapping| mapping.domain == target && mapping.gsi == gsi)
        .map(|mapping| mapping.pirq);
    let pirq = match (u32::try_from(requested), existing) {
        (Err(_), Some(pirq)) => pirq,
        (Err(_), None) => {
            if table.mapping(target, gsi).is_some() {
                return Err(Errno::ENOSPC);
            }
            gsi
        }
        (Ok(pirq), Some(existing)) if existing != pirq => return Err(Errno::EEXIST),
        (Ok(pirq), _) => pirq,
    };
    if guest_line(gsi).is_none() {
        return Err(Errno::EPERM);
    }
    if pirq >= NR_PIRQS {
        return Err(Errno::EINVAL);
    }
    match table.mapping(target, pirq) {
        Some(mapping) if mapping.gsi != gsi => {
            log::warn!(
                "pirq: d{} pirq {pirq} already maps GSI {}; GSI {gsi} not mapped",
                target.0,
                mapping.gsi
            );
        }
        Some(_) => {}
        None => {
            table
                .mappings
                .try_push(Mapping {
                    domain: target,
                    pirq,
                    gsi,
                })
                .map_err(|_| Errno::ENOSPC)?;
            log::info!("pirq: d{} pirq {pirq} maps GSI {gsi}", target.0);
        }
    }
    Ok(pirq)
}

/// `PHYSDEVOP_unmap_pirq` (Xen: `unmap_domain_pirq()`): -EINVAL if `pirq`
/// is out of range or not mapped. A pirq still bound to a port is detached
/// from its line first (Xen's forced unbind): the port stays, in state
/// pirq, and receives nothing more.
pub fn unmap(target: DomId, pirq: i32) -> Result<(), Errno> {
    let pirq = u32::try_from(pirq)
        .ok()
        .filter(|&pirq| pirq < NR_PIRQS)
        .ok_or(Errno::EINVAL)?;
    let mut table = TABLE.lock();
    if table.mapping(target, pirq).is_none() {
        return Err(Errno::EINVAL);
    }
    table.detach(target, pirq);
    table
        .mappings
        .retain(|mapping| !(mapping.domain == target && mapping.pirq == pirq));
    log::info!("pirq: d{} pirq {pirq} unmapped", target.0);
    Ok(())
}

/// A destroyed domain's pirqs (Xen: `free_domain_pirqs()`): every mapping
/// is removed and any line still bound detached, and no new mapping is
/// made for the id until a domain is built under it again ([`map_gsi`]
/// says why). Its ports were closed first, which detached them already;
/// this covers pirqs mapped but never bound, so a later domain with the
/// same id starts with none.
pub fn forget_domain(domain: DomId) {
    let mut table = TABLE.lock();
    if let Some(is_forgotten) = table.is_forgotten.get_mut(usize::from(domain.0)) {
        *is_forgotten = true;
    }
    while let Some(pirq) = table
        .mappings
        .iter()
        .find(|mapping| mapping.domain == domain)
        .map(|mapping| mapping.pirq)
    {
        table.detach(domain, pirq);
        table
            .mappings
            .retain(|mapping| !(mapping.domain == domain && mapping.pirq == pirq));
    }
}

/// A domain is built under `domain`: it may map pirqs (again, if an
/// earlier domain with the id was destroyed).
pub fn new_domain(domain: DomId) {
    let mut table = TABLE.lock();
    if let Some(is_forgotten) = table.is_forgotten.get_mut(usize::from(domain.0)) {
        *is_forgotten = false;
    }
}
