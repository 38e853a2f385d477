//! What the tests share: command-line values, deadlines, the three ways of
//! waiting for an event, channel setup with retries, and a deterministic
//! PRNG.

use sluice_guest::errno::Errno;
use sluice_guest::evtchn::{self, DOMID_SELF, DomId, Port, stat};
use sluice_guest::{StartInfo, sched, shared_info, smp, time, upcall, vcpu};

/// How long one wait may take before the test calls it lost (ns). Far
/// above any round trip under TCG on a loaded host; a lost wake-up shows
/// as a `not ok` line naming the wait instead of a hang.
pub const STEP_LIMIT_NS: u64 = 20_000_000_000;

/// A numeric `key=value` from the command line, or `default`.
pub fn arg_u32(start_info: &StartInfo, key: &str, default: u32) -> u32 {
    start_info
        .arg_value(key)
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The `peer=<domid>` value.
pub fn peer(start_info: &StartInfo) -> Option<DomId> {
    start_info.arg_value("peer").and_then(|p| p.parse().ok())
}

/// This domain's id: the `dom=` word the scenario gives the builder, which
/// Sluice passes on in the command line.
pub fn own_domid(start_info: &StartInfo) -> Option<DomId> {
    start_info.arg_value("dom").and_then(|d| d.parse().ok())
}

/// System time now, or 0 if time is not published (waits then end at once).
pub fn now() -> u64 {
    time::now_ns().unwrap_or(u64::MAX)
}

/// A deadline `ns` from now.
pub fn after(ns: u64) -> u64 {
    now().saturating_add(ns)
}

/// Spins for about `ns` of system time, events and all.
pub fn pause(ns: u64) {
    let until = after(ns);
    while now() < until {
        core::hint::spin_loop();
    }
}

/// How a vcpu waits for an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Upcalls on, busy-waiting on the handler's count: the event arrives
    /// by the kick IPI interrupting the running guest.
    Spin,
    /// Upcalls masked around the check, then SCHEDOP_block, which unmasks
    /// and sleeps unless an upcall is pending (spec §7.10).
    Block,
    /// The port masked, SCHEDOP_poll on it (spec §3.5, §7.10).
    Poll,
}

impl Wait {
    /// From `wait=spin|block|poll`.
    pub fn from_arg(start_info: &StartInfo) -> Option<Wait> {
        match start_info.arg_value("wait")? {
            "spin" => Some(Wait::Spin),
            "block" => Some(Wait::Block),
            "poll" => Some(Wait::Poll),
            _ => None,
        }
    }
}

/// Prepares the calling vcpu for [`block_until`]: its periodic timer
/// stopped and VIRQ_TIMER bound to it, so that the watchdog singleshot
/// timer armed before each block can end a wait whose wake-up was lost.
/// Returns the timer port.
pub fn prepare_blocking() -> Result<Port, Errno> {
    let me = smp::current_vcpu();
    vcpu::stop_periodic_timer(me)?;
    evtchn::bind_virq(evtchn::virq::TIMER, me)
}

/// Waits until `done()` with upcalls masked around each check and
/// SCHEDOP_block in between (the race-free pattern: an event arriving after
/// the check leaves `upcall_pending` set and the block returns at once).
/// A watchdog singleshot timer at `limit_ns` ends a block nothing else
/// ends; returns whether `done()` held before the limit.
pub fn block_until(done: &dyn Fn() -> bool, limit_ns: u64) -> bool {
    let me = smp::current_vcpu();
    let _ = vcpu::set_singleshot_timer(me, limit_ns);
    block_until_unguarded(done, limit_ns)
}

/// [`block_until`] without arming the watchdog: for waits whose event is
/// the vcpu's own timer.
pub fn block_until_unguarded(done: &dyn Fn() -> bool, limit_ns: u64) -> bool {
    loop {
        upcall::mask_vcpu();
        if done() {
            upcall::unmask_vcpu();
            return true;
        }
        if now() >= limit_ns {
            upcall::unmask_vcpu();
            return false;
        }
        let _ = sched::block();
    }
}

/// Spins with upcalls enabled until `done()` or `limit_ns`.
pub fn spin_until(done: &dyn Fn() -> bool, limit_ns: u64) -> bool {
    upcall::unmask_vcpu();
    loop {
        if done() {
            return true;
        }
        if now() >= limit_ns {
            return false;
        }
        core::hint::spin_loop();
    }
}

/// Polls the masked `port` until it is pending or `limit_ns`; clears the
/// pending bit it consumed. Returns whether it arrived.
pub fn poll_receive(port: Port, limit_ns: u64) -> bool {
    let Some(shared) = shared_info::get() else {
        return false;
    };
    while !shared.is_pending(port) {
        let _ = sched::poll(&[port], limit_ns);
        if now() >= limit_ns {
            break;
        }
    }
    let arrived = shared.is_pending(port);
    shared.clear_pending(port);
    arrived
}

/// Retries `attempt` (yielding) until it succeeds or `limit_ns`.
pub fn retry<T>(mut attempt: impl FnMut() -> Result<T, Errno>, limit_ns: u64) -> Result<T, Errno> {
    loop {
        let result = attempt();
        if result.is_ok() || now() >= limit_ns {
            return result;
        }
        let _ = sched::yield_now();
    }
}

/// Binds to `remote_port` of `remote`, retrying until the remote domain has
/// allocated it for us.
pub fn bind_when_offered(remote: DomId, remote_port: Port) -> Result<Port, Errno> {
    retry(
        || evtchn::bind_interdomain(remote, remote_port),
        after(STEP_LIMIT_NS),
    )
}

/// The (status, remote domid, remote port) of our `port`.
pub fn peer_of(port: Port) -> Result<(u32, DomId, Port), Errno> {
    evtchn::status(DOMID_SELF, port).map(|s| (s.status, s.remote_dom(), s.remote_port()))
}

/// Waits (yielding) until our `port` is interdomain; returns its status.
pub fn wait_bound(port: Port) -> Result<(u32, DomId, Port), Errno> {
    let limit = after(STEP_LIMIT_NS);
    loop {
        let status = peer_of(port);
        if status.map(|s| s.0) != Ok(stat::INTERDOMAIN) && now() < limit {
            let _ = sched::yield_now();
            continue;
        }
        return status;
    }
}

/// Checks that every port in 1..63 of this domain reads closed (a fresh
/// table's first bucket: nothing left behind).
pub fn check_all_closed(who: &str) -> bool {
    let open: u32 = (1..64)
        .filter(|&port| evtchn::status(DOMID_SELF, port).map(|s| s.status) != Ok(stat::CLOSED))
        .count() as u32;
    sluice_guest::check_eq!(
        open,
        0,
        "{who}: every port in 1..63 reads closed at the end"
    )
}

/// Masks ports 1..63 before any is allocated: the mask bit of a free port
/// stays (spec §2.1 "Freeing"), so an event sent before this domain set a
/// port up only marks it pending, and EVTCHNOP_unmask raises it later
/// toward whichever vcpu the port notifies by then.
pub fn mask_first_bucket() {
    if let Some(shared) = shared_info::get() {
        for port in 1..64 {
            shared.mask(port);
        }
    }
}

/// xorshift64*: a small deterministic PRNG (Vigna), so a run can be
/// repeated call for call.
pub struct Prng(u64);

impl Prng {
    /// Seeded with `seed` (0 is replaced: xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Prng {
        Prng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in 0..bound (bound > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}
