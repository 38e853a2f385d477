//! `evtchn-fifo`: the FIFO event-channel ABI from one domain (spec §2.13,
//! §4; §8's FIFO properties). The vcpu stays masked throughout, so no
//! upcall runs: the guest reads its event words and control block directly
//! and drains the queues itself ([`fifo::drain`]).
//!
//! Checked: the switch with init_control (link_bits 17, once per vcpu),
//! set_priority's errors, the 2-level pending bit surviving the switch and
//! re-raised by expand_array, linking order within a queue, ready bits and
//! when they raise `upcall_pending`, priority order, a re-bound port back at
//! priority 7, masking and EVTCHNOP_unmask, edge triggering, a port closed
//! while linked staying busy until unlinked, an event for a vcpu without a
//! control block being dropped, and reset returning to 2-level.
#![no_std]
#![no_main]

mod fifo;

use core::sync::atomic::Ordering;

use fifo::{ControlBlock, DEFAULT_PRIORITY, GuestPage, LINK_MASK, LINKED, MASKED, PENDING};
use sluice_guest::errno::Errno;
use sluice_guest::evtchn::{self, DOMID_SELF, stat};
use sluice_guest::shared_info::{self, SharedInfo};
use sluice_guest::{StartInfo, check, check_eq, smp, tap, vcpu};

sluice_guest::entry!(main);

/// vcpu 0's control block (at offset 0).
static CONTROL_PAGE: GuestPage = GuestPage::new();
/// vcpu 1's control block (at the highest offset allowed, 4096 - 72).
static CONTROL_PAGE_1: GuestPage = GuestPage::new();
/// Event words of ports 0..1023.
static EVENT_PAGE: GuestPage = GuestPage::new();
/// Event words of ports 1024..2047.
static EVENT_PAGE_2: GuestPage = GuestPage::new();

/// A port beyond every valid one.
const FAR_PORT: u32 = 3000;
/// A vcpu id no domain has.
const NO_SUCH_VCPU: u32 = 1000;
/// Byte offset of vcpu 1's control block: the last one the ABI allows.
const LAST_OFFSET: u32 = 4096 - 72;

/// The event word of `port` (ports 0..1023 only).
fn word(port: u32) -> u32 {
    EVENT_PAGE
        .word(port as usize)
        .map_or(u32::MAX, |w| w.load(Ordering::SeqCst))
}

/// Drains vcpu 0's queues; returns the ports found, in order.
fn drain(block: &ControlBlock) -> ([u32; 32], usize) {
    let mut found = [0; 32];
    let count = fifo::drain(block, &EVENT_PAGE, &mut found);
    (found, count)
}

/// The first `count` drained ports as a slice-like array for comparisons.
fn drained(block: &ControlBlock) -> [u32; 4] {
    let (found, count) = drain(block);
    let mut first = [0; 4];
    for (slot, port) in first.iter_mut().zip(found.iter().take(count)) {
        *slot = *port;
    }
    first
}

/// Clears vcpu `vcpu`'s `upcall_pending`.
fn clear_upcall_pending(shared: &SharedInfo, vcpu: usize) {
    if let Some(info) = shared.vcpu(vcpu) {
        info.evtchn_upcall_pending.store(0, Ordering::SeqCst);
    }
}

fn main(_start_info: &'static StartInfo) {
    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped");
        return;
    };
    let (Some(block), Some(block1)) = (
        CONTROL_PAGE.control_block(0),
        CONTROL_PAGE_1.control_block(LAST_OFFSET as usize),
    ) else {
        check!(false, "control blocks are addressable");
        return;
    };
    let frames = [&CONTROL_PAGE, &CONTROL_PAGE_1, &EVENT_PAGE, &EVENT_PAGE_2]
        .map(|page| smp::machine_frame(page.address()));
    let [
        Some(control_frame),
        Some(control_frame_1),
        Some(event_frame),
        Some(event_frame_2),
    ] = frames
    else {
        check!(false, "the p2m gives the frames of the FIFO pages");
        return;
    };

    switching(shared, block, control_frame, event_frame);
    queues(shared, block);
    masking(block);
    busy_ports(block);
    other_vcpu(shared, block1, control_frame_1);
    check_eq!(
        evtchn::expand_array(event_frame_2),
        Ok(()),
        "expand_array adds a second event-array page"
    );
    check_eq!(
        evtchn::expand_array(0xff_ffff_ffff),
        Err(Errno::EINVAL),
        "expand_array of a frame the domain does not own fails -EINVAL"
    );
    back_to_two_level(shared);
}

/// init_control, set_priority, expand_array and the 2-level pending bit.
fn switching(shared: &SharedInfo, block: &ControlBlock, control_frame: u64, event_frame: u64) {
    check_eq!(
        evtchn::set_priority(0, 7),
        Err(Errno::ENOSYS),
        "set_priority before init_control fails -ENOSYS"
    );
    check_eq!(evtchn::bind_ipi(0), Ok(1), "bind_ipi gets port 1 (2-level)");
    check_eq!(
        evtchn::send(1),
        Ok(()),
        "send on port 1 before the switch is rc 0"
    );
    check!(
        shared.is_pending(1),
        "port 1 is pending in the 2-level bitmap before the switch"
    );

    check_eq!(
        evtchn::init_control(control_frame, 0, 0),
        Ok(17),
        "init_control for vcpu 0 switches to FIFO and returns link_bits 17"
    );
    check_eq!(
        evtchn::init_control(control_frame, 0, 0),
        Err(Errno::EINVAL),
        "init_control for a vcpu that has a control block fails -EINVAL"
    );
    check_eq!(
        evtchn::init_control(control_frame, 0, NO_SUCH_VCPU),
        Err(Errno::ENOENT),
        "init_control for a vcpu that does not exist fails -ENOENT"
    );
    check_eq!(
        evtchn::set_priority(1, DEFAULT_PRIORITY),
        Ok(()),
        "set_priority works once FIFO is active"
    );
    check_eq!(
        evtchn::set_priority(1, 16),
        Err(Errno::EINVAL),
        "set_priority 16 fails -EINVAL"
    );
    check_eq!(
        evtchn::set_priority(63, 7),
        Err(Errno::EACCES),
        "set_priority of a free port fails -EACCES"
    );
    check_eq!(
        evtchn::set_priority(0, 7),
        Err(Errno::EACCES),
        "set_priority of reserved port 0 fails -EACCES"
    );
    check_eq!(
        evtchn::set_priority(FAR_PORT, 7),
        Err(Errno::EINVAL),
        "set_priority of a port beyond the table fails -EINVAL"
    );

    clear_upcall_pending(shared, 0);
    check_eq!(
        evtchn::expand_array(event_frame),
        Ok(()),
        "expand_array adds the first event-array page"
    );
    check_eq!(
        (
            word(1),
            block.head[7].load(Ordering::SeqCst),
            block.ready.load(Ordering::SeqCst)
        ),
        (PENDING | LINKED, 1, 1 << 7),
        "the 2-level pending bit survives the switch: expand_array links port 1 at the head of queue 7"
    );
    check!(
        shared.vcpu0().upcall_pending(),
        "linking into an empty queue sets the ready bit and upcall_pending"
    );
    check_eq!(
        drained(block),
        [1, 0, 0, 0],
        "the guest drains port 1 from queue 7"
    );
    check_eq!(word(1), 0, "after the drain port 1's word is clear");
}

/// Linking order, ready bits and priorities.
fn queues(shared: &SharedInfo, block: &ControlBlock) {
    clear_upcall_pending(shared, 0);
    check_eq!(evtchn::send(1), Ok(()), "send on port 1 under FIFO is rc 0");
    check_eq!(
        (
            word(1),
            block.head[7].load(Ordering::SeqCst),
            block.ready.load(Ordering::SeqCst)
        ),
        (PENDING | LINKED, 1, 1 << 7),
        "send sets P and L and links port 1 as the head of empty queue 7"
    );
    check!(
        shared.vcpu0().upcall_pending(),
        "the first event of an empty queue sets upcall_pending"
    );
    check_eq!(drained(block), [1, 0, 0, 0], "the drain finds port 1");

    let bound = [
        evtchn::bind_ipi(0),
        evtchn::bind_ipi(0),
        evtchn::bind_ipi(0),
    ];
    check_eq!(
        bound,
        [Ok(2), Ok(3), Ok(4)],
        "bind_ipi gets ports 2, 3 and 4"
    );
    check_eq!(
        (word(2), word(3), word(4)),
        (0, 0, 0),
        "new ports start with clear event words"
    );
    clear_upcall_pending(shared, 0);
    check_eq!(evtchn::send(3), Ok(()), "send on port 3 is rc 0");
    check!(
        shared.vcpu0().upcall_pending(),
        "port 3 into the empty queue raises upcall_pending"
    );
    clear_upcall_pending(shared, 0);
    let sends = [evtchn::send(2), evtchn::send(4)];
    check_eq!(sends, [Ok(()), Ok(())], "sends on ports 2 and 4 are rc 0");
    check!(
        !shared.vcpu0().upcall_pending(),
        "events joining a non-empty queue do not raise upcall_pending again"
    );
    check_eq!(
        (
            word(3) & LINK_MASK,
            word(2) & LINK_MASK,
            word(4) & LINK_MASK
        ),
        (2, 4, 0),
        "the queue links 3 -> 2 -> 4 through the LINK fields"
    );
    check_eq!(
        drained(block),
        [3, 2, 4, 0],
        "events of one queue come out in the order raised"
    );

    check_eq!(
        evtchn::set_priority(2, 3),
        Ok(()),
        "set_priority(port 2, 3) is rc 0"
    );
    let sends = [evtchn::send(3), evtchn::send(2)];
    check_eq!(
        sends,
        [Ok(()), Ok(())],
        "sends on ports 3 (priority 7) and 2 (priority 3) are rc 0"
    );
    check_eq!(
        block.ready.load(Ordering::SeqCst),
        (1 << 3) | (1 << 7),
        "queues 3 and 7 are ready"
    );
    check_eq!(
        drained(block),
        [2, 3, 0, 0],
        "the priority 3 queue is drained before queue 7"
    );

    check_eq!(
        evtchn::close(2),
        Ok(()),
        "close of port 2 (priority 3) is rc 0"
    );
    check_eq!(evtchn::bind_ipi(0), Ok(2), "bind_ipi gets port 2 again");
    let sends = [evtchn::send(2), evtchn::send(3)];
    check_eq!(sends, [Ok(()), Ok(())], "sends on ports 2 and 3 are rc 0");
    check_eq!(
        block.ready.load(Ordering::SeqCst),
        1 << DEFAULT_PRIORITY,
        "a re-bound port is back at priority 7: only queue 7 is ready"
    );
    check_eq!(
        drained(block),
        [2, 3, 0, 0],
        "the drain finds ports 2 and 3"
    );
}

/// M, EVTCHNOP_unmask and edge triggering.
fn masking(block: &ControlBlock) {
    let Some(word4) = EVENT_PAGE.word(4) else {
        return;
    };
    word4.fetch_or(MASKED, Ordering::SeqCst);
    check_eq!(evtchn::send(4), Ok(()), "send on masked port 4 is rc 0");
    check_eq!(
        (word(4), block.ready.load(Ordering::SeqCst)),
        (MASKED | PENDING, 0),
        "an event on a masked port only sets P: not linked, no queue ready"
    );
    check_eq!(
        evtchn::unmask(4),
        Ok(()),
        "EVTCHNOP_unmask of masked pending port 4 is rc 0"
    );
    check_eq!(
        (word(4), block.ready.load(Ordering::SeqCst)),
        (PENDING | LINKED, 1 << 7),
        "EVTCHNOP_unmask clears M and links the pending event"
    );
    check_eq!(
        evtchn::send(4),
        Ok(()),
        "a second send while port 4 is linked is rc 0"
    );
    check_eq!(
        word(4),
        PENDING | LINKED,
        "a second send changes nothing while the event is linked"
    );
    check_eq!(drained(block), [4, 0, 0, 0], "the drain finds port 4 once");
}

/// A port closed while LINKED is busy until the guest unlinks it.
fn busy_ports(block: &ControlBlock) {
    check_eq!(evtchn::send(3), Ok(()), "send on port 3 is rc 0");
    check_eq!(evtchn::close(3), Ok(()), "close of linked port 3 is rc 0");
    check_eq!(word(3), LINKED, "close clears P but the word stays LINKED");
    check_eq!(
        evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF),
        Ok(5),
        "a free port that is still linked is busy: alloc_unbound skips port 3 and gets port 5"
    );
    check_eq!(
        drained(block),
        [0, 0, 0, 0],
        "the drain unlinks port 3 and reports nothing (P clear)"
    );
    check_eq!(
        evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF),
        Ok(3),
        "once unlinked, port 3 is allocated again"
    );
    check_eq!(
        evtchn::status(DOMID_SELF, 3).map(|s| s.status),
        Ok(stat::UNBOUND),
        "port 3 is now an unbound port"
    );
    let closed = [evtchn::close(3), evtchn::close(5)];
    check_eq!(closed, [Ok(()), Ok(())], "ports 3 and 5 close");
}

/// Events for vcpu 1, before and after it has a control block.
fn other_vcpu(shared: &SharedInfo, block1: &ControlBlock, control_frame_1: u64) {
    if !vcpu::exists(1) {
        tap::skip(
            format_args!("events for a vcpu without a control block"),
            "the domain has no vcpu 1",
        );
        return;
    }
    check_eq!(evtchn::bind_ipi(1), Ok(3), "bind_ipi(vcpu 1) gets port 3");
    check_eq!(
        evtchn::send(3),
        Ok(()),
        "send on port 3 (vcpu 1, no control block) is rc 0"
    );
    check_eq!(
        word(3),
        0,
        "an event for a vcpu without a control block is dropped: not even P is set"
    );
    check_eq!(
        evtchn::init_control(control_frame_1, LAST_OFFSET, 1),
        Ok(17),
        "init_control for vcpu 1 at offset 4024 (4096 - 72) is accepted"
    );
    clear_upcall_pending(shared, 1);
    check_eq!(evtchn::send(3), Ok(()), "send on port 3 now is rc 0");
    check_eq!(
        (
            word(3),
            block1.head[7].load(Ordering::SeqCst),
            block1.ready.load(Ordering::SeqCst)
        ),
        (PENDING | LINKED, 3, 1 << 7),
        "the event is linked on vcpu 1's queue 7 in vcpu 1's control block"
    );
    check!(
        shared.vcpu(1).is_some_and(|v| v.upcall_pending()),
        "vcpu 1's upcall_pending is set"
    );
    check_eq!(evtchn::close(3), Ok(()), "close of port 3 is rc 0");
}

/// EVTCHNOP_reset leaves FIFO (spec §2.12 step 5).
fn back_to_two_level(shared: &SharedInfo) {
    check_eq!(
        evtchn::reset(DOMID_SELF),
        Ok(()),
        "reset(DOMID_SELF) under FIFO is rc 0"
    );
    check_eq!(
        evtchn::set_priority(0, 7),
        Err(Errno::ENOSYS),
        "after reset the domain is 2-level again (set_priority -ENOSYS)"
    );
    for word in &shared.evtchn_pending {
        word.store(0, Ordering::SeqCst);
    }
    check_eq!(
        evtchn::bind_ipi(0),
        Ok(1),
        "after reset bind_ipi gets port 1"
    );
    check_eq!(
        evtchn::send(1),
        Ok(()),
        "send on port 1 after reset is rc 0"
    );
    check!(
        shared.is_pending(1),
        "after reset events use the 2-level bitmap again"
    );
}
