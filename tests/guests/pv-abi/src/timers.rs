//! set_timer_op (hypercall 15; spec §7.12): the calling vcpu's singleshot
//! timer, observed through a VIRQ_TIMER port with the periodic timer
//! stopped.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use sluice_guest::errno::Errno;
use sluice_guest::evtchn::{self, virq};
use sluice_guest::{check, check_eq, println, sched, time, upcall, vcpu};

static TICKS: AtomicU32 = AtomicU32::new(0);
static LAST_TICK_NS: AtomicU64 = AtomicU64::new(0);

fn tick(_port: u32) {
    TICKS.fetch_add(1, Ordering::SeqCst);
    LAST_TICK_NS.store(time::now_ns().unwrap_or(0), Ordering::SeqCst);
}

/// Now plus `delta_ns`; 1 (already past) without a time record.
fn deadline(delta_ns: u64) -> u64 {
    time::now_ns().map_or(1, |now| now + delta_ns)
}

/// Ticks so far.
fn ticks() -> u32 {
    TICKS.load(Ordering::SeqCst)
}

/// Polls the timer port until `limit_ns` unless a tick already arrived
/// after `before` (a deadline in the past fires on the arming call's own
/// return path); returns the ticks since `before`.
fn wait_tick(port: u32, before: u32, limit_ns: u64) -> u32 {
    if ticks() == before {
        let _ = sched::poll(&[port], limit_ns);
    }
    ticks() - before
}

/// Arming, cancelling, past and far-future deadlines.
pub fn set_timer_op() {
    check!(
        time::now_ns().is_some(),
        "vcpu 0's time record is published"
    );
    check_eq!(
        vcpu::stop_periodic_timer(0),
        Ok(()),
        "VCPUOP_stop_periodic_timer is rc 0"
    );
    let port = evtchn::bind_virq(virq::TIMER, 0);
    check!(
        port.is_ok(),
        "bind_virq(VIRQ_TIMER, vcpu 0) succeeds ({port:?})"
    );
    let Ok(port) = port else {
        return;
    };
    upcall::set_handler(port, tick);

    let before = ticks();
    let due = deadline(20_000_000);
    check_eq!(
        vcpu::set_timer_op(due),
        Ok(()),
        "set_timer_op 20 ms ahead is rc 0"
    );
    check_eq!(
        wait_tick(port, before, deadline(2_000_000_000)),
        1,
        "set_timer_op raises VIRQ_TIMER once"
    );
    check!(
        LAST_TICK_NS.load(Ordering::SeqCst) >= due,
        "set_timer_op does not fire before its deadline"
    );

    let before = ticks();
    check_eq!(
        vcpu::set_timer_op(deadline(50_000_000)),
        Ok(()),
        "set_timer_op 50 ms ahead is rc 0"
    );
    check_eq!(vcpu::set_timer_op(0), Ok(()), "set_timer_op(0) is rc 0");
    check_eq!(
        wait_tick(port, before, deadline(150_000_000)),
        0,
        "set_timer_op(0) cancels the pending timer"
    );

    let before = ticks();
    let past = time::now_ns()
        .unwrap_or(2_000_000)
        .saturating_sub(1_000_000);
    check_eq!(
        vcpu::set_timer_op(past),
        Ok(()),
        "set_timer_op in the past is rc 0"
    );
    check_eq!(
        wait_tick(port, before, deadline(1_000_000_000)),
        1,
        "set_timer_op in the past fires once"
    );

    // VCPU_SSHOTTMR_future is ignored since 4.17.3 (4.17.0-4.17.2 gave
    // -ETIME for a past deadline): the timer fires at once.
    let before = ticks();
    let mut arg = vcpu::VcpuSetSingleshotTimer {
        timeout_abs_ns: time::now_ns()
            .unwrap_or(2_000_000)
            .saturating_sub(1_000_000),
        flags: 1,
        _pad: [0; 4],
    };
    // SAFETY: the hypervisor reads the 16-byte local and writes nothing.
    let rc = unsafe {
        sluice_guest::hypercall::hypercall3(
            24,
            vcpu::VCPUOP_SET_SINGLESHOT_TIMER,
            0,
            (&raw mut arg) as u64,
        )
    };
    check_eq!(
        Errno::result(rc),
        Ok(0),
        "set_singleshot_timer in the past with VCPU_SSHOTTMR_future is rc 0 (the flag is ignored)"
    );
    check_eq!(
        wait_tick(port, before, deadline(1_000_000_000)),
        1,
        "that singleshot timer fires once"
    );

    for (what, value) in [("negative", u64::MAX), ("2^51 ns ahead", deadline(1 << 51))] {
        let before = ticks();
        let asked = time::now_ns().unwrap_or(0);
        check_eq!(
            vcpu::set_timer_op(value),
            Ok(()),
            "set_timer_op {what} is rc 0"
        );
        let ticks = wait_tick(port, before, deadline(2_000_000_000));
        let after_ns = LAST_TICK_NS.load(Ordering::SeqCst).saturating_sub(asked);
        check!(
            ticks == 1 && after_ns >= 100_000_000,
            "set_timer_op {what} fires once, 100 ms later instead ({ticks} ticks, after {} ms)",
            after_ns / 1_000_000
        );
        println!("# set_timer_op {what}: fired after {} us", after_ns / 1000);
    }

    upcall::clear_handler(port);
    check_eq!(
        evtchn::close(port),
        Ok(()),
        "close of the VIRQ_TIMER port is rc 0"
    );
}
