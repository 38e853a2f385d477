//! The system under test: an evtchn-core `Domains` with recording fakes and
//! heap shared pages (odd domids through a view with a fixed page and
//! settled vcpu_infos, reached with plain loads; even ones through the
//! view's dynamic calls only), driven by the same [`Op`]s as the reference model,
//! and the comparison of everything a guest or the hypervisor can observe.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use evtchn_core::abi::{EvtchnStatus, SharedInfo};
use evtchn_core::{
    ChannelState, Consumer, DomId, DomainConfig, Domains, Errno, FifoSupport, Notify, PirqHost,
    PirqSharing, PollOutcome, Port, Privilege, ResetMode, SharedInfoView, VcpuId, Virq,
    XenConsumer,
};

use super::ops::Op;
use super::reference::{self, Config, Model, State};

/// Records kicks and Xen-consumer notifications; never preempts.
#[derive(Default)]
pub struct Recorder {
    pub kicks: Mutex<Vec<(u16, u32)>>,
    pub poll_wakes: Mutex<Vec<(u16, u32)>>,
    pub xen_notifications: Mutex<Vec<(u16, u32, u8)>>,
}

impl Notify for Recorder {
    fn kick_vcpu(&self, domain: DomId, vcpu: VcpuId) {
        self.kicks.lock().unwrap().push((domain.0, vcpu.0));
    }
    fn wake_poller(&self, domain: DomId, vcpu: VcpuId) {
        self.poll_wakes.lock().unwrap().push((domain.0, vcpu.0));
    }
    fn notify_xen_consumer(&self, domain: DomId, port: Port, consumer: XenConsumer) {
        self.xen_notifications
            .lock()
            .unwrap()
            .push((domain.0, port.0, consumer.0));
    }
}

/// Pirqs 0..4 mapped for every domain; binding always works.
#[derive(Default)]
pub struct HostPirqs {
    pub bound: Mutex<BTreeSet<(u16, u32)>>,
}

impl PirqHost for HostPirqs {
    fn is_pirq_mapped(&self, _domain: DomId, pirq: u32) -> bool {
        reference::pirq_is_mapped(pirq)
    }
    fn bind(&self, domain: DomId, pirq: u32, _sharing: PirqSharing) -> Result<(), Errno> {
        self.bound.lock().unwrap().insert((domain.0, pirq));
        Ok(())
    }
    fn unbind(&self, domain: DomId, pirq: u32) {
        self.bound.lock().unwrap().remove(&(domain.0, pirq));
    }
}

pub struct System {
    pub domains: Domains<Recorder, HostPirqs>,
    pub pages: BTreeMap<u16, &'static SharedInfo>,
    configs: BTreeMap<u16, Config>,
}

/// What an op returned, in a form both sides produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Unit(Result<(), Errno>),
    Port(Result<u32, Errno>),
    Ports(Vec<Result<u32, Errno>>),
    Status(Result<reference::StatusReply, Errno>),
    /// Poll: ready at once (true) or block.
    Poll(Result<bool, Errno>),
    /// The dispatcher's result: the bytes to copy back, or the errno.
    Dispatch(Result<Vec<u8>, Errno>),
    Nothing,
}

fn config_of(config: &Config) -> DomainConfig {
    DomainConfig {
        domid: DomId(config.id),
        vcpus: config.vcpus,
        privilege: if config.is_privileged {
            Privilege::Privileged
        } else {
            Privilege::Unprivileged
        },
        max_evtchn_port: config.max_port,
        nr_pirqs: config.nr_pirqs,
        // The reference model knows the 2-level ABI only.
        fifo: FifoSupport::Disabled,
    }
}

fn page_bit(port: u32) -> (usize, u64) {
    ((port / 64) as usize, 1u64 << (port % 64))
}

/// A view that fixes nothing: every access is a dynamic call.
struct DynamicView(&'static SharedInfo);

impl SharedInfoView for DynamicView {
    fn shared_info(&self) -> &SharedInfo {
        self.0
    }
}

impl System {
    pub fn new(configs: &[Config]) -> Self {
        let mut system = System {
            domains: Domains::new(Recorder::default(), HostPirqs::default()),
            pages: BTreeMap::new(),
            configs: configs.iter().map(|config| (config.id, *config)).collect(),
        };
        for config in configs {
            system.create(config.id).unwrap();
        }
        system
    }

    fn create(&mut self, id: u16) -> Result<(), Errno> {
        // Leaked: a fixed page must live for good (one page per domain
        // created by a test case).
        let page: &'static SharedInfo = Box::leak(Box::new(SharedInfo::new()));
        let view: Arc<dyn SharedInfoView> = if id % 2 == 1 {
            Arc::new(page)
        } else {
            Arc::new(DynamicView(page))
        };
        self.domains
            .create_domain(config_of(&self.configs[&id]), view)?;
        self.pages.insert(id, page);
        Ok(())
    }

    fn page(&self, id: u16) -> Option<&SharedInfo> {
        // A destroyed domain's page is gone with it.
        if self.domains.contains(DomId(id)) {
            self.pages.get(&id).copied()
        } else {
            None
        }
    }

    pub fn apply(&mut self, op: &Op) -> Outcome {
        let domains = &self.domains;
        let port_of = |result: Result<Port, Errno>| result.map(|port| port.0);
        match *op {
            Op::BindToUnbound { .. }
            | Op::OnLivePort { .. }
            | Op::PollLive { .. }
            | Op::SignalLive { .. }
            | Op::Recreate => {
                unreachable!("aimed ops are resolved before they run")
            }
            Op::Poll {
                dom,
                vcpu,
                ref ports,
            } => {
                let ports: Vec<Port> = ports.iter().map(|&port| Port(port)).collect();
                Outcome::Poll(
                    domains
                        .poll(DomId(dom), VcpuId(vcpu), &ports)
                        .map(|outcome| outcome == PollOutcome::Ready),
                )
            }
            Op::PollFinish { dom, vcpu } => {
                domains.poll_finish(DomId(dom), VcpuId(vcpu));
                Outcome::Nothing
            }
            Op::Dispatch {
                caller,
                cmd,
                ref arg,
            } => Outcome::Dispatch(
                domains
                    .dispatch(DomId(caller), cmd, arg)
                    .map(|reply| reply.as_bytes().to_vec()),
            ),
            Op::AllocUnbound {
                caller,
                dom,
                remote,
            } => Outcome::Port(port_of(domains.alloc_unbound(
                DomId(caller),
                DomId(dom),
                DomId(remote),
            ))),
            Op::AllocBurst { caller, count } => Outcome::Ports(
                (0..count)
                    .map(|_| {
                        port_of(domains.alloc_unbound(DomId(caller), DomId::SELF, DomId::SELF))
                    })
                    .collect(),
            ),
            Op::BindInterdomain {
                caller,
                remote_dom,
                remote_port,
            } => Outcome::Port(port_of(domains.bind_interdomain(
                DomId(caller),
                DomId(remote_dom),
                Port(remote_port),
            ))),
            Op::BindVirq { caller, virq, vcpu } => Outcome::Port(port_of(domains.bind_virq(
                DomId(caller),
                virq,
                VcpuId(vcpu),
            ))),
            Op::BindIpi { caller, vcpu } => {
                Outcome::Port(port_of(domains.bind_ipi(DomId(caller), VcpuId(vcpu))))
            }
            Op::BindPirq { caller, pirq } => {
                Outcome::Port(port_of(domains.bind_pirq(DomId(caller), pirq, 0)))
            }
            Op::Close { caller, port } => Outcome::Unit(domains.close(DomId(caller), Port(port))),
            Op::Send { caller, port } => Outcome::Unit(domains.send(DomId(caller), Port(port))),
            Op::Status {
                caller,
                dom,
                port,
                union_in,
            } => {
                let query = EvtchnStatus {
                    dom: DomId(dom),
                    port: Port(port),
                    status: 0xdead_beef,
                    vcpu: VcpuId(0xfeed),
                    u: union_in,
                    ..EvtchnStatus::default()
                };
                Outcome::Status(domains.status(DomId(caller), query).map(|reply| {
                    assert_eq!((reply.dom, reply.port), (query.dom, query.port));
                    (reply.status, reply.vcpu.0, reply.u)
                }))
            }
            Op::BindVcpu { caller, port, vcpu } => {
                Outcome::Unit(domains.bind_vcpu(DomId(caller), Port(port), VcpuId(vcpu)))
            }
            Op::Unmask { caller, port } => Outcome::Unit(domains.unmask(DomId(caller), Port(port))),
            Op::Reset { caller, dom } => {
                Outcome::Unit(domains.reset(DomId(caller), DomId(dom), ResetMode::Start))
            }
            Op::ResetCont { caller, dom } => {
                Outcome::Unit(domains.reset(DomId(caller), DomId(dom), ResetMode::Continue))
            }
            Op::AllocUnboundXen {
                dom,
                remote,
                consumer,
            } => Outcome::Port(port_of(domains.alloc_unbound_xen(
                DomId(dom),
                VcpuId(0),
                DomId(remote),
                XenConsumer(consumer),
            ))),
            Op::NotifyViaXen { dom, port } => {
                domains.notify_via_xen_channel(DomId(dom), Port(port));
                Outcome::Nothing
            }
            Op::RaiseVcpuVirq { dom, vcpu, virq } => {
                if let Some(virq) = Virq::new(virq) {
                    domains.send_vcpu_virq(DomId(dom), VcpuId(vcpu), virq);
                }
                Outcome::Nothing
            }
            Op::RaiseGlobalVirq { virq } => {
                if let Some(virq) = Virq::new(virq) {
                    domains.send_global_virq(virq);
                }
                Outcome::Nothing
            }
            Op::Pause { dom } => Outcome::Unit(domains.pause_by_controller(DomId(dom))),
            Op::Unpause { dom } => Outcome::Unit(domains.unpause_by_controller(DomId(dom))),
            Op::Destroy { dom } => Outcome::Unit(domains.destroy_domain(DomId(dom))),
            Op::Create { dom } => Outcome::Unit(self.create(dom)),
            Op::GuestMask { dom, port } => {
                if let Some(page) = self.page(dom) {
                    let (word, bit) = page_bit(port);
                    page.evtchn_mask[word].fetch_or(bit, Ordering::SeqCst);
                }
                Outcome::Nothing
            }
            Op::GuestUnmaskBit { dom, port } => {
                if let Some(page) = self.page(dom) {
                    let (word, bit) = page_bit(port);
                    page.evtchn_mask[word].fetch_and(!bit, Ordering::SeqCst);
                }
                Outcome::Nothing
            }
            Op::GuestSetPending { dom, port } => {
                if let Some(page) = self.page(dom) {
                    let (word, bit) = page_bit(port);
                    page.evtchn_pending[word].fetch_or(bit, Ordering::SeqCst);
                }
                Outcome::Nothing
            }
            Op::GuestClearPending { dom, port } => {
                if let Some(page) = self.page(dom) {
                    let (word, bit) = page_bit(port);
                    page.evtchn_pending[word].fetch_and(!bit, Ordering::SeqCst);
                }
                Outcome::Nothing
            }
            Op::GuestAck { dom, vcpu } => {
                if let Some(page) = self.page(dom) {
                    let info = &page.vcpu_info[vcpu as usize];
                    info.evtchn_upcall_pending.store(0, Ordering::SeqCst);
                    info.evtchn_pending_sel.swap(0, Ordering::SeqCst);
                }
                Outcome::Nothing
            }
            Op::GuestUpcallMask { dom, vcpu, masked } => {
                if let Some(page) = self.page(dom) {
                    page.vcpu_info[vcpu as usize]
                        .evtchn_upcall_mask
                        .store(u8::from(masked), Ordering::SeqCst);
                }
                Outcome::Nothing
            }
        }
    }
}

/// The same op on the reference model.
pub fn apply_to_model(model: &mut Model, op: &Op) -> Outcome {
    match *op {
        Op::BindToUnbound { .. }
        | Op::OnLivePort { .. }
        | Op::PollLive { .. }
        | Op::SignalLive { .. }
        | Op::Recreate => {
            unreachable!("aimed ops are resolved before they run")
        }
        Op::Dispatch {
            caller,
            cmd,
            ref arg,
        } => Outcome::Dispatch(model.dispatch(caller, cmd, arg)),
        Op::Poll {
            dom,
            vcpu,
            ref ports,
        } => Outcome::Poll(model.poll(dom, vcpu, ports)),
        Op::PollFinish { dom, vcpu } => {
            model.poll_finish(dom, vcpu);
            Outcome::Nothing
        }
        Op::AllocUnbound {
            caller,
            dom,
            remote,
        } => Outcome::Port(model.alloc_unbound(caller, dom, remote)),
        Op::AllocBurst { caller, count } => Outcome::Ports(
            (0..count)
                .map(|_| model.alloc_unbound(caller, reference::DOMID_SELF, reference::DOMID_SELF))
                .collect(),
        ),
        Op::BindInterdomain {
            caller,
            remote_dom,
            remote_port,
        } => Outcome::Port(model.bind_interdomain(caller, remote_dom, remote_port)),
        Op::BindVirq { caller, virq, vcpu } => Outcome::Port(model.bind_virq(caller, virq, vcpu)),
        Op::BindIpi { caller, vcpu } => Outcome::Port(model.bind_ipi(caller, vcpu)),
        Op::BindPirq { caller, pirq } => Outcome::Port(model.bind_pirq(caller, pirq)),
        Op::Close { caller, port } => Outcome::Unit(model.close(caller, port)),
        Op::Send { caller, port } => Outcome::Unit(model.send(caller, port)),
        Op::Status {
            caller,
            dom,
            port,
            union_in,
        } => Outcome::Status(model.status(caller, dom, port, union_in)),
        Op::BindVcpu { caller, port, vcpu } => Outcome::Unit(model.bind_vcpu(caller, port, vcpu)),
        Op::Unmask { caller, port } => Outcome::Unit(model.unmask(caller, port)),
        Op::Reset { caller, dom } => Outcome::Unit(model.reset(caller, dom)),
        Op::ResetCont { caller, dom } => Outcome::Unit(model.reset_cont(caller, dom)),
        Op::AllocUnboundXen {
            dom,
            remote,
            consumer,
        } => Outcome::Port(model.alloc_unbound_xen(dom, remote, consumer)),
        Op::NotifyViaXen { dom, port } => {
            model.notify_via_xen_channel(dom, port);
            Outcome::Nothing
        }
        Op::RaiseVcpuVirq { dom, vcpu, virq } => {
            model.raise_vcpu_virq(dom, vcpu, virq);
            Outcome::Nothing
        }
        Op::RaiseGlobalVirq { virq } => {
            model.raise_global_virq(virq);
            Outcome::Nothing
        }
        Op::Pause { dom } => Outcome::Unit(model.pause(dom)),
        Op::Unpause { dom } => Outcome::Unit(model.unpause(dom)),
        Op::Destroy { dom } => Outcome::Unit(model.destroy(dom)),
        Op::Create { dom } => Outcome::Unit(model.create(dom)),
        Op::GuestMask { dom, port } => {
            if let Some(page) = model.guest_page(dom) {
                page.mask[(port / 64) as usize] |= 1 << (port % 64);
            }
            Outcome::Nothing
        }
        Op::GuestUnmaskBit { dom, port } => {
            if let Some(page) = model.guest_page(dom) {
                page.mask[(port / 64) as usize] &= !(1 << (port % 64));
            }
            Outcome::Nothing
        }
        Op::GuestSetPending { dom, port } => {
            if let Some(page) = model.guest_page(dom) {
                page.pending[(port / 64) as usize] |= 1 << (port % 64);
            }
            Outcome::Nothing
        }
        Op::GuestClearPending { dom, port } => {
            if let Some(page) = model.guest_page(dom) {
                page.pending[(port / 64) as usize] &= !(1 << (port % 64));
            }
            Outcome::Nothing
        }
        Op::GuestAck { dom, vcpu } => {
            if let Some(page) = model.guest_page(dom) {
                page.upcall_pending[vcpu as usize] = 0;
                page.selector[vcpu as usize] = 0;
            }
            Outcome::Nothing
        }
        Op::GuestUpcallMask { dom, vcpu, masked } => {
            if let Some(page) = model.guest_page(dom) {
                page.upcall_mask[vcpu as usize] = u8::from(masked);
            }
            Outcome::Nothing
        }
    }
}

fn crate_state(state: State) -> ChannelState {
    let consumer = |xen: Option<u8>| xen.map_or(Consumer::Guest, |c| Consumer::Xen(XenConsumer(c)));
    match state {
        State::Free => ChannelState::Free,
        State::Reserved => ChannelState::Reserved,
        State::Unbound { remote, xen } => ChannelState::Unbound {
            remote: DomId(remote),
            consumer: consumer(xen),
        },
        State::Interdomain {
            remote,
            remote_port,
            xen,
        } => ChannelState::Interdomain {
            remote: DomId(remote),
            remote_port: Port(remote_port),
            consumer: consumer(xen),
        },
        State::Pirq(pirq) => ChannelState::Pirq { pirq },
        State::Virq(virq) => ChannelState::Virq {
            virq: Virq::new(virq).unwrap(),
        },
        State::Ipi => ChannelState::Ipi,
    }
}

/// Compare everything observable; `Err` describes the first difference.
pub fn compare(system: &System, model: &mut Model) -> Result<(), String> {
    let ids: Vec<u16> = system.domains.domain_ids().iter().map(|d| d.0).collect();
    let model_ids: Vec<u16> = model.domains.keys().copied().collect();
    if ids != model_ids {
        return Err(format!("domains: crate {ids:?}, model {model_ids:?}"));
    }
    let kicks = std::mem::take(&mut *system.domains.notify().kicks.lock().unwrap());
    let model_kicks = std::mem::take(&mut model.kicks);
    if kicks != model_kicks {
        return Err(format!("kicks: crate {kicks:?}, model {model_kicks:?}"));
    }
    let wakes = std::mem::take(&mut *system.domains.notify().poll_wakes.lock().unwrap());
    let model_wakes = std::mem::take(&mut model.poll_wakes);
    if wakes != model_wakes {
        return Err(format!(
            "poll wakes: crate {wakes:?}, model {model_wakes:?}"
        ));
    }
    let notes = std::mem::take(&mut *system.domains.notify().xen_notifications.lock().unwrap());
    let model_notes = std::mem::take(&mut model.xen_notifications);
    if notes != model_notes {
        return Err(format!(
            "xen notifications: crate {notes:?}, model {model_notes:?}"
        ));
    }
    let host_pirqs: Vec<(u16, u32)> = model.host_pirqs.keys().copied().collect();
    let bound: Vec<(u16, u32)> = system
        .domains
        .pirq_host()
        .bound
        .lock()
        .unwrap()
        .iter()
        .copied()
        .collect();
    if bound != host_pirqs {
        return Err(format!("host pirqs: crate {bound:?}, model {host_pirqs:?}"));
    }
    for (&id, expected) in &model.domains {
        compare_domain(system, id, expected).map_err(|error| format!("d{id}: {error}"))?;
    }
    Ok(())
}

fn compare_domain(system: &System, id: u16, expected: &reference::Domain) -> Result<(), String> {
    let domid = DomId(id);
    let domains = &system.domains;
    let valid = domains.valid_ports(domid).unwrap();
    if valid != expected.valid() {
        return Err(format!(
            "valid ports: crate {valid}, model {}",
            expected.valid()
        ));
    }
    let active = domains.active_channels(domid).unwrap();
    if active != expected.active() {
        return Err(format!(
            "active: crate {active}, model {}",
            expected.active()
        ));
    }
    for (port, channel) in expected.channels.iter().enumerate() {
        let info = domains.channel_info(domid, Port(port as u32)).unwrap();
        let want = (
            crate_state(channel.state),
            channel.notify_vcpu,
            channel.priority,
        );
        if (info.state, info.notify_vcpu.0, info.priority) != want {
            return Err(format!("port {port}: crate {info:?}, model {channel:?}"));
        }
    }
    if domains.channel_info(domid, Port(valid)) != Err(Errno::EINVAL) {
        return Err(format!("port {valid} past the storage is not -EINVAL"));
    }
    let page = system.pages[&id];
    for word in 0..64 {
        let pending = page.evtchn_pending[word].load(Ordering::SeqCst);
        let mask = page.evtchn_mask[word].load(Ordering::SeqCst);
        if (pending, mask) != (expected.pending[word], expected.mask[word]) {
            return Err(format!(
                "word {word}: crate pending {pending:#x} mask {mask:#x}, model pending {:#x} mask {:#x}",
                expected.pending[word], expected.mask[word]
            ));
        }
    }
    for vcpu in 0..reference::LEGACY_VCPUS {
        let info = &page.vcpu_info[vcpu];
        let got = (
            info.evtchn_upcall_pending.load(Ordering::SeqCst),
            info.evtchn_upcall_mask.load(Ordering::SeqCst),
            info.evtchn_pending_sel.load(Ordering::SeqCst),
        );
        let want = (
            expected.upcall_pending[vcpu],
            expected.upcall_mask[vcpu],
            expected.selector[vcpu],
        );
        if got != want {
            return Err(format!(
                "vcpu {vcpu} (upcall_pending, upcall_mask, selector): crate {got:?}, model {want:?}"
            ));
        }
        if vcpu >= expected.config.vcpus as usize {
            continue;
        }
        let is_polling = domains.is_polling(domid, VcpuId(vcpu as u32));
        if is_polling != expected.polling[vcpu].is_some() {
            return Err(format!(
                "vcpu {vcpu}: crate polling {is_polling}, model {:?}",
                expected.polling[vcpu]
            ));
        }
        let deliverable = domains.vcpu_has_deliverable_event(domid, VcpuId(vcpu as u32));
        if deliverable != (want.0 != 0 && want.1 == 0) {
            return Err(format!("vcpu {vcpu}: deliverable is {deliverable}"));
        }
    }
    for (vcpu, table) in expected.virq_table.iter().enumerate() {
        for virq in Virq::all() {
            let got = domains
                .virq_port(domid, VcpuId(vcpu as u32), virq)
                .map_or(0, |port| port.0);
            if got != table[virq.index()] {
                return Err(format!(
                    "vcpu {vcpu} {virq}: crate port {got}, model port {}",
                    table[virq.index()]
                ));
            }
        }
    }
    Ok(())
}
