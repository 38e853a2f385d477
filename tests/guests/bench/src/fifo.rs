//! The FIFO rows, timed after the 2-level ones in the same boot, once the
//! domain has switched to the FIFO ABI (spec §4): EVTCHNOP_init_control
//! for each vcpu (control blocks in one page, vcpu n at byte 128·n) and one
//! event-array page (ports 0..1023; a zeroed page, so every port starts
//! unmasked).
//!
//! - `fifo-send-masked`: EVTCHNOP_send to an IPI port whose event word has
//!   M set (only P is set: no linking, no upcall); P is cleared again
//!   between samples;
//! - `fifo-send-upcall-entry`, `fifo-send-upcall-handler`,
//!   `fifo-send-upcall-iret`: send on the loopback channel (linking, ready
//!   bit, upcall) until the event callback's entry (its third instruction,
//!   as on 2-level), until the handler's TSC read through the runtime's
//!   instrumented callback, and until the send returns through
//!   the bench's lean callback (the runtime's queue consumer, handler,
//!   HYPERVISOR_iret);
//! - `fifo-pingpong-spin`, `fifo-pingpong-blocked` (in [`super::pingpong`]):
//!   the cross-vcpu round trip over two masked IPI ports, waiting on P.

use core::sync::atomic::Ordering;

use sluice_guest::fifo::{self, GuestPage, MaskCleared};
use sluice_guest::time::rdtsc;
use sluice_guest::{check, check_eq, evtchn, upcall};

/// Every vcpu's control block.
static CONTROL_PAGE: GuestPage = GuestPage::new();
/// The one event-array page.
static ARRAY_PAGE: GuestPage = GuestPage::new();
/// Bytes between two vcpus' control blocks (a block is 72 bytes).
const CONTROL_STRIDE: u32 = 128;

/// Switches the domain to FIFO: init_control for vcpus 0..`vcpus`, one
/// event-array page. Events that were pending on 2-level are linked on
/// FIFO (spec §4.2) and taken by one upcall here. Returns whether it
/// worked.
pub fn switch(vcpus: u32) -> bool {
    upcall::mask_vcpu();
    let mut is_ok = true;
    for vcpu in 0..vcpus {
        let link_bits = fifo::init_control(&CONTROL_PAGE, vcpu * CONTROL_STRIDE, vcpu);
        check_eq!(
            link_bits,
            Ok(17),
            "init_control for vcpu {vcpu} switches to FIFO (link_bits 17)"
        );
        is_ok &= link_bits.is_ok();
    }
    let expanded = fifo::expand_array(&ARRAY_PAGE);
    check_eq!(
        expanded,
        Ok(()),
        "expand_array adds the first event-array page"
    );
    is_ok && expanded.is_ok()
}

/// The single-vcpu FIFO rows on `ipi` (an IPI port of vcpu 0) and the
/// loopback pair `receiver` (handled by `super::count_event`) and `sender`.
pub fn run(ipi: u32, receiver: u32, sender: u32) {
    if !switch(1) {
        return;
    }
    check_eq!(
        fifo::mask(ipi),
        Ok(()),
        "M set in the IPI port's event word"
    );
    let mut is_ok = true;
    super::measure_with("fifo-send-masked", || {
        let start = rdtsc();
        is_ok &= evtchn::send(ipi).is_ok();
        let cycles = rdtsc().wrapping_sub(start);
        is_ok &= fifo::is_pending(ipi);
        is_ok &= fifo::clear_pending(ipi).is_ok();
        cycles
    });
    check!(
        is_ok,
        "FIFO: every send to the masked port is rc 0 and sets P only"
    );
    check_eq!(
        fifo::unmask(ipi),
        Ok(MaskCleared::Cleared),
        "FIFO: the guest clears M of the idle IPI port itself"
    );

    // Whatever 2-level left pending went onto the queues at the switch.
    upcall::unmask_vcpu();
    let before = super::HANDLED.load(Ordering::SeqCst);
    let runtime_before = upcall::port_events(receiver);
    let mut is_ok = true;
    super::upcall_rows(
        [
            "fifo-send-upcall-entry",
            "fifo-send-upcall-handler",
            "fifo-send-upcall-iret",
        ],
        sender,
        &mut is_ok,
    );
    let handled = super::HANDLED.load(Ordering::SeqCst) - before;
    check!(
        is_ok,
        "FIFO: every send over the loopback channel is rc 0, every callback registered"
    );
    check_eq!(
        handled as usize,
        3 * (super::SAMPLES + super::WARM_UP),
        "FIFO: every loopback send ran the upcall, the queue consumer and the receiver's handler once before returning"
    );
    check_eq!(
        (upcall::port_events(receiver) - runtime_before) as usize,
        super::SAMPLES + super::WARM_UP,
        "FIFO: the runtime's callback dispatched each of its sends to the receiver"
    );
    super::check_two_pending("FIFO", [(sender, receiver), (ipi, ipi)], fifo::is_pending);
    upcall::mask_vcpu();
}
