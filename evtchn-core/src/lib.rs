//! Xen's event-channel subsystem (Xen 4.17 semantics), portable and
//! `no_std`: the ABI types, per-domain port tables, the channel state
//! machine, the 2-level and FIFO pending/mask logic over the guest's pages,
//! and the interfaces through which the hypervisor wakes vcpus and maps
//! guest frames.
//!
//! The hypervisor owns a [`Domains`] registry, creates a domain with
//! [`Domains::create_domain`] (handing over a [`SharedInfoView`] of its
//! shared_info page), serves `HYPERVISOR_event_channel_op` with
//! [`Domains::dispatch`], and raises VIRQs and PIRQs with
//! [`Domains::send_vcpu_virq`], [`Domains::send_global_virq`] and
//! [`Domains::send_pirq`]. Host tests do the same with fakes.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::Ordering;
//!
//! use evtchn_core::abi::SharedInfo;
//! use evtchn_core::{DomId, DomainConfig, Domains, NoPirqs, Notify, Port, VcpuId};
//!
//! /// The hypervisor's side: here it only counts kicks.
//! #[derive(Default)]
//! struct Kicks(std::sync::atomic::AtomicU32);
//! impl Notify for Kicks {
//!     fn kick_vcpu(&self, _domain: DomId, _vcpu: VcpuId) {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!     }
//!     fn wake_poller(&self, _domain: DomId, _vcpu: VcpuId) {}
//! }
//!
//! let domains = Domains::new(Kicks::default(), NoPirqs);
//! let (page1, page2) = (Arc::new(SharedInfo::new()), Arc::new(SharedInfo::new()));
//! domains.create_domain(DomainConfig::new(DomId(1), 1), page1.clone()).unwrap();
//! domains.create_domain(DomainConfig::new(DomId(2), 1), page2.clone()).unwrap();
//!
//! // dom1 offers a port to dom2; dom2 binds to it (its new port is pending).
//! let offered = domains.alloc_unbound(DomId(1), DomId::SELF, DomId(2)).unwrap();
//! let bound = domains.bind_interdomain(DomId(2), DomId(1), offered).unwrap();
//! assert_eq!((offered, bound), (Port(1), Port(1)));
//!
//! // dom2 sends: dom1's port 1 becomes pending, its selector and upcall
//! // flags are set, and the hypervisor is asked to kick dom1's vcpu 0.
//! domains.send(DomId(2), bound).unwrap();
//! assert_eq!(page1.evtchn_pending[0].load(Ordering::SeqCst), 1 << 1);
//! assert_eq!(page1.vcpu_info[0].evtchn_pending_sel.load(Ordering::SeqCst), 1);
//! assert_eq!(page1.vcpu_info[0].evtchn_upcall_pending.load(Ordering::SeqCst), 1);
//! assert_eq!(domains.notify().0.load(Ordering::Relaxed), 2); // bind + send
//!
//! // The same op through the byte interface a hypercall uses: close (cmd 3).
//! assert!(domains.dispatch(DomId(2), 3, &bound.0.to_le_bytes()).is_ok());
//! ```
//!
//! # Public API at a glance
//!
//! * [`abi`]: [`abi::EvtchnOp`], [`abi::EvtchnStat`], [`Errno`], [`DomId`],
//!   [`Port`], [`VcpuId`], [`Virq`] / [`abi::VirqClass`], every op struct
//!   with `from_bytes` / `to_bytes`, the shared_info layout
//!   ([`abi::SharedInfo`], [`abi::VcpuInfo`]) as atomics, and the FIFO
//!   event-word bits and control-block layout
//!   ([`abi::EvtchnFifoControlBlock`]).
//! * [`DomainConfig`] per domain, with [`FifoSupport`] to keep a domain on
//!   2-level.
//! * Interfaces the hypervisor implements: [`Notify`] (kick a vcpu, wake a
//!   poller, Xen-attached consumers, reset preemption, interrupts off
//!   around FIFO queue locks), [`PirqHost`] (the physical side of PIRQs),
//!   [`SharedInfoView`] (where the guest's pages are, and
//!   [`SharedInfoView::map_frame`] for the FIFO control blocks and event
//!   array, each a [`GuestFrame`] released when dropped).
//! * [`Domains`]: `create_domain` / `destroy_domain`; `dispatch` (bytes in,
//!   [`Reply`] bytes out) and one typed method per op (`alloc_unbound`,
//!   `bind_interdomain`, `bind_virq`, `bind_ipi`, `bind_pirq`, `close`,
//!   `send`, `status`, `bind_vcpu`, `unmask`, `reset` with [`ResetMode`],
//!   `init_control`, `expand_array`, `set_priority`); hot paths through
//!   a [`DomainHandle`] the hypervisor keeps per domain (`handle`, then
//!   `dispatch_from`, `send_from`, `unmask_from`, `status_from`,
//!   `close_from`, `alloc_unbound_from`, `send_vcpu_virq_to`,
//!   [`DomainHandle::has_deliverable_event`]), which skip the registry
//!   lookup; delivery
//!   (`send_vcpu_virq`, `send_global_virq`, `send_pirq`,
//!   `vcpu_mark_events_pending`, `notify_via_xen_channel`); the upcall test
//!   `vcpu_has_deliverable_event`; polling (`poll` → [`PollOutcome`],
//!   `poll_finish`, `is_polling`); control (`pause_by_controller`,
//!   `set_virq_handler`, `alloc_unbound_xen`, `close_xen_channel`, and
//!   static channels at exact ports: `alloc_unbound_at`,
//!   `bind_interdomain_at`); and
//!   observation (`channel_info` → [`ChannelInfo`], `active_channels`,
//!   `valid_ports`, `is_pending`, `is_masked`, `virq_port`, `pirq_port`,
//!   `for_each_channel`, `dump_domain` for the `'e'` key).
//!
//! # The channel state machine
//!
//! ```text
//!            alloc_unbound(remote R)          +----------------+
//!   +------+ ---------------------------->    | Unbound{R}     | <-------+
//!   |      | <------------ close ------------ +----------------+         |
//!   |      |                                     | R binds to it         |
//!   |      |                                     v                       |
//!   |      |  bind_interdomain: new local  +--------------------+  peer  |
//!   | Free | ----------------------------> | Interdomain{R, rp} | -------+
//!   |      |  port, set pending at once    +--------------------+ closes
//!   |      | <------------ close ---------------+                 its end
//!   |      |   (the peer becomes Unbound{closer})
//!   |      |
//!   |      |  bind_virq / bind_ipi / bind_pirq  +-------------------------+
//!   |      | ---------------------------------> | Virq{v}, Ipi or Pirq{p} |
//!   |      | <------------ close -------------- +-------------------------+
//!   +------+
//!
//!   +----------+
//!   | Reserved |  port 0, from domain creation, forever
//!   +----------+
//! ```
//!
//! Every allocated state returns to `Free` on close, reset or domain
//! destruction; freeing clears the pending bit but keeps the mask bit, and
//! resets the notify vcpu to 0 (spec §2.1, §2.14). [`ChannelState`] carries
//! each state's data, so an interdomain channel without a peer, or a VIRQ
//! channel without a VIRQ, cannot be written down.
//!
//! # Port ops and Notify
//!
//! The ops in [`ops`] decide *whether* a port is signalled (send on an IPI
//! port, a peer's send on an interdomain port, a VIRQ or PIRQ). The port
//! ops (`port_ops::EventAbi`, one module per ABI, chosen per domain)
//! decide *how*: for 2-level, set the pending bit, then (if unmasked) the
//! selector bit of the notify vcpu, then `evtchn_upcall_pending`, each a
//! test-and-set that stops the chain when the bit was already set, in
//! exactly Xen's order; for FIFO, set P and link the event word onto the
//! notify vcpu's queue of the channel's priority, then the queue's ready
//! bit, then `evtchn_upcall_pending` (spec §4.3). They return wake-ups:
//! "kick this vcpu" (its upcall_pending went 0 → 1) and "wake pollers of
//! this port". The caller drops every
//! evtchn-core lock and only then calls [`Notify::kick_vcpu`] /
//! [`Notify::wake_poller`] — that is how the crate guarantees no lock of its
//! own is held while the hypervisor's code runs. `Notify` implementations
//! must be leaves (set flags, send an IPI) and never call back in.
//!
//! ```text
//!  guest op / IRQ ──> ops (state checks, locks) ──> EventAbi::set_pending
//!                                                      │ shared page bits
//!                    unlock all  <── Wakeups ──────────┘
//!                         │
//!                         └──> Notify::kick_vcpu / wake_poller (hypervisor)
//! ```
//!
//! # Lock hierarchy
//!
//! Outer to inner; a lock is only ever taken while holding locks above it:
//!
//! 1. A domain's **event lock** (`Mutex`): allocation, binding, close,
//!    bind_vcpu, reset bookkeeping. Two domains: **lower domid first**
//!    (Xen orders by address; Sluice by id, so logs show it). Close of an
//!    interdomain port that finds its peer must be locked first drops its
//!    own lock, takes both in order, and checks the channel again.
//! 2. A channel's **state lock** (`RwLock`): written only for a state change,
//!    and then only while the channel is, or becomes, `Free` or `Unbound`
//!    (checked by a `debug_assert!` when the write guard drops). Two
//!    channels: ordered by **(domid, port)**. Readers: status, send,
//!    unmask, poll. Writers are preferred (a waiting writer turns new
//!    readers away), so a peer's send flood cannot starve a close.
//!    The PIRQ host's `bind`/`unbind`/`set_affinity` run under the event
//!    lock (1), as Xen's `pirq_guest_bind()` does; they must not call back.
//! 3. A domain's **ABI lock** (`RwLock` around its current event ABI):
//!    written only to switch ABIs (the first init_control, reset,
//!    destruction), under the event lock; read by every port op, inside the
//!    channel lock where there is one — except set_pending on 2-level,
//!    which reads the domain's ABI generation instead (see "Performance of
//!    send" below). Under the event lock no writer of
//!    the ABI lock or of the domain's channel locks can exist, so ops
//!    holding it (allocation, expand_array) read both in either order.
//! 4. A FIFO **queue lock** (`Mutex`, per vcpu and priority): taken by
//!    set_pending, two at a time ordered by **(vcpu, priority)**, and held
//!    with interrupts off ([`Notify::disable_interrupts`]), because
//!    interrupt-context delivery takes it by spinning.
//! 5. A **registry slot lock** of [`Domains`] (one per domid): a leaf, held
//!    only to clone, insert or remove that domain's `Arc`.
//!
//! Lock-free state beside these: `valid_evtchns` and bucket storage
//! (Release on publication, Acquire on reads; XSA-340), `virq_to_evtchn`
//! slots (published last with Release when binding, cleared first when
//! closing), the pirq → port map, notify vcpu and priority (atomics written
//! under the event lock), poll bits, and the guest's shared page.
//!
//! # Interrupt context
//!
//! Timer VIRQs and PIRQs are raised from interrupt handlers, which must
//! never spin on a lock the interrupted code on the same pCPU may hold.
//! [`Domains::send_vcpu_virq`], [`Domains::send_global_virq`] and
//! [`Domains::send_pirq`] therefore take no event lock, read the port
//! lock-free, only *try* the channel's read lock and the domain's registry
//! slot, and **drop the event** if a writer holds either. That is correct
//! (spec §2.15, as Xen settled on): a channel's writer exists only while the
//! channel is, or becomes, free or unbound, and a slot's writer only while
//! that domain is being created or destroyed — an event arriving then would
//! be discarded anyway. The ABI lock is only tried as well; its writer
//! exists only while the domain switches ABIs. The FIFO queue locks are
//! the exception: any context may hold them, so everyone holds them with
//! interrupts off, and interrupt context spins on them like anyone else. The same paths re-check that the channel still carries
//! the VIRQ or PIRQ they looked up, in case the port was closed and reused
//! in between. `Notify` is called after every guard is dropped.
//!
//! # The FIFO ABI: what the hypervisor provides
//!
//! Nothing has to be called for FIFO: EVTCHNOP_init_control (11),
//! expand_array (12) and set_priority (13) arrive through
//! [`Domains::dispatch`] like every other op, and delivery switches ABI by
//! itself. The hypervisor provides:
//!
//! * [`SharedInfoView::map_frame`]: map a guest frame the domain owns (for a
//!   PV guest the frame number is the machine frame) writable, as a
//!   [`GuestFrame`] of 1024 `AtomicU32` words, or fail with -EINVAL (not
//!   the domain's, not a writable page) or -ENOMEM. Dropping the
//!   `GuestFrame` unmaps it; evtchn-core drops them on EVTCHNOP_reset, on
//!   [`Domains::destroy_domain`] and when an init_control fails. The
//!   default implementation maps nothing, which keeps the domain 2-level
//!   (init_control answers -EOPNOTSUPP).
//! * [`Notify::disable_interrupts`] / [`Notify::restore_interrupts`]:
//!   FIFO queue locks are taken from interrupt context too, so they are
//!   held with interrupts off.
//! * [`DomainConfig::fifo`]: [`FifoSupport::Disabled`] for a boot option
//!   that turns FIFO off.
//!
//! # Performance of send, and its floor
//!
//! `cargo xtask bench` (source: `benches/ops.rs`) measures send to an
//! unmasked bound IPI port, re-armed after each send by the guest's three
//! plain stores (upcall_pending, selector, pending bit), at 1, 64 and 4095
//! bound ports, next to one locked `fetch_or` on an `AtomicU64` (the "raw"
//! floor, 3.0 ns on the 2-core AMD EPYC these numbers come from). Two more
//! lines say what that floor is made of: an empty op costs 2.0 ns alone but
//! mostly hides behind the locked op's latency, and three locked set-bits
//! cost 8.0 ns, so **each further locked read-modify-write costs about
//! 2.5 ns** here. Medians of three runs (other jobs on the machine; load
//! 1–7), before this design → now:
//!
//! | send to an unmasked IPI port                   | ns                | × raw       |
//! |------------------------------------------------|-------------------|-------------|
//! | `send_from`, new event, 1 / 64 / 4095 ports    | 18.4 / 18.3 / 18.5 | 6.0 (was 7.0) |
//! | `send` by domid, new event, 1 / 64 / 4095 ports | 24.3 / 24.1 / 24.0 | 7.9 (was 9.8) |
//! | `send_from`, already pending                   | 14.6              | 4.8 (was 5.1) |
//! | `send_from`, masked                            | 15.5              | 5.1 (was 5.4) |
//! | `send_from`, interdomain, new event            | 30.8              | 10.1 (was 11.5) |
//! | the ABI's three test-and-sets alone, inline    | 7.9               | 2.6         |
//!
//! The cost is flat in the number of bound ports: a port is found with one
//! bounds check against `valid_evtchns` and two indexed loads.
//!
//! A new-event send through a [`DomainHandle`] ([`Domains::send_from`])
//! does five locked read-modify-writes and nothing else of weight:
//!
//! * the **ABI's three test-and-sets** (pending, selector,
//!   `evtchn_upcall_pending`), in Xen's order (spec §3.3): 7.8 ns of the
//!   total, 2.6× the floor on their own. An already-pending port stops
//!   after the first; a masked one after the first and a load of the mask.
//! * the **channel's read lock**, taken and released (2, about 5 ns).
//! * Around them: two loads of the domain's ABI generation, the mask and
//!   `polling_vcpus` loads, two indirect calls into the
//!   [`SharedInfoView`] (`shared_info`, `vcpu_info`: the hypervisor may
//!   move a vcpu_info), and the port lookup — together about 6 ns.
//!
//! [`Domains::send`] by domid adds the registry lookup (slot read lock
//! and an `Arc` clone and drop: four more, measured 6 ns); an interdomain
//! send adds that lookup for the peer, and reads the peer's consumer
//! with one atomic load instead of its lock. Holding the slot's read lock
//! through the op instead of cloning the `Arc` would save two, but the
//! op ends by calling [`Notify`], which must run with no evtchn-core lock
//! held; a [`DomainHandle`] saves all four.
//!
//! What went, and why it could:
//!
//! * **The ABI lock** (two locked operations). It made set_pending atomic
//!   against a switch to FIFO, whose copy of the 2-level pending bits into
//!   the FIFO state would miss a bit set just after it. A 2-level sender
//!   now reads the domain's ABI generation (even = 2-level, odd = FIFO,
//!   bumped with SeqCst under the ABI write lock before the copy) before
//!   and after its page writes, and raises the event again through the
//!   new ABI if it changed (`Domain::set_pending` has the argument;
//!   `tests/abi_switch_race.rs` holds a sender at the bad instant, and a
//!   loom model races the two). FIFO senders keep the lock, which keeps
//!   the FIFO state alive without `unsafe`.
//! * **The peer channel's lock** on an interdomain send (two). Both ends
//!   of a pair change only with both write-locked, so the sender's own read
//!   lock already pins the peer (spec §2.5); the peer's consumer, fixed
//!   from allocation to close, is mirrored in an atomic.
//! * Calls: the port lookup and lock wrappers are inlined into the caller.
//!
//! What stays, and why 3× is out of reach for a new event:
//!
//! * **The ABI's three locked operations** are the event: pending, then
//!   selector, then upcall_pending, each a test-and-set whose old value
//!   decides whether to go on, in the order the guest's consumer relies
//!   on. They alone are 2.6× the floor, which leaves 1.2 ns for everything
//!   else: less than one more locked operation. Skipping one when a plain
//!   load shows its bit already set is not allowed for the pending bit:
//!   the locked operation is also the barrier that makes the sending
//!   guest's ring writes visible before the bit (on x86 a load can pass
//!   the sender's buffered stores, the receiver could clear the bit, find
//!   the ring empty, and never hear of it again).
//! * **The channel's read lock** (two). A lock-free read of the state (an
//!   atomic state word with a generation, a seqlock snapshot) validates the
//!   state *before* the page write, or detects a change only *after* it,
//!   and the write to the guest's page cannot be taken back: a sender
//!   delayed (an interrupt, a preempted vcpu) between its read and its
//!   write would raise a port that was closed meanwhile — left pending on a
//!   free port, or on the port's next binding, possibly a VIRQ or another
//!   domain's channel. Undoing the bit is no better: a legitimate event of
//!   the new binding may have met it set and relied on it. So close must
//!   know when senders that read the old state are gone, which needs each
//!   sender to announce itself; a shared announcement is a locked
//!   increment and decrement — exactly the read lock. Spec §2.15 lets a
//!   send racing close be *dropped*, never delivered to the port's next
//!   owner; the loom model `send_racing_close_of_peer_leaves_consistent_ends`
//!   checks that no pending bit is left on the freed port.
//!
//! So a new-event send is bounded below by five locked operations (about
//! 12.5 ns, 4.2× the floor) and measures 6.0×; an already-pending send by
//! three (about 2.7×) and measures 4.8×. The issue's target of 3× one
//! `fetch_or` is not reachable for a new event without dropping either
//! Xen's order on the shared page or the close guarantee above; measured
//! against the ABI's own three operations (7.9 ns), send_from costs 2.3×.
//!
//! Left to try: checking the selector and upcall_pending bits with a plain
//! load before their test-and-set (sound after the pending test-and-set,
//! which is the full barrier; the loom model
//! `guest_consumer_racing_sends_loses_no_event` passes with it and catches
//! the wrong variant that tests upcall_pending before the selector).
//! Single-threaded it measured nothing: 16.4 → ~16.0 ns with the selector
//! already set (bench line `send_from ipi, selector already set`), and
//! +0.7 ns for a new event, so it was left out; its gain would be under
//! contention, when the guest's vcpu holds the vcpu_info line; a
//! `swap` instead of the compare-exchange loop that `fetch_or` on the
//! byte-wide `evtchn_upcall_pending` compiles to (it would clobber bits
//! 1–7, which Xen's bit operation keeps).
//!
//! # Differences from Xen 4.17 worth knowing
//!
//! * A failing op never grows the port table: storage is allocated first
//!   but published only when the op commits. Xen keeps a bucket it grew for
//!   an op that then failed (only visible as status/unmask of a port in
//!   that bucket answering rc 0 instead of -EINVAL).
//! * bind_interdomain to a domain being destroyed gives -EINVAL.
//! * FIFO can be turned off per domain ([`FifoSupport::Disabled`]):
//!   init_control then validates its argument and answers -EOPNOTSUPP (as
//!   Xen 4.21+ built without FIFO). A [`SharedInfoView`] that maps no
//!   frames gives the same answer.
//! * expand_array tests "FIFO active" under the event lock (XSA-505, later
//!   than 4.17).
//! * FIFO's sticky "pending" flag is cleared when the domain leaves FIFO
//!   (Xen keeps it, so a stale one can re-raise a port after a reset and a
//!   new init_control), and expand_array re-raises only usable channels.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(loom)]
extern crate std;

pub mod abi;
mod channel;
mod domain;
mod domain_table;
mod dump;
mod fast;
mod notify;
pub mod ops;
mod port_ops;
mod registry;
mod shared;
pub mod sync;
mod table;

pub use abi::{DomId, Errno, Port, VcpuId, Virq};
pub use channel::{ChannelInfo, ChannelState, Consumer, XenConsumer};
pub use domain::{DomainConfig, FifoSupport, Privilege};
pub use notify::{InterruptState, NoPirqs, Notify, PirqHost, PirqSharing};
pub use ops::{PollOutcome, Reply, ResetMode};
pub use registry::{DomainHandle, Domains};
pub use shared::{GuestFrame, SharedInfoView, WORDS_PER_FRAME};
