//! Multi-threaded stress of evtchn-core on the host: several threads bind,
//! send, close, reset, destroy and re-create across three domains for a
//! fixed number of iterations each (seeded, so a run is repeatable up to
//! scheduling), while a guest thread acknowledges events. At the end the
//! tables must be consistent: interdomain links symmetric, VIRQ tables
//! pointing at their channels, no free port pending, every active count
//! equal to the ports actually allocated, and everything back to the
//! baseline once the domains are reset and destroyed.
//!
//! Also the XSA-340 stress: allocation growing the table on one thread while
//! another sends on the ports at its edge.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use evtchn_core::abi::SharedInfo;
use evtchn_core::{
    ChannelState, DomId, DomainConfig, Domains, Errno, FifoSupport, NoPirqs, Notify, Port,
    Privilege, ResetMode, SharedInfoView, VcpuId, Virq,
};

const DOM0: DomId = DomId(0);
const DOM1: DomId = DomId(1);
const DOM2: DomId = DomId(2);
const ALL: [DomId; 3] = [DOM0, DOM1, DOM2];
/// Iterations per worker thread.
const ITERATIONS: u32 = 50_000;

#[derive(Default)]
struct CountingNotify {
    kicks: AtomicU64,
}

impl Notify for CountingNotify {
    fn kick_vcpu(&self, _domain: DomId, _vcpu: VcpuId) {
        self.kicks.fetch_add(1, Ordering::Relaxed);
    }
    fn wake_poller(&self, _domain: DomId, _vcpu: VcpuId) {}
}

type TestDomains = Domains<CountingNotify, NoPirqs>;

/// A small xorshift generator: each thread has its own seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
    fn domain(&mut self) -> DomId {
        ALL[self.below(3) as usize]
    }
    fn port(&mut self) -> Port {
        Port(self.below(140) as u32)
    }
}

fn config(domid: DomId) -> DomainConfig {
    DomainConfig {
        domid,
        vcpus: 2,
        privilege: if domid == DOM0 {
            Privilege::Privileged
        } else {
            Privilege::Unprivileged
        },
        max_evtchn_port: 200,
        nr_pirqs: 0,
        fifo: FifoSupport::Disabled,
    }
}

fn create(domains: &TestDomains, domid: DomId) -> Result<(), Errno> {
    let page: Arc<dyn SharedInfoView> = Arc::new(SharedInfo::new());
    domains.create_domain(config(domid), page)
}

/// An op's result must be one of `allowed`; returns whether it succeeded.
fn expect_one_of<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, Errno>,
    allowed: &[Errno],
) -> bool {
    match result {
        Ok(_) => true,
        Err(errno) => {
            assert!(allowed.contains(&errno), "{what}: unexpected {errno:?}");
            false
        }
    }
}

/// One worker: a random mix of every op, from any domain to any domain.
/// Returns how many ops succeeded.
fn worker(domains: &TestDomains, seed: u64, may_destroy: bool) -> u64 {
    use Errno::*;
    let mut rng = Rng(seed);
    let mut succeeded = 0;
    for _ in 0..ITERATIONS {
        let caller = rng.domain();
        // A caller may be mid-destruction or gone: -ESRCH (and -EINVAL for
        // allocation in a dying domain) is always possible.
        match rng.below(16) {
            0 | 1 => {
                let remote = rng.domain();
                let result = domains.alloc_unbound(caller, DomId::SELF, remote);
                succeeded += u64::from(expect_one_of(
                    "alloc_unbound",
                    result,
                    &[ESRCH, ENOSPC, EINVAL],
                ));
                if let Ok(port) = result {
                    // The remote binds at once, most of the time.
                    if rng.below(4) != 0 {
                        let bound = domains.bind_interdomain(remote, caller, port);
                        succeeded += u64::from(expect_one_of(
                            "bind_interdomain",
                            bound,
                            &[ESRCH, ENOSPC, EINVAL],
                        ));
                    }
                }
            }
            2 => {
                let result = domains.bind_interdomain(caller, rng.domain(), rng.port());
                succeeded += u64::from(expect_one_of(
                    "bind_interdomain",
                    result,
                    &[ESRCH, ENOSPC, EINVAL],
                ));
            }
            3 => {
                let result = domains.bind_ipi(caller, VcpuId(rng.below(2) as u32));
                succeeded += u64::from(expect_one_of("bind_ipi", result, &[ESRCH, ENOSPC, EINVAL]));
            }
            4 => {
                let virq = [0, 1, 2, 3][rng.below(4) as usize];
                let result = domains.bind_virq(caller, virq, VcpuId(0));
                succeeded += u64::from(expect_one_of(
                    "bind_virq",
                    result,
                    &[ESRCH, ENOSPC, EINVAL, EEXIST],
                ));
            }
            5..=7 => {
                let result = domains.send(caller, rng.port());
                succeeded += u64::from(expect_one_of("send", result, &[ESRCH, EINVAL]));
            }
            8 | 9 => {
                let result = domains.close(caller, rng.port());
                succeeded += u64::from(expect_one_of("close", result, &[ESRCH, EINVAL]));
            }
            10 => {
                let result = domains.unmask(caller, rng.port());
                succeeded += u64::from(expect_one_of("unmask", result, &[ESRCH, EINVAL]));
            }
            11 => {
                let result = domains.bind_vcpu(caller, rng.port(), VcpuId(rng.below(2) as u32));
                succeeded += u64::from(expect_one_of("bind_vcpu", result, &[ESRCH, EINVAL]));
            }
            12 if rng.below(4) == 0 => {
                let result = domains.reset(caller, DomId::SELF, ResetMode::Start);
                // -EBUSY: another thread's reset of the same domain is running.
                succeeded += u64::from(expect_one_of("reset", result, &[ESRCH, EAGAIN, EBUSY]));
            }
            13 if rng.below(4) == 0 => {
                let target = rng.domain();
                if domains.pause_by_controller(target).is_ok() {
                    let result = domains.reset(DOM0, target, ResetMode::Start);
                    succeeded += u64::from(expect_one_of("reset", result, &[ESRCH, EAGAIN, EBUSY]));
                    // dom2 may have been re-created meanwhile, unpaused.
                    let result = domains.unpause_by_controller(target);
                    succeeded += u64::from(expect_one_of("unpause", result, &[ESRCH, EINVAL]));
                }
            }
            14 => {
                let status = evtchn_core::abi::EvtchnStatus {
                    dom: rng.domain(),
                    port: rng.port(),
                    ..Default::default()
                };
                let result = domains.status(caller, status);
                succeeded += u64::from(expect_one_of("status", result, &[ESRCH, EINVAL, EPERM]));
            }
            12..=15 => {
                if may_destroy && rng.below(64) == 0 {
                    // Destroy and re-create dom2 (only this worker does).
                    domains.destroy_domain(DOM2).unwrap();
                    create(domains, DOM2).unwrap();
                } else {
                    domains.send_vcpu_virq(caller, VcpuId(0), Virq::TIMER);
                    domains.send_global_virq(Virq::DOM_EXC);
                }
            }
            _ => {}
        }
    }
    succeeded
}

/// Every allocated port as (domain, port, state, notify vcpu).
fn allocated(domains: &TestDomains) -> Vec<(DomId, Port, ChannelState, VcpuId)> {
    let mut ports = Vec::new();
    for domid in domains.domain_ids() {
        domains.for_each_channel(domid, |port, info| {
            if info.state != ChannelState::Reserved {
                ports.push((domid, port, info.state, info.notify_vcpu));
            }
        });
    }
    ports
}

/// The consistency every quiescent system must show.
fn check_invariants(domains: &TestDomains, pages: &dyn Fn(DomId) -> Arc<dyn SharedInfoView>) {
    let ports = allocated(domains);
    for &(domid, port, state, vcpu) in &ports {
        match state {
            ChannelState::Interdomain {
                remote,
                remote_port,
                ..
            } => {
                let peer = domains.channel_info(remote, remote_port).unwrap();
                assert_eq!(
                    peer.state,
                    ChannelState::Interdomain {
                        remote: domid,
                        remote_port: port,
                        consumer: evtchn_core::Consumer::Guest,
                    },
                    "{domid} {port} -> {remote} {remote_port} is not symmetric"
                );
            }
            ChannelState::Virq { virq } => {
                let table_vcpu = if virq.is_per_vcpu() { vcpu } else { VcpuId(0) };
                assert_eq!(domains.virq_port(domid, table_vcpu, virq), Some(port));
            }
            ChannelState::Unbound { .. } | ChannelState::Ipi | ChannelState::Pirq { .. } => {}
            ChannelState::Free | ChannelState::Reserved => unreachable!(),
        }
    }
    for domid in domains.domain_ids() {
        let count = ports.iter().filter(|entry| entry.0 == domid).count();
        assert_eq!(
            domains.active_channels(domid),
            Some(count as u32),
            "{domid}: active count differs from the ports allocated"
        );
        for virq in Virq::all() {
            for vcpu in [VcpuId(0), VcpuId(1)] {
                if let Some(port) = domains.virq_port(domid, vcpu, virq) {
                    let state = domains.channel_info(domid, port).unwrap().state;
                    assert_eq!(state, ChannelState::Virq { virq }, "{domid} {vcpu} {virq}");
                }
            }
        }
        // A free port is never left pending (freeing clears it, and no
        // delivery reaches a port being freed).
        let page = pages(domid);
        for port in 1..domains.valid_ports(domid).unwrap() {
            let info = domains.channel_info(domid, Port(port)).unwrap();
            let word =
                page.shared_info().evtchn_pending[(port / 64) as usize].load(Ordering::SeqCst);
            if info.state == ChannelState::Free {
                assert_eq!(
                    word & (1 << (port % 64)),
                    0,
                    "{domid} free port {port} pending"
                );
            }
        }
    }
}

#[test]
fn concurrent_binding_sending_closing_and_resetting_keeps_tables_consistent() {
    let domains = Arc::new(TestDomains::new(CountingNotify::default(), NoPirqs));
    for domid in ALL {
        create(&domains, domid).unwrap();
    }
    let baseline: Vec<_> = ALL.iter().map(|&d| domains.active_channels(d)).collect();
    let stop_guest = Arc::new(AtomicBool::new(false));
    // The guest of dom1: acknowledges everything, as an upcall handler would.
    let guest = {
        let domains = domains.clone();
        let stop = stop_guest.clone();
        thread::spawn(move || {
            let mut passes = 0u64;
            while !stop.load(Ordering::Acquire) {
                if let Some(view) = domains.shared_info(DOM1) {
                    let page = view.shared_info();
                    for info in &page.vcpu_info[..2] {
                        info.evtchn_upcall_pending.store(0, Ordering::SeqCst);
                        let words = info.evtchn_pending_sel.swap(0, Ordering::SeqCst);
                        for word in 0..64 {
                            if words & (1 << word) != 0 {
                                page.evtchn_pending[word].store(0, Ordering::SeqCst);
                            }
                        }
                    }
                }
                passes += 1;
                thread::yield_now();
            }
            passes
        })
    };
    let start = Arc::new(Barrier::new(3));
    let workers: Vec<_> = [
        (0x9e37_79b9_7f4a_7c15u64, true),
        (0x2545_f491_4f6c_dd1d, false),
        (0x1234_5678_9abc_def1, false),
    ]
    .into_iter()
    .map(|(seed, may_destroy)| {
        let domains = domains.clone();
        let start = start.clone();
        thread::spawn(move || {
            start.wait();
            worker(&domains, seed, may_destroy)
        })
    })
    .collect();
    let succeeded: u64 = workers
        .into_iter()
        .map(|worker| worker.join().unwrap())
        .sum();
    stop_guest.store(true, Ordering::Release);
    assert!(guest.join().unwrap() > 0);

    let pages = |domid: DomId| domains.shared_info(domid).unwrap();
    check_invariants(&domains, &pages);
    assert!(
        domains.notify().kicks.load(Ordering::Relaxed) > 0,
        "no event was ever delivered"
    );
    let interdomain_links = allocated(&domains)
        .iter()
        .filter(|entry| matches!(entry.2, ChannelState::Interdomain { .. }))
        .count();
    println!(
        "stress: {} iterations on 3 threads, {succeeded} ops succeeded, {} kicks, {} ports allocated at the end ({} interdomain ends)",
        3 * ITERATIONS,
        domains.notify().kicks.load(Ordering::Relaxed),
        allocated(&domains).len(),
        interdomain_links
    );

    // Destroying dom1 and dom2 leaves dom0's ends to them unbound; a reset
    // of dom0 then brings every count back to its baseline.
    domains.destroy_domain(DOM1).unwrap();
    domains.destroy_domain(DOM2).unwrap();
    for (_, port, state, _) in allocated(&domains) {
        assert!(
            !matches!(state, ChannelState::Interdomain { remote, .. } if remote != DOM0),
            "{port} still linked to a destroyed domain: {state:?}"
        );
    }
    domains.reset(DOM0, DomId::SELF, ResetMode::Start).unwrap();
    assert_eq!(domains.active_channels(DOM0), baseline[0]);
    for domid in [DOM1, DOM2] {
        create(&domains, domid).unwrap();
    }
    let after: Vec<_> = ALL.iter().map(|&d| domains.active_channels(d)).collect();
    assert_eq!(after, baseline);
    check_invariants(&domains, &pages);
}

/// XSA-340: one thread allocates ports (growing the table bucket by bucket)
/// while another sends on the ports at the table's edge. A send on a port
/// that was just published must find its storage and its channel: the
/// answer is rc 0 (an IPI port: its pending bit is then set) or -EINVAL
/// (not yet valid, or valid and still free), never anything else.
#[test]
fn xsa340_alloc_racing_send_at_the_table_edge() {
    let domains = Arc::new(TestDomains::new(CountingNotify::default(), NoPirqs));
    for round in 0..8 {
        // A fresh domain each round: the table starts with one bucket.
        domains
            .create_domain(
                DomainConfig {
                    max_evtchn_port: 4095,
                    ..DomainConfig::new(DOM1, 2)
                },
                Arc::new(SharedInfo::new()),
            )
            .unwrap();
        let page = domains.shared_info(DOM1).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let start = Arc::new(Barrier::new(2));
        let sender = {
            let domains = domains.clone();
            let done = done.clone();
            let page = page.clone();
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                let mut delivered = 0u64;
                while !done.load(Ordering::Acquire) {
                    let valid = domains.valid_ports(DOM1).unwrap();
                    for port in valid.saturating_sub(3)..valid + 2 {
                        match domains.send(DOM1, Port(port)) {
                            Ok(()) => {
                                delivered += 1;
                                let word = page.shared_info().evtchn_pending[(port / 64) as usize]
                                    .load(Ordering::SeqCst);
                                assert_ne!(
                                    word & (1 << (port % 64)),
                                    0,
                                    "port {port} sent, not pending"
                                );
                            }
                            Err(Errno::EINVAL) => {}
                            Err(other) => panic!("send {port}: {other:?}"),
                        }
                    }
                }
                delivered
            })
        };
        let mut ports = Vec::new();
        start.wait();
        while let Ok(port) = domains.bind_ipi(DOM1, VcpuId(round % 2)) {
            ports.push(port);
            // Allocation is fast: let the sender run at each new edge.
            if port.0 % 8 == 0 {
                thread::yield_now();
            }
        }
        done.store(true, Ordering::Release);
        let delivered = sender.join().unwrap();
        assert_eq!(ports.len(), 4095);
        assert_eq!(domains.valid_ports(DOM1), Some(4096));
        println!(
            "xsa340 round {round}: 4095 ports allocated, {delivered} sends delivered at the edge"
        );
        domains.destroy_domain(DOM1).unwrap();
    }
}
