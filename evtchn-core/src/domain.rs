//! A domain as evtchn-core sees it: its port table, event lock, per-vcpu
//! VIRQ and poll state, PIRQ map and shared page.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::abi::EVTCHN_2L_NR_CHANNELS;
use crate::abi::{DomId, Errno, Port, VcpuId, Virq};
use crate::channel::{Binding, Channel, LockFreeTarget};
use crate::notify::Notify;
use crate::port_ops::{
    EventAbi, Wakeups, two_level_clear_pending, two_level_is_masked, two_level_raise,
    two_level_raise_selector, two_level_set_pending, two_level_test_and_set_pending,
    two_level_unmask,
};
use crate::shared::SharedInfoView;
use alloc::sync::Arc;

use crate::abi::{SharedInfo, VcpuInfo};
use crate::sync::{
    AtomicBool, AtomicI64, AtomicU32, AtomicU64, Mutex, MutexGuard, OnceSlot, Ordering, RwLock,
    RwLockReadGuard,
};
use crate::table::{PortTable, PreparedPort};

/// Whether a domain is privileged (started with `priv`, Xen's
/// SIF_PRIVILEGED): the TARGET rule lets it act on any domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Privilege {
    /// An ordinary domain: acts only on itself.
    Unprivileged,
    /// The control domain.
    Privileged,
}

/// Whether a domain may switch to the FIFO ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FifoSupport {
    /// EVTCHNOP_init_control switches the domain to FIFO (the default).
    Enabled,
    /// The domain stays 2-level: init_control checks its argument as Xen
    /// does, then answers -EOPNOTSUPP (as Xen 4.21+ built without FIFO), and
    /// guests such as Linux fall back to 2-level.
    Disabled,
}

/// What the hypervisor tells evtchn-core when it creates a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainConfig {
    /// The domain's id (below DOMID_FIRST_RESERVED).
    pub domid: DomId,
    /// Number of vcpus (`max_vcpus`), at least 1; all exist from creation.
    pub vcpus: u32,
    /// Privileged or not.
    pub privilege: Privilege,
    /// Highest port the domain may allocate (Xen's `max_evtchn_port`; dom0
    /// uses `i32::MAX as u32`, xl domUs 1023). The ABI limit applies too.
    pub max_evtchn_port: u32,
    /// Number of pirqs the domain can name (Xen's `nr_pirqs`, fixed at
    /// creation); bind_pirq of a larger number gives -EINVAL.
    pub nr_pirqs: u32,
    /// Whether init_control may switch the domain to the FIFO ABI.
    pub fifo: FifoSupport,
}

impl DomainConfig {
    /// An unprivileged domain with `vcpus` vcpus, the xl default limit of
    /// 1023 ports, no pirqs and FIFO available.
    pub const fn new(domid: DomId, vcpus: u32) -> Self {
        Self {
            domid,
            vcpus,
            privilege: Privilege::Unprivileged,
            max_evtchn_port: 1023,
            nr_pirqs: 0,
            fifo: FifoSupport::Enabled,
        }
    }
}

/// Which port an allocation takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PortChoice {
    /// The lowest free port (every guest op).
    Lowest,
    /// This port (static event channels set up by the hypervisor).
    Exact(Port),
}

/// Bookkeeping that only the holder of the event lock may touch.
pub(crate) struct EventLocked {
    /// Set first by destruction; allocation then fails with -EINVAL.
    pub(crate) is_dying: bool,
    /// Xen's `next_evtchn`: 0 = no reset in progress, else the port where a
    /// preempted reset resumes.
    pub(crate) reset_cursor: u32,
}

/// Per-vcpu event state.
pub(crate) struct VcpuEvtchn {
    /// `virq_to_evtchn`: the port bound to each VIRQ in this vcpu's table (0
    /// = none). Written under the event lock, read by senders without it.
    pub(crate) virq_to_port: [AtomicU32; Virq::COUNT],
    /// `poll_evtchn`: >0 the one port polled, -1 several, 0 not polling.
    pub(crate) poll_port: AtomicI64,
    /// Set, for good, when the hypervisor says this vcpu's vcpu_info is
    /// about to move ([`crate::DomainHandle::vcpu_info_moves`]); until then
    /// it is the vcpu's legacy slot in shared_info, which senders reach at
    /// a fixed offset (see [`Domain::vcpu_info_after_raise`]).
    info_moving: AtomicBool,
    /// The vcpu's vcpu_info once the view says it is settled
    /// ([`SharedInfoView::settled_vcpu_info`]): senders then reach it with
    /// plain loads instead of a dynamic call.
    settled_info: OnceSlot<&'static VcpuInfo>,
}

/// Where [`Domain::send_lock_free`] stopped a send, for its caller to
/// finish out of line.
pub(crate) enum SendRest<'a> {
    /// No lock-free send on this channel: the send on this port (whose
    /// channel this is) takes the channel's read lock.
    Locked(Port, &'a Channel),
    /// The domain's view has no fixed page: the lock-free send on this
    /// port, from the start, with the page from the view
    /// ([`Domain::send_lock_free_through_view`]).
    ThroughView(Port, &'a Channel),
    /// A lock-free send that set its pending bit, with more to do
    /// ([`Domain::finish_lock_free_send`]).
    LockFree(LockFreeRest),
}

// Two words at most: built on the send's inlined path, where it stays in
// registers until the rare case that needs it.
const _: () = assert!(core::mem::size_of::<SendRest<'static>>() <= 16);

/// The rare rests of a lock-free send that set its pending bit 0 → 1.
pub(crate) enum LockFreeRest {
    /// The binding word changed after the test-and-set: settle the
    /// event on this port ([`Domain::settle_late_send`]).
    Settle(Port),
    /// An unmasked new event on `port` toward `vcpu`, whose vcpu_info move
    /// was announced (the flag stays set: every such event toward a vcpu
    /// that registered a vcpu_info): its vcpu_info from
    /// [`Domain::moving_vcpu_info`], then the selector, upcall_pending and
    /// the wake-ups.
    RaiseMoving {
        /// The port raised.
        port: Port,
        /// The vcpu it notifies.
        vcpu: VcpuId,
    },
}

pub(crate) struct Domain {
    pub(crate) domid: DomId,
    pub(crate) privilege: Privilege,
    pub(crate) max_evtchn_port: u32,
    pub(crate) fifo_support: FifoSupport,
    /// The current ABI. Written (switched) only under the event lock, by
    /// init_control's first call, reset and destruction; read by every port
    /// op, under the channel lock where one is involved (spec §2.15,
    /// XSA-343). Interrupt-context delivery only tries it.
    abi: RwLock<EventAbi>,
    /// Counts ABI switches: even while the domain is on 2-level, odd on
    /// FIFO. Bumped (SeqCst) by [`Domain::switch_abi`] under the ABI write
    /// lock, before the switch copies anything; read by 2-level senders
    /// instead of taking the ABI lock (see [`Domain::set_pending`]).
    abi_generation: AtomicU32,
    pub(crate) table: PortTable,
    pub(crate) event_lock: Mutex<EventLocked>,
    pub(crate) vcpus: Box<[VcpuEvtchn]>,
    /// pirq → port (0 = unbound), sized `nr_pirqs`.
    pub(crate) pirq_to_port: Box<[AtomicU32]>,
    /// Allocated channels (port 0 not counted); changed under the event lock.
    pub(crate) active_channels: AtomicU32,
    /// Of those, Xen-attached.
    pub(crate) xen_channels: AtomicU32,
    /// Bit per vcpu that is polling (`poll_mask`). Set and cleared only
    /// through [`Domain::set_poll_bit`] / [`Domain::clear_poll_bit`].
    pub(crate) poll_mask: Box<[AtomicU64]>,
    /// At least the number of bits set in `poll_mask`: raised before a bit
    /// is set, lowered after it is cleared (by whoever cleared it). A sender
    /// that reads 0 after setting its port pending skips the scan of
    /// `poll_mask` (see [`Domain::deliver`]).
    polling_vcpus: AtomicU32,
    /// Pauses by the control domain; reset of another domain needs one.
    pub(crate) controller_pauses: AtomicU32,
    pub(crate) shared: Arc<dyn SharedInfoView>,
    /// [`SharedInfoView::fixed_shared_info`], asked once at creation.
    fixed_page: Option<&'static SharedInfo>,
}

impl Domain {
    pub(crate) fn new(
        config: DomainConfig,
        shared: Arc<dyn SharedInfoView>,
    ) -> Result<Self, Errno> {
        let vcpus = (0..config.vcpus)
            .map(|_| VcpuEvtchn {
                virq_to_port: core::array::from_fn(|_| AtomicU32::new(0)),
                poll_port: AtomicI64::new(0),
                info_moving: AtomicBool::new(false),
                settled_info: OnceSlot::new(),
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        let pirq_to_port = (0..config.nr_pirqs)
            .map(|_| AtomicU32::new(0))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        let poll_mask = (0..config.vcpus.div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Ok(Self {
            domid: config.domid,
            privilege: config.privilege,
            max_evtchn_port: config.max_evtchn_port,
            fifo_support: config.fifo,
            abi: RwLock::new(EventAbi::TwoLevel),
            abi_generation: AtomicU32::new(0),
            table: PortTable::new(config.max_evtchn_port)?,
            event_lock: Mutex::new(EventLocked {
                is_dying: false,
                reset_cursor: 0,
            }),
            vcpus,
            pirq_to_port,
            active_channels: AtomicU32::new(0),
            xen_channels: AtomicU32::new(0),
            poll_mask,
            polling_vcpus: AtomicU32::new(0),
            controller_pauses: AtomicU32::new(0),
            fixed_page: shared.fixed_shared_info(),
            shared,
        }
        .with_settled_vcpu_infos())
    }

    fn with_settled_vcpu_infos(self) -> Self {
        let locked = self.lock();
        for vcpu in 0..self.vcpus.len() {
            self.settle_vcpu_info(&locked, VcpuId(vcpu as u32));
        }
        drop(locked);
        self
    }

    /// Ask the view whether `vcpu`'s vcpu_info is settled now, and keep it
    /// if so (see [`SharedInfoView::settled_vcpu_info`]). Under the event
    /// lock, so that no two callers fill the slot at once and its `get`
    /// (senders, lock-free) never meets a fill in progress.
    pub(crate) fn settle_vcpu_info(&self, _locked: &EventLocked, vcpu: VcpuId) {
        if self.fixed_page.is_none() {
            return;
        }
        let Some(state) = self.vcpu(vcpu) else {
            return;
        };
        if state.settled_info.get().is_none()
            && let Some(info) = self.shared.settled_vcpu_info(vcpu)
        {
            state.settled_info.call_once(|| info);
        }
    }

    /// Note that the hypervisor is about to move `vcpu`'s vcpu_info out of
    /// its legacy slot (see [`crate::DomainHandle::vcpu_info_moves`]).
    pub(crate) fn vcpu_info_moves(&self, vcpu: VcpuId) {
        if let Some(state) = self.vcpu(vcpu) {
            // SeqCst: in the single order before the hypervisor's
            // `evtchn_pending_sel = ~0` store in the new area (see
            // `vcpu_info_after_raise`).
            state.info_moving.store(true, Ordering::SeqCst);
            crate::sync::after_seqcst_store();
        }
    }

    /// `vcpu`'s vcpu_info, for a sender (or unmask) that has just done its
    /// locked operation on `page` (the pending test-and-set, or the mask
    /// test-and-clear followed by the pending load) and found the port
    /// must be raised; `page` is the domain's shared_info page and `vcpus`
    /// the domain's [`VcpuEvtchn`]s (taken by the caller before its locked
    /// operation, so that the flag is one load away after it).
    ///
    /// Fast path: a vcpu whose vcpu_info never started to move is on its
    /// legacy slot in shared_info (`None` past the 32 legacy slots: events
    /// then raise no upcall), reached at a fixed offset from `page` with
    /// no dynamic call into the view and no look at where a registered
    /// area would be. Sound although the vcpu_info may move at any moment
    /// (VCPUOP_register_vcpu_info), because the hypervisor marks it moving
    /// (SeqCst) before it stores `evtchn_pending_sel = ~0` in the new area
    /// and raises the upcall there, as Xen does so that the guest rescans
    /// every pending word (spec §3.6). This load is SeqCst and after the
    /// caller's locked operation: if it reads "not moving", that operation
    /// came before the mark, hence before the `~0` store, in the single
    /// SeqCst order; the guest's rescan, which follows its exchange of that
    /// `~0`, finds the port pending (and, for an unmask, unmasked). The
    /// selector and upcall_pending this sender then sets in the old slot
    /// are harmless leftovers the guest no longer reads, and its kick a
    /// spurious one. A lookup *before* the locked operation would not be
    /// sound: the guest could rescan between it and the bit
    /// (`tests/register_vcpu_info_loom.rs` fails with that order).
    ///
    /// Once moving: the settled vcpu_info with plain loads if the view
    /// gave one, else the view's lookup, also after the locked operation
    /// (which sees the old slot only if the move is not yet published, by
    /// the same argument: see [`SharedInfoView::vcpu_info`]).
    #[inline(always)]
    pub(crate) fn vcpu_info_after_raise<'a>(
        &'a self,
        page: &'a SharedInfo,
        vcpus: &'a [VcpuEvtchn],
        vcpu: VcpuId,
    ) -> Option<&'a VcpuInfo> {
        match Self::legacy_vcpu_info_after_raise(page, vcpus, vcpu) {
            Ok(legacy) => legacy,
            Err(moving) => self.moving_vcpu_info(moving, vcpu),
        }
    }

    /// The fast half of [`Domain::vcpu_info_after_raise`], with the same
    /// argument and the same place in the caller (after its locked
    /// operation): `Ok` with the vcpu's legacy slot in `page` (`None` past
    /// the 32 slots) if its move was never announced, `Err` with its state
    /// if it was, for [`Domain::moving_vcpu_info`] to finish.
    #[inline(always)]
    fn legacy_vcpu_info_after_raise<'page, 'vcpus>(
        page: &'page SharedInfo,
        vcpus: &'vcpus [VcpuEvtchn],
        vcpu: VcpuId,
    ) -> Result<Option<&'page VcpuInfo>, &'vcpus VcpuEvtchn> {
        match vcpus.get(vcpu.0 as usize) {
            Some(state) if state.info_moving.load(Ordering::SeqCst) => Err(state),
            // Never announced (a vcpu the domain does not have never is).
            _ => Ok(page.vcpu_info.get(vcpu.0 as usize)),
        }
    }

    /// [`Domain::vcpu_info_after_raise`] for a vcpu whose move was
    /// announced: out of line, off the common path.
    #[inline(never)]
    fn moving_vcpu_info(&self, state: &VcpuEvtchn, vcpu: VcpuId) -> Option<&VcpuInfo> {
        match state.settled_info.get() {
            Some(settled) => Some(*settled),
            None => self.shared.vcpu_info(vcpu),
        }
    }

    /// The shared_info page: a plain load if it is fixed, else one dynamic
    /// call of the view.
    #[inline]
    pub(crate) fn shared_info_page(&self) -> &SharedInfo {
        match self.fixed_page {
            Some(page) => page,
            None => self.shared.shared_info(),
        }
    }

    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, EventLocked> {
        self.event_lock.lock()
    }

    pub(crate) fn vcpu(&self, vcpu: VcpuId) -> Option<&VcpuEvtchn> {
        self.vcpus.get(vcpu.0 as usize)
    }

    /// -ENOENT unless the vcpu exists (`domain_vcpu()`).
    pub(crate) fn check_vcpu(&self, vcpu: VcpuId) -> Result<(), Errno> {
        self.vcpu(vcpu).map(|_| ()).ok_or(Errno::ENOENT)
    }

    pub(crate) fn is_privileged(&self) -> bool {
        self.privilege == Privilege::Privileged
    }

    /// The current ABI, waiting out a switch in progress (not for
    /// interrupt context).
    pub(crate) fn abi(&self) -> RwLockReadGuard<'_, EventAbi> {
        self.abi.read()
    }

    /// The current ABI unless it is being switched right now: the
    /// interrupt-context read, which never spins.
    pub(crate) fn try_abi(&self) -> Option<RwLockReadGuard<'_, EventAbi>> {
        self.abi.try_read()
    }

    /// Switch the ABI to `next` and return the previous one; the caller
    /// holds the event lock. A switch between the two kinds bumps
    /// `abi_generation` under the ABI write lock, before the caller copies
    /// any state across, so a 2-level sender under a channel lock either
    /// finished its page writes before the bump or sees the new generation
    /// afterwards (see [`Domain::set_pending`]). A switch to FIFO also
    /// revokes every channel's lock-free binding, before the copy, for the
    /// same reason toward lock-free senders, which read their binding word
    /// instead of the generation (see [`Domain::send_lock_free`]). A switch
    /// back to 2-level needs no republishing: it follows the close of every
    /// guest channel (reset, destruction), and the words of the channels
    /// bound afterwards come from their writers.
    pub(crate) fn switch_abi(&self, _locked: &EventLocked, next: EventAbi) -> EventAbi {
        let mut abi = self.abi.write();
        let is_fifo = |abi: &EventAbi| abi.fifo().is_some();
        if is_fifo(&abi) != is_fifo(&next) {
            // SeqCst: in the single order with the senders' two loads and
            // their pending test-and-set (see `set_pending`).
            self.abi_generation.fetch_add(1, Ordering::SeqCst);
            if is_fifo(&next) {
                for port in (0..self.table.valid_evtchns()).map(Port) {
                    if let Some(channel) = self.table.channel(port) {
                        channel.revoke_lock_free();
                    }
                }
            }
            // The copy that follows reads the pending bits.
            crate::sync::after_test_and_set();
        }
        core::mem::replace(&mut *abi, next)
    }

    /// Whether lock-free sends are allowed on this domain's channels (it
    /// is on 2-level), for a channel writer, which holds the event lock
    /// (see [`Domain::is_two_level`]).
    #[inline]
    pub(crate) fn allows_lock_free_sends(&self) -> bool {
        self.abi_generation
            .load(Ordering::Relaxed)
            .is_multiple_of(2)
    }

    /// Set `port` pending toward `vcpu` through the current ABI; the caller
    /// holds the channel's lock and is not in interrupt context.
    ///
    /// On 2-level (the ABI every domain starts on) this takes no ABI lock.
    /// The lock used to make set_pending atomic against a switch to FIFO,
    /// whose copy of the 2-level pending bits (init_control's setup) would
    /// miss a bit set just after it. Instead the sender reads the ABI
    /// generation before and after its page writes, all SeqCst:
    ///
    /// * same even generation after: the pending test-and-set came before
    ///   the bump in the single SeqCst order, so before the switch's copy,
    ///   which reads it (or the domain never switched);
    /// * changed, and this call set the bit 0 → 1: the copy may have
    ///   missed it, so the event is raised again through the current ABI,
    ///   under its read lock. If the copy did see it, the port is raised
    ///   twice for one send: idempotent while it waits for its event word
    ///   (the sticky flag), at worst a spurious event if the guest had
    ///   already consumed the first, which the ABI allows and guests
    ///   tolerate (Xen raises spurious events too, e.g. on bind_interdomain);
    /// * changed, and the bit was already set: whoever set it is either
    ///   before the copy or re-raises it by this same rule.
    ///
    /// The FIFO ABI (odd generation) keeps the read lock: it keeps the FIFO
    /// state alive during set_pending without `unsafe`.
    #[inline]
    pub(crate) fn set_pending(
        &self,
        (port, channel): (Port, &Channel),
        vcpu: VcpuId,
        notify: &dyn Notify,
    ) -> Wakeups {
        self.set_pending_then(port, vcpu, || {
            self.set_pending_by_abi((port, channel), vcpu, notify)
        })
    }

    /// [`Domain::set_pending`] through the current ABI, under its read
    /// lock. Always inlined into its callers, which call it at two places
    /// and would otherwise keep it out of line.
    #[inline(always)]
    fn set_pending_by_abi(
        &self,
        (port, channel): (Port, &Channel),
        vcpu: VcpuId,
        notify: &dyn Notify,
    ) -> Wakeups {
        self.abi()
            .set_pending(&*self.shared, (port, channel), vcpu, notify)
    }

    /// The generation check of [`Domain::set_pending`], with `through_abi`
    /// raising the port through the current ABI when the lock-free 2-level
    /// path cannot (FIFO, or a switch seen in between).
    #[inline(always)]
    fn set_pending_then(
        &self,
        port: Port,
        vcpu: VcpuId,
        through_abi: impl FnOnce() -> Wakeups,
    ) -> Wakeups {
        let generation = self.abi_generation.load(Ordering::SeqCst);
        if generation.is_multiple_of(2) {
            let (shared, vcpus) = (self.shared_info_page(), &*self.vcpus);
            let wakeups = two_level_set_pending(shared, port, vcpu, || {
                self.vcpu_info_after_raise(shared, vcpus, vcpu)
            });
            if wakeups.poll_port.is_none()
                || self.abi_generation.load(Ordering::SeqCst) == generation
            {
                return wakeups;
            }
            return wakeups.merge(through_abi());
        }
        through_abi()
    }

    /// Unmask `port`, re-raising it toward `vcpu` if it was masked and is
    /// pending, through the current ABI; the caller holds the channel's read
    /// lock and is not in interrupt context.
    ///
    /// On 2-level this takes no ABI lock, by the argument of
    /// [`Domain::set_pending`]: the generation is read before and after the
    /// page operations, all SeqCst. Unchanged and even: the mask
    /// test-and-clear and the pending load came before any bump in the
    /// single SeqCst order, so the unmask happened on 2-level before a
    /// switch copied anything, as if it had held the read lock; or the
    /// first load came after a switch back to 2-level bumped it, and the
    /// unmask acts on the ABI the domain is about to be on, as if it had
    /// waited for the write lock. Changed: the unmask is done again through
    /// the current ABI under its read lock, so it takes effect on the ABI
    /// the domain switched to. The first attempt's writes then went to
    /// 2-level bitmaps the new ABI does not read, except possibly
    /// `evtchn_upcall_pending`, which both ABIs share: at worst a spurious
    /// upcall, which the ABI allows and guests tolerate.
    #[inline]
    pub(crate) fn unmask(
        &self,
        (port, channel): (Port, &Channel),
        vcpu: VcpuId,
        notify: &dyn Notify,
    ) -> Wakeups {
        let generation = self.abi_generation.load(Ordering::SeqCst);
        if generation.is_multiple_of(2) {
            // The page by a plain load where it is fixed; the vcpu_info
            // only if the port must be raised.
            // The vcpus are loaded in the closure: an unmask rarely raises.
            let shared = self.shared_info_page();
            let wakeups = two_level_unmask(shared, port, vcpu, || {
                self.vcpu_info_after_raise(shared, &self.vcpus, vcpu)
            });
            if self.abi_generation.load(Ordering::SeqCst) == generation {
                return wakeups;
            }
            let again = self
                .abi()
                .unmask(&*self.shared, (port, channel), vcpu, notify);
            return wakeups.merge(again);
        }
        self.abi()
            .unmask(&*self.shared, (port, channel), vcpu, notify)
    }

    /// Whether the domain is on 2-level, read from the ABI generation
    /// instead of the ABI lock. Exact for the holder of the event lock:
    /// every switch runs under it ([`Domain::switch_abi`]) and bumps the
    /// generation and replaces the ABI inside one critical section, so the
    /// parity seen here is the current ABI (Relaxed: the event lock orders
    /// this load after the last switch).
    #[inline]
    pub(crate) fn is_two_level(&self, _locked: &EventLocked) -> bool {
        self.abi_generation
            .load(Ordering::Relaxed)
            .is_multiple_of(2)
    }

    /// [`Domain::set_pending`] from interrupt context: never spins. On
    /// FIFO, or when a 2-level event must be raised again after a switch,
    /// the ABI lock is only tried, and the event dropped if the ABI is
    /// being switched at this instant (init_control, reset or destruction
    /// of this domain), as for a write-locked channel.
    pub(crate) fn set_pending_from_interrupt(
        &self,
        (port, channel): (Port, &Channel),
        vcpu: VcpuId,
        notify: &dyn Notify,
    ) -> Wakeups {
        self.set_pending_then(port, vcpu, || {
            self.try_abi().map_or_else(Wakeups::default, |abi| {
                abi.set_pending(&*self.shared, (port, channel), vcpu, notify)
            })
        })
    }

    /// EVTCHNOP_send on `port` without any lock, if its channel is an IPI
    /// or a loopback interdomain channel to a guest port and the domain is
    /// on 2-level. `None` if the send is done (wake-ups delivered); else
    /// where it stopped, for the caller to finish out of line
    /// (`Domains::finish_send`; [`SendRest::Locked`]: the locked path).
    /// The caller's domain is this one, alive for the call. The protocol
    /// and why it loses no event and leaves no stale bit are in the crate
    /// doc ("Lock-free send").
    ///
    /// Straight-line on purpose, each step where the send needs it: the
    /// pending test-and-set waits for every load before it, so only the
    /// binding word (and a loopback's peer channel), the page and the
    /// notify vcpu come before it; the
    /// vcpu_info is looked up only for an unmasked port, after the
    /// test-and-set ([`Domain::vcpu_info_after_raise`]: a fixed offset in
    /// shared_info for a vcpu on its legacy slot); and the wake-ups are
    /// delivered here, without a [`Wakeups`] in between.
    ///
    /// Every rare case (the locked path, a view without a fixed page, a
    /// binding that changed under the send, a vcpu whose vcpu_info move
    /// was announced: for good, so not rare once a guest registered its
    /// vcpu_infos) stops
    /// here with a [`SendRest`] saying where the send is, and the caller
    /// finishes it in one call, out of line. So the common case calls
    /// nothing but the kick and, as its last step, the pollers' check: no
    /// value of the send is live across a call, and a caller inlining it
    /// (the host benchmark's closure, the hypervisor's hypercall handler)
    /// saves no callee-saved register for the send. Those saves and
    /// restores cost a new-event send about 1.5 ns on the host (crate doc,
    /// "Performance of send").
    #[inline(always)]
    pub(crate) fn send_lock_free<'a, N: Notify>(
        &'a self,
        (port, channel): (Port, &'a Channel),
        notify: &N,
    ) -> Option<SendRest<'a>> {
        let Some((seen, target)) = self.lock_free_target((port, channel)) else {
            return Some(SendRest::Locked(port, channel));
        };
        // The page by a plain load where the view fixed it; the view's
        // dynamic call (a call, before the test-and-set) out of line,
        // where the send starts again.
        let Some(page) = self.fixed_page else {
            return Some(SendRest::ThroughView(port, channel));
        };
        self.send_lock_free_in(page, (channel, seen), target, notify)
    }

    /// [`Domain::send_lock_free`] of a domain whose view has no fixed
    /// page, from the start, with the page from the view: for the caller's
    /// out-of-line part (see there).
    #[inline(always)]
    pub(crate) fn send_lock_free_through_view<'a, N: Notify>(
        &'a self,
        (port, channel): (Port, &'a Channel),
        notify: &N,
    ) -> Option<SendRest<'a>> {
        let Some((seen, target)) = self.lock_free_target((port, channel)) else {
            return Some(SendRest::Locked(port, channel));
        };
        let page = self.shared.shared_info();
        self.send_lock_free_in(page, (channel, seen), target, notify)
    }

    /// The binding word of `channel` (`port`'s) and, if it allows a
    /// lock-free send, the port that send raises and its channel.
    #[inline(always)]
    fn lock_free_target<'a>(
        &'a self,
        (port, channel): (Port, &'a Channel),
    ) -> Option<(Binding, (Port, &'a Channel))> {
        let seen = channel.binding();
        let target = match seen.lock_free_target(port)? {
            LockFreeTarget::Own(own) => (own, channel),
            LockFreeTarget::Peer(peer_port) => {
                // The peer is a guest port: a loopback word says so (see
                // `Binding::of`), and the reload after the test-and-set
                // checks the word.
                (peer_port, self.table.channel_for_send(peer_port)?)
            }
        };
        Some((seen, target))
    }

    /// The rest of [`Domain::send_lock_free`] in `shared`, the domain's
    /// shared_info page: `seen` is the sender's channel and the binding
    /// word it read, `target` the port to raise and its channel.
    #[inline(always)]
    fn send_lock_free_in<'a, N: Notify>(
        &'a self,
        shared: &SharedInfo,
        (channel, seen): (&Channel, Binding),
        (target_port, target): (Port, &Channel),
        notify: &N,
    ) -> Option<SendRest<'a>> {
        // No ABI check: a lock-free word exists only while the domain is
        // on 2-level (its writers publish one only then, and a switch to
        // FIFO revokes them all before it copies the pending bits; see
        // `Domain::switch_abi`).
        let vcpu = target.notify_vcpu();
        // Already pending (or past the bitmaps): nothing more, whether or
        // not the binding changed since (this send wrote nothing; whoever
        // set the bit answers for it, see "Lock-free send").
        if two_level_test_and_set_pending(shared, target_port) != Some(true) {
            return None;
        }
        crate::sync::after_test_and_set();
        // SeqCst reload, after the test-and-set in the single order: the
        // same binding word means neither a writer took the channel lock nor
        // a switch to FIFO revoked the word since the first load, so any
        // close of this binding clears the bit after this test-and-set set
        // it, and any switch to FIFO copies it.
        if channel.binding() != seen {
            return Some(SendRest::LockFree(LockFreeRest::Settle(target_port)));
        }
        // Xen's steps 2 and 3 (spec §3.3): unmasked → selector, then
        // upcall_pending (and the kick); pollers in any case.
        let kicked = if two_level_is_masked(shared, target_port) {
            None
        } else {
            match Self::legacy_vcpu_info_after_raise(shared, &self.vcpus, vcpu) {
                Ok(info) => info.and_then(|info| two_level_raise_selector(info, target_port, vcpu)),
                Err(_moving) => {
                    return Some(SendRest::LockFree(LockFreeRest::RaiseMoving {
                        port: target_port,
                        vcpu,
                    }));
                }
            }
        };
        if let Some(kicked) = kicked {
            notify.kick_vcpu(self.domid, kicked);
        }
        // SeqCst: see `deliver`. The last step: after the call, only the
        // caller's own values are live.
        if self.polling_vcpus.load(Ordering::SeqCst) != 0 {
            self.check_pollers(target_port, notify);
        }
        None
    }

    /// Finish a lock-free send that set its pending bit and stopped with
    /// `rest` (see [`Domain::send_lock_free`]). Out of line: every case is
    /// rare.
    #[cold]
    #[inline(never)]
    pub(crate) fn finish_lock_free_send<N: Notify>(&self, rest: LockFreeRest, notify: &N) {
        match rest {
            LockFreeRest::Settle(port) => {
                // The port's channel again: the sender found it before, and
                // a channel's storage stays as long as its domain.
                if let Some(channel) = self.table.channel_for_send(port) {
                    let wakeups = self.settle_late_send(port, channel, notify);
                    self.deliver(wakeups, notify);
                }
            }
            LockFreeRest::RaiseMoving { port, vcpu } => {
                // The vcpu's state again (the sender found it announced).
                let kick_vcpu = self
                    .vcpu(vcpu)
                    .and_then(|state| self.moving_vcpu_info(state, vcpu))
                    .and_then(|info| two_level_raise_selector(info, port, vcpu));
                let wakeups = Wakeups {
                    kick_vcpu,
                    poll_port: Some(port),
                };
                self.deliver(wakeups, notify);
            }
        }
    }

    /// A lock-free send set `port`'s pending bit (0 → 1) but found
    /// afterwards that the binding it read, or the ABI, changed: the bit
    /// may have landed after a close cleared it. Under the channel's read
    /// lock: a port that is now unusable (free, or Xen-attached) has no
    /// binding whose sender could have relied on the bit, so it is
    /// cleared; a usable port (a new binding, or the same one on a new
    /// ABI) is raised through the current ABI toward its notify vcpu, since
    /// a sender of that binding may have found the bit set and stopped —
    /// at worst a spurious event, which the ABI allows.
    #[inline(never)]
    fn settle_late_send(&self, port: Port, channel: &Channel, notify: &dyn Notify) -> Wakeups {
        let state = channel.read();
        if !state.is_usable() {
            two_level_clear_pending(self.shared_info_page(), port);
            return Wakeups::default();
        }
        let vcpu = channel.notify_vcpu();
        let abi = self.abi();
        match abi.fifo() {
            None => two_level_raise(&*self.shared, self.shared.shared_info(), port, vcpu),
            Some(_) => abi.set_pending(&*self.shared, (port, channel), vcpu, notify),
        }
    }

    /// The highest port allocation may hand out now: min(max_evtchn_port,
    /// ABI ports − 1), computed from the current ABI (XSA-342).
    pub(crate) fn port_limit(&self, abi: &EventAbi) -> u32 {
        self.max_evtchn_port.min(abi.nr_channels() - 1)
    }

    /// Find and prepare the lowest free port (Xen's `get_free_port()`):
    /// -EINVAL while dying, -ENOSPC when full, -ENOMEM. Nothing changes yet.
    pub(crate) fn prepare_port(&self, locked: &EventLocked) -> Result<PreparedPort<'_>, Errno> {
        self.prepare_port_choice(locked, PortChoice::Lowest)
    }

    /// [`Domain::prepare_port`], or for [`PortChoice::Exact`] Xen's
    /// `evtchn_allocate_port()` of that port (-ENOSPC, -EBUSY).
    #[inline(always)]
    pub(crate) fn prepare_port_choice(
        &self,
        locked: &EventLocked,
        choice: PortChoice,
    ) -> Result<PreparedPort<'_>, Errno> {
        if locked.is_dying {
            return Err(Errno::EINVAL);
        }
        // On 2-level (known without the ABI lock under the event lock) no
        // port is busy and the limit is the 2-level one.
        if self.is_two_level(locked) {
            let limit = self.max_evtchn_port.min(EVTCHN_2L_NR_CHANNELS - 1);
            let free = match choice {
                PortChoice::Lowest => self.table.find_free(limit, |_| false)?,
                PortChoice::Exact(port) => self.table.find_exact(port, limit, |_| false)?,
            };
            return self.table.prepare(free);
        }
        self.prepare_fifo_port(choice)
    }

    /// [`Domain::prepare_port_choice`] on FIFO (the caller holds the event
    /// lock): the limit is the ABI's and a port still linked is busy.
    #[inline(never)]
    fn prepare_fifo_port(&self, choice: PortChoice) -> Result<PreparedPort<'_>, Errno> {
        // Under the event lock nobody can write the ABI or this domain's
        // channels, so reading both here, in either order, cannot block.
        let abi = self.abi();
        let limit = self.port_limit(&abi);
        let is_busy = |port| abi.is_busy(port);
        let free = match choice {
            PortChoice::Lowest => self.table.find_free(limit, is_busy)?,
            PortChoice::Exact(port) => self.table.find_exact(port, limit, is_busy)?,
        };
        drop(abi);
        self.table.prepare(free)
    }

    /// The common case of [`Domain::prepare_port`], which needs nothing
    /// prepared: on 2-level (no port is busy) and not dying, the lowest
    /// free port when it lies in bucket 0, which always has storage.
    /// `None` for every other case, which [`Domain::prepare_port`] serves
    /// (and answers, if it is an error). Changes nothing; claim the port
    /// with [`Domain::claim_first_bucket_port`].
    #[inline(always)]
    pub(crate) fn lowest_free_in_first_bucket(
        &self,
        locked: &EventLocked,
    ) -> Option<(Port, &Channel)> {
        if locked.is_dying || !self.is_two_level(locked) {
            return None;
        }
        let limit = self.max_evtchn_port.min(EVTCHN_2L_NR_CHANNELS - 1);
        self.table.find_free_in_first_bucket(limit)
    }

    /// [`Domain::claim_port`] of a port that
    /// [`Domain::lowest_free_in_first_bucket`] found under the same hold
    /// of the event lock.
    #[inline(always)]
    pub(crate) fn claim_first_bucket_port(&self, _locked: &EventLocked, port: Port) {
        self.table.claim_lowest(port);
        // Only the event lock's holder writes the count: a load and a store,
        // no locked read-modify-write.
        let active = self.active_channels.load(Ordering::Relaxed);
        self.active_channels.store(active + 1, Ordering::Relaxed);
    }

    /// Publish a prepared port and count it active.
    #[inline]
    pub(crate) fn claim_port<'domain>(
        &'domain self,
        _locked: &EventLocked,
        prepared: PreparedPort<'domain>,
    ) -> Option<&'domain Channel> {
        let channel = self.table.publish(prepared)?;
        // Only the event lock's holder writes the count: a load and a store,
        // no locked read-modify-write.
        let active = self.active_channels.load(Ordering::Relaxed);
        self.active_channels.store(active + 1, Ordering::Relaxed);
        Some(channel)
    }

    /// Clear a channel's pending bit and count it freed; the caller sets
    /// its state to Free under its write lock and holds the event lock
    /// (Xen: `evtchn_free()`).
    #[inline]
    pub(crate) fn release_port(
        &self,
        locked: &EventLocked,
        (port, channel): (Port, &Channel),
        was_xen_attached: bool,
    ) {
        if self.is_two_level(locked) {
            two_level_clear_pending(self.shared_info_page(), port);
        } else {
            self.clear_pending_fifo(port);
        }
        channel.set_notify_vcpu(VcpuId(0));
        self.table.note_freed(port);
        // The Xen-attached count drops first and (in alloc) rises last, so
        // the lock-free "guest channels remain" test of reset (active >
        // Xen-attached) never sees a guest channel that is not there. Release
        // orders the two decrements for that reader. Only the event lock's
        // holder writes either count: loads and stores, no locked
        // read-modify-writes.
        if was_xen_attached {
            let xen = self.xen_channels.load(Ordering::Relaxed);
            self.xen_channels.store(xen - 1, Ordering::Release);
        }
        let active = self.active_channels.load(Ordering::Relaxed);
        self.active_channels.store(active - 1, Ordering::Release);
    }

    /// [`Domain::release_port`]'s clear of the pending bit on FIFO.
    #[inline(never)]
    fn clear_pending_fifo(&self, port: Port) {
        self.abi().clear_pending(&*self.shared, port);
    }

    /// Act on port-op wakeups. Called with no evtchn-core lock held.
    ///
    /// The poller scan is skipped when no vcpu of the domain polls, which
    /// is the common case. That loses no wake-up (the same argument as
    /// Xen's `evtchn_check_pollers()` reading `poll_mask`): the port op set
    /// the port pending with a SeqCst read-modify-write before this SeqCst
    /// load of `polling_vcpus`, and a poller raises `polling_vcpus`, then
    /// sets its poll bit, then reads the pending bits, each SeqCst. In the
    /// single order of those operations, if the load reads 0, every poll
    /// bit set before it was also cleared before it, so any poller still to
    /// come sets its bit after the load and then reads our pending bit.
    #[inline]
    pub(crate) fn deliver<N: Notify + ?Sized>(&self, wakeups: Wakeups, notify: &N) {
        if let Some(vcpu) = wakeups.kick_vcpu {
            notify.kick_vcpu(self.domid, vcpu);
        }
        if let Some(port) = wakeups.poll_port {
            // SeqCst: pairs with the SeqCst increment in `set_poll_bit`.
            if self.polling_vcpus.load(Ordering::SeqCst) != 0 {
                self.check_pollers(port, notify);
            }
        }
    }

    /// Whether some vcpu of the domain may be polling: the test
    /// [`Domain::deliver`] makes before [`Domain::check_pollers`], for
    /// callers that split the two (SeqCst, with the same argument).
    #[inline]
    pub(crate) fn has_pollers(&self) -> bool {
        self.polling_vcpus.load(Ordering::SeqCst) != 0
    }

    /// Xen's `evtchn_check_pollers()` (spec §3.5).
    #[inline(never)]
    pub(crate) fn check_pollers<N: Notify + ?Sized>(&self, port: Port, notify: &N) {
        for (word_index, word) in self.poll_mask.iter().enumerate() {
            // SeqCst: pairs with the SeqCst fetch_or in `set_poll_bit`, so
            // either the poller sees the pending bit or we see its poll bit.
            let mut bits = word.load(Ordering::SeqCst);
            while bits != 0 {
                let bit_index = bits.trailing_zeros();
                bits &= bits - 1;
                let vcpu = VcpuId(word_index as u32 * 64 + bit_index);
                let Some(state) = self.vcpu(vcpu) else {
                    continue;
                };
                let polled = state.poll_port.load(Ordering::SeqCst);
                let is_interested = polled <= 0 || polled == i64::from(port.0);
                if is_interested && self.clear_poll_bit(word, 1u64 << bit_index) {
                    state.poll_port.store(0, Ordering::SeqCst);
                    notify.wake_poller(self.domid, vcpu);
                }
            }
        }
    }

    /// Set a vcpu's poll bit (`word`, `bit` from [`Domain::poll_bit`]),
    /// counting it in `polling_vcpus` first.
    pub(crate) fn set_poll_bit(&self, word: &AtomicU64, bit: u64) {
        // SeqCst: raised before the bit is set; pairs with the load in
        // `deliver`.
        self.polling_vcpus.fetch_add(1, Ordering::SeqCst);
        if word.fetch_or(bit, Ordering::SeqCst) & bit != 0 {
            // Already set (and counted when it was).
            self.polling_vcpus.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Clear a vcpu's poll bit; whether this call cleared it (and so
    /// lowered `polling_vcpus`, after the bit).
    pub(crate) fn clear_poll_bit(&self, word: &AtomicU64, bit: u64) -> bool {
        let was_set = word.fetch_and(!bit, Ordering::SeqCst) & bit != 0;
        if was_set {
            self.polling_vcpus.fetch_sub(1, Ordering::SeqCst);
        }
        was_set
    }

    pub(crate) fn poll_bit(&self, vcpu: VcpuId) -> Option<(&AtomicU64, u64)> {
        let word = self.poll_mask.get((vcpu.0 / 64) as usize)?;
        Some((word, 1u64 << (vcpu.0 % 64)))
    }

    /// `local_events_need_delivery()`: upcall pending and not masked.
    pub(crate) fn vcpu_has_deliverable_event(&self, vcpu: VcpuId) -> bool {
        self.shared.vcpu_info(vcpu).is_some_and(|info| {
            info.evtchn_upcall_pending.load(Ordering::SeqCst) != 0
                && info.evtchn_upcall_mask.load(Ordering::SeqCst) == 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::SharedInfo;

    #[test]
    fn allocation_in_a_dying_domain_gives_einval() {
        let domain =
            Domain::new(DomainConfig::new(DomId(1), 1), Arc::new(SharedInfo::new())).unwrap();
        let mut locked = domain.lock();
        assert!(domain.prepare_port(&locked).is_ok());
        locked.is_dying = true;
        assert_eq!(domain.prepare_port(&locked).err(), Some(Errno::EINVAL));
    }
}
