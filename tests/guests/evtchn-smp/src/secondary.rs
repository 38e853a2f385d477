//! vcpu 1's side: a mailbox of commands from vcpu 0, served from an idle
//! loop that masks events, checks the mailbox and only then blocks
//! (SCHEDOP_block unmasks and returns at once if an event came in between,
//! so no wake-up is lost).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use sluice_guest::{evtchn, sched, shared_info, smp, time, upcall, vcpu};

/// No command.
pub const CMD_NONE: u64 = 0;
/// Send on the port in the low 32 bits.
pub const CMD_SEND: u64 = 1 << 32;
/// Spin with events enabled until an upcall arrives (or 2 s pass).
pub const CMD_SPIN: u64 = 2 << 32;
/// Spin 20 ms, then send on the port in the low 32 bits.
pub const CMD_SEND_LATER: u64 = 3 << 32;
/// Arm this vcpu's singleshot timer 10 ms ahead.
pub const CMD_SINGLESHOT: u64 = 4 << 32;
/// Take this vcpu down with VCPUOP_down(1); once vcpu 0 brings it up
/// again, record what the call returned in [`SELF_DOWN_RC`].
pub const CMD_SELF_DOWN: u64 = 5 << 32;

/// The next command for vcpu 1.
pub static COMMAND: AtomicU64 = AtomicU64::new(CMD_NONE);
/// Commands vcpu 1 has finished.
pub static DONE: AtomicU32 = AtomicU32::new(0);
/// Set once vcpu 1 is up and unmasked.
pub static READY: AtomicBool = AtomicBool::new(false);
/// What vcpu 1 saw at start: its vcpu id by stack, and its upcall mask.
pub static SEEN_VCPU: AtomicU32 = AtomicU32::new(u32::MAX);
pub static SEEN_MASK: AtomicU32 = AtomicU32::new(u32::MAX);
/// Set while vcpu 1 spins for [`CMD_SPIN`].
pub static SPINNING: AtomicBool = AtomicBool::new(false);
/// Result of the last spin: whether an upcall arrived, and when (ns).
pub static SPIN_HIT: AtomicBool = AtomicBool::new(false);
pub static SPIN_HIT_AT: AtomicU64 = AtomicU64::new(0);
/// What VCPUOP_down(1) from vcpu 1 itself returned, once it runs again
/// (0 = rc 0, else the errno; `u32::MAX` = not returned yet).
pub static SELF_DOWN_RC: AtomicU32 = AtomicU32::new(u32::MAX);

/// Busy-waits `duration_ns` or until `stop` holds; returns whether `stop`
/// held.
pub fn spin_until(duration_ns: u64, stop: impl Fn() -> bool) -> bool {
    let Some(start) = time::now_ns() else {
        return stop();
    };
    loop {
        if stop() {
            return true;
        }
        if time::now_ns().is_none_or(|now| now >= start + duration_ns) {
            return stop();
        }
        core::hint::spin_loop();
    }
}

fn execute(command: u64) {
    let port = (command & 0xffff_ffff) as u32;
    match command & !0xffff_ffff {
        CMD_SEND => {
            let _ = evtchn::send(port);
        }
        CMD_SPIN => {
            let before = upcall::upcalls_on(1);
            SPIN_HIT.store(false, Ordering::SeqCst);
            SPINNING.store(true, Ordering::SeqCst);
            let hit = spin_until(2_000_000_000, || upcall::upcalls_on(1) != before);
            SPIN_HIT_AT.store(time::now_ns().unwrap_or(0), Ordering::SeqCst);
            SPINNING.store(false, Ordering::SeqCst);
            SPIN_HIT.store(hit, Ordering::SeqCst);
        }
        CMD_SEND_LATER => {
            spin_until(20_000_000, || false);
            let _ = evtchn::send(port);
        }
        CMD_SINGLESHOT => {
            let due = time::now_ns().map_or(1, |now| now + 10_000_000);
            let _ = vcpu::set_singleshot_timer(1, due);
        }
        CMD_SELF_DOWN => {
            let rc = vcpu::down(1).map_or_else(|errno| errno.0.unsigned_abs() as u32, |()| 0);
            SELF_DOWN_RC.store(rc, Ordering::SeqCst);
        }
        _ => {}
    }
}

/// vcpu 1's entry: report, unmask, then serve the mailbox forever.
pub fn secondary(vcpu: u32) {
    SEEN_VCPU.store(smp::current_vcpu(), Ordering::SeqCst);
    let mask = shared_info::get()
        .and_then(|s| s.vcpu(vcpu as usize))
        .map_or(u32::MAX, |v| {
            u32::from(v.evtchn_upcall_mask.load(Ordering::SeqCst))
        });
    SEEN_MASK.store(mask, Ordering::SeqCst);
    // No periodic ticks: an event must reach a running vcpu 1 by a kick.
    let _ = vcpu::stop_periodic_timer(vcpu);
    upcall::unmask_vcpu();
    READY.store(true, Ordering::SeqCst);
    loop {
        upcall::mask_vcpu();
        let command = COMMAND.swap(CMD_NONE, Ordering::SeqCst);
        if command == CMD_NONE {
            let _ = sched::block();
            continue;
        }
        upcall::unmask_vcpu();
        execute(command);
        DONE.fetch_add(1, Ordering::SeqCst);
    }
}
