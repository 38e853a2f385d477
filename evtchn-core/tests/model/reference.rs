//! The reference model: event channels as the spec (§2, §3.3) describes
//! them, written from the spec alone with plain vectors and maps, no locks,
//! no atomics and no code shared with evtchn-core beyond the id types and
//! `Errno` (whose numbers `tests/abi.rs` pins).
//!
//! Each op checks its arguments in the order the spec gives and only then
//! changes anything. The one place the model follows evtchn-core rather than
//! Xen is the crate's documented difference: a failing op never grows the
//! port table (Xen keeps a bucket grown by an op that then failed).

use std::collections::BTreeMap;

use evtchn_core::Errno;

/// DOMID_SELF / DOMID_FIRST_RESERVED (spec §0).
pub const DOMID_SELF: u16 = 0x7FF0;
/// Ports per storage bucket (spec §1.4).
pub const BUCKET: u32 = 64;
/// 2-level ports of a 64-bit guest (spec §1.4).
pub const TWO_LEVEL_PORTS: u32 = 4096;
/// vcpu_info slots in shared_info.
pub const LEGACY_VCPUS: usize = 32;
/// NR_VIRQS.
pub const NR_VIRQS: u32 = 24;
/// FIFO default priority, set at every bind (also kept under 2-level).
pub const DEFAULT_PRIORITY: u8 = 7;

/// Per-vcpu VIRQs in Xen 4.17 (spec §5): TIMER, DEBUG, XENOPROF, XENPMU.
pub fn virq_is_per_vcpu(virq: u32) -> bool {
    matches!(virq, 0 | 1 | 7 | 13)
}

/// A channel's state as the model keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Free,
    Reserved,
    /// `xen`: the consumer number of a Xen-attached channel.
    Unbound {
        remote: u16,
        xen: Option<u8>,
    },
    Interdomain {
        remote: u16,
        remote_port: u32,
        xen: Option<u8>,
    },
    Pirq(u32),
    Virq(u32),
    Ipi,
}

impl State {
    fn xen(self) -> Option<u8> {
        match self {
            State::Unbound { xen, .. } | State::Interdomain { xen, .. } => xen,
            _ => None,
        }
    }

    fn is_allocated(self) -> bool {
        !matches!(self, State::Free | State::Reserved)
    }

    /// evtchn_usable(): allocated and not Xen-attached.
    fn is_usable(self) -> bool {
        self.is_allocated() && self.xen().is_none()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel {
    pub state: State,
    pub notify_vcpu: u32,
    pub priority: u8,
}

impl Channel {
    fn free() -> Self {
        Channel {
            state: State::Free,
            notify_vcpu: 0,
            priority: DEFAULT_PRIORITY,
        }
    }
}

/// What a domain is created with.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub id: u16,
    pub is_privileged: bool,
    pub vcpus: u32,
    pub max_port: u32,
    pub nr_pirqs: u32,
}

/// One domain: its channels (index = port; length = valid ports) and a
/// plain copy of its shared page.
#[derive(Clone, Debug)]
pub struct Domain {
    pub config: Config,
    pub channels: Vec<Channel>,
    pub pending: [u64; 64],
    pub mask: [u64; 64],
    pub selector: [u64; LEGACY_VCPUS],
    pub upcall_pending: [u8; LEGACY_VCPUS],
    pub upcall_mask: [u8; LEGACY_VCPUS],
    /// virq_to_evtchn per vcpu (0 = none).
    pub virq_table: Vec<[u32; NR_VIRQS as usize]>,
    /// pirq -> port.
    pub pirq_ports: BTreeMap<u32, u32>,
    pub pauses: u32,
    /// Per vcpu: None = not polling, Some(port) = polling that one port,
    /// Some(0) = polling several (SCHEDOP_poll, spec §3.5, §7.10).
    pub polling: Vec<Option<u32>>,
}

fn bit(port: u32) -> (usize, u64) {
    ((port / 64) as usize, 1u64 << (port % 64))
}

impl Domain {
    fn new(config: Config) -> Self {
        let mut channels = vec![Channel::free(); BUCKET as usize];
        channels[0].state = State::Reserved;
        Domain {
            config,
            channels,
            pending: [0; 64],
            mask: [0; 64],
            selector: [0; LEGACY_VCPUS],
            upcall_pending: [0; LEGACY_VCPUS],
            upcall_mask: [0; LEGACY_VCPUS],
            virq_table: vec![[0; NR_VIRQS as usize]; config.vcpus as usize],
            pirq_ports: BTreeMap::new(),
            pauses: 0,
            polling: vec![None; config.vcpus as usize],
        }
    }

    pub fn valid(&self) -> u32 {
        self.channels.len() as u32
    }

    fn channel(&self, port: u32) -> Option<&Channel> {
        self.channels.get(port as usize)
    }

    pub fn active(&self) -> u32 {
        self.channels
            .iter()
            .filter(|channel| channel.state.is_allocated())
            .count() as u32
    }

    pub fn is_pending(&self, port: u32) -> bool {
        let (word, bit) = bit(port);
        self.pending.get(word).is_some_and(|w| w & bit != 0)
    }

    fn is_masked(&self, port: u32) -> bool {
        let (word, bit) = bit(port);
        self.mask.get(word).is_none_or(|w| w & bit != 0)
    }

    fn has_vcpu(&self, vcpu: u32) -> bool {
        vcpu < self.config.vcpus
    }

    /// get_free_port(): the lowest free port up to the limit, and whether it
    /// lies past the storage (a new bucket).
    fn find_free_port(&self) -> Result<u32, Errno> {
        let limit = self.config.max_port.min(TWO_LEVEL_PORTS - 1);
        (1..=limit)
            .find(|&port| port >= self.valid() || self.channels[port as usize].state == State::Free)
            .ok_or(Errno::ENOSPC)
    }

    /// Give the allocated port storage and a fresh channel.
    fn claim(&mut self, port: u32, state: State, notify_vcpu: u32) {
        while port >= self.valid() {
            self.channels
                .extend(std::iter::repeat_n(Channel::free(), BUCKET as usize));
        }
        self.channels[port as usize] = Channel {
            state,
            notify_vcpu,
            priority: DEFAULT_PRIORITY,
        };
    }

    /// evtchn_free(): pending cleared, mask kept, notify vcpu 0.
    fn free(&mut self, port: u32) {
        let (word, bit) = bit(port);
        self.pending[word] &= !bit;
        let channel = &mut self.channels[port as usize];
        channel.state = State::Free;
        channel.notify_vcpu = 0;
    }

    /// evtchn_2l_set_pending() + vcpu_mark_events_pending(); returns the
    /// vcpu to kick.
    fn set_pending(&mut self, port: u32, vcpu: u32) -> Option<u32> {
        let (word, bit) = bit(port);
        let pending = self.pending.get_mut(word)?;
        if *pending & bit != 0 {
            return None;
        }
        *pending |= bit;
        if self.is_masked(port) {
            return None;
        }
        self.raise_selector(port, vcpu)
    }

    fn raise_selector(&mut self, port: u32, vcpu: u32) -> Option<u32> {
        let selector = self.selector.get_mut(vcpu as usize)?;
        let selector_bit = 1u64 << (port / 64);
        if *selector & selector_bit != 0 {
            return None;
        }
        *selector |= selector_bit;
        let upcall = &mut self.upcall_pending[vcpu as usize];
        if *upcall & 1 != 0 {
            return None;
        }
        *upcall |= 1;
        Some(vcpu)
    }

    /// evtchn_2l_unmask() toward the notify vcpu.
    fn unmask_bits(&mut self, port: u32, vcpu: u32) -> Option<u32> {
        let (word, bit) = bit(port);
        let mask = self.mask.get_mut(word)?;
        let was_masked = *mask & bit != 0;
        *mask &= !bit;
        if was_masked && self.is_pending(port) {
            self.raise_selector(port, vcpu)
        } else {
            None
        }
    }
}

/// The whole system: domains by id, plus what the hypervisor was told.
#[derive(Clone, Debug)]
pub struct Model {
    pub domains: BTreeMap<u16, Domain>,
    pub configs: BTreeMap<u16, Config>,
    pub hardware_domain: Option<u16>,
    /// `Notify::kick_vcpu` calls, in order.
    pub kicks: Vec<(u16, u32)>,
    /// `Notify::wake_poller` calls, in order.
    pub poll_wakes: Vec<(u16, u32)>,
    /// `Notify::notify_xen_consumer` calls, in order.
    pub xen_notifications: Vec<(u16, u32, u8)>,
    /// Pirqs the fake host counts as bound.
    pub host_pirqs: BTreeMap<(u16, u32), ()>,
}

/// Pirqs the fake host maps for every domain.
pub fn pirq_is_mapped(pirq: u32) -> bool {
    pirq < 4
}

/// Status as the model answers it: (status, vcpu, union bytes).
pub type StatusReply = (u32, u32, [u8; 8]);

impl Model {
    pub fn new(configs: &[Config]) -> Self {
        let mut model = Model {
            domains: BTreeMap::new(),
            configs: configs.iter().map(|config| (config.id, *config)).collect(),
            hardware_domain: None,
            kicks: Vec::new(),
            poll_wakes: Vec::new(),
            xen_notifications: Vec::new(),
            host_pirqs: BTreeMap::new(),
        };
        for config in configs {
            model.create(config.id).unwrap();
        }
        model
    }

    fn caller(&self, caller: u16) -> Result<u16, Errno> {
        if self.domains.contains_key(&caller) {
            Ok(caller)
        } else {
            Err(Errno::ESRCH)
        }
    }

    /// rcu_lock_domain_by_any_id(): DOMID_SELF or a live real domain.
    fn resolve(&self, caller: u16, dom: u16) -> Result<u16, Errno> {
        if dom == DOMID_SELF {
            return Ok(caller);
        }
        if dom > DOMID_SELF || !self.domains.contains_key(&dom) {
            return Err(Errno::ESRCH);
        }
        Ok(dom)
    }

    /// The TARGET rule of the default XSM policy.
    fn may_target(&self, caller: u16, target: u16) -> Result<(), Errno> {
        if caller == target || self.domains[&caller].config.is_privileged {
            Ok(())
        } else {
            Err(Errno::EPERM)
        }
    }

    fn dom(&mut self, id: u16) -> &mut Domain {
        self.domains.get_mut(&id).unwrap()
    }

    fn set_pending(&mut self, id: u16, port: u32, vcpu: u32) {
        let was_pending = self.domains[&id].is_pending(port);
        if let Some(kick) = self.dom(id).set_pending(port, vcpu) {
            self.kicks.push((id, kick));
        }
        if was_pending || port >= TWO_LEVEL_PORTS {
            return;
        }
        // evtchn_check_pollers(): also for a masked port; a vcpu polling
        // several ports or exactly this one stops polling and is woken.
        let domain = self.dom(id);
        let mut woken = Vec::new();
        for (vcpu, polling) in domain.polling.iter_mut().enumerate() {
            if matches!(*polling, Some(polled) if polled == 0 || polled == port) {
                *polling = None;
                woken.push((id, vcpu as u32));
            }
        }
        self.poll_wakes.extend(woken);
    }

    /// SCHEDOP_poll's event-channel part: `Ok(true)` = return at once,
    /// `Ok(false)` = block. -EINVAL for more than 128 ports or a port that
    /// is invalid, free, reserved or Xen-attached (in order; an earlier
    /// pending port wins); unknown domain -ESRCH, vcpu -ENOENT.
    pub fn poll(&mut self, id: u16, vcpu: u32, ports: &[u32]) -> Result<bool, Errno> {
        if ports.len() > 128 {
            return Err(Errno::EINVAL);
        }
        let domain = self.domains.get_mut(&id).ok_or(Errno::ESRCH)?;
        if !domain.has_vcpu(vcpu) {
            return Err(Errno::ENOENT);
        }
        let slot = vcpu as usize;
        let ready = (|| {
            if domain.upcall_pending[slot] != 0 && domain.upcall_mask[slot] == 0 {
                return Ok(true);
            }
            for &port in ports {
                let channel = domain.channel(port).ok_or(Errno::EINVAL)?;
                if !channel.state.is_usable() {
                    return Err(Errno::EINVAL);
                }
                if domain.is_pending(port) {
                    return Ok(true);
                }
            }
            Ok(false)
        })();
        domain.polling[slot] = match (ready, ports) {
            (Ok(false), [only]) => Some(*only),
            (Ok(false), _) => Some(0),
            _ => None,
        };
        ready
    }

    /// The poll ended (timeout or wake-up): the vcpu stops polling.
    pub fn poll_finish(&mut self, id: u16, vcpu: u32) {
        if let Some(polling) = self
            .domains
            .get_mut(&id)
            .and_then(|domain| domain.polling.get_mut(vcpu as usize))
        {
            *polling = None;
        }
    }

    // ----- hypervisor side -----

    pub fn create(&mut self, id: u16) -> Result<(), Errno> {
        if self.domains.contains_key(&id) {
            return Err(Errno::EEXIST);
        }
        let config = self.configs[&id];
        self.domains.insert(id, Domain::new(config));
        if config.is_privileged && self.hardware_domain.is_none() {
            self.hardware_domain = Some(id);
        }
        Ok(())
    }

    /// evtchn_destroy(): every port closed from the top, Xen-attached ones
    /// too; peers become unbound naming the dead domain.
    pub fn destroy(&mut self, id: u16) -> Result<(), Errno> {
        if !self.domains.contains_key(&id) {
            return Err(Errno::ESRCH);
        }
        for port in (1..self.domains[&id].valid()).rev() {
            let _ = self.close_port(id, port, true);
        }
        if self.hardware_domain == Some(id) {
            self.hardware_domain = None;
        }
        self.domains.remove(&id);
        Ok(())
    }

    pub fn pause(&mut self, id: u16) -> Result<(), Errno> {
        let domain = self.domains.get_mut(&id).ok_or(Errno::ESRCH)?;
        domain.pauses += 1;
        Ok(())
    }

    pub fn unpause(&mut self, id: u16) -> Result<(), Errno> {
        let domain = self.domains.get_mut(&id).ok_or(Errno::ESRCH)?;
        domain.pauses = domain.pauses.checked_sub(1).ok_or(Errno::EINVAL)?;
        Ok(())
    }

    pub fn alloc_unbound_xen(&mut self, id: u16, remote: u16, consumer: u8) -> Result<u32, Errno> {
        let domain = self.domains.get_mut(&id).ok_or(Errno::ESRCH)?;
        let port = domain.find_free_port()?;
        domain.claim(
            port,
            State::Unbound {
                remote,
                xen: Some(consumer),
            },
            0,
        );
        Ok(port)
    }

    pub fn notify_via_xen_channel(&mut self, id: u16, port: u32) {
        let Some(channel) = self.domains.get(&id).and_then(|d| d.channel(port)) else {
            return;
        };
        if let State::Interdomain {
            remote,
            remote_port,
            xen: Some(_),
        } = channel.state
        {
            let vcpu = self.domains[&remote].channels[remote_port as usize].notify_vcpu;
            self.set_pending(remote, remote_port, vcpu);
        }
    }

    /// send_guest_vcpu_virq(): only per-vcpu VIRQs, through that vcpu's table.
    pub fn raise_vcpu_virq(&mut self, id: u16, vcpu: u32, virq: u32) {
        if virq >= NR_VIRQS || !virq_is_per_vcpu(virq) {
            return;
        }
        let Some(domain) = self.domains.get(&id) else {
            return;
        };
        let Some(table) = domain.virq_table.get(vcpu as usize) else {
            return;
        };
        let port = table[virq as usize];
        if port != 0 {
            self.set_pending(id, port, vcpu);
        }
    }

    /// send_guest_global_virq(): the handler (here the hardware domain)
    /// through its vcpu 0 table, toward the channel's notify vcpu.
    pub fn raise_global_virq(&mut self, virq: u32) {
        if virq >= NR_VIRQS || virq_is_per_vcpu(virq) {
            return;
        }
        let Some(id) = self.hardware_domain else {
            return;
        };
        let domain = &self.domains[&id];
        let port = domain.virq_table[0][virq as usize];
        if port != 0 {
            let vcpu = domain.channels[port as usize].notify_vcpu;
            self.set_pending(id, port, vcpu);
        }
    }

    // ----- the guest's ops -----

    pub fn alloc_unbound(&mut self, caller: u16, dom: u16, remote: u16) -> Result<u32, Errno> {
        let caller = self.caller(caller)?;
        let target = self.resolve(caller, dom)?;
        let port = self.domains[&target].find_free_port()?;
        self.may_target(caller, target)?;
        let remote = if remote == DOMID_SELF { caller } else { remote };
        self.dom(target)
            .claim(port, State::Unbound { remote, xen: None }, 0);
        Ok(port)
    }

    pub fn bind_interdomain(
        &mut self,
        caller: u16,
        remote_dom: u16,
        remote_port: u32,
    ) -> Result<u32, Errno> {
        let local = self.caller(caller)?;
        let remote = self.resolve(local, remote_dom)?;
        let local_port = self.domains[&local].find_free_port()?;
        let remote_channel = *self.domains[&remote]
            .channel(remote_port)
            .ok_or(Errno::EINVAL)?;
        let remote_xen = match remote_channel.state {
            State::Unbound {
                remote: expected,
                xen,
            } if expected == local => xen,
            _ => return Err(Errno::EINVAL),
        };
        self.dom(local).claim(
            local_port,
            State::Interdomain {
                remote,
                remote_port,
                xen: None,
            },
            0,
        );
        self.dom(remote).channels[remote_port as usize].state = State::Interdomain {
            remote: local,
            remote_port: local_port,
            xen: remote_xen,
        };
        self.set_pending(local, local_port, 0);
        Ok(local_port)
    }

    pub fn bind_virq(&mut self, caller: u16, virq: u32, vcpu: u32) -> Result<u32, Errno> {
        let id = self.caller(caller)?;
        // Read as a signed int: "negative" values are ≥ 24 as u32 too.
        if virq >= NR_VIRQS {
            return Err(Errno::EINVAL);
        }
        if !virq_is_per_vcpu(virq) && vcpu != 0 {
            return Err(Errno::EINVAL);
        }
        let domain = &self.domains[&id];
        if !domain.has_vcpu(vcpu) {
            return Err(Errno::ENOENT);
        }
        if domain.virq_table[vcpu as usize][virq as usize] != 0 {
            return Err(Errno::EEXIST);
        }
        let port = domain.find_free_port()?;
        let domain = self.dom(id);
        domain.claim(port, State::Virq(virq), vcpu);
        domain.virq_table[vcpu as usize][virq as usize] = port;
        Ok(port)
    }

    pub fn bind_ipi(&mut self, caller: u16, vcpu: u32) -> Result<u32, Errno> {
        let id = self.caller(caller)?;
        if !self.domains[&id].has_vcpu(vcpu) {
            return Err(Errno::ENOENT);
        }
        let port = self.domains[&id].find_free_port()?;
        self.dom(id).claim(port, State::Ipi, vcpu);
        Ok(port)
    }

    pub fn bind_pirq(&mut self, caller: u16, pirq: u32) -> Result<u32, Errno> {
        let id = self.caller(caller)?;
        let domain = &self.domains[&id];
        if pirq >= domain.config.nr_pirqs {
            return Err(Errno::EINVAL);
        }
        if !pirq_is_mapped(pirq) {
            return Err(Errno::EPERM);
        }
        if domain.pirq_ports.contains_key(&pirq) {
            return Err(Errno::EEXIST);
        }
        let port = domain.find_free_port()?;
        self.host_pirqs.insert((id, pirq), ());
        let domain = self.dom(id);
        domain.claim(port, State::Pirq(pirq), 0);
        domain.pirq_ports.insert(pirq, port);
        Ok(port)
    }

    pub fn close(&mut self, caller: u16, port: u32) -> Result<(), Errno> {
        let id = self.caller(caller)?;
        self.close_port(id, port, false)
    }

    /// evtchn_close(); `by_hypervisor` may close Xen-attached channels.
    fn close_port(&mut self, id: u16, port: u32, by_hypervisor: bool) -> Result<(), Errno> {
        let channel = *self.domains[&id].channel(port).ok_or(Errno::EINVAL)?;
        if channel.state.xen().is_some() && !by_hypervisor {
            return Err(Errno::EINVAL);
        }
        match channel.state {
            State::Free | State::Reserved => return Err(Errno::EINVAL),
            State::Unbound { .. } | State::Ipi => {}
            State::Pirq(pirq) => {
                self.host_pirqs.remove(&(id, pirq));
                self.dom(id).pirq_ports.remove(&pirq);
            }
            State::Virq(virq) => {
                let table_vcpu = if virq_is_per_vcpu(virq) {
                    channel.notify_vcpu
                } else {
                    0
                };
                self.dom(id).virq_table[table_vcpu as usize][virq as usize] = 0;
            }
            State::Interdomain {
                remote,
                remote_port,
                ..
            } => {
                let peer = &mut self.dom(remote).channels[remote_port as usize];
                peer.state = State::Unbound {
                    remote: id,
                    xen: peer.state.xen(),
                };
            }
        }
        self.dom(id).free(port);
        Ok(())
    }

    pub fn send(&mut self, caller: u16, port: u32) -> Result<(), Errno> {
        let id = self.caller(caller)?;
        let channel = *self.domains[&id].channel(port).ok_or(Errno::EINVAL)?;
        if channel.state.xen().is_some() {
            return Err(Errno::EINVAL);
        }
        match channel.state {
            State::Free | State::Reserved | State::Pirq(_) | State::Virq(_) => Err(Errno::EINVAL),
            State::Unbound { .. } => Ok(()),
            State::Ipi => {
                self.set_pending(id, port, channel.notify_vcpu);
                Ok(())
            }
            State::Interdomain {
                remote,
                remote_port,
                ..
            } => {
                let peer = self.domains[&remote].channels[remote_port as usize];
                match peer.state.xen() {
                    Some(consumer) => self.xen_notifications.push((remote, remote_port, consumer)),
                    None => self.set_pending(remote, remote_port, peer.notify_vcpu),
                }
                Ok(())
            }
        }
    }

    pub fn status(
        &self,
        caller: u16,
        dom: u16,
        port: u32,
        union_in: [u8; 8],
    ) -> Result<StatusReply, Errno> {
        let caller = self.caller(caller)?;
        let target = self.resolve(caller, dom)?;
        let channel = *self.domains[&target].channel(port).ok_or(Errno::EINVAL)?;
        if channel.state.xen().is_some() {
            return Err(Errno::EACCES);
        }
        self.may_target(caller, target)?;
        let mut union = union_in;
        let status = match channel.state {
            State::Free | State::Reserved => 0,
            State::Unbound { remote, .. } => {
                union[0..2].copy_from_slice(&remote.to_le_bytes());
                1
            }
            State::Interdomain {
                remote,
                remote_port,
                ..
            } => {
                union[0..2].copy_from_slice(&remote.to_le_bytes());
                union[4..8].copy_from_slice(&remote_port.to_le_bytes());
                2
            }
            State::Pirq(pirq) => {
                union[0..4].copy_from_slice(&pirq.to_le_bytes());
                3
            }
            State::Virq(virq) => {
                union[0..4].copy_from_slice(&virq.to_le_bytes());
                4
            }
            State::Ipi => 5,
        };
        Ok((status, channel.notify_vcpu, union))
    }

    pub fn bind_vcpu(&mut self, caller: u16, port: u32, vcpu: u32) -> Result<(), Errno> {
        let id = self.caller(caller)?;
        let domain = self.dom(id);
        if !domain.has_vcpu(vcpu) {
            return Err(Errno::ENOENT);
        }
        let channel = domain
            .channels
            .get_mut(port as usize)
            .ok_or(Errno::EINVAL)?;
        if channel.state.xen().is_some() {
            return Err(Errno::EINVAL);
        }
        match channel.state {
            State::Virq(virq) if virq_is_per_vcpu(virq) => Err(Errno::EINVAL),
            State::Virq(_) | State::Unbound { .. } | State::Interdomain { .. } | State::Pirq(_) => {
                channel.notify_vcpu = vcpu;
                Ok(())
            }
            State::Ipi | State::Free | State::Reserved => Err(Errno::EINVAL),
        }
    }

    pub fn unmask(&mut self, caller: u16, port: u32) -> Result<(), Errno> {
        let id = self.caller(caller)?;
        let channel = *self.domains[&id].channel(port).ok_or(Errno::EINVAL)?;
        if channel.state.is_usable()
            && let Some(kick) = self.dom(id).unmask_bits(port, channel.notify_vcpu)
        {
            self.kicks.push((id, kick));
        }
        Ok(())
    }

    /// EVTCHNOP_reset (never preempted here): close every guest channel.
    pub fn reset(&mut self, caller: u16, dom: u16) -> Result<(), Errno> {
        let caller = self.caller(caller)?;
        let target = self.resolve(caller, dom)?;
        self.may_target(caller, target)?;
        if target != caller && self.domains[&target].pauses == 0 {
            return Err(Errno::EINVAL);
        }
        for port in 1..self.domains[&target].valid() {
            let _ = self.close_port(target, port, false);
        }
        Ok(())
    }

    /// EVTCHNOP_reset_cont with no reset in progress.
    pub fn reset_cont(&mut self, caller: u16, dom: u16) -> Result<(), Errno> {
        let caller = self.caller(caller)?;
        let target = self.resolve(caller, dom)?;
        self.may_target(caller, target)?;
        if target != caller && self.domains[&target].pauses == 0 {
            return Err(Errno::EINVAL);
        }
        Err(Errno::EBUSY)
    }

    /// HYPERVISOR_event_channel_op(cmd, arg) with `arg` the bytes copied
    /// in: decoded by the spec's offsets (§1.2), too few bytes → -EFAULT,
    /// an unknown cmd → -ENOSYS. On success the ops that copy back return
    /// the whole struct as the guest passed it with the OUT fields written
    /// (Xen copies its copy of the struct back, padding included).
    pub fn dispatch(&mut self, caller: u16, cmd: u32, arg: &[u8]) -> Result<Vec<u8>, Errno> {
        let size = match cmd {
            0..=2 => 12,
            3 | 4 | 9 => 4,
            5 => 24,
            6..=8 => 8,
            10 | 14 => 2,
            _ => return Err(Errno::ENOSYS),
        };
        let arg = arg.get(..size).ok_or(Errno::EFAULT)?;
        let u16_at = |offset: usize| u16::from_le_bytes([arg[offset], arg[offset + 1]]);
        let u32_at =
            |offset: usize| u32::from_le_bytes(arg[offset..offset + 4].try_into().unwrap());
        let with_out = |offset: usize, port: u32| {
            let mut reply = arg.to_vec();
            reply[offset..offset + 4].copy_from_slice(&port.to_le_bytes());
            reply
        };
        match cmd {
            0 => self
                .bind_interdomain(caller, u16_at(0), u32_at(4))
                .map(|port| with_out(8, port)),
            1 => self
                .bind_virq(caller, u32_at(0), u32_at(4))
                .map(|port| with_out(8, port)),
            2 => self
                .bind_pirq(caller, u32_at(0))
                .map(|port| with_out(8, port)),
            3 => self.close(caller, u32_at(0)).map(|()| Vec::new()),
            4 => self.send(caller, u32_at(0)).map(|()| Vec::new()),
            5 => {
                let union_in: [u8; 8] = arg[16..24].try_into().unwrap();
                let (status, vcpu, union) = self.status(caller, u16_at(0), u32_at(4), union_in)?;
                let mut reply = arg.to_vec();
                reply[8..12].copy_from_slice(&status.to_le_bytes());
                reply[12..16].copy_from_slice(&vcpu.to_le_bytes());
                reply[16..24].copy_from_slice(&union);
                Ok(reply)
            }
            6 => self
                .alloc_unbound(caller, u16_at(0), u16_at(2))
                .map(|port| with_out(4, port)),
            7 => self
                .bind_ipi(caller, u32_at(0))
                .map(|port| with_out(4, port)),
            8 => self
                .bind_vcpu(caller, u32_at(0), u32_at(4))
                .map(|()| Vec::new()),
            9 => self.unmask(caller, u32_at(0)).map(|()| Vec::new()),
            10 => self.reset(caller, u16_at(0)).map(|()| Vec::new()),
            _ => self.reset_cont(caller, u16_at(0)).map(|()| Vec::new()),
        }
    }

    // ----- the guest writing its own shared page -----

    pub fn guest_page(&mut self, id: u16) -> Option<&mut Domain> {
        self.domains.get_mut(&id)
    }
}
