//! The operations a model-test case is made of, and the proptest strategies
//! that draw them with hostile arguments: port 0, ports past the storage or
//! the ABI, unknown and reserved domain ids, DOMID_SELF, absent vcpus,
//! out-of-range VIRQs, unprivileged callers naming other domains.

use proptest::prelude::*;

use super::reference::{self, Channel, Config, DOMID_SELF, Model, State};

/// Domain ids the cases use; dom0 is privileged.
pub const DOMAIN_IDS: [u16; 3] = [0, 1, 2];

/// One step of a case.
#[derive(Clone, Debug)]
pub enum Op {
    AllocUnbound {
        caller: u16,
        dom: u16,
        remote: u16,
    },
    /// `count` alloc_unbound(SELF, SELF) in a row: fills buckets quickly.
    AllocBurst {
        caller: u16,
        count: u32,
    },
    BindInterdomain {
        caller: u16,
        remote_dom: u16,
        remote_port: u32,
    },
    BindVirq {
        caller: u16,
        virq: u32,
        vcpu: u32,
    },
    BindIpi {
        caller: u16,
        vcpu: u32,
    },
    BindPirq {
        caller: u16,
        pirq: u32,
    },
    Close {
        caller: u16,
        port: u32,
    },
    Send {
        caller: u16,
        port: u32,
    },
    Status {
        caller: u16,
        dom: u16,
        port: u32,
        union_in: [u8; 8],
    },
    BindVcpu {
        caller: u16,
        port: u32,
        vcpu: u32,
    },
    Unmask {
        caller: u16,
        port: u32,
    },
    Reset {
        caller: u16,
        dom: u16,
    },
    ResetCont {
        caller: u16,
        dom: u16,
    },
    // The hypervisor.
    AllocUnboundXen {
        dom: u16,
        remote: u16,
        consumer: u8,
    },
    NotifyViaXen {
        dom: u16,
        port: u32,
    },
    RaiseVcpuVirq {
        dom: u16,
        vcpu: u32,
        virq: u32,
    },
    RaiseGlobalVirq {
        virq: u32,
    },
    Pause {
        dom: u16,
    },
    Unpause {
        dom: u16,
    },
    Destroy {
        dom: u16,
    },
    Create {
        dom: u16,
    },
    // The guest, on its own shared page.
    GuestMask {
        dom: u16,
        port: u32,
    },
    GuestUnmaskBit {
        dom: u16,
        port: u32,
    },
    GuestSetPending {
        dom: u16,
        port: u32,
    },
    GuestClearPending {
        dom: u16,
        port: u32,
    },
    /// Clear upcall_pending, then take (zero) the selector, as a guest's
    /// upcall handler does.
    GuestAck {
        dom: u16,
        vcpu: u32,
    },
    GuestUpcallMask {
        dom: u16,
        vcpu: u32,
        masked: bool,
    },
    // Aimed ops: resolved against the model's state before they run (see
    // [`aim`]), so that the rare successful paths are taken often.
    /// bind_interdomain to some unbound port that names the caller.
    BindToUnbound {
        caller: u16,
        pick: u8,
        use_self: bool,
    },
    /// An op on one of the caller's allocated ports.
    OnLivePort {
        caller: u16,
        pick: u8,
        action: LiveAction,
    },
    /// Re-create a destroyed domain, if there is one.
    Recreate,
    /// Raise an event on one of the domain's allocated ports the way its
    /// kind allows: a send on an IPI port, a send from the peer of an
    /// interdomain port (or Xen's notification for a Xen-attached peer), a
    /// VIRQ raised by the hypervisor.
    SignalLive {
        dom: u16,
        pick: u8,
    },
    /// Poll one or two of the domain's allocated ports, after the guest
    /// acknowledged its upcall and cleared their pending bits (so that the
    /// poll can block). With `masked`, the guest masks them too (SCHEDOP_poll
    /// on masked ports, as Linux polls).
    PollLive {
        dom: u16,
        vcpu: u32,
        pick: u8,
        two: bool,
        masked: bool,
    },
    /// SCHEDOP_poll's event-channel part on a vcpu.
    Poll {
        dom: u16,
        vcpu: u32,
        ports: Vec<u32>,
    },
    /// The poll ends (timeout): the vcpu stops polling.
    PollFinish {
        dom: u16,
        vcpu: u32,
    },
    /// HYPERVISOR_event_channel_op(cmd, arg) through the byte-level
    /// dispatcher, with `arg` the bytes copied in (possibly too few).
    Dispatch {
        caller: u16,
        cmd: u32,
        arg: Vec<u8>,
    },
}

/// What [`Op::OnLivePort`] does to the port it picks.
#[derive(Clone, Copy, Debug)]
pub enum LiveAction {
    Send,
    Close,
    Unmask,
    BindVcpu(u32),
    Status([u8; 8]),
}

/// Turn an aimed op into plain ones, using the model's current state.
pub fn aim(op: &Op, model: &Model) -> Vec<Op> {
    if let Op::PollLive {
        dom, vcpu, masked, ..
    } = *op
    {
        // The guest takes its upcall and handles the ports first, so that
        // the poll can block.
        let poll = aim_one(op, model);
        let mut ops = vec![Op::GuestAck { dom, vcpu }];
        let Op::Poll { ref ports, .. } = poll else {
            return vec![poll];
        };
        for &port in ports {
            ops.push(Op::GuestClearPending { dom, port });
            if masked {
                ops.push(Op::GuestMask { dom, port });
            }
        }
        ops.push(poll);
        return ops;
    }
    vec![aim_one(op, model)]
}

/// Ports an event can reach: IPI, interdomain and VIRQ ports (unbound ones
/// drop every send, and pirqs are not raised here).
fn can_signal(state: State) -> bool {
    matches!(
        state,
        State::Ipi | State::Interdomain { .. } | State::Virq(_)
    )
}

fn aim_one(op: &Op, model: &Model) -> Op {
    match *op {
        Op::BindToUnbound {
            caller,
            pick,
            use_self,
        } => {
            let targets: Vec<(u16, u32)> = model
                .domains
                .iter()
                .flat_map(|(&id, domain)| {
                    domain
                        .channels
                        .iter()
                        .enumerate()
                        .filter(move |(_, channel)| {
                            matches!(channel.state, State::Unbound { remote, .. } if remote == caller)
                        })
                        .map(move |(port, _)| (id, port as u32))
                })
                .collect();
            let (dom, port) = targets
                .get(usize::from(pick) % targets.len().max(1))
                .copied()
                .unwrap_or((caller, 1));
            Op::BindInterdomain {
                caller,
                remote_dom: if dom == caller && use_self {
                    DOMID_SELF
                } else {
                    dom
                },
                remote_port: port,
            }
        }
        Op::OnLivePort {
            caller,
            pick,
            action,
        } => {
            let live: Vec<u32> = model.domains.get(&caller).map_or(Vec::new(), |domain| {
                (1..domain.valid())
                    .filter(|&port| domain.channels[port as usize].state != State::Free)
                    .collect()
            });
            let port = live
                .get(usize::from(pick) % live.len().max(1))
                .copied()
                .unwrap_or(1);
            match action {
                LiveAction::Send => Op::Send { caller, port },
                LiveAction::Close => Op::Close { caller, port },
                LiveAction::Unmask => Op::Unmask { caller, port },
                LiveAction::BindVcpu(vcpu) => Op::BindVcpu { caller, port, vcpu },
                LiveAction::Status(union_in) => Op::Status {
                    caller,
                    dom: DOMID_SELF,
                    port,
                    union_in,
                },
            }
        }
        Op::PollLive {
            dom,
            vcpu,
            pick,
            two,
            ..
        } => {
            let live: Vec<u32> = model.domains.get(&dom).map_or(Vec::new(), |domain| {
                (1..domain.valid())
                    .filter(|&port| can_signal(domain.channels[port as usize].state))
                    .collect()
            });
            let at = |offset: usize| {
                live.get((usize::from(pick) + offset) % live.len().max(1))
                    .copied()
                    .unwrap_or(1)
            };
            if live.is_empty() {
                // Nothing to poll yet: make a port for the next time.
                return Op::BindIpi { caller: dom, vcpu };
            }
            let ports = if two { vec![at(0), at(1)] } else { vec![at(0)] };
            Op::Poll { dom, vcpu, ports }
        }
        Op::SignalLive { dom, pick } => {
            let live: Vec<(u32, Channel)> = model.domains.get(&dom).map_or(Vec::new(), |domain| {
                (1..domain.valid())
                    .map(|port| (port, domain.channels[port as usize]))
                    .filter(|(_, channel)| can_signal(channel.state))
                    .collect()
            });
            // Half the time, a port a vcpu is polling, if there is one.
            let polled = model.domains.get(&dom).and_then(|domain| {
                domain
                    .polling
                    .iter()
                    .flatten()
                    .find_map(|&port| live.iter().find(|(live_port, _)| *live_port == port))
            });
            let chosen = match polled {
                Some(entry) if pick % 2 == 0 => Some(entry),
                _ => live.get(usize::from(pick) % live.len().max(1)),
            };
            let Some(&(port, channel)) = chosen else {
                return Op::BindIpi {
                    caller: dom,
                    vcpu: u32::from(pick % 2),
                };
            };
            match channel.state {
                State::Interdomain {
                    remote,
                    remote_port,
                    ..
                } => {
                    let peer_is_xen = matches!(
                        model.domains[&remote].channels[remote_port as usize].state,
                        State::Interdomain { xen: Some(_), .. }
                    );
                    if peer_is_xen {
                        Op::NotifyViaXen {
                            dom: remote,
                            port: remote_port,
                        }
                    } else {
                        Op::Send {
                            caller: remote,
                            port: remote_port,
                        }
                    }
                }
                State::Virq(virq) if reference::virq_is_per_vcpu(virq) => Op::RaiseVcpuVirq {
                    dom,
                    vcpu: channel.notify_vcpu,
                    virq,
                },
                State::Virq(virq) => Op::RaiseGlobalVirq { virq },
                _ => Op::Send { caller: dom, port },
            }
        }
        Op::Recreate => {
            let dead = DOMAIN_IDS
                .iter()
                .copied()
                .find(|id| !model.domains.contains_key(id));
            Op::Create {
                dom: dead.unwrap_or(0),
            }
        }
        ref plain => plain.clone(),
    }
}

/// A caller: a real domain most of the time (possibly destroyed), now and
/// then an id that never existed.
fn caller() -> impl Strategy<Value = u16> {
    prop_oneof![8 => prop::sample::select(&DOMAIN_IDS[..]), 1 => Just(3u16)]
}

/// A domain argument: real ids, DOMID_SELF, a never-created id, other
/// reserved ids (DOMID_XEN, DOMID_IDLE), anything.
fn domain_argument() -> impl Strategy<Value = u16> {
    prop_oneof![
        6 => prop::sample::select(&DOMAIN_IDS[..]),
        4 => Just(DOMID_SELF),
        1 => Just(3u16),
        1 => prop::sample::select(&[0x7FF1u16, 0x7FF2, 0x7FF4, 0x7FFF, 0xFFFF][..]),
        1 => any::<u16>(),
    ]
}

/// A port argument: mostly small (likely allocated), plus port 0, the
/// bucket edges, the ABI edge and wild values.
fn port() -> impl Strategy<Value = u32> {
    prop_oneof![
        12 => 1u32..8,
        2 => Just(0u32),
        2 => 60u32..70,
        1 => prop::sample::select(&[127u32, 128, 191, 192, 1023, 4095, 4096, 131_072][..]),
        1 => prop::sample::select(&[i32::MAX as u32, u32::MAX][..]),
        1 => any::<u32>(),
    ]
}

/// A port on the guest's own 4096-bit arrays.
fn page_port() -> impl Strategy<Value = u32> {
    prop_oneof![6 => 0u32..8, 2 => 60u32..70, 1 => 0u32..4096]
}

fn vcpu() -> impl Strategy<Value = u32> {
    prop_oneof![
        8 => 0u32..3,
        1 => 3u32..40,
        1 => prop::sample::select(&[u32::MAX, 1 << 31][..]),
    ]
}

fn virq() -> impl Strategy<Value = u32> {
    prop_oneof![
        // A few VIRQs often, so that double binds (-EEXIST) happen.
        6 => prop::sample::select(&[0u32, 1, 2, 3, 7][..]),
        4 => 0u32..24,
        1 => prop::sample::select(&[24u32, 0x7FFF_FFFF, 0x8000_0000, u32::MAX][..]),
    ]
}

fn domain() -> impl Strategy<Value = u16> {
    prop::sample::select(&DOMAIN_IDS[..])
}

/// An op's argument bytes laid out by the spec's table (§1.2), padding and
/// OUT fields holding whatever the guest left there, sometimes cut short.
fn dispatch() -> impl Strategy<Value = Op> {
    let cmd = prop_oneof![
        12 => prop::sample::select(&[0u32, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14][..]),
        1 => prop::sample::select(&[15u32, 16, 99, u32::MAX][..]),
    ];
    let fields = (
        domain_argument(),
        domain_argument(),
        port(),
        vcpu(),
        virq(),
        any::<[u8; 24]>(),
    );
    let cut = prop_oneof![8 => Just(None), 1 => (0usize..24).prop_map(Some)];
    (caller(), cmd, fields, cut).prop_map(
        |(caller, cmd, (dom, other_dom, port, vcpu, virq, junk), cut)| {
            let mut arg = junk.to_vec();
            let mut put = |offset: usize, bytes: &[u8]| {
                arg[offset..offset + bytes.len()].copy_from_slice(bytes);
            };
            let size = match cmd {
                0 => {
                    put(0, &dom.to_le_bytes());
                    put(4, &port.to_le_bytes());
                    12
                }
                1 => {
                    put(0, &virq.to_le_bytes());
                    put(4, &vcpu.to_le_bytes());
                    12
                }
                2 => {
                    put(0, &(port % 10).to_le_bytes());
                    12
                }
                3 | 4 | 9 => {
                    put(0, &port.to_le_bytes());
                    4
                }
                5 => {
                    put(0, &dom.to_le_bytes());
                    put(4, &port.to_le_bytes());
                    24
                }
                6 => {
                    put(0, &dom.to_le_bytes());
                    put(2, &other_dom.to_le_bytes());
                    8
                }
                7 => {
                    put(0, &vcpu.to_le_bytes());
                    8
                }
                8 => {
                    put(0, &port.to_le_bytes());
                    put(4, &vcpu.to_le_bytes());
                    8
                }
                10 | 14 => {
                    put(0, &dom.to_le_bytes());
                    2
                }
                _ => 24,
            };
            arg.truncate(cut.map_or(size, |cut| cut.min(size)));
            Op::Dispatch { caller, cmd, arg }
        },
    )
}

fn live_action() -> impl Strategy<Value = LiveAction> {
    prop_oneof![
        4 => Just(LiveAction::Send),
        2 => Just(LiveAction::Close),
        2 => Just(LiveAction::Unmask),
        2 => vcpu().prop_map(LiveAction::BindVcpu),
        1 => any::<[u8; 8]>().prop_map(LiveAction::Status),
    ]
}

/// One operation, weighted toward the ones that build state.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (caller(), domain_argument(), domain_argument())
            .prop_map(|(caller, dom, remote)| Op::AllocUnbound { caller, dom, remote }),
        1 => (caller(), 1u32..72).prop_map(|(caller, count)| Op::AllocBurst { caller, count }),
        6 => (caller(), domain_argument(), port())
            .prop_map(|(caller, remote_dom, remote_port)| Op::BindInterdomain { caller, remote_dom, remote_port }),
        4 => (caller(), virq(), vcpu()).prop_map(|(caller, virq, vcpu)| Op::BindVirq { caller, virq, vcpu }),
        2 => (caller(), vcpu()).prop_map(|(caller, vcpu)| Op::BindIpi { caller, vcpu }),
        2 => (caller(), prop_oneof![3 => 0u32..2, 2 => 0u32..10])
            .prop_map(|(caller, pirq)| Op::BindPirq { caller, pirq }),
        4 => (caller(), port()).prop_map(|(caller, port)| Op::Close { caller, port }),
        6 => (caller(), port()).prop_map(|(caller, port)| Op::Send { caller, port }),
        3 => (caller(), domain_argument(), port(), any::<[u8; 8]>())
            .prop_map(|(caller, dom, port, union_in)| Op::Status { caller, dom, port, union_in }),
        3 => (caller(), port(), vcpu()).prop_map(|(caller, port, vcpu)| Op::BindVcpu { caller, port, vcpu }),
        3 => (caller(), port()).prop_map(|(caller, port)| Op::Unmask { caller, port }),
        1 => (caller(), domain_argument()).prop_map(|(caller, dom)| Op::Reset { caller, dom }),
        1 => (caller(), domain_argument()).prop_map(|(caller, dom)| Op::ResetCont { caller, dom }),
        1 => (domain(), domain_argument(), 1u8..4)
            .prop_map(|(dom, remote, consumer)| Op::AllocUnboundXen { dom, remote, consumer }),
        1 => (domain(), port()).prop_map(|(dom, port)| Op::NotifyViaXen { dom, port }),
        2 => (domain(), vcpu(), virq()).prop_map(|(dom, vcpu, virq)| Op::RaiseVcpuVirq { dom, vcpu, virq }),
        2 => virq().prop_map(|virq| Op::RaiseGlobalVirq { virq }),
        1 => domain().prop_map(|dom| Op::Pause { dom }),
        1 => domain().prop_map(|dom| Op::Unpause { dom }),
        1 => domain().prop_map(|dom| Op::Destroy { dom }),
        1 => domain().prop_map(|dom| Op::Create { dom }),
        3 => (domain(), page_port()).prop_map(|(dom, port)| Op::GuestMask { dom, port }),
        2 => (domain(), page_port()).prop_map(|(dom, port)| Op::GuestUnmaskBit { dom, port }),
        1 => (domain(), page_port()).prop_map(|(dom, port)| Op::GuestSetPending { dom, port }),
        2 => (domain(), page_port()).prop_map(|(dom, port)| Op::GuestClearPending { dom, port }),
        3 => (domain(), 0u32..3).prop_map(|(dom, vcpu)| Op::GuestAck { dom, vcpu }),
        1 => (domain(), 0u32..3, any::<bool>())
            .prop_map(|(dom, vcpu, masked)| Op::GuestUpcallMask { dom, vcpu, masked }),
        6 => (caller(), any::<u8>(), any::<bool>())
            .prop_map(|(caller, pick, use_self)| Op::BindToUnbound { caller, pick, use_self }),
        12 => (caller(), any::<u8>(), live_action())
            .prop_map(|(caller, pick, action)| Op::OnLivePort { caller, pick, action }),
        2 => Just(Op::Recreate),
        8 => dispatch(),
        3 => (domain(), vcpu(), prop_oneof![
                12 => prop::collection::vec(port(), 0..4),
                1 => prop::collection::vec(1u32..8, 129..130),
            ])
            .prop_map(|(dom, vcpu, ports)| Op::Poll { dom, vcpu, ports }),
        1 => (domain(), 0u32..3).prop_map(|(dom, vcpu)| Op::PollFinish { dom, vcpu }),
        3 => (domain(), 0u32..3, any::<u8>(), any::<bool>(), any::<bool>())
            .prop_map(|(dom, vcpu, pick, two, masked)| Op::PollLive { dom, vcpu, pick, two, masked }),
        6 => (domain(), any::<u8>()).prop_map(|(dom, pick)| Op::SignalLive { dom, pick }),
    ]
}

/// The three domains of a case: dom0 privileged, the others not; vcpu
/// counts and port limits vary so that ENOENT and ENOSPC are reachable.
pub fn configs() -> impl Strategy<Value = Vec<Config>> {
    let one = (1u32..=3, prop::sample::select(&[3u32, 65, 1023][..]));
    (one.clone(), one.clone(), one).prop_map(|(zero, one, two)| {
        [zero, one, two]
            .into_iter()
            .zip(DOMAIN_IDS)
            .map(|((vcpus, max_port), id)| Config {
                id,
                is_privileged: id == 0,
                vcpus,
                max_port,
                nr_pirqs: 8,
            })
            .collect()
    })
}
