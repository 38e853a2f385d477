//! `bench`: times the paths event delivery is made of, in TSC cycles, and
//! prints `bench <name> median=<cycles> p99=<cycles> cycles` lines (DESIGN
//! "Performance"). `cargo xtask bench` boots it under TCG with `-icount
//! shift=0,sleep=off`, where one TSC tick is one retired instruction.
//!
//! Rows, each timing only the operation named (set-up and clean-up between
//! samples run outside the timed window):
//! - `null-hypercall`: `xen_version(XENVER_version)`;
//! - `unknown-hypercall`: hypercall 63 (-ENOSYS: the dispatch floor);
//! - `send-masked`: EVTCHNOP_send to a masked IPI port (no upcall);
//! - `send-vcpu-masked`: send to an unmasked port while the vcpu's
//!   `evtchn_upcall_mask` is set (pending, selector and upcall_pending bits
//!   set, no upcall); the bits are cleared again between samples;
//! - `unmask`: EVTCHNOP_unmask of a masked, not pending port;
//! - `status`: EVTCHNOP_status of an IPI port;
//! - `alloc-unbound`, `close`: EVTCHNOP_alloc_unbound (to itself) and the
//!   close of the port it returned;
//! - `send-upcall-entry`: send on a loopback interdomain channel (both ends
//!   in this domain) until the upcall's entry: the TSC is read by the event
//!   callback's third instruction, after it saved rax and rdx
//!   ([`callback::bench_stamped_callback`]);
//! - `send-upcall-handler`: the same send until the port's handler reads
//!   the TSC (5 instructions into it), through the runtime's instrumented
//!   callback (register saves, test counters, its 2-level demultiplexer):
//!   the row that was called `send-upcall-entry` until the entry row above
//!   was added;
//! - `send-upcall-iret`: the same send until it returns (bounce frame, the
//!   bench's lean callback [`callback::bench_event_callback`] with the
//!   handler, HYPERVISOR_iret);
//! - `ipi-self`: send on an IPI port bound to this vcpu, until it returns
//!   (through the lean callback too);
//! - `timer-lateness`: from a singleshot timer's deadline until its
//!   VIRQ_TIMER handler's first statement reads the TSC, through the lean
//!   callback ([`timer`]);
//! - then the domain switches to FIFO and times the rows of [`fifo`].
//!
//! With `pingpong` on its command line (and two vcpus) it times the
//! cross-vcpu rows of [`pingpong`] instead, on 2-level and then on FIFO.
//! With `interdomain=a|b peer=<domid>` (two domains of one vcpu each) it
//! times the interdomain rows of [`interdomain`] instead, on 2-level.
//!
//! The upcall's entry and the round trips are timed with the bench's own
//! lean event callback ([`callback`]: a kernel's 2-level or FIFO consumer
//! without the runtime's test counters); the runtime's callback is still
//! what the `*-handler` rows go through. The same guest runs on Sluice and
//! on Xen 4.17, so both columns of `cargo xtask bench` time the same guest
//! code.
//!
//! The TAP checks only say the operations did what they should (every send
//! ran the right handler exactly once, each callback's entry came after
//! its send began); timings are reported, never asserted.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use sluice_guest::evtchn::DOMID_SELF;
use sluice_guest::hypercall::hypercall5;
use sluice_guest::shared_info::SharedInfo;
use sluice_guest::time::rdtsc;

use crate::callback::Callback;
use sluice_guest::{
    StartInfo, check, check_eq, evtchn, println, shared_info, upcall, vcpu, version,
};

mod callback;
mod fifo;
mod interdomain;
mod pingpong;
mod timer;

sluice_guest::entry!(main);

/// Timed samples per row.
const SAMPLES: usize = 2001;
/// Untimed runs first, so caches and lazily grown tables settle.
const WARM_UP: usize = 64;

static HANDLED: AtomicU32 = AtomicU32::new(0);
/// The TSC the handler read, for the `*-send-upcall-handler` rows.
static HANDLER_TSC: AtomicU64 = AtomicU64::new(0);

fn count_event(_port: u32) {
    HANDLER_TSC.store(rdtsc(), Ordering::Relaxed);
    HANDLED.fetch_add(1, Ordering::SeqCst);
}

/// Median and 99th percentile of `samples` (sorted in place).
fn summary(samples: &mut [u64; SAMPLES]) -> (u64, u64) {
    samples.sort_unstable();
    let median = samples.get(SAMPLES / 2).copied().unwrap_or(0);
    let p99 = samples.get(SAMPLES * 99 / 100).copied().unwrap_or(0);
    (median, p99)
}

fn report(name: &str, samples: &mut [u64; SAMPLES]) {
    let (median, p99) = summary(samples);
    println!("bench {name} median={median} p99={p99} cycles");
}

/// Runs `sample` WARM_UP + SAMPLES times; each call returns the cycles it
/// measured itself. Prints the row.
fn measure_with(name: &str, mut sample: impl FnMut() -> u64) {
    let mut samples = [0u64; SAMPLES];
    for _ in 0..WARM_UP {
        sample();
    }
    for slot in samples.iter_mut() {
        *slot = sample();
    }
    report(name, &mut samples);
}

/// Times the whole of `operation`.
fn measure(name: &str, mut operation: impl FnMut()) {
    measure_with(name, || {
        let start = rdtsc();
        operation();
        rdtsc().wrapping_sub(start)
    });
}

/// The three rows of a send on the loopback channel's `sender` end that
/// raises an upcall, named `names`: until the
/// event callback's entry ([`callback::bench_stamped_callback`]), until
/// the handler's TSC read through the runtime's callback, and
/// the whole round trip through the lean callback, which stays
/// registered. Clears `is_ok` if a send or a registration failed, or a
/// callback's entry was not stamped after its send began.
pub(crate) fn upcall_rows(names: [&str; 3], sender: u32, is_ok: &mut bool) {
    let [entry_row, handler_row, iret_row] = names;
    *is_ok &= callback::register(Callback::Stamped).is_ok();
    measure_with(entry_row, || {
        let start = rdtsc();
        *is_ok &= evtchn::send(sender).is_ok();
        let entry = callback::ENTRY_TSC.load(Ordering::Relaxed);
        *is_ok &= entry > start;
        entry.wrapping_sub(start)
    });
    *is_ok &= callback::register(Callback::Runtime).is_ok();
    measure_with(handler_row, || {
        let start = rdtsc();
        *is_ok &= evtchn::send(sender).is_ok();
        let handler = HANDLER_TSC.load(Ordering::Relaxed);
        *is_ok &= handler > start;
        handler.wrapping_sub(start)
    });
    *is_ok &= callback::register(Callback::Lean).is_ok();
    measure(iret_row, || {
        *is_ok &= evtchn::send(sender).is_ok();
    });
}

/// Checks that the lean callback is a whole consumer, not one port's: two
/// events sent while the vcpu is masked (`(send on, delivered to)` pairs)
/// are both pending, and once the vcpu is unmasked (which raises the
/// upcall) each port's handler has run once and neither is pending. Leaves
/// the lean callback registered with handlers for both ports, and the vcpu
/// unmasked.
pub(crate) fn check_two_pending(
    abi: &str,
    events: [(u32, u32); 2],
    is_pending: impl Fn(u32) -> bool,
) {
    let [(first_send, first), (second_send, second)] = events;
    callback::set_handler(first, count_event);
    callback::set_handler(second, count_event);
    let registered = callback::register(Callback::Lean).is_ok();
    upcall::mask_vcpu();
    let before = HANDLED.load(Ordering::SeqCst);
    let sent = evtchn::send(first_send).is_ok() && evtchn::send(second_send).is_ok();
    let both_pending = is_pending(first) && is_pending(second);
    let handled_while_masked = HANDLED.load(Ordering::SeqCst) - before;
    upcall::unmask_vcpu();
    let handled = HANDLED.load(Ordering::SeqCst) - before;
    check!(
        registered && sent && both_pending && handled_while_masked == 0,
        "{abi}: two events sent with the vcpu masked are both pending, none handled"
    );
    check!(
        handled == 2 && !is_pending(first) && !is_pending(second),
        "{abi}: unmasking runs the lean callback, which handles both ports once ({handled} handler runs)"
    );
}

/// Clears what a send to an unmasked port sets with the vcpu masked.
fn clear_delivery(shared: &SharedInfo, port: u32) {
    shared.clear_pending(port);
    let info = shared.vcpu0();
    info.evtchn_pending_sel.store(0, Ordering::SeqCst);
    info.evtchn_upcall_pending.store(0, Ordering::SeqCst);
}

fn main(start_info: &'static StartInfo) {
    // No periodic ticks in the measurements.
    check_eq!(
        vcpu::stop_periodic_timer(0),
        Ok(()),
        "VCPUOP_stop_periodic_timer is rc 0"
    );
    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped");
        return;
    };
    if start_info.has_arg("pingpong") {
        pingpong::run(shared);
        return;
    }
    if start_info.arg_value("interdomain").is_some() {
        interdomain::run(shared, start_info);
        return;
    }

    measure("null-hypercall", || {
        let _ = version::version();
    });
    measure("unknown-hypercall", || {
        // SAFETY: an unknown hypercall reads no memory; the arguments are 0.
        let _ = unsafe { hypercall5(63, 0, 0, 0, 0, 0) };
    });

    let Ok(port) = evtchn::bind_ipi(0) else {
        check!(false, "bind_ipi(vcpu 0)");
        return;
    };
    shared.mask(port);
    let mut is_ok = true;
    measure_with("send-masked", || {
        let start = rdtsc();
        is_ok &= evtchn::send(port).is_ok();
        let cycles = rdtsc().wrapping_sub(start);
        shared.clear_pending(port);
        cycles
    });
    check!(is_ok, "every send to the masked port is rc 0");

    // The vcpu is still masked (as every vcpu starts): the send sets the
    // pending, selector and upcall_pending bits and raises no upcall.
    shared.clear_mask(port);
    let mut is_ok = true;
    measure_with("send-vcpu-masked", || {
        let start = rdtsc();
        is_ok &= evtchn::send(port).is_ok();
        let cycles = rdtsc().wrapping_sub(start);
        is_ok &= shared.vcpu0().upcall_pending();
        clear_delivery(shared, port);
        cycles
    });
    check!(
        is_ok,
        "every send with the vcpu masked is rc 0 and sets upcall_pending"
    );

    let mut is_ok = true;
    measure_with("unmask", || {
        shared.mask(port);
        let start = rdtsc();
        is_ok &= evtchn::unmask(port).is_ok();
        let cycles = rdtsc().wrapping_sub(start);
        is_ok &= !shared.is_masked(port);
        cycles
    });
    check!(is_ok, "every unmask is rc 0 and clears the mask bit");

    let mut is_ok = true;
    measure("status", || {
        is_ok &= evtchn::status(DOMID_SELF, port).is_ok();
    });
    check!(is_ok, "every status is rc 0");

    let mut alloc_samples = [0u64; SAMPLES];
    let mut close_samples = [0u64; SAMPLES];
    let mut is_ok = true;
    for index in 0..WARM_UP + SAMPLES {
        let start = rdtsc();
        let allocated = evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF);
        let middle = rdtsc();
        let closed = allocated.and_then(evtchn::close);
        let end = rdtsc();
        is_ok &= closed.is_ok();
        if let Some(sample) = index.checked_sub(WARM_UP) {
            if let Some(slot) = alloc_samples.get_mut(sample) {
                *slot = middle.wrapping_sub(start);
            }
            if let Some(slot) = close_samples.get_mut(sample) {
                *slot = end.wrapping_sub(middle);
            }
        }
    }
    report("alloc-unbound", &mut alloc_samples);
    report("close", &mut close_samples);
    check!(is_ok, "every alloc_unbound and close is rc 0");

    check_eq!(
        upcall::register_callbacks(),
        Ok(()),
        "event and failsafe callbacks registered"
    );
    let loopback = evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF)
        .and_then(|offered| Ok((offered, evtchn::bind_interdomain(DOMID_SELF, offered)?)));
    check!(
        loopback.is_ok(),
        "a loopback interdomain pair ({loopback:?})"
    );
    let Ok((receiver, sender)) = loopback else {
        return;
    };
    // Binding set the receiver pending; start from a clean slate.
    clear_delivery(shared, receiver);
    upcall::set_handler(receiver, count_event);
    upcall::set_handler(port, count_event);
    // The lean callback runs the handler of the port under test only, so
    // that counting handler runs also says which port was delivered.
    callback::set_handler(receiver, count_event);
    upcall::unmask_vcpu();

    let before = HANDLED.load(Ordering::SeqCst);
    let runtime_before = upcall::port_events(receiver);
    let mut is_ok = true;
    upcall_rows(
        [
            "send-upcall-entry",
            "send-upcall-handler",
            "send-upcall-iret",
        ],
        sender,
        &mut is_ok,
    );
    let handled = HANDLED.load(Ordering::SeqCst) - before;
    check!(
        is_ok,
        "every send over the loopback channel is rc 0, every callback registered"
    );
    check_eq!(
        handled as usize,
        3 * (SAMPLES + WARM_UP),
        "every loopback send ran the receiver's handler once before returning"
    );
    check_eq!(
        (upcall::port_events(receiver) - runtime_before) as usize,
        SAMPLES + WARM_UP,
        "the runtime's callback dispatched each of its sends to the receiver"
    );

    callback::clear_handler(receiver);
    callback::set_handler(port, count_event);
    let before = HANDLED.load(Ordering::SeqCst);
    let mut is_ok = true;
    measure("ipi-self", || {
        is_ok &= evtchn::send(port).is_ok();
    });
    let handled = HANDLED.load(Ordering::SeqCst) - before;
    check!(is_ok, "every send to the IPI port is rc 0");
    check_eq!(
        handled as usize,
        SAMPLES + WARM_UP,
        "every IPI to itself ran the port's handler once before returning"
    );
    check_two_pending("2-level", [(sender, receiver), (port, port)], |port| {
        shared.is_pending(port)
    });
    callback::clear_handler(port);
    timer::run();
    upcall::mask_vcpu();
    fifo::run(port, receiver, sender);
}
