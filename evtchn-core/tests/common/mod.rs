//! Shared fakes and helpers for the behaviour tests: a recording `Notify`, a
//! scriptable `PirqHost`, and a world of domains on heap shared pages.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers: a panic here is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use evtchn_core::abi::{EvtchnStatus, SharedInfo};
use evtchn_core::{
    ChannelState, DomId, DomainConfig, Domains, Errno, Notify, PirqHost, PirqSharing, Port,
    Privilege, SharedInfoView, VcpuId, XenConsumer,
};

/// Records every call evtchn-core makes to the hypervisor.
#[derive(Default)]
pub struct RecordingNotify {
    pub kicks: Mutex<Vec<(DomId, VcpuId)>>,
    pub poll_wakes: Mutex<Vec<(DomId, VcpuId)>>,
    pub xen_notifications: Mutex<Vec<(DomId, Port, XenConsumer)>>,
    /// `should_preempt` answers true this many times, then false.
    pub preemptions_left: Mutex<u32>,
    /// If non-zero, `should_preempt` instead answers true on every
    /// `preempt_period`-th question.
    pub preempt_period: Mutex<u32>,
    pub preempt_questions: Mutex<u32>,
}

impl Notify for RecordingNotify {
    fn kick_vcpu(&self, domain: DomId, vcpu: VcpuId) {
        self.kicks.lock().unwrap().push((domain, vcpu));
    }
    fn wake_poller(&self, domain: DomId, vcpu: VcpuId) {
        self.poll_wakes.lock().unwrap().push((domain, vcpu));
    }
    fn notify_xen_consumer(&self, domain: DomId, port: Port, consumer: XenConsumer) {
        self.xen_notifications
            .lock()
            .unwrap()
            .push((domain, port, consumer));
    }
    fn should_preempt(&self) -> bool {
        let period = *self.preempt_period.lock().unwrap();
        if period != 0 {
            let mut questions = self.preempt_questions.lock().unwrap();
            *questions += 1;
            return questions.is_multiple_of(period);
        }
        let mut left = self.preemptions_left.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            true
        } else {
            false
        }
    }
}

/// A PIRQ host with a set of mapped pirqs per domain and an optional
/// scripted error for the next bind.
#[derive(Default)]
pub struct FakePirqs {
    pub mapped: Mutex<BTreeSet<(DomId, u32)>>,
    pub bound: Mutex<BTreeMap<(DomId, u32), PirqSharing>>,
    pub unbinds: Mutex<Vec<(DomId, u32)>>,
    pub affinity: Mutex<Vec<(DomId, u32, VcpuId)>>,
    pub next_bind_error: Mutex<Option<Errno>>,
}

impl PirqHost for FakePirqs {
    fn is_pirq_mapped(&self, domain: DomId, pirq: u32) -> bool {
        self.mapped.lock().unwrap().contains(&(domain, pirq))
    }
    fn bind(&self, domain: DomId, pirq: u32, sharing: PirqSharing) -> Result<(), Errno> {
        if let Some(errno) = self.next_bind_error.lock().unwrap().take() {
            return Err(errno);
        }
        self.bound.lock().unwrap().insert((domain, pirq), sharing);
        Ok(())
    }
    fn unbind(&self, domain: DomId, pirq: u32) {
        self.bound.lock().unwrap().remove(&(domain, pirq));
        self.unbinds.lock().unwrap().push((domain, pirq));
    }
    fn set_affinity(&self, domain: DomId, pirq: u32, vcpu: VcpuId) {
        self.affinity.lock().unwrap().push((domain, pirq, vcpu));
    }
}

pub type TestDomains = Domains<RecordingNotify, FakePirqs>;

pub const DOM0: DomId = DomId(0);
pub const DOM1: DomId = DomId(1);
pub const DOM2: DomId = DomId(2);

/// A registry with dom0 (privileged, 4 vcpus, 1023 ports, 64 pirqs) and
/// dom1, dom2 (unprivileged, 2 vcpus, 1023 ports, 16 pirqs), each with its
/// own heap shared_info page.
pub struct World {
    pub domains: TestDomains,
    pub pages: BTreeMap<DomId, Arc<SharedInfo>>,
}

impl World {
    pub fn new() -> Self {
        let mut world = Self::empty();
        world.add(DomainConfig {
            domid: DOM0,
            vcpus: 4,
            privilege: Privilege::Privileged,
            max_evtchn_port: 1023,
            nr_pirqs: 64,
            ..DomainConfig::new(DOM0, 4)
        });
        world.add(DomainConfig {
            nr_pirqs: 16,
            ..DomainConfig::new(DOM1, 2)
        });
        world.add(DomainConfig {
            nr_pirqs: 16,
            ..DomainConfig::new(DOM2, 2)
        });
        world
    }

    pub fn empty() -> Self {
        Self {
            domains: Domains::new(RecordingNotify::default(), FakePirqs::default()),
            pages: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, config: DomainConfig) {
        let page = Arc::new(SharedInfo::new());
        let view: Arc<dyn SharedInfoView> = page.clone();
        self.domains.create_domain(config, view).unwrap();
        self.pages.insert(config.domid, page);
    }

    pub fn active_of(&self, domid: DomId) -> u32 {
        self.domains.active_channels(domid).unwrap()
    }

    pub fn page(&self, domid: DomId) -> &SharedInfo {
        &self.pages[&domid]
    }

    pub fn state(&self, domid: DomId, port: Port) -> ChannelState {
        self.domains.channel_info(domid, port).unwrap().state
    }

    pub fn notify_vcpu(&self, domid: DomId, port: Port) -> VcpuId {
        self.domains.channel_info(domid, port).unwrap().notify_vcpu
    }

    pub fn is_pending(&self, domid: DomId, port: Port) -> bool {
        let word = self.page(domid).evtchn_pending[(port.0 / 64) as usize].load(Ordering::SeqCst);
        word & (1 << (port.0 % 64)) != 0
    }

    pub fn is_masked(&self, domid: DomId, port: Port) -> bool {
        let word = self.page(domid).evtchn_mask[(port.0 / 64) as usize].load(Ordering::SeqCst);
        word & (1 << (port.0 % 64)) != 0
    }

    pub fn mask(&self, domid: DomId, port: Port) {
        self.page(domid).evtchn_mask[(port.0 / 64) as usize]
            .fetch_or(1 << (port.0 % 64), Ordering::SeqCst);
    }

    pub fn clear_pending(&self, domid: DomId, port: Port) {
        self.page(domid).evtchn_pending[(port.0 / 64) as usize]
            .fetch_and(!(1 << (port.0 % 64)), Ordering::SeqCst);
    }

    pub fn selector(&self, domid: DomId, vcpu: u32) -> u64 {
        self.page(domid).vcpu_info[vcpu as usize]
            .evtchn_pending_sel
            .load(Ordering::SeqCst)
    }

    pub fn upcall_pending(&self, domid: DomId, vcpu: u32) -> u8 {
        self.page(domid).vcpu_info[vcpu as usize]
            .evtchn_upcall_pending
            .load(Ordering::SeqCst)
    }

    /// Guest-style acknowledgement of everything on a vcpu: clear
    /// upcall_pending, the selector and every pending bit.
    pub fn guest_ack_all(&self, domid: DomId) {
        let page = self.page(domid);
        for info in &page.vcpu_info {
            info.evtchn_upcall_pending.store(0, Ordering::SeqCst);
            info.evtchn_pending_sel.store(0, Ordering::SeqCst);
        }
        for word in &page.evtchn_pending {
            word.store(0, Ordering::SeqCst);
        }
        self.domains.notify().kicks.lock().unwrap().clear();
        self.domains.notify().poll_wakes.lock().unwrap().clear();
    }

    pub fn kicks(&self) -> Vec<(DomId, VcpuId)> {
        self.domains.notify().kicks.lock().unwrap().clone()
    }

    pub fn poll_wakes(&self) -> Vec<(DomId, VcpuId)> {
        self.domains.notify().poll_wakes.lock().unwrap().clone()
    }

    pub fn map_pirq(&self, domid: DomId, pirq: u32) {
        self.domains
            .pirq_host()
            .mapped
            .lock()
            .unwrap()
            .insert((domid, pirq));
    }

    pub fn status(&self, caller: DomId, dom: DomId, port: Port) -> Result<EvtchnStatus, Errno> {
        self.domains.status(
            caller,
            EvtchnStatus {
                dom,
                port,
                ..EvtchnStatus::default()
            },
        )
    }

    /// A connected pair: dom `a` port returned first, dom `b` port second.
    pub fn connect(&self, a: DomId, b: DomId) -> (Port, Port) {
        let a_port = self.domains.alloc_unbound(a, DomId::SELF, b).unwrap();
        let b_port = self.domains.bind_interdomain(b, a, a_port).unwrap();
        (a_port, b_port)
    }

    /// Every observable of a domain's table: state, notify vcpu, priority
    /// of every valid port, plus counts and bitmaps.
    pub fn snapshot(&self, domid: DomId) -> String {
        let mut out = String::new();
        let valid = self.domains.valid_ports(domid).unwrap();
        out += &format!(
            "valid={} active={:?}\n",
            valid,
            self.domains.active_channels(domid)
        );
        for port in 0..valid {
            out += &format!(
                "{port}: {:?}\n",
                self.domains.channel_info(domid, Port(port))
            );
        }
        let page = self.page(domid);
        for word in page.evtchn_pending.iter().chain(page.evtchn_mask.iter()) {
            out += &format!("{:x} ", word.load(Ordering::SeqCst));
        }
        for info in &page.vcpu_info {
            out += &format!(
                "{}/{:x} ",
                info.evtchn_upcall_pending.load(Ordering::SeqCst),
                info.evtchn_pending_sel.load(Ordering::SeqCst)
            );
        }
        out
    }
}

/// One port of every kind in DOM1, built on a fresh [`World`]:
///
/// | port | state |
/// |---|---|
/// | 0 | Reserved |
/// | 1 | Unbound, remote DOM2 |
/// | 2 | Interdomain with DOM2 port 1 |
/// | 3 | Virq TIMER (per-vcpu) on vcpu 1 |
/// | 4 | Virq CONSOLE (global) on vcpu 0 |
/// | 5 | Ipi on vcpu 1 |
/// | 6 | Pirq 3 |
/// | 7 | Unbound, Xen-attached, remote DOM2 |
/// | 8..=63 | Free (valid) |
/// | 64.. | invalid |
pub struct Zoo {
    pub world: World,
}

pub const RESERVED: Port = Port(0);
pub const UNBOUND: Port = Port(1);
pub const INTERDOMAIN: Port = Port(2);
pub const VIRQ_PER_VCPU: Port = Port(3);
pub const VIRQ_GLOBAL: Port = Port(4);
pub const IPI: Port = Port(5);
pub const PIRQ: Port = Port(6);
pub const XEN_ATTACHED: Port = Port(7);
pub const FREE: Port = Port(8);
pub const LAST_VALID_FREE: Port = Port(63);
pub const ZOO_PIRQ: u32 = 3;

/// A port of each kind, named, for table-driven tests.
pub const ZOO_PORTS: [(&str, Port); 10] = [
    ("reserved", RESERVED),
    ("unbound", UNBOUND),
    ("interdomain", INTERDOMAIN),
    ("per-vcpu virq", VIRQ_PER_VCPU),
    ("global virq", VIRQ_GLOBAL),
    ("ipi", IPI),
    ("pirq", PIRQ),
    ("xen-attached", XEN_ATTACHED),
    ("free", FREE),
    ("last valid free", LAST_VALID_FREE),
];

/// Ports that have no storage in a fresh domain: each gives -EINVAL.
pub const INVALID_PORTS: [Port; 7] = [
    Port(64),
    Port(1023),
    Port(1024),
    Port(4096),
    Port(131072),
    Port(i32::MAX as u32),
    Port(u32::MAX),
];

impl Zoo {
    pub fn new() -> Self {
        use evtchn_core::Virq;
        let world = World::new();
        let domains = &world.domains;
        assert_eq!(domains.alloc_unbound(DOM1, DomId::SELF, DOM2), Ok(UNBOUND));
        let dom2_port = domains.alloc_unbound(DOM2, DomId::SELF, DOM1).unwrap();
        assert_eq!(dom2_port, Port(1));
        assert_eq!(
            domains.bind_interdomain(DOM1, DOM2, dom2_port),
            Ok(INTERDOMAIN)
        );
        assert_eq!(
            domains.bind_virq(DOM1, Virq::TIMER.number(), VcpuId(1)),
            Ok(VIRQ_PER_VCPU)
        );
        assert_eq!(
            domains.bind_virq(DOM1, Virq::CONSOLE.number(), VcpuId(0)),
            Ok(VIRQ_GLOBAL)
        );
        assert_eq!(domains.bind_ipi(DOM1, VcpuId(1)), Ok(IPI));
        world.map_pirq(DOM1, ZOO_PIRQ);
        assert_eq!(domains.bind_pirq(DOM1, ZOO_PIRQ, 0), Ok(PIRQ));
        assert_eq!(
            domains.alloc_unbound_xen(DOM1, VcpuId(0), DOM2, XenConsumer(1)),
            Ok(XEN_ATTACHED)
        );
        world.guest_ack_all(DOM1);
        world.guest_ack_all(DOM2);
        Self { world }
    }
}

pub fn active(world: &World, domid: DomId) -> u32 {
    world.domains.active_channels(domid).unwrap()
}

pub fn state_is(world: &World, domid: DomId, port: Port, expected: ChannelState) {
    assert_eq!(world.state(domid, port), expected, "{domid} {port}");
}

pub fn page_of(world: &World, domid: DomId) -> &SharedInfo {
    world.page(domid)
}

pub fn kicks_len(world: &World) -> usize {
    world.kicks().len()
}

pub fn none_pending(world: &World, domid: DomId) -> bool {
    world
        .page(domid)
        .evtchn_pending
        .iter()
        .all(|word| word.load(Ordering::SeqCst) == 0)
}
