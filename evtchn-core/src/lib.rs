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
//!   [`SharedInfoView`] (where the guest's pages are, whether they are
//!   fixed — [`SharedInfoView::fixed_shared_info`],
//!   [`SharedInfoView::settled_vcpu_info`] — and
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
//!    channels: ordered by **(domid, port)**. Readers: status, send
//!    (except the lock-free send on IPI and loopback ports, see "Lock-free
//!    send"), unmask, poll. Writers are preferred (a waiting writer turns new
//!    readers away), so a peer's send flood cannot starve a close.
//!    The PIRQ host's `bind`/`unbind`/`set_affinity` run under the event
//!    lock (1), as Xen's `pirq_guest_bind()` does; they must not call back.
//! 3. A domain's **ABI lock** (`RwLock` around its current event ABI):
//!    written only to switch ABIs (the first init_control, reset,
//!    destruction), under the event lock; read by every port op, inside the
//!    channel lock where there is one — except set_pending on 2-level,
//!    which reads the domain's ABI generation instead (see "What went,
//!    and why it could" below). Under the event lock no writer of
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
//! (Release on publication, Acquire on reads; XSA-340; bucket 0 is inline
//! and exists from creation), `virq_to_evtchn`
//! slots (published last with Release when binding, cleared first when
//! closing), the pirq → port map, notify vcpu and priority (atomics written
//! under the event lock), poll bits, each channel's binding word (its
//! state as lock-free senders see it, written under its write lock; see
//! "Lock-free send"), and the guest's shared page.
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
//! # Lock-free send
//!
//! EVTCHNOP_send on an **IPI port**, or on a **loopback** interdomain port
//! (both ends in the caller's domain, the peer a guest port), of a domain
//! on **2-level** takes no lock at all: the caller's domain is alive for
//! the call (the caller holds it), and the port raised is one of its own.
//! Every other send — to another domain (whose lifetime the sender's read
//! lock is what guarantees), to a Xen-attached peer, on an unbound port,
//! the errors, and every send of a FIFO domain — takes the channel's read
//! lock as described under "Port ops and Notify".
//!
//! **The binding word.** Each channel mirrors its state in one `AtomicU64`
//! (`channel::Binding`): a kind (IPI; loopback to a guest port, with the
//! peer's port; or "take the lock", for every other state) and a
//! generation. A writer of
//! the channel stores "take the lock" with the next generation as soon as
//! it holds the write lock, *before* it changes anything (in particular
//! before close clears the pending bit), and the new state's word, same
//! generation, as it unlocks. Every change to either end of a loopback
//! pair write-locks both channels, so the sender's own word also covers
//! the port it raises; once the pair is broken the sender's word has
//! changed, whatever happens to the peer afterwards. The lock-free kinds
//! exist only while the domain is on 2-level: a writer publishes "take the
//! lock" on a FIFO domain, and a switch to FIFO, under the event lock (so
//! with no writer), stores "take the lock" with the next generation in
//! every channel's word, SeqCst, after bumping the ABI generation and
//! before copying the 2-level pending bits (`Domain::switch_abi`): to a
//! lock-free sender it is one more writer. The notify vcpu is
//! not in the word: it is read from its own atomic, as the locked path
//! reads it, because bind_vcpu changes it under the event lock only (as
//! Xen does) and a send racing bind_vcpu may notify either vcpu in both.
//!
//! **The sender** (`Domain::send_lock_free`): load its word S (a loopback
//! word says the peer is a guest port: bind_interdomain, which write-locks
//! both ends, knows the peer's consumer, fixed until the pair is broken;
//! and a lock-free word says the domain is on 2-level); look the page up
//! (a plain load when it is fixed, see "Performance of send");
//! **test-and-set the pending bit**; if the bit was already set, stop
//! there (see the second case below: the reload would decide nothing);
//! else reload the word. All these, the
//! writers' stores at lock (and the switch's) and their clears are SeqCst
//! (the store at unlock need only be Release: the argument below rests on
//! the *next* writer's store at lock). Then:
//!
//! * **Word unchanged**: the reload precedes the next writer's store in
//!   the single SeqCst order, so the test-and-set does too, and so it
//!   precedes that writer's clear of the pending bit, which comes after
//!   its store (or, for a switch to FIFO, its copy of the pending bits,
//!   which then sees the bit). This send linearises *before* the close, as in
//!   Xen, where close waits for the sender's read lock, and the close's
//!   clear removes the bit. Only now does the sender go on (the bit was
//!   new): Xen's steps 2 and 3 (mask, selector, upcall_pending, spec §3.3)
//!   and the kick. Those may run after the close freed the port: a spurious
//!   upcall at most (the guest finds no pending bit), which the ABI allows.
//!   (The argument holds without the single order too: if the close's clear
//!   came first in the pending word's modification order, the test-and-set
//!   read from it and synchronised with it, so the reload must see the
//!   writer's store.)
//! * **Bit already set** (word changed or not; the sender does not reload
//!   it): this send wrote nothing; whoever set the bit answers for it by
//!   these same rules (a lock-free sender that set it 0 → 1 reloads its
//!   word and settles it; a locked sender set it under the read lock, so
//!   before a close's clear or on a usable binding).
//! * **Changed, and this send set the bit 0 → 1**: the bit may have landed
//!   after a close cleared it. The sender settles it under the raised
//!   port's **read lock**, which freezes that port's state
//!   (`Domain::settle_late_send`):
//!   - the port is now **unusable** (free, or Xen-attached): no binding
//!     exists whose senders could have relied on the bit (a sender of a
//!     later binding needs that binding to exist, which needs the write
//!     lock this read lock excludes), and a free port must not stay
//!     pending: the bit is **cleared**. The send linearises after the
//!     close; it answers 0 where Xen would answer -EINVAL, which a guest
//!     cannot tell from a send just before its own close.
//!   - the port is **usable** (bound again meanwhile, perhaps toward
//!     another vcpu; or the same binding after an ABI switch): a sender of
//!     the new binding may have found the bit set and stopped there
//!     (delivery is edge-triggered), so clearing it would lose that event,
//!     and so would leaving it unsignalled. The sender **raises** it:
//!     steps 2 and 3 toward the port's current notify vcpu, or FIFO's
//!     set_pending if the domain switched. At worst a spurious event on the
//!     new binding, which the ABI allows (Xen raises one on every
//!     bind_interdomain).
//!
//! The lock is what makes the settling safe: the state it tests cannot
//! change before the clear or raise it decides. Without it, a rebind and a
//! send on the new binding fit between test and clear, and that send's
//! event is lost.
//!
//! **Out of line**: the settling, and the raise toward a vcpu whose
//! vcpu_info move was announced, are finished after `Domain::send_lock_free`
//! returned (`domain::SendRest`, `Domains::finish_send`), and look the
//! raised port's channel, or the vcpu's state, up again by number. A
//! port's storage is never freed and a domain's vcpus are fixed at its
//! creation, so that finds the very channel and vcpu the send saw,
//! whatever happened to them since (a close, a rebind): the settling reads
//! the channel's state under its lock, as above, and the raise is one the
//! send decided with its word unchanged, as in the first case.
//!
//! **The one difference a guest can see**: between a late sender's
//! test-and-set and its settling — a few nanoseconds, longer if the host
//! interrupts that pCPU in between — a port that was just closed can read
//! as pending in the shared page, and a port bound in that window can get
//! one spurious event. No event of a live binding is lost, and no pending
//! bit outlives the send on a free port: the send returns only after its
//! settling.
//!
//! Checked by `tests/loom.rs` (`lock_free_send_racing_close_leaves_no_stale_bit`,
//! `lock_free_loopback_send_racing_close_loses_no_notification`,
//! `lock_free_send_racing_close_and_rebind_loses_no_new_event`: without
//! the reload, the first and third fail; with the settling done without
//! the lock, or clearing unconditionally, the third fails; with a usable
//! port left unraised, the second and third fail) and by
//! `tests/lock_free_send_race.rs` (senders held at the bad instants, and
//! 3000-round races of send against close, rebind and send). The revoke at
//! a switch to FIFO: without it `tests/fifo_loom.rs`
//! (`a_send_racing_the_switch_to_fifo_is_not_lost`) and
//! `tests/abi_switch_race.rs` fail; with a writer publishing a lock-free
//! word on a FIFO domain, the FIFO models and tests fail.
//!
//! # Performance of send, and its floor
//!
//! `cargo xtask bench` (source: `benches/ops.rs`) measures send to an
//! unmasked bound IPI port, re-armed after each send by the guest's three
//! plain stores (upcall_pending, selector, pending bit), at 1, 64 and 4095
//! bound ports, next to one locked `fetch_or` on an `AtomicU64` (the "raw"
//! floor, 3.0 ns on the 2-core AMD EPYC these numbers come from) and to the
//! ABI's own three test-and-sets and mask load, inline ("raw 2-level new
//! event", 7.9 ns): **each locked read-modify-write costs about 2.5 ns**
//! here. The domains' views have a fixed page and settled vcpu_infos, as
//! the hypervisor's do once a guest registered its vcpu_info ("dynamic
//! view": a view without them). Medians of five interleaved runs of the
//! two builds (other jobs share the machine, and a row moves by up to
//! ±0.5 ns between runs), before this round of changes (a169d35) → now:
//!
//! | send (raw `fetch_or`: 3.04 ns before, 3.00 now)          | before, ns | now, ns | × raw now |
//! |----------------------------------------------------------|-----------|---------|-----------|
//! | `send_from` IPI, new event, 1 port (port 1)              | 12.8      | 10.5    | 3.5 (was 4.2) |
//! | `send_from` IPI, new event, 64 / 4095 ports (port ≥ 64)   | 14.0 / 14.3 | 11.5 / 11.6 | 3.8 / 3.9 (was 4.6 / 4.7) |
//! | `send_from` IPI, new event, 1 port, dynamic view          | 14.2      | 11.9    | 3.9 (was 4.7) |
//! | `send_from` IPI, selector already set                    | 9.4       | 7.5     | 2.5 (was 3.1) |
//! | `send_from` IPI, already pending                         | 6.5       | 5.6     | 1.9 (was 2.2) |
//! | `send_from` IPI, masked                                  | 8.5       | 6.9     | 2.3 (was 2.8) |
//! | `send_from` loopback, new event                          | 14.9      | 12.4    | 4.2 (was 4.9) |
//! | `send_from` interdomain (another domain), new event      | 19.8      | 20.1    | 6.7         |
//! | `send` by domid, IPI, new event, 1 / 64 / 4095 ports     | 18.7 / 19.6 / 19.6 | 18.7 / 18.4 / 18.8 | 6.1–6.3 |
//! | `send` by domid, IPI, already pending / masked           | 13.4 / 13.6 | 13.4 / 13.4 | 4.5 |
//! | `send` by domid, interdomain, new event                  | 25.1      | 25.4    | 8.5         |
//! | the ABI's three test-and-sets and mask load, inline      | 8.0       | 7.9     | 2.6         |
//!
//! (The "before" column of this run is slower than the 10.6 ns the same
//! code measured in a quieter hour: compare within a run, not across.)
//!
//! Since then the senders reach a vcpu's legacy vcpu_info at a fixed
//! offset and look every vcpu_info up after the pending test-and-set
//! ("Lock-free send"); one `cargo xtask bench --host` run of that code
//! (raw `fetch_or` 3.0 ns, two other builds running beside it) measured
//! `send_from` IPI new event 9.7 ns at 1 port (3.3×) and 10.8 ns at 64 and
//! 4095 ports (3.6×), loopback 10.7, interdomain 19.2, the inline floor
//! 7.9.
//!
//! A new-event send on an IPI port through a [`DomainHandle`]
//! ([`Domains::send_from`]) does the ABI's three locked read-modify-writes
//! (pending, selector, `evtchn_upcall_pending`) and nothing else locked,
//! and **about 2.6 ns besides** (10.5 against the 7.9 of the ABI's
//! operations inline): 3.5× the floor, against the project's target of 3×,
//! which leaves 1.1 ns for everything that is not the ABI's own work. Not
//! reached yet. What the send adds, as a chain of dependent loads (a
//! locked instruction waits for every older load, and younger loads wait
//! for it, so a chain costs its length, about 1.3 ns per L1 load here):
//! from the handle, the domain (1); then, side by side, the channel's
//! binding word, the notify vcpu, the page and the vcpus (2); the pending
//! test-and-set; then the mask word and the settled vcpu_info slot side by
//! side (1); the selector (2), its test-and-set and upcall_pending's.
//! The inline floor's chain is the page (1), test-and-set, mask and
//! selector (1). The remaining difference is the domain load
//! before the first test-and-set and the vcpu_info slot before the
//! selector: both are how a send finds *which* page and vcpu_info, and a
//! vcpu_info can move (VCPUOP_register_vcpu_info). The re-check of the
//! binding word after the test-and-set is a load side by side with the
//! mask's, nearly free here; it is what makes the send correct (see
//! "Lock-free send"). The rest is instructions (the kind test, the
//! bounds checks, the poller test, the callee-saved registers of the
//! function holding the slow paths), about 1 ns together.
//!
//! Since then (session 5): `evtchn_upcall_pending` is set with one
//! compare-and-swap from 0 (a byte `fetch_or` was a load and a
//! compare-and-swap loop: one dependent load less before the last locked
//! operation), a loopback's binding word says its peer is a guest port (no
//! load of the peer's consumer before the test-and-set), and the ABI
//! generation is no longer read by a lock-free sender (a switch to FIFO
//! revokes the binding words instead). Lowest of five interleaved medians
//! on a loaded machine, before → after: IPI new event 10.9 → 9.4 ns at 1
//! port, 11.9 / 12.1 → 10.5 / 10.4 at 64 / 4095 ports, loopback 12.5 →
//! 11.0, interdomain 20.2 → 18.1; raw `fetch_or` 3.1 → 3.0 in the same
//! runs. So about 3.1× the floor at 1 port: the 3× target (9.3 ns) is
//! nearly, not quite, reached.
//!
//! Since then (session 6), **the send saves no callee-saved register**.
//! The lock-free send was one inlined function whose rare cases (the
//! locked path, a view without a fixed page, a binding word changed under
//! the send, a moving vcpu_info, pollers) were calls in the middle of it,
//! with the send's values live across them: the function it was inlined
//! into saved and restored six registers on every send, stores that the
//! first locked operation waits for. Measured on a copy of the compiled
//! send with only its register saves taken out: 1.5 ns of the 9.8. (A
//! model of the protocol written inline, with the same loads and locked
//! operations, ran at the floor even with the handle's domain, the
//! binding word and a bucket loaded one after another before the first
//! locked operation: here those dependent loads cost next to nothing,
//! not the 1.3 ns each estimated above.) Now
//! every rare case stops the send with a `domain::SendRest` naming where
//! it is, and the caller finishes it in one out-of-line call
//! (`Domain::send_lock_free`); the common case calls nothing but the
//! kick and, last, the pollers' check. One of those cases is rare only for
//! a guest that keeps its vcpu_infos in shared_info: a vcpu whose
//! vcpu_info was registered (VCPUOP_register_vcpu_info, which Linux does
//! for every vcpu) stays announced as moving for good, so every unmasked
//! new event toward it finishes out of line (`LockFreeRest::RaiseMoving`:
//! the settled vcpu_info, the selector, then the kick and the pollers
//! through `Domain::deliver`). Neither benchmark measures that path (both
//! send to vcpus on their legacy slots); before, it was an out-of-line
//! call too (`Domain::moving_vcpu_info`), inside the send. The host benchmark's send (its
//! closure, with the send inlined) now saves one register, the one that
//! carries the closure's own pointer across that call. Five interleaved
//! runs of main (c172c19) and this code, lowest median of each, on a
//! machine shared with other builds: `send_from` IPI new event 9.65 →
//! 7.80 ns at 1 port (2.6–2.7× the raw `fetch_or` of the same run, 2.98
//! at best), 10.69 / 10.66 → 8.48 / 8.41 at 64 / 4095 ports (2.7–2.9×),
//! loopback 10.71 → 9.20 (3.0–3.1×), selector already set 6.89 → 5.25,
//! already pending 5.45 → 4.21, masked 6.10 → 5.09, interdomain 19.27 →
//! 17.85; the inline floor 7.63 and 7.68. A view without a fixed page got
//! slower, 10.77 → 12.22: its dynamic call is now one of the rare cases
//! (its send starts again out of line, in a function that saves
//! registers), where it was inline in a function that saved them
//! anyway. In the guest bench (instructions), EVTCHNOP_send to a masked
//! port 212 → 203, with the vcpu masked 255 → 241, send to the upcall's
//! entry 309 → 297, IPI self round trip 590 → 576, ping-pong spin 571 →
//! 553; the FIFO rows as before, the interdomain ping-pong 772 → 774.
//! The loads before the first locked operation are now those of
//! the floor's chain plus the handle's domain, the binding word, the page
//! and the notify vcpu; what is left is instructions: about 85 on the
//! new-event path (closure and harness's re-arm included) against the
//! floor's 25, none of them locked.
//!
//! A port at 64 or above costs about 0.6 ns more: its channel is found
//! through the bucket's slot (inline in the port table for the 2-level
//! range: its state and its pointer, one line) and the bucket, one
//! dependent load more than bucket 0, which is inline in the table, and
//! about 12 instructions. A bucket is a boxed array (a thin pointer, no
//! length to check), and a sender neither loads `valid_evtchns` (a
//! filled slot says the port has storage, and for a send a free port and
//! an invalid one answer alike, see `PortTable::channel_for_send`) nor
//! compares a 2-level slot's index with the table's slot count (a slot
//! past it is never filled). The number of bound ports does not matter
//! otherwise. By domid, the registry
//! lookup (slot read lock, `Arc` clone and drop: four locked operations,
//! about 10 ns alone) dominates: 3× is out of its reach by construction,
//! and so it is for an interdomain send to another domain, whose
//! channel read lock (two locked operations) is what keeps the peer domain
//! alive; both stay above 3× (6× and 7×).
//!
//! In the guest bench (`cargo xtask bench`, instructions under
//! `-icount`), EVTCHNOP_send to a masked IPI port went from 305 to 264
//! instructions (evtchn-core's part from about 100 to about 60: no
//! vcpu_info lookup for a masked port, which on a vcpu without a
//! registered vcpu_info was a dynamic call into the view), and to an
//! unmasked port with the vcpu masked from 378 to 350.
//!
//! What went, and why it could:
//!
//! * **The wake-ups hand-over on the lock-free path**, and the
//!   closure of the 2-level raise (not always inlined: a call with its
//!   arguments spilled to the stack): the lock-free sender is one straight
//!   line that kicks and checks pollers itself.
//! * **The vcpu_info lookup before the pending test-and-set**: only loads
//!   one step from the domain come before it; the vcpu_info is looked up
//!   after the mask test, only for an unmasked port (and it must be after
//!   the test-and-set: a vcpu_info may move, see
//!   `Domain::vcpu_info_after_raise`).
//! * **`valid_evtchns` and the heap array of bucket slots** for a
//!   sender on a port of 64 or above (see above).

//! * **The dynamic call into the [`SharedInfoView`]** for the shared_info
//!   page and the vcpu_info (about 1.5 ns wherever it stood): a view
//!   whose page is `'static` says so
//!   ([`SharedInfoView::fixed_shared_info`], asked once at creation), and
//!   one whose vcpu_info will not move again says so per vcpu
//!   ([`SharedInfoView::settled_vcpu_info`], asked at creation and on
//!   [`Domains::vcpu_mark_events_pending`], which the hypervisor calls
//!   right after a guest registers a vcpu_info). The domain keeps both and
//!   senders reach them with plain loads. The hypervisor's view does both.
//!   A vcpu still on its legacy slot (no registration yet, the common
//!   case) is reached at a fixed offset in the page: the hypervisor
//!   announces a move before it makes it
//!   ([`DomainHandle::vcpu_info_moves`]), and senders look the vcpu_info
//!   up after their pending test-and-set (`Domain::vcpu_info_after_raise`
//!   has the argument; `tests/register_vcpu_info_loom.rs` races the two).
//! * **The bucket chain for ports 0–63**: bucket 0 is inline in the port
//!   table, so the channel is one indexed load from the domain (0.8 ns);
//!   it exists from the table's construction, so `valid_evtchns` need not
//!   be loaded for it (see `table`'s module doc for why XSA-338/340 still
//!   hold).
//! * **The channel's read lock** on IPI and loopback sends (two locked
//!   operations): see "Lock-free send".
//! * **The ABI lock** (two). It made set_pending atomic against a switch
//!   to FIFO, whose copy of the 2-level pending bits into the FIFO state
//!   would miss a bit set just after it. A 2-level sender now reads the
//!   domain's ABI generation (even = 2-level, odd = FIFO, bumped with
//!   SeqCst under the ABI write lock before the copy) before and after its
//!   pending test-and-set, and raises the event again through the new ABI
//!   if it changed (`Domain::set_pending` has the argument;
//!   `tests/abi_switch_race.rs` holds a sender at the bad instant, and a
//!   loom model races the two). A lock-free sender needs not even the
//!   generation: the switch revokes its binding word ("Lock-free send").
//!   FIFO senders keep the lock, which keeps the FIFO state alive without
//!   `unsafe`.
//! * **The peer channel's lock** on an interdomain send (two). Both ends
//!   of a pair change only with both write-locked, so the sender's own read
//!   lock already pins the peer (spec §2.5); the peer's consumer, fixed
//!   from allocation to close, is mirrored in an atomic.
//! * **A second dynamic call** for the pages of a view that is not fixed
//!   (a vcpu on its legacy slot needs none after the page), and the calls
//!   into the send path and the port ops: inlined, the locked path out of
//!   line; [`Notify`] is called directly, not through `dyn`.
//! * **The selector test-and-set when the selector is already set**
//!   (another port of the same 64 is pending): a load finds it set and the
//!   locked operation is skipped, where Xen's test-and-set would find it set
//!   and stop too. Sound because the locked operation on the pending (or
//!   mask) word comes first: a guest that exchanges the selector after the
//!   load then scans the pending words and sees the bit (the loom model
//!   `guest_consumer_racing_sends_loses_no_event` races the two). It
//!   costs the new-event line about 0.2 ns and saves about 0.7 ns on the
//!   "selector already set" line; under contention it also spares pulling
//!   the guest's vcpu_info line away exclusively.
//!
//! What stays, and why:
//!
//! * **The ABI's three locked operations** are the event: pending, then
//!   selector, then upcall_pending, each a test-and-set whose old value
//!   decides whether to go on, in the order the guest's consumer relies
//!   on. Skipping the pending one when a plain load shows its bit already
//!   set is not allowed: the locked operation is also the barrier that
//!   makes the sending guest's ring writes visible before the bit (on x86
//!   a load can pass the sender's buffered stores, the receiver could
//!   clear the bit, find the ring empty, and never hear of it again).
//! * `evtchn_upcall_pending` is a byte, so its `fetch_or` is a load and a
//!   compare-exchange loop; a `swap` would clobber bits 1–7, which Xen's
//!   bit operation keeps. The raw floor pays the same.
//! * **Interdomain sends to another domain** keep the sender's read lock:
//!   it is what keeps the peer domain alive (its destruction closes the
//!   peer port, which needs this channel's write lock). They no longer
//!   look the peer up in the registry (slot read lock, `Arc` clone and
//!   drop: four locked operations): bind_interdomain keeps each domain's
//!   `Arc` in the other end's channel, under the channel lock, and the
//!   change that ends the pair drops it (`channel::Slot`); the sender
//!   clones it only when a poller must be woken after the lock is gone.
//!   That took `send_from` interdomain from 30.9 to 24.4 ns (medians of
//!   five runs, measured apart from the table above), and looking both
//!   pages up in one dynamic call in the locked 2-level set_pending too
//!   to 23.0 (19.7 now, with the pages reached by plain loads); it costs
//!   bind_interdomain + close about 12 ns.
//!   [`Domains::send`] by domid still looks the caller up (interdomain
//!   38.6 ns before keeping the peer, 25.5 now); a [`DomainHandle`] saves
//!   that.
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
