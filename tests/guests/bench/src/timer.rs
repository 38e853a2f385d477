//! `timer-lateness`: how late a singleshot timer's VIRQ_TIMER handler runs
//! after the timer's deadline.
//!
//! Each sample reads vcpu 0's `vcpu_time_info` record, takes as deadline
//! the system time [`AHEAD_NS`] after now, computes the first TSC value at
//! which the record's scale (`tsc_to_system_mul`, `tsc_shift`) says system
//! time has reached that deadline, arms VCPUOP_set_singleshot_timer at the
//! deadline (absolute, no VCPU_SSHOTTMR_future flag) and spins with events
//! enabled until the handler has run. The sample is the handler's TSC read
//! (its first statement, reached through the bench's lean callback
//! [`crate::callback::bench_event_callback`] and its 2-level consumer)
//! minus the deadline's TSC value: the hypervisor's timer interrupt, its
//! VIRQ_TIMER send, the bounce into the callback and the callback's
//! consumer up to the handler, plus however late the hypervisor's own
//! timer fires.
//!
//! The periodic timer is stopped for the whole boot (`main`); the
//! VIRQ_TIMER port is bound for this row only and closed after it, with
//! the singleshot timer stopped, so the FIFO rows that follow see the same
//! ports as before.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use sluice_guest::evtchn::{self, virq};
use sluice_guest::shared_info;
use sluice_guest::time::rdtsc;
use sluice_guest::{check, check_eq, vcpu};

use crate::callback::{self, Callback};

/// How far ahead of now each deadline is, in ns of system time.
pub(crate) const AHEAD_NS: u64 = 20_000;
/// How long past a deadline a sample waits for its handler before it
/// counts the timer as lost, in ns of system time.
const GIVE_UP_NS: u64 = 1_000_000_000;

/// Handler runs so far.
static FIRED: AtomicU32 = AtomicU32::new(0);
/// The TSC the handler read last.
static FIRED_TSC: AtomicU64 = AtomicU64::new(0);

fn timer_fired(_port: u32) {
    FIRED_TSC.store(rdtsc(), Ordering::Relaxed);
    FIRED.fetch_add(1, Ordering::SeqCst);
}

/// One consistent copy of vcpu 0's time record.
#[derive(Clone, Copy)]
struct TimeRecord {
    tsc_timestamp: u64,
    system_time: u64,
    mul: u32,
    shift: i8,
}

impl TimeRecord {
    /// Reads the record under its version seqlock; `None` without one
    /// (no vcpu_info, or a multiplier of 0).
    fn read() -> Option<Self> {
        let time = &shared_info::vcpu_info(0)?.time;
        loop {
            let version = time.version.load(Ordering::Acquire);
            if version & 1 != 0 {
                core::hint::spin_loop();
                continue;
            }
            let record = Self {
                tsc_timestamp: time.tsc_timestamp.load(Ordering::Acquire),
                system_time: time.system_time.load(Ordering::Acquire),
                mul: time.tsc_to_system_mul.load(Ordering::Acquire),
                shift: time.tsc_shift.load(Ordering::Acquire) as i8,
            };
            // Acquire above pairs with the hypervisor's version bump after
            // its writes; a changed version means a torn read.
            if time.version.load(Ordering::Acquire) == version {
                return (record.mul != 0).then_some(record);
            }
        }
    }

    /// System time at `tsc` (the runtime's `time::now_ns` formula).
    fn ns_at(&self, tsc: u64) -> u64 {
        let mut delta = tsc.wrapping_sub(self.tsc_timestamp);
        let shift = u32::from(self.shift.unsigned_abs());
        if self.shift < 0 {
            delta >>= shift;
        } else {
            delta <<= shift;
        }
        let scaled = ((u128::from(delta) * u128::from(self.mul)) >> 32) as u64;
        self.system_time.wrapping_add(scaled)
    }

    /// The first TSC value at which [`Self::ns_at`] has reached `ns` (the
    /// inverse of the scale, rounded up), for `ns` at or after the
    /// record's `system_time`.
    fn tsc_at(&self, ns: u64) -> u64 {
        let delta_ns = u128::from(ns.saturating_sub(self.system_time));
        let scaled = (delta_ns << 32).div_ceil(u128::from(self.mul));
        let shift = u32::from(self.shift.unsigned_abs());
        let delta = if self.shift < 0 {
            scaled << shift
        } else {
            scaled.div_ceil(1u128 << shift)
        };
        self.tsc_timestamp.wrapping_add(delta as u64)
    }
}

/// Times `timer-lateness` with the lean callback registered and the vcpu
/// unmasked; leaves both so, the timer port closed and the singleshot
/// timer stopped.
pub(crate) fn run() {
    let port = evtchn::bind_virq(virq::TIMER, 0);
    check!(
        port.is_ok(),
        "bind_virq(VIRQ_TIMER, vcpu 0) for the timer row ({port:?})"
    );
    let Ok(port) = port else {
        return;
    };
    callback::set_handler(port, timer_fired);
    let mut is_ok = callback::register(Callback::Lean).is_ok();
    let mut early = 0u32;
    let mut lost = 0u32;
    let mut extra = 0u32;
    let mut last_deadline = None;
    let first = FIRED.load(Ordering::SeqCst);
    super::measure_with("timer-lateness", || {
        let Some(record) = TimeRecord::read() else {
            is_ok = false;
            return 0;
        };
        let deadline = record.ns_at(rdtsc()) + AHEAD_NS;
        let deadline_tsc = record.tsc_at(deadline);
        let give_up_tsc = record.tsc_at(deadline + GIVE_UP_NS);
        last_deadline = Some((record, deadline));
        let before = FIRED.load(Ordering::SeqCst);
        is_ok &= vcpu::set_singleshot_timer(0, deadline).is_ok();
        while FIRED.load(Ordering::SeqCst) == before && rdtsc() < give_up_tsc {
            core::hint::spin_loop();
        }
        let fired_tsc = FIRED_TSC.load(Ordering::Relaxed);
        match FIRED.load(Ordering::SeqCst) - before {
            0 => lost += 1,
            1 => {}
            _ => extra += 1,
        }
        if fired_tsc < deadline_tsc {
            early += 1;
        }
        fired_tsc.saturating_sub(deadline_tsc)
    });
    // A timer that fired twice would do so after its sample ended: wait
    // ten more distances past the last deadline before counting.
    if let Some((record, deadline)) = last_deadline {
        let quiet_tsc = record.tsc_at(deadline + 10 * AHEAD_NS);
        while rdtsc() < quiet_tsc {
            core::hint::spin_loop();
        }
    }
    let fired = FIRED.load(Ordering::SeqCst) - first;
    check!(
        is_ok,
        "every singleshot timer armed is rc 0, the lean callback registered"
    );
    check!(
        lost == 0 && extra == 0,
        "every singleshot timer raised VIRQ_TIMER exactly once ({lost} lost, {extra} with more than one)"
    );
    check_eq!(
        fired as usize,
        super::SAMPLES + super::WARM_UP,
        "as many VIRQ_TIMER handler runs as timers armed"
    );
    check_eq!(
        early,
        0,
        "no VIRQ_TIMER handler ran before its timer's deadline"
    );
    let stopped = vcpu::stop_singleshot_timer(0).is_ok();
    callback::clear_handler(port);
    check!(
        stopped && evtchn::close(port).is_ok(),
        "the singleshot timer stopped and the VIRQ_TIMER port closed after the row"
    );
}
