//! One event channel: its state (an enum carrying the state's data), the vcpu
//! it notifies and its FIFO priority, the lock that guards the state, and
//! the atomic mirror of the state ([`Binding`]) that lock-free senders read.

use alloc::sync::Arc;

use crate::abi::{
    DomId, EVTCHN_FIFO_NR_CHANNELS, EVTCHN_FIFO_PRIORITY_DEFAULT, EvtchnStat, Port, VcpuId, Virq,
};
use crate::domain::Domain;
use crate::port_ops::QueueId;
use crate::sync::{
    AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

/// Who consumes events arriving on a channel (spec §2.17).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Consumer {
    /// An ordinary guest channel.
    Guest,
    /// A channel whose local end belongs to the hypervisor: guests cannot
    /// close, send on, re-bind or poll it, and its status reads -EACCES (4.17).
    /// The number tells the hypervisor which of its consumers it is.
    Xen(XenConsumer),
}

/// Identifies a hypervisor-internal consumer of a Xen-attached channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct XenConsumer(pub u8);

/// The state of a channel and the data that state needs. Port 0 is
/// `Reserved` forever; every other port starts `Free`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelState {
    /// Not allocated (ECS_FREE).
    Free,
    /// Port 0 (ECS_RESERVED): never allocated, reads back "closed".
    Reserved,
    /// Allocated; `remote` may bind to it (ECS_UNBOUND).
    Unbound {
        /// The domain allowed to bind (stored unvalidated, as Xen does).
        remote: DomId,
        /// Guest or Xen-attached.
        consumer: Consumer,
    },
    /// Connected to `remote_port` of `remote` (ECS_INTERDOMAIN); loopback
    /// when `remote` is the owner.
    Interdomain {
        /// The peer domain.
        remote: DomId,
        /// The peer's port.
        remote_port: Port,
        /// Guest or Xen-attached.
        consumer: Consumer,
    },
    /// Bound to a physical IRQ (ECS_PIRQ).
    Pirq {
        /// The pirq number as the domain sees it.
        pirq: u32,
    },
    /// Bound to a virtual IRQ (ECS_VIRQ).
    Virq {
        /// Which VIRQ.
        virq: Virq,
    },
    /// Bound for inter-vcpu notification (ECS_IPI); its vcpu never changes.
    Ipi,
}

impl ChannelState {
    /// The EVTCHNSTAT value that status reports for this state.
    pub const fn stat(&self) -> EvtchnStat {
        match self {
            Self::Free | Self::Reserved => EvtchnStat::Closed,
            Self::Unbound { .. } => EvtchnStat::Unbound,
            Self::Interdomain { .. } => EvtchnStat::Interdomain,
            Self::Pirq { .. } => EvtchnStat::Pirq,
            Self::Virq { .. } => EvtchnStat::Virq,
            Self::Ipi => EvtchnStat::Ipi,
        }
    }

    /// The consumer; free, reserved and non-interdomain states are guest's.
    pub const fn consumer(&self) -> Consumer {
        match self {
            Self::Unbound { consumer, .. } | Self::Interdomain { consumer, .. } => *consumer,
            Self::Free | Self::Reserved | Self::Pirq { .. } | Self::Virq { .. } | Self::Ipi => {
                Consumer::Guest
            }
        }
    }

    /// Whether the channel is Xen-attached.
    pub const fn is_xen_attached(&self) -> bool {
        matches!(self.consumer(), Consumer::Xen(_))
    }

    /// Whether the channel is allocated (neither free nor reserved).
    pub const fn is_allocated(&self) -> bool {
        match self {
            Self::Free | Self::Reserved => false,
            Self::Unbound { .. }
            | Self::Interdomain { .. }
            | Self::Pirq { .. }
            | Self::Virq { .. }
            | Self::Ipi => true,
        }
    }

    /// Xen's `evtchn_usable()`: allocated and a guest channel. Port ops on an
    /// unusable channel do nothing.
    pub const fn is_usable(&self) -> bool {
        self.is_allocated() && !self.is_xen_attached()
    }

    /// Whether a writer may hold the channel lock in this state (spec §2.15):
    /// only while the channel is, or becomes, free or unbound.
    #[cfg(debug_assertions)]
    const fn allows_writer(&self) -> bool {
        matches!(self, Self::Free | Self::Unbound { .. })
    }
}

/// Which [`ChannelState`] a channel is in, without the state's data: what
/// the holder of the owning domain's event lock reads from the channel's
/// summary word ([`Channel::kind_under_event_lock`]) instead of taking the
/// channel's lock. The allocated kinds are those from `Unbound` on
/// ([`Channel::is_usable_under_lock`] compares with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChannelKind {
    /// [`ChannelState::Free`].
    Free = 0,
    /// [`ChannelState::Reserved`].
    Reserved = 1,
    /// [`ChannelState::Unbound`].
    Unbound = 2,
    /// [`ChannelState::Interdomain`].
    Interdomain = 3,
    /// [`ChannelState::Pirq`].
    Pirq = 4,
    /// [`ChannelState::Virq`].
    Virq = 5,
    /// [`ChannelState::Ipi`].
    Ipi = 6,
}

impl ChannelKind {
    const fn of(state: &ChannelState) -> Self {
        match state {
            ChannelState::Free => Self::Free,
            ChannelState::Reserved => Self::Reserved,
            ChannelState::Unbound { .. } => Self::Unbound,
            ChannelState::Interdomain { .. } => Self::Interdomain,
            ChannelState::Pirq { .. } => Self::Pirq,
            ChannelState::Virq { .. } => Self::Virq,
            ChannelState::Ipi => Self::Ipi,
        }
    }
}

/// A snapshot of a channel for observers (tests, the debug dump).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChannelInfo {
    /// The state and its data.
    pub state: ChannelState,
    /// The vcpu the channel notifies.
    pub notify_vcpu: VcpuId,
    /// The FIFO priority (kept, and set to 7 at each bind, also under 2-level).
    pub priority: u8,
}

/// What a sender may do on a channel without its lock, as last published by
/// the channel's writer: one word holding a kind, the loopback peer's port
/// and a generation, read and written whole.
///
/// * bits 0–1, the kind: [`Binding::LOCKED`] (take the lock: any state
///   without a lock-free send, or a writer holds the lock right now),
///   [`Binding::IPI`], [`Binding::LOOPBACK`] (interdomain to another port
///   of the owner);
/// * bits 2–18: for a loopback, the peer port (ports are below 2^17);
/// * bits 19–63: the generation, counting write-lock acquisitions.
///
/// Every write lock of the channel stores a `LOCKED` word with the next
/// generation as soon as it is taken (SeqCst, before the writer changes
/// anything, in particular before close clears the pending bit), and the
/// word for the new state, same generation, as it is released (Release).
/// So two
/// loads that return the same word bracket a stretch in which no writer
/// took the lock: the 44-bit generation cannot wrap within one send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Binding(u64);

impl Binding {
    const KIND_MASK: u64 = 0b11;
    const LOCKED: u64 = 0;
    const IPI: u64 = 1;
    const LOOPBACK: u64 = 2;
    const PORT_SHIFT: u32 = 2;
    const PORT_MASK: u64 = (EVTCHN_FIFO_NR_CHANNELS as u64) - 1;
    const GENERATION_SHIFT: u32 = 19;

    fn generation(self) -> u64 {
        self.0 >> Self::GENERATION_SHIFT
    }

    #[inline]
    fn new(generation: u64, kind: u64, peer: u64) -> Self {
        Self((generation << Self::GENERATION_SHIFT) | (peer << Self::PORT_SHIFT) | kind)
    }

    /// The word for `state` of a channel owned by `owner`; `peer_is_guest`:
    /// the writer knows that the peer of an interdomain `state` is a guest
    /// port (see [`ChannelWriteGuard::set_peer_consumer`]). A loopback is
    /// `LOOPBACK` only then, so its lock-free senders need not read the
    /// peer's consumer: it cannot change while this word stands, since
    /// every change to either end of the pair write-locks both channels
    /// (and a channel's consumer is fixed from allocation to close).
    #[inline]
    fn of(state: &ChannelState, owner: DomId, generation: u64, peer_is_guest: bool) -> Self {
        match *state {
            ChannelState::Ipi => Self::new(generation, Self::IPI, 0),
            ChannelState::Interdomain {
                remote,
                remote_port,
                consumer: Consumer::Guest,
            } if remote == owner
                && peer_is_guest
                && u64::from(remote_port.0) <= Self::PORT_MASK =>
            {
                Self::new(generation, Self::LOOPBACK, u64::from(remote_port.0))
            }
            ChannelState::Free
            | ChannelState::Reserved
            | ChannelState::Unbound { .. }
            | ChannelState::Interdomain { .. }
            | ChannelState::Pirq { .. }
            | ChannelState::Virq { .. } => Self::new(generation, Self::LOCKED, 0),
        }
    }

    /// Where a send on `port` sets the event without the lock: `port`
    /// itself (IPI) or its loopback peer; `None` means "take the lock".
    #[inline]
    pub(crate) fn lock_free_target(self, port: Port) -> Option<LockFreeTarget> {
        match self.0 & Self::KIND_MASK {
            Self::IPI => Some(LockFreeTarget::Own(port)),
            Self::LOOPBACK => Some(LockFreeTarget::Peer(Port(
                ((self.0 >> Self::PORT_SHIFT) & Self::PORT_MASK) as u32,
            ))),
            _ => None,
        }
    }
}

/// The port a lock-free send raises (see [`Binding::lock_free_target`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockFreeTarget {
    /// The sender's own port (IPI).
    Own(Port),
    /// Another port of the sender's domain (loopback interdomain).
    Peer(Port),
}

/// What a channel's lock guards: the state and, while the state is
/// interdomain to *another* domain, that domain (a loopback keeps none:
/// the sender is the peer). Keeping the peer's `Arc` here lets a sender
/// reach it under the read lock it holds anyway, without the registry's
/// slot lock and an `Arc` clone and drop (four locked operations).
///
/// The `Arc` is set by bind_interdomain under both channels' write locks
/// and dropped by the write guard of the change that ends the pair (close,
/// reset, destruction). Each of those holds its own `Arc` of both domains
/// while it writes, so the one dropped here is never the last, and no
/// domain is torn down under a channel lock. A pair cannot outlive its
/// domains' destruction, which closes every port, so two domains keeping
/// each other this way are not leaked.
pub(crate) struct Slot {
    state: ChannelState,
    peer: Option<Arc<Domain>>,
}

/// A channel as stored in a bucket.
///
/// `state` changes only under the owning domain's event lock *and* the
/// channel's write lock (both channels' for an interdomain pair), so holding
/// either keeps it stable. `notify_vcpu` and `priority` are atomics changed
/// under the event lock and read by senders without it, as Xen does
/// (bind_vcpu does not take the channel lock).
///
/// `binding` mirrors `state` for lock-free senders (see [`Binding`]): the
/// write guard marks it at lock and publishes the new state at unlock.
///
/// Two more fields serve the FIFO ABI only (spec §2.1): the sticky
/// "pending" flag that keeps an event raised before its event-array page
/// exists, and the last queue the event was linked on, which set_pending
/// locks together with the target queue. Both are atomics: set_pending runs
/// under the channel's *read* lock.
pub(crate) struct Channel {
    state: RwLock<Slot>,
    /// A summary of the state, copied out by every write guard as it
    /// drops: bits 0–15 its [`Consumer`] (0 = guest, 1 + n = Xen(n)), so
    /// that the peer of an interdomain sender reads it without taking this
    /// channel's lock (see [`Channel::consumer_of_peer`]); bits 16–18 its
    /// [`ChannelKind`], so that the holder of the event lock (under which
    /// every state change happens) reads the kind without taking it either
    /// (see [`Channel::kind_under_event_lock`]).
    summary: AtomicU32,
    /// The [`Binding`] mirror of `state`, for lock-free senders.
    binding: AtomicU64,
    notify_vcpu: AtomicU32,
    priority: AtomicU8,
    fifo_pending: AtomicBool,
    /// A [`QueueId`] as raw bits: read whole, as Xen reads `fifo_lastq`.
    last_queue: AtomicU64,
}

impl Channel {
    pub(crate) fn new(state: ChannelState) -> Self {
        Self {
            summary: AtomicU32::new(encode_summary(&state)),
            binding: AtomicU64::new(Binding::of(&state, DomId(0), 0, false).0),
            state: RwLock::new(Slot { state, peer: None }),
            notify_vcpu: AtomicU32::new(0),
            priority: AtomicU8::new(EVTCHN_FIFO_PRIORITY_DEFAULT),
            fifo_pending: AtomicBool::new(false),
            last_queue: AtomicU64::new(QueueId::FIRST.to_raw()),
        }
    }

    /// Shared access to the state, waiting for a writer to finish.
    #[inline]
    pub(crate) fn read(&self) -> ChannelReadGuard<'_> {
        ChannelReadGuard(self.state.read())
    }

    /// Shared access if no writer holds the lock: the interrupt-context path.
    #[inline]
    pub(crate) fn try_read(&self) -> Option<ChannelReadGuard<'_>> {
        self.state.try_read().map(ChannelReadGuard)
    }

    /// Exclusive access; the caller holds the event lock of `owner`, the
    /// owning domain.
    ///
    /// Before returning, the [`Binding`] word becomes `LOCKED` with the
    /// next generation (SeqCst), so that a lock-free sender that read the
    /// old word and reads it again after its pending test-and-set sees that
    /// a writer came (see `Domain::send_lock_free`). The guard publishes
    /// the word of the new state as it drops: a lock-free kind only while
    /// the domain is on 2-level (see [`Channel::revoke_lock_free`]).
    #[inline]
    pub(crate) fn write(&self, owner: &Domain) -> ChannelWriteGuard<'_> {
        self.write_as(owner.domid, owner.allows_lock_free_sends())
    }

    /// [`Channel::write`] for a channel of domain `owner`, whose lock-free
    /// sends `lock_free` allows (its ABI is 2-level).
    #[inline]
    pub(crate) fn write_as(&self, owner: DomId, lock_free: bool) -> ChannelWriteGuard<'_> {
        let guard = self.state.write();
        #[cfg(debug_assertions)]
        let allowed_at_lock = guard.state.allows_writer();
        // Relaxed load: only the holder of the owning domain's event lock
        // stores this word (a writer, or a revoke).
        let generation = Binding(self.binding.load(Ordering::Relaxed)).generation() + 1;
        // SeqCst: before, in the single order, every read-modify-write the
        // writer does next (close's clear of the pending bit).
        self.binding.store(
            Binding::new(generation, Binding::LOCKED, 0).0,
            Ordering::SeqCst,
        );
        ChannelWriteGuard {
            guard,
            #[cfg(debug_assertions)]
            allowed_at_lock,
            summary: &self.summary,
            binding: &self.binding,
            owner,
            generation,
            peer_is_guest: false,
            lock_free,
        }
    }

    /// Take back any lock-free binding: the word becomes `LOCKED` with the
    /// next generation (SeqCst), as at a writer's lock, without the state
    /// changing. The caller holds the owning domain's event lock (so no
    /// writer holds this channel's) and is switching the domain away from
    /// 2-level: a lock-free sender that read the old word sees the change
    /// when it reloads the word after its pending test-and-set, and settles
    /// its event through the new ABI (see `Domain::send_lock_free`).
    pub(crate) fn revoke_lock_free(&self) {
        let generation = Binding(self.binding.load(Ordering::Relaxed)).generation() + 1;
        // SeqCst: before, in the single order, the switch's copy of the
        // pending bits that follows.
        self.binding.store(
            Binding::new(generation, Binding::LOCKED, 0).0,
            Ordering::SeqCst,
        );
    }

    /// The [`Binding`] word: what a sender may do without the lock.
    /// SeqCst: the lock-free sender's two loads and its pending
    /// test-and-set are in the single order with the writers' stores.
    #[inline]
    pub(crate) fn binding(&self) -> Binding {
        Binding(self.binding.load(Ordering::SeqCst))
    }

    /// The kind of this channel's state, read without its lock from the
    /// summary word. Exact for the holder of the owning domain's event
    /// lock: every state change happens under that lock (and the channel's
    /// write lock, whose guard stores the word before unlocking), so the
    /// event lock orders the last store before this load (Relaxed).
    #[inline]
    pub(crate) fn kind_under_event_lock(&self) -> (ChannelKind, Consumer) {
        decode_summary(self.summary.load(Ordering::Relaxed))
    }

    /// Whether this channel is free, for the holder of the owning domain's
    /// event lock: [`Channel::kind_under_event_lock`] without decoding
    /// the word.
    #[inline]
    pub(crate) fn is_free_under_event_lock(&self) -> bool {
        self.summary.load(Ordering::Relaxed) >> SUMMARY_KIND_SHIFT == ChannelKind::Free as u32
    }

    /// Xen's `evtchn_usable()` (allocated, and a guest channel) for the
    /// holder of this channel's lock (`_state`), from the summary word:
    /// every write guard stores the word before it unlocks, and no writer
    /// exists while the lock is held, so the lock orders the last store
    /// before this load (Relaxed) and the answer is the state's
    /// ([`ChannelState::is_usable`]), in one load and two compares.
    #[inline]
    pub(crate) fn is_usable_under_lock(&self, _state: &ChannelState) -> bool {
        let word = self.summary.load(Ordering::Relaxed);
        word & SUMMARY_CONSUMER_MASK == 0
            && word >> SUMMARY_KIND_SHIFT >= ChannelKind::Unbound as u32
    }

    /// The consumer of this channel, which is the peer of `sender_state`'s
    /// channel: the caller holds that channel's lock while it is
    /// interdomain. Every change of an interdomain pair write-locks both
    /// channels, and a channel's consumer is fixed from allocation to
    /// close, so this needs no lock of its own.
    #[inline]
    pub(crate) fn consumer_of_peer(&self, _sender_state: &ChannelState) -> Consumer {
        // Acquire: pairs with the Release in the write guard's drop.
        decode_summary(self.summary.load(Ordering::Acquire)).1
    }

    #[inline]
    pub(crate) fn notify_vcpu(&self) -> VcpuId {
        // Relaxed: a plain field read by senders, as Xen's read_atomic(); the
        // state lock or event lock orders it where it matters.
        VcpuId(self.notify_vcpu.load(Ordering::Relaxed))
    }

    #[inline]
    pub(crate) fn set_notify_vcpu(&self, vcpu: VcpuId) {
        self.notify_vcpu.store(vcpu.0, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn priority(&self) -> u8 {
        self.priority.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn set_priority(&self, priority: u8) {
        self.priority.store(priority, Ordering::Relaxed);
    }

    /// Set or clear the FIFO sticky pending flag (an event raised while the
    /// port had no event word). Relaxed: written under the channel lock or
    /// the event lock, and taken under the event lock.
    pub(crate) fn set_fifo_pending(&self, is_pending: bool) {
        self.fifo_pending.store(is_pending, Ordering::Relaxed);
    }

    /// Take the sticky flag, leaving it clear.
    pub(crate) fn take_fifo_pending(&self) -> bool {
        self.fifo_pending.swap(false, Ordering::Relaxed)
    }

    /// The queue this port was last linked on (Xen: `fifo_lastq`).
    pub(crate) fn last_queue(&self) -> QueueId {
        // Acquire: pairs with the Release in `set_last_queue`; both run under
        // queue locks, which order them anyway, but the pre-lock read in
        // set_pending has no lock.
        QueueId::from_raw(self.last_queue.load(Ordering::Acquire))
    }

    /// Record the queue the port is being linked on; the caller holds that
    /// queue's lock and the previous one's.
    pub(crate) fn set_last_queue(&self, queue: QueueId) {
        self.last_queue.store(queue.to_raw(), Ordering::Release);
    }

    pub(crate) fn info(&self) -> ChannelInfo {
        ChannelInfo {
            state: *self.read(),
            notify_vcpu: self.notify_vcpu(),
            priority: self.priority(),
        }
    }
}

/// Write guard of a channel that checks the writer rule (spec §2.15) when it
/// is dropped: the channel was free or unbound when locked, or is now.
pub(crate) struct ChannelWriteGuard<'a> {
    guard: RwLockWriteGuard<'a, Slot>,
    /// For the writer rule's check (debug builds only).
    #[cfg(debug_assertions)]
    allowed_at_lock: bool,
    summary: &'a AtomicU32,
    binding: &'a AtomicU64,
    owner: DomId,
    generation: u64,
    /// Set by [`ChannelWriteGuard::set_peer_consumer`].
    peer_is_guest: bool,
    /// Whether the owning domain allows lock-free sends (2-level): if not,
    /// the word published at drop is `LOCKED` whatever the state.
    lock_free: bool,
}

const SUMMARY_CONSUMER_MASK: u32 = 0xffff;
const SUMMARY_KIND_SHIFT: u32 = 16;

/// The summary word of `state` (see [`Channel`]'s `summary`).
#[inline]
fn encode_summary(state: &ChannelState) -> u32 {
    let consumer = match state.consumer() {
        Consumer::Guest => 0,
        Consumer::Xen(XenConsumer(number)) => u32::from(number) + 1,
    };
    ((ChannelKind::of(state) as u32) << SUMMARY_KIND_SHIFT) | consumer
}

#[inline]
fn decode_summary(word: u32) -> (ChannelKind, Consumer) {
    let kind = match word >> SUMMARY_KIND_SHIFT {
        0 => ChannelKind::Free,
        1 => ChannelKind::Reserved,
        2 => ChannelKind::Unbound,
        3 => ChannelKind::Interdomain,
        4 => ChannelKind::Pirq,
        5 => ChannelKind::Virq,
        _ => ChannelKind::Ipi,
    };
    let consumer = match word & SUMMARY_CONSUMER_MASK {
        0 => Consumer::Guest,
        encoded => Consumer::Xen(XenConsumer((encoded - 1) as u8)),
    };
    (kind, consumer)
}

impl core::ops::Deref for ChannelWriteGuard<'_> {
    type Target = ChannelState;
    fn deref(&self) -> &ChannelState {
        &self.guard.state
    }
}

impl core::ops::DerefMut for ChannelWriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut ChannelState {
        &mut self.guard.state
    }
}

impl ChannelWriteGuard<'_> {
    /// Keep `peer`, the other domain of the interdomain state this guard
    /// writes, for senders (see [`ChannelReadGuard::peer_domain`]). The
    /// guard drops it again when the channel leaves that state.
    pub(crate) fn set_peer_domain(&mut self, peer: Arc<Domain>) {
        self.guard.peer = Some(peer);
    }

    /// Note `consumer`, the consumer of the peer of the interdomain state
    /// this guard writes (bind_interdomain knows it). A loopback whose peer
    /// is a guest port then publishes the lock-free `LOOPBACK` word; without
    /// this call (or with a Xen-attached peer) its word says "take the
    /// lock" (see [`Binding::of`]).
    pub(crate) fn set_peer_consumer(&mut self, consumer: Consumer) {
        self.peer_is_guest = matches!(consumer, Consumer::Guest);
    }
}

/// Shared guard of a channel's state: derefs to the [`ChannelState`].
pub(crate) struct ChannelReadGuard<'a>(RwLockReadGuard<'a, Slot>);

impl core::ops::Deref for ChannelReadGuard<'_> {
    type Target = ChannelState;
    #[inline]
    fn deref(&self) -> &ChannelState {
        &self.0.state
    }
}

impl ChannelReadGuard<'_> {
    /// For an interdomain channel to another domain, that domain, kept by
    /// bind_interdomain: a sender reaches the peer through it instead of
    /// looking it up in the registry. Valid for as long as the guard.
    #[inline]
    pub(crate) fn peer_domain(&self) -> Option<&Arc<Domain>> {
        self.0.peer.as_ref()
    }
}

impl Drop for ChannelWriteGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // Both words from the new state first, before anything else is
        // written: where the writer just stored a known state (close's
        // `Free`, alloc's `Unbound`), they fold to constants.
        let summary = encode_summary(&self.guard.state);
        let word = if self.lock_free {
            Binding::of(
                &self.guard.state,
                self.owner,
                self.generation,
                self.peer_is_guest,
            )
        } else {
            Binding::new(self.generation, Binding::LOCKED, 0)
        };
        // The pair ended: drop the peer domain kept for senders (never the
        // last reference, see `Slot`).
        if !matches!(self.guard.state, ChannelState::Interdomain { .. })
            && let Some(peer) = self.guard.peer.take()
        {
            debug_assert!(
                Arc::strong_count(&peer) > 1,
                "a channel held the last reference to its peer domain"
            );
        }
        #[cfg(debug_assertions)]
        debug_assert!(
            self.allowed_at_lock || self.guard.state.allows_writer(),
            "channel write-locked while neither free nor unbound: {:?}",
            self.guard.state
        );
        // Release, before the lock itself is released: pairs with the
        // Acquire in `consumer_of_peer`.
        self.summary.store(summary, Ordering::Release);
        // Release, before the lock itself is released: a lock-free sender
        // only compares this word and takes its port from it. Its argument
        // needs the *next* writer's store at lock in the single SeqCst
        // order (a reload that reads this word precedes that store there,
        // whatever the order of this one), not this store. A state without
        // a lock-free send has the word stored at lock (`LOCKED`, same
        // generation): nothing to store again.
        if word != Binding::new(self.generation, Binding::LOCKED, 0) {
            self.binding.store(word.0, Ordering::Release);
        }
    }
}
