//! Host benchmarks of evtchn-core's ops, each next to a floor: one locked
//! set-bit (`fetch_or` on an `AtomicU64`), the least a 2-level send can do.
//!
//! A small harness rather than criterion: every number here is read as a
//! ratio to the floor, which the harness computes and prints as one line per
//! benchmark for `cargo xtask bench` to turn into a table; criterion would
//! add a large dependency tree to build on every CI machine and several
//! seconds of warm-up per benchmark, to produce statistics we would then
//! parse back out of its JSON. Method: each benchmark is warmed up and
//! given an iteration count lasting about 2 ms; then, in each of 9 rounds
//! over all benchmarks, 31 samples of that many iterations give a median
//! time per iteration, and the lowest median over the rounds is reported.
//! Medians, and rounds spread over the whole run, shed the samples hit by
//! other jobs sharing the machine.
//!
//! Output lines: `bench<TAB>name<TAB>ns per op<TAB>what it does`; an
//! argument that is not a flag runs only the benchmarks whose name
//! contains it.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "benchmark setup: a panic is a broken benchmark"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use evtchn_core::abi::{EvtchnStatus, SharedInfo};
use evtchn_core::{DomId, DomainConfig, Domains, NoPirqs, Notify, Port, SharedInfoView, VcpuId};

const DOM1: DomId = DomId(1);
const DOM2: DomId = DomId(2);
const SAMPLES: usize = 31;
const ROUNDS: usize = 9;
const SAMPLE_TARGET: Duration = Duration::from_millis(2);

/// A Notify that does nothing: the hypervisor's side is not measured.
struct NoNotify;

impl Notify for NoNotify {
    fn kick_vcpu(&self, domain: DomId, vcpu: VcpuId) {
        black_box((domain, vcpu));
    }
    fn wake_poller(&self, domain: DomId, vcpu: VcpuId) {
        black_box((domain, vcpu));
    }
}

type BenchDomains = Domains<NoNotify, NoPirqs>;

struct World {
    domains: BenchDomains,
    pages: [&'static SharedInfo; 2],
}

impl World {
    /// Two domains whose pages are fixed and whose vcpu_infos are settled,
    /// as the hypervisor's (guest frames stay mapped for good, and a
    /// registered vcpu_info never moves again): senders reach them with
    /// plain loads.
    fn new() -> Self {
        Self::with_views(|page| Arc::new(page))
    }

    /// The same, but every access to the pages goes through the view's
    /// dynamic calls (a view that answers no `fixed_shared_info`).
    fn with_dynamic_views() -> Self {
        /// A view of a page that keeps the defaults: nothing fixed.
        struct Dynamic(&'static SharedInfo);
        impl SharedInfoView for Dynamic {
            fn shared_info(&self) -> &SharedInfo {
                self.0
            }
        }
        Self::with_views(|page| Arc::new(Dynamic(page)))
    }

    fn with_views(view: impl Fn(&'static SharedInfo) -> Arc<dyn SharedInfoView>) -> Self {
        let domains = Domains::new(NoNotify, NoPirqs);
        let pages: [&'static SharedInfo; 2] = [
            Box::leak(Box::new(SharedInfo::new())),
            Box::leak(Box::new(SharedInfo::new())),
        ];
        for (domid, page) in [DOM1, DOM2].into_iter().zip(pages) {
            let view = view(page);
            let config = DomainConfig {
                max_evtchn_port: 4095,
                ..DomainConfig::new(domid, 2)
            };
            domains.create_domain(config, view).unwrap();
        }
        World { domains, pages }
    }

    fn page(&self, domid: DomId) -> &SharedInfo {
        self.pages[usize::from(domid.0) - 1]
    }

    /// The guest's acknowledgement after handling `port` on vcpu 0: clear
    /// upcall_pending, the selector and the pending bit (plain stores).
    fn guest_ack(&self, domid: DomId, port: Port) {
        let page = self.page(domid);
        let info = &page.vcpu_info[0];
        info.evtchn_upcall_pending.store(0, Ordering::Relaxed);
        info.evtchn_pending_sel.store(0, Ordering::Relaxed);
        page.evtchn_pending[(port.0 / 64) as usize].store(0, Ordering::Relaxed);
    }

    fn mask(&self, domid: DomId, port: Port) {
        self.page(domid).evtchn_mask[(port.0 / 64) as usize]
            .fetch_or(1 << (port.0 % 64), Ordering::SeqCst);
    }

    /// Bind IPI ports on vcpu 0 until `count` are bound; the last one.
    fn bind_ipis(&self, count: u32) -> Port {
        let mut last = Port(0);
        for _ in 0..count {
            last = self.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
        }
        last
    }
}

/// One benchmark: its operation (owning its setup) and its results.
struct Bench {
    name: String,
    what: &'static str,
    op: Box<dyn FnMut()>,
    iterations: u64,
    best_median: f64,
}

/// The benchmarks to run, filtered by name.
struct Benches {
    filter: Option<String>,
    list: Vec<Bench>,
}

impl Benches {
    fn wants(&self, name: &str) -> bool {
        self.filter
            .as_deref()
            .is_none_or(|filter| name.contains(filter))
    }

    fn add(&mut self, name: &str, what: &'static str, op: impl FnMut() + 'static) {
        self.list.push(Bench {
            name: name.to_owned(),
            what,
            op: Box::new(op),
            iterations: 0,
            best_median: f64::INFINITY,
        });
    }

    fn run(mut self) {
        for bench in &mut self.list {
            bench.iterations = calibrate(&mut bench.op);
        }
        for _ in 0..ROUNDS {
            for bench in &mut self.list {
                let median = median_round(&mut bench.op, bench.iterations);
                bench.best_median = bench.best_median.min(median);
            }
        }
        for bench in &self.list {
            println!(
                "bench\t{}\t{:.2}\t{}",
                bench.name, bench.best_median, bench.what
            );
        }
    }
}

/// Warm `op` up and find an iteration count lasting about SAMPLE_TARGET.
fn calibrate(op: &mut dyn FnMut()) -> u64 {
    let mut iterations: u64 = 64;
    loop {
        let started = Instant::now();
        for _ in 0..iterations {
            op();
        }
        if started.elapsed() >= SAMPLE_TARGET / 2 {
            return iterations;
        }
        iterations *= 2;
    }
}

/// Median ns per iteration of `op` over [`SAMPLES`] samples.
fn median_round(op: &mut dyn FnMut(), iterations: u64) -> f64 {
    let mut samples: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..iterations {
                op();
            }
            started.elapsed().as_nanos() as f64 / iterations as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[SAMPLES / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument runs only matching names.
    let mut benches = Benches {
        filter: std::env::args().skip(1).find(|arg| !arg.starts_with("--")),
        list: Vec::new(),
    };

    if benches.wants("raw fetch_or") {
        let word = AtomicU64::new(0);
        benches.add(
            "raw fetch_or",
            "floor: one locked set-bit on an AtomicU64",
            move || {
                black_box(word.fetch_or(black_box(1 << 5), Ordering::SeqCst));
            },
        );
    }

    if benches.wants("harness overhead") {
        benches.add(
            "harness overhead",
            "an empty op: the boxed closure call and loop every line above pays too",
            move || black_box(()),
        );
    }

    if benches.wants("raw 3 fetch_or") {
        let words = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
        benches.add(
            "raw 3 fetch_or",
            "three locked set-bits on three words: the marginal cost of one more",
            move || {
                for word in &words {
                    black_box(word.fetch_or(black_box(1 << 5), Ordering::SeqCst));
                }
            },
        );
    }

    if benches.wants("raw 2-level new event") {
        let page = SharedInfo::new();
        benches.add(
            "raw 2-level new event",
            "floor of a new event: the ABI's three test-and-sets and a mask load, inline, plus the guest's 3 stores",
            move || {
                let port = black_box(5u32);
                let bit = 1u64 << port;
                let info = &page.vcpu_info[0];
                if page.evtchn_pending[0].fetch_or(bit, Ordering::SeqCst) & bit == 0
                    && page.evtchn_mask[0].load(Ordering::SeqCst) & bit == 0
                    && info.evtchn_pending_sel.fetch_or(1, Ordering::SeqCst) & 1 == 0
                {
                    black_box(info.evtchn_upcall_pending.fetch_or(1, Ordering::SeqCst));
                }
                info.evtchn_upcall_pending.store(0, Ordering::Relaxed);
                info.evtchn_pending_sel.store(0, Ordering::Relaxed);
                page.evtchn_pending[0].store(0, Ordering::Relaxed);
            },
        );
    }

    if benches.wants("registry lookup") {
        let world = World::new();
        benches.add(
            "registry lookup (active_channels)",
            "what every op pays to find the caller: registry read lock, BTreeMap search, Arc clone and drop",
            move || {
                black_box(world.domains.active_channels(black_box(DOM1)));
            },
        );
    }

    for bound in [1u32, 64, 4095] {
        let name = format!("send ipi, new event, {bound} ports bound");
        if !benches.wants(&name) {
            continue;
        }
        let world = World::new();
        let port = world.bind_ipis(bound);
        benches.add(
            &name,
            "unmasked: pending, selector, upcall_pending set, kick (lock-free, after the registry lookup); then the guest's 3 plain stores re-arm it",
            move || {
                world.domains.send(DOM1, black_box(port)).unwrap();
                world.guest_ack(DOM1, port);
            },
        );
    }

    for bound in [1u32, 64, 4095] {
        let name = format!("send_from ipi, new event, {bound} ports bound");
        if !benches.wants(&name) {
            continue;
        }
        let world = World::new();
        let port = world.bind_ipis(bound);
        let handle = world.domains.handle(DOM1).unwrap();
        benches.add(
            &name,
            "as send ipi, new event, through a DomainHandle: no registry lookup, and no lock (the lock-free send)",
            move || {
                world.domains.send_from(&handle, black_box(port)).unwrap();
                world.guest_ack(DOM1, port);
            },
        );
    }

    if benches.wants("send_from ipi, new event, dynamic view") {
        let world = World::with_dynamic_views();
        let port = world.bind_ipis(1);
        let handle = world.domains.handle(DOM1).unwrap();
        benches.add(
            "send_from ipi, new event, dynamic view",
            "as send_from ipi, new event, 1 port, through a view without fixed pages: one dynamic call for the pages",
            move || {
                world.domains.send_from(&handle, black_box(port)).unwrap();
                world.guest_ack(DOM1, port);
            },
        );
    }

    if benches.wants("send_from ipi, selector already set") {
        let world = World::new();
        let port = world.bind_ipis(1);
        let handle = world.domains.handle(DOM1).unwrap();
        world.domains.send_from(&handle, port).unwrap();
        benches.add(
            "send_from ipi, selector already set",
            "new pending bit, but selector and upcall_pending still set (another port of the word is pending): a load of the selector skips its test-and-set; guest clears the port's bit",
            move || {
                world.domains.send_from(&handle, black_box(port)).unwrap();
                world.page(DOM1).evtchn_pending[0].store(0, Ordering::Relaxed);
            },
        );
    }

    if benches.wants("send ipi, already pending") {
        let world = World::new();
        let port = world.bind_ipis(1);
        world.domains.send(DOM1, port).unwrap();
        benches.add(
            "send ipi, already pending",
            "unmasked, pending bit already set: stops after the first test-and-set",
            move || world.domains.send(DOM1, black_box(port)).unwrap(),
        );
    }

    if benches.wants("send ipi, masked") {
        let world = World::new();
        let port = world.bind_ipis(1);
        world.mask(DOM1, port);
        benches.add(
            "send ipi, masked",
            "pending set, mask seen, no selector; guest re-arms with plain stores",
            move || {
                world.domains.send(DOM1, black_box(port)).unwrap();
                world.guest_ack(DOM1, port);
            },
        );
    }

    if benches.wants("send_from ipi, already pending") {
        let world = World::new();
        let port = world.bind_ipis(1);
        let handle = world.domains.handle(DOM1).unwrap();
        world.domains.send_from(&handle, port).unwrap();
        benches.add(
            "send_from ipi, already pending",
            "through a DomainHandle; lock-free, stops after the first test-and-set: the fixed cost of a send",
            move || world.domains.send_from(&handle, black_box(port)).unwrap(),
        );
    }

    if benches.wants("send_from ipi, masked") {
        let world = World::new();
        let port = world.bind_ipis(1);
        let handle = world.domains.handle(DOM1).unwrap();
        world.mask(DOM1, port);
        benches.add(
            "send_from ipi, masked",
            "through a DomainHandle; lock-free, pending set, mask seen, no selector",
            move || {
                world.domains.send_from(&handle, black_box(port)).unwrap();
                world.guest_ack(DOM1, port);
            },
        );
    }

    if benches.wants("send_from interdomain") {
        let world = World::new();
        let remote = world
            .domains
            .alloc_unbound(DOM2, DomId::SELF, DOM1)
            .unwrap();
        let local = world.domains.bind_interdomain(DOM1, DOM2, remote).unwrap();
        let handle = world.domains.handle(DOM1).unwrap();
        benches.add(
            "send_from interdomain, new event",
            "through a DomainHandle; peer in another domain: the channel's read lock, the peer domain kept in the channel",
            move || {
                world.domains.send_from(&handle, black_box(local)).unwrap();
                world.guest_ack(DOM2, remote);
            },
        );
    }

    if benches.wants("send_from loopback") {
        let world = World::new();
        let remote = world
            .domains
            .alloc_unbound(DOM1, DomId::SELF, DomId::SELF)
            .unwrap();
        let local = world
            .domains
            .bind_interdomain(DOM1, DomId::SELF, remote)
            .unwrap();
        let handle = world.domains.handle(DOM1).unwrap();
        benches.add(
            "send_from loopback, new event",
            "through a DomainHandle; both ends in the caller's domain: lock-free, like an IPI port, plus the peer port's lookup",
            move || {
                world.domains.send_from(&handle, black_box(local)).unwrap();
                world.guest_ack(DOM1, remote);
            },
        );
    }

    if benches.wants("send interdomain") {
        let world = World::new();
        let remote = world
            .domains
            .alloc_unbound(DOM2, DomId::SELF, DOM1)
            .unwrap();
        let local = world.domains.bind_interdomain(DOM1, DOM2, remote).unwrap();
        benches.add(
            "send interdomain, new event",
            "peer port in another domain: the caller looked up in the registry, the peer kept in the channel",
            move || {
                world.domains.send(DOM1, black_box(local)).unwrap();
                world.guest_ack(DOM2, remote);
            },
        );
    }

    if benches.wants("unmask, not masked") {
        let world = World::new();
        let port = world.bind_ipis(1);
        benches.add(
            "unmask, not masked",
            "test-and-clear of the mask bit finds it clear",
            move || world.domains.unmask(DOM1, black_box(port)).unwrap(),
        );
    }

    if benches.wants("unmask, masked") {
        let world = World::new();
        let port = world.bind_ipis(1);
        benches.add(
            "unmask, masked",
            "guest sets the mask bit (one locked or), unmask clears it; not pending",
            move || {
                world.mask(DOM1, port);
                world.domains.unmask(DOM1, black_box(port)).unwrap();
            },
        );
    }

    if benches.wants("status") {
        let world = World::new();
        let port = world.bind_ipis(1);
        let query = EvtchnStatus {
            dom: DomId::SELF,
            port,
            ..EvtchnStatus::default()
        };
        benches.add("status", "EVTCHNOP_status of an IPI port", move || {
            black_box(world.domains.status(DOM1, black_box(query)).unwrap());
        });
    }

    if benches.wants("alloc_unbound + close") {
        let world = World::new();
        benches.add(
            "alloc_unbound + close",
            "lowest free port is 1 every time",
            move || {
                let port = world
                    .domains
                    .alloc_unbound(DOM1, DomId::SELF, DOM2)
                    .unwrap();
                world.domains.close(DOM1, port).unwrap();
            },
        );
    }

    if benches.wants("bind_interdomain + close") {
        let world = World::new();
        let remote = world
            .domains
            .alloc_unbound(DOM2, DomId::SELF, DOM1)
            .unwrap();
        benches.add(
            "bind_interdomain + close",
            "both domains' locks; the remote end returns to unbound; sets the new port pending",
            move || {
                let local = world.domains.bind_interdomain(DOM1, DOM2, remote).unwrap();
                world.domains.close(DOM1, local).unwrap();
                world.guest_ack(DOM1, local);
            },
        );
    }

    benches.run();
}
