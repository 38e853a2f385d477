//! [`Domains`]: every domain evtchn-core knows, and the entry points the
//! hypervisor calls that are not guest ops (creation, destruction, VIRQ and
//! PIRQ delivery, polling, observation).

use alloc::vec::Vec;

use crate::abi::{DomId, Errno, Port, VcpuId, Virq};
use crate::channel::ChannelInfo;
use crate::domain::{Domain, DomainConfig, EventLocked};
use crate::domain_table::DomainTable;
use crate::notify::{Notify, PirqHost};
use crate::shared::SharedInfoView;
use alloc::sync::Arc;

use crate::sync::{AtomicU32, MutexGuard, Ordering};

/// "No domain" in the global-VIRQ handler table.
const NO_DOMAIN: u32 = u32::MAX;

/// The registry of domains, generic over the hypervisor's [`Notify`] and
/// [`PirqHost`] (tests use fakes).
///
/// The registry's per-domain slot locks are leaves: each is held only to
/// clone, insert or remove one `Arc<Domain>`, never while taking another
/// lock. Entry points that may run in interrupt context
/// ([`Domains::send_vcpu_virq`], [`Domains::send_global_virq`],
/// [`Domains::send_pirq`]) only *try* the slot of the domain they deliver
/// to, which fails only while that very domain is being created or
/// destroyed.
pub struct Domains<N: Notify, P: PirqHost> {
    domains: DomainTable,
    pub(crate) notify: N,
    pub(crate) pirq_host: P,
    /// Per global VIRQ: the domain set by `set_virq_handler` (or NO_DOMAIN).
    virq_handlers: [AtomicU32; Virq::COUNT],
    /// The hardware domain: the first privileged domain created; global
    /// VIRQs without an explicit handler go to it.
    hardware_domain: AtomicU32,
}

/// One domain's event-channel state, held by the hypervisor beside its own
/// per-domain (or per-vcpu) structure so that hot paths skip the registry:
/// [`Domains::send_from`] (EVTCHNOP_send), [`Domains::send_vcpu_virq_to`]
/// (timer VIRQs) and [`DomainHandle::has_deliverable_event`] (every return
/// to the guest). Looking a domain up by id takes its registry slot's lock
/// and an `Arc` reference (four locked read-modify-writes); a handle costs
/// none.
///
/// Get one with [`Domains::handle`] after [`Domains::create_domain`], and
/// use it only with the registry it came from. It keeps the domain's memory
/// alive, not the domain: after [`Domains::destroy_domain`] every port is
/// closed, so sends through a stale handle answer -EINVAL and VIRQs are
/// dropped. Drop it when the domain is destroyed.
#[derive(Clone)]
pub struct DomainHandle {
    domain: Arc<Domain>,
}

impl DomainHandle {
    /// The domain's id.
    pub fn domid(&self) -> DomId {
        self.domain.domid
    }

    /// Xen's `local_events_need_delivery()` for one of this domain's vcpus:
    /// `evtchn_upcall_pending` set and `evtchn_upcall_mask` clear (as
    /// [`Domains::vcpu_has_deliverable_event`], without the lookup). Two
    /// plain loads; safe in interrupt context.
    pub fn has_deliverable_event(&self, vcpu: VcpuId) -> bool {
        self.domain.vcpu_has_deliverable_event(vcpu)
    }

    /// Tell evtchn-core that `vcpu`'s vcpu_info is about to leave its
    /// legacy slot in shared_info (VCPUOP_register_vcpu_info): call it
    /// before the move is published, and in any case before the
    /// `evtchn_pending_sel = ~0` store in the new area (see
    /// [`SharedInfoView::vcpu_info`](crate::SharedInfoView::vcpu_info)
    /// for the whole sequence). Until it is called, senders reach the
    /// vcpu's legacy slot at a fixed offset in shared_info, without asking
    /// the view. Once is enough; more calls change nothing, and calling it
    /// for a move that does not happen (a registration that fails later)
    /// only sends this vcpu's events through the view. Nothing happens for
    /// a vcpu the domain does not have.
    pub fn vcpu_info_moves(&self, vcpu: VcpuId) {
        self.domain.vcpu_info_moves(vcpu);
    }

    #[inline]
    pub(crate) fn domain(&self) -> &Domain {
        &self.domain
    }

    /// The domain as the ops that keep a reference to it take it.
    pub(crate) fn domain_arc(&self) -> &Arc<Domain> {
        &self.domain
    }
}

impl core::fmt::Debug for DomainHandle {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("DomainHandle")
            .field("domid", &self.domain.domid)
            .finish()
    }
}

/// The event locks of one or two domains, taken lower domid first.
pub(crate) enum EventLocks<'a> {
    One(MutexGuard<'a, EventLocked>),
    Two {
        lower: MutexGuard<'a, EventLocked>,
        higher: MutexGuard<'a, EventLocked>,
        first_is_lower: bool,
    },
}

impl EventLocks<'_> {
    /// Lock `first` and `second` (the same domain → one lock).
    #[inline]
    pub(crate) fn lock<'a>(first: &'a Domain, second: &'a Domain) -> EventLocks<'a> {
        if first.domid == second.domid {
            return EventLocks::One(first.lock());
        }
        // Lock order: lower domid's event lock -> higher domid's event lock.
        let first_is_lower = first.domid < second.domid;
        let (lower, higher) = if first_is_lower {
            (first, second)
        } else {
            (second, first)
        };
        let lower = lower.lock();
        let higher = higher.lock();
        EventLocks::Two {
            lower,
            higher,
            first_is_lower,
        }
    }

    #[inline]
    pub(crate) fn first(&self) -> &EventLocked {
        match self {
            Self::One(guard) => guard,
            Self::Two {
                lower,
                higher,
                first_is_lower,
            } => {
                if *first_is_lower {
                    lower
                } else {
                    higher
                }
            }
        }
    }

    pub(crate) fn second(&self) -> &EventLocked {
        match self {
            Self::One(guard) => guard,
            Self::Two {
                lower,
                higher,
                first_is_lower,
            } => {
                if *first_is_lower {
                    higher
                } else {
                    lower
                }
            }
        }
    }
}

impl<N: Notify, P: PirqHost> Domains<N, P> {
    /// An empty registry.
    pub fn new(notify: N, pirq_host: P) -> Self {
        Self {
            domains: DomainTable::new(),
            notify,
            pirq_host,
            virq_handlers: core::array::from_fn(|_| AtomicU32::new(NO_DOMAIN)),
            hardware_domain: AtomicU32::new(NO_DOMAIN),
        }
    }

    /// The [`Notify`] implementation.
    pub fn notify(&self) -> &N {
        &self.notify
    }

    /// The [`PirqHost`] implementation.
    pub fn pirq_host(&self) -> &P {
        &self.pirq_host
    }

    /// Create a domain's event-channel state: port 0 reserved, ports 1..63
    /// valid and free, 2-level ABI. -EINVAL for a reserved domid or zero
    /// vcpus, -EEXIST if the id is taken, -ENOMEM.
    ///
    /// The page behind `shared` should be zeroed with
    /// `evtchn_upcall_mask` = 1 in every vcpu_info (the domain builder's
    /// job, spec §3.2). The first privileged domain created becomes the
    /// hardware domain, which receives global VIRQs without a handler.
    pub fn create_domain(
        &self,
        config: DomainConfig,
        shared: Arc<dyn SharedInfoView>,
    ) -> Result<(), Errno> {
        if !config.domid.is_real() || config.vcpus == 0 {
            return Err(Errno::EINVAL);
        }
        if self.contains(config.domid) {
            return Err(Errno::EEXIST);
        }
        let domain = Arc::new(Domain::new(config, shared)?);
        self.domains.insert(config.domid, domain)?;
        if config.privilege == crate::domain::Privilege::Privileged {
            // AcqRel/Acquire: pairs with the Acquire in virq_handler.
            let _ = self.hardware_domain.compare_exchange(
                NO_DOMAIN,
                u32::from(config.domid.0),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        Ok(())
    }

    /// Destroy a domain's event-channel state (Xen: `evtchn_destroy()`): mark
    /// it dying (allocation then fails), close every port from the top down
    /// (Xen-attached ones too; interdomain peers become unbound naming this
    /// domain), drop its global-VIRQ handler registrations, then forget it.
    /// -ESRCH if unknown, -EINVAL if already being destroyed.
    pub fn destroy_domain(&self, domid: DomId) -> Result<(), Errno> {
        let domain = self.domain(domid).ok_or(Errno::ESRCH)?;
        {
            let mut locked = domain.lock();
            if locked.is_dying {
                return Err(Errno::EINVAL);
            }
            locked.is_dying = true;
        }
        let valid = domain.table.valid_evtchns();
        for port in (1..valid).rev() {
            // A free port gives -EINVAL: nothing to do there.
            let _ = self.close_port(&domain, Port(port), crate::ops::CloseBy::Hypervisor);
        }
        // Release the FIFO frames now rather than with the last reference.
        domain.leave_fifo(domain.lock());
        let id = u32::from(domid.0);
        // AcqRel/Acquire: pairs with the Acquire in virq_handler.
        for handler in &self.virq_handlers {
            let _ = handler.compare_exchange(id, NO_DOMAIN, Ordering::AcqRel, Ordering::Acquire);
        }
        let _ = self.hardware_domain.compare_exchange(
            id,
            NO_DOMAIN,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.domains.remove(domid);
        Ok(())
    }

    /// A [`DomainHandle`] of the domain with this id, for the hypervisor to
    /// keep (`None` if unknown). Not for interrupt context: it waits out a
    /// concurrent creation or destruction of that domain.
    pub fn handle(&self, domid: DomId) -> Option<DomainHandle> {
        self.domain(domid).map(|domain| DomainHandle { domain })
    }

    /// The domain with this id (dying domains included until destroyed).
    pub(crate) fn domain(&self, domid: DomId) -> Option<Arc<Domain>> {
        self.domains.get(domid)
    }

    /// The same lookup for interrupt context: never spins (returns `None`
    /// while this domain is being created or destroyed).
    pub(crate) fn domain_from_interrupt(&self, domid: DomId) -> Option<Arc<Domain>> {
        self.domains.try_get(domid)
    }

    /// Resolve an op's domain argument for `caller` (Xen:
    /// `rcu_lock_domain_by_any_id()`): DOMID_SELF is the caller, other
    /// reserved ids and unknown ids give -ESRCH.
    pub(crate) fn resolve(&self, caller: &Arc<Domain>, domid: DomId) -> Result<Arc<Domain>, Errno> {
        if domid == DomId::SELF {
            return Ok(caller.clone());
        }
        if !domid.is_real() {
            return Err(Errno::ESRCH);
        }
        self.domain(domid).ok_or(Errno::ESRCH)
    }

    /// The calling domain (-ESRCH if the hypervisor names an unknown one).
    pub(crate) fn caller(&self, caller: DomId) -> Result<Arc<Domain>, Errno> {
        self.domain(caller).ok_or(Errno::ESRCH)
    }

    /// The ids of every domain, ascending.
    pub fn domain_ids(&self) -> Vec<DomId> {
        self.domains.ids()
    }

    /// Whether a domain with this id exists.
    pub fn contains(&self, domid: DomId) -> bool {
        self.domains.get(domid).is_some()
    }

    // ----- observation (tests, model checks, the debug dump) -----

    /// State, notify vcpu and priority of any valid port; -ESRCH for an
    /// unknown domain, -EINVAL for a port without storage.
    pub fn channel_info(&self, domid: DomId, port: Port) -> Result<ChannelInfo, Errno> {
        let domain = self.domain(domid).ok_or(Errno::ESRCH)?;
        let channel = domain.table.channel(port).ok_or(Errno::EINVAL)?;
        Ok(channel.info())
    }

    /// Number of allocated channels (port 0 not counted).
    pub fn active_channels(&self, domid: DomId) -> Option<u32> {
        Some(self.domain(domid)?.active_channels.load(Ordering::Relaxed))
    }

    /// Ports with storage (`valid_evtchns`): a multiple of 64, never shrinking.
    pub fn valid_ports(&self, domid: DomId) -> Option<u32> {
        Some(self.domain(domid)?.table.valid_evtchns())
    }

    /// The domain's shared page as evtchn-core sees it.
    pub fn shared_info(&self, domid: DomId) -> Option<Arc<dyn SharedInfoView>> {
        Some(self.domain(domid)?.shared.clone())
    }

    /// The port bound to `virq` in `vcpu`'s table, if any.
    pub fn virq_port(&self, domid: DomId, vcpu: VcpuId, virq: Virq) -> Option<Port> {
        let domain = self.domain(domid)?;
        let slot = domain.vcpu(vcpu)?.virq_to_port.get(virq.index())?;
        // Acquire: pairs with the Release publishing the binding.
        match slot.load(Ordering::Acquire) {
            0 => None,
            port => Some(Port(port)),
        }
    }

    /// The port bound to `pirq`, if any (for PHYSDEVOP_eoi with a v1 EOI
    /// map, which unmasks the pirq's port first).
    pub fn pirq_port(&self, domid: DomId, pirq: u32) -> Option<Port> {
        let domain = self.domain(domid)?;
        let slot = domain.pirq_to_port.get(pirq as usize)?;
        // Acquire: pairs with the Release publishing the binding.
        match slot.load(Ordering::Acquire) {
            0 => None,
            port => Some(Port(port)),
        }
    }

    /// The ABI's pending bit of `port` (false for ports past the ABI).
    pub fn is_pending(&self, domid: DomId, port: Port) -> Option<bool> {
        let domain = self.domain(domid)?;
        let is_pending = domain.abi().is_pending(&*domain.shared, port);
        Some(is_pending)
    }

    /// The ABI's mask bit of `port` (true for ports past the ABI).
    pub fn is_masked(&self, domid: DomId, port: Port) -> Option<bool> {
        let domain = self.domain(domid)?;
        let is_masked = domain.abi().is_masked(&*domain.shared, port);
        Some(is_masked)
    }

    /// Visit every allocated port of a domain (for the `'e'` debug dump).
    pub fn for_each_channel(&self, domid: DomId, mut visit: impl FnMut(Port, ChannelInfo)) {
        let Some(domain) = self.domain(domid) else {
            return;
        };
        for port in 0..domain.table.valid_evtchns() {
            if let Some(channel) = domain.table.channel(Port(port)) {
                let info = channel.info();
                if info.state.is_allocated() {
                    visit(Port(port), info);
                }
            }
        }
    }

    // ----- control -----

    /// The control domain paused `domid` (XEN_DOMCTL_pausedomain); a reset
    /// by another domain needs the target paused (spec §2.12).
    pub fn pause_by_controller(&self, domid: DomId) -> Result<(), Errno> {
        let domain = self.domain(domid).ok_or(Errno::ESRCH)?;
        // AcqRel: pairs with the Acquire in reset.
        domain.controller_pauses.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Undo one [`Domains::pause_by_controller`]; -EINVAL if not paused.
    pub fn unpause_by_controller(&self, domid: DomId) -> Result<(), Errno> {
        let domain = self.domain(domid).ok_or(Errno::ESRCH)?;
        domain
            .controller_pauses
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                count.checked_sub(1)
            })
            .map(|_| ())
            .map_err(|_| Errno::EINVAL)
    }

    /// XEN_DOMCTL_set_virq_handler for a global VIRQ: in 4.17 it always
    /// succeeds for a global VIRQ and leaves every binding in place.
    /// -EINVAL for a per-vcpu VIRQ, -ESRCH for an unknown domain.
    pub fn set_virq_handler(&self, virq: Virq, domid: DomId) -> Result<(), Errno> {
        if virq.is_per_vcpu() {
            return Err(Errno::EINVAL);
        }
        if !self.contains(domid) {
            return Err(Errno::ESRCH);
        }
        if let Some(slot) = self.virq_handlers.get(virq.index()) {
            // Release: pairs with the Acquire in virq_handler.
            slot.store(u32::from(domid.0), Ordering::Release);
        }
        Ok(())
    }

    /// The domain that receives a global VIRQ: its handler if set, else the
    /// hardware domain (Xen: `get_global_virq_handler()`).
    pub fn virq_handler(&self, virq: Virq) -> Option<DomId> {
        // Acquire: pairs with the Release in set_virq_handler and the
        // AcqRel of create_domain / destroy_domain.
        let explicit = self
            .virq_handlers
            .get(virq.index())
            .map_or(NO_DOMAIN, |slot| slot.load(Ordering::Acquire));
        let chosen = if explicit == NO_DOMAIN {
            self.hardware_domain.load(Ordering::Acquire)
        } else {
            explicit
        };
        u16::try_from(chosen).ok().map(DomId)
    }
}
