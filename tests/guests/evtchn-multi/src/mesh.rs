//! Domains 1..=D, two vcpus each, exchanging requests and acknowledgements
//! all-to-all (spec §2.2, §2.3, §2.6, §2.10).
//!
//! Every ordered pair of domains has a channel of its own, so each channel
//! carries one conversation in strict alternation and every count is
//! exact. Setup needs no shared memory: for each pair i < j, domain j
//! allocates two ports for i, in order of i (lowest-free allocation puts
//! them at ports 2(i-1)+1 and 2(i-1)+2), and domain i binds to them. The
//! first of the two carries i's requests, the second j's. Each domain then
//! reads back every channel with EVTCHNOP_status.
//!
//! vcpu 0 drives this domain's requests and blocks for the answers; vcpu 1
//! answers requests from its upcall handler. The first event on every
//! channel comes from its binder (a request, or a "go" on the channel the
//! allocator requests on), so no event can arrive before the receiving
//! end has set the port up: ports 1..63 are masked before any is
//! allocated, and EVTCHNOP_unmask raises whatever came early.

use core::sync::atomic::{AtomicU32, Ordering};

use sluice_guest::evtchn::{self, DomId, Port, stat};
use sluice_guest::{StartInfo, check, check_eq, println, shared_info, smp, upcall};

use crate::common::{self, STEP_LIMIT_NS};

/// Most domains the mesh supports.
const MAX_DOMAINS: usize = 8;
/// Ports this domain can have: two per peer.
const MAX_PORTS: usize = 2 * (MAX_DOMAINS - 1) + 1;

/// Answers sent by vcpu 1's handler, by port.
static ANSWERED: [AtomicU32; MAX_PORTS] = [const { AtomicU32::new(0) }; MAX_PORTS];
/// Events seen on request ports (answers, and the allocator's "go"), by port.
static ARRIVED: [AtomicU32; MAX_PORTS] = [const { AtomicU32::new(0) }; MAX_PORTS];
/// The IPI port vcpu 1 signals vcpu 0 on after each answer, so that
/// vcpu 0, blocked until every count is complete, sees the answer counts
/// move.
static PROGRESS_PORT: AtomicU32 = AtomicU32::new(0);
/// Handler runs on a vcpu other than the one the port notifies.
static WRONG_VCPU: AtomicU32 = AtomicU32::new(0);

/// vcpu 1: a request arrived; answer it on the same channel.
fn on_request(port: u32) {
    if smp::current_vcpu() != 1 {
        WRONG_VCPU.fetch_add(1, Ordering::SeqCst);
    }
    let _ = evtchn::send(port);
    if let Some(count) = ANSWERED.get(port as usize) {
        count.fetch_add(1, Ordering::SeqCst);
    }
    let _ = evtchn::send(PROGRESS_PORT.load(Ordering::SeqCst));
}

/// vcpu 0: an answer (or "go") arrived on one of our request channels.
fn on_answer(port: u32) {
    if smp::current_vcpu() != 0 {
        WRONG_VCPU.fetch_add(1, Ordering::SeqCst);
    }
    if let Some(count) = ARRIVED.get(port as usize) {
        count.fetch_add(1, Ordering::SeqCst);
    }
}

/// One channel as this domain sees it.
#[derive(Clone, Copy, Debug)]
struct Channel {
    port: Port,
    peer: DomId,
    /// This domain requests on it (else it answers).
    is_request: bool,
    /// This domain allocated it (else it bound to it).
    is_allocated: bool,
}

fn load(counter: &[AtomicU32; MAX_PORTS], port: Port) -> u32 {
    counter
        .get(port as usize)
        .map_or(0, |c| c.load(Ordering::SeqCst))
}

pub fn main(start_info: &'static StartInfo) {
    let domains = common::arg_u32(start_info, "domains", 4).min(MAX_DOMAINS as u32) as DomId;
    let rounds = common::arg_u32(start_info, "rounds", 100);
    let Some(me) = common::own_domid(start_info).filter(|&d| (1..=domains).contains(&d)) else {
        check!(false, "the command line names dom=<1..={domains}>");
        return;
    };
    println!("# mesh: d{me} of d1..d{domains}, {rounds} requests to each peer");
    if !check!(sluice_guest::vcpu::exists(1), "the domain has vcpu 1") {
        return;
    }
    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped");
        return;
    };
    common::mask_first_bucket();

    // Ports for every lower domain, two each, in order.
    let mut allocation_errors = 0;
    for lower in 1..me {
        for k in 0..2u32 {
            let expected = 2 * u32::from(lower - 1) + k + 1;
            if evtchn::alloc_unbound(evtchn::DOMID_SELF, lower) != Ok(expected) {
                allocation_errors += 1;
            }
        }
    }
    check_eq!(
        allocation_errors,
        0,
        "d{me} allocates two ports for each lower domain at ports 1..{} in order",
        2 * u32::from(me - 1)
    );
    // Bind to the two ports every higher domain allocated for us.
    let mut bind_errors = 0;
    for higher in me + 1..=domains {
        for k in 0..2u32 {
            if common::bind_when_offered(higher, 2 * u32::from(me - 1) + k + 1).is_err() {
                bind_errors += 1;
            }
        }
    }
    check_eq!(
        bind_errors,
        0,
        "d{me} binds to the two ports each higher domain offers"
    );

    // Read every channel back; wait for the lower domains to bind.
    let count = 2 * u32::from(domains - 1);
    let mut channels = [None; MAX_PORTS];
    let mut status_errors = 0;
    for port in 1..=count {
        let status = common::wait_bound(port);
        let Ok((state, peer, remote_port)) = status else {
            status_errors += 1;
            continue;
        };
        let is_allocated = port <= 2 * u32::from(me - 1);
        // Channel k=0 of a pair carries the lower domain's requests.
        let k = if is_allocated {
            (port - 1) % 2
        } else {
            (remote_port - 1) % 2
        };
        let expected_peer = if is_allocated {
            (port - 1) / 2 + 1
        } else {
            u32::from(me) + 1 + (port - 1 - 2 * u32::from(me - 1)) / 2
        };
        if state != stat::INTERDOMAIN || u32::from(peer) != expected_peer {
            status_errors += 1;
            continue;
        }
        let is_lower = me < peer;
        if let Some(slot) = channels.get_mut(port as usize) {
            *slot = Some(Channel {
                port,
                peer,
                is_request: (k == 0) == is_lower,
                is_allocated,
            });
        }
    }
    check_eq!(
        status_errors,
        0,
        "EVTCHNOP_status shows ports 1..{count} interdomain, each with the peer the scheme predicts"
    );
    let channels = channels.iter().flatten().copied();

    // Requests notify vcpu 0, answers are served by vcpu 1.
    let mut setup_errors = 0;
    for channel in channels.clone() {
        if !channel.is_allocated {
            // The pending bit bind_interdomain set (spec §2.3 step 8); no
            // peer sends before we do on this channel.
            shared.clear_pending(channel.port);
        }
        let (vcpu, handler): (u32, upcall::Handler) = if channel.is_request {
            (0, on_answer)
        } else {
            (1, on_request)
        };
        upcall::set_handler(channel.port, handler);
        if evtchn::bind_vcpu(channel.port, vcpu).is_err() {
            setup_errors += 1;
        }
    }
    // These two ports were masked with the rest of the bucket.
    match evtchn::bind_ipi(0) {
        Ok(port) if evtchn::unmask(port).is_ok() => PROGRESS_PORT.store(port, Ordering::SeqCst),
        _ => setup_errors += 1,
    }
    let timer = common::prepare_blocking();
    if !timer.is_ok_and(|port| evtchn::unmask(port).is_ok()) {
        setup_errors += 1;
    }
    if smp::start(1, |_| {}).is_err() {
        setup_errors += 1;
    }
    for channel in channels.clone() {
        if evtchn::unmask(channel.port).is_err() {
            setup_errors += 1;
        }
    }
    check_eq!(
        setup_errors,
        0,
        "bind_vcpu, the progress IPI, VIRQ_TIMER, vcpu 1 and EVTCHNOP_unmask of every port succeed"
    );
    // The binder speaks first: a request, or "go" where the allocator requests.
    let mut sent = [0u32; MAX_PORTS];
    let mut send_errors = 0;
    for channel in channels.clone().filter(|c| !c.is_allocated) {
        if evtchn::send(channel.port).is_err() {
            send_errors += 1;
        }
        if channel.is_request
            && let Some(slot) = sent.get_mut(channel.port as usize)
        {
            *slot = 1;
        }
    }
    // Events each request channel must see: the answers, plus "go" where
    // this domain allocated it.
    let target = |c: &Channel| rounds + u32::from(c.is_allocated);
    let mut consumed = [0u32; MAX_PORTS];
    let all_done = |consumed: &[u32; MAX_PORTS]| {
        channels.clone().all(|c| {
            if c.is_request {
                consumed.get(c.port as usize).copied() == Some(target(&c))
            } else {
                load(&ANSWERED, c.port) >= rounds
            }
        })
    };
    let mut stalled = false;
    while !all_done(&consumed) {
        let progressed = common::block_until(
            &|| {
                channels.clone().filter(|c| c.is_request).any(|c| {
                    load(&ARRIVED, c.port) > consumed.get(c.port as usize).copied().unwrap_or(0)
                }) || all_done(&consumed)
            },
            common::after(STEP_LIMIT_NS),
        );
        if !progressed {
            stalled = true;
            break;
        }
        for channel in channels.clone().filter(|c| c.is_request) {
            let port = channel.port as usize;
            let (Some(done), Some(sent)) = (consumed.get_mut(port), sent.get_mut(port)) else {
                continue;
            };
            while load(&ARRIVED, channel.port) > *done {
                *done += 1;
                if *sent < rounds {
                    if evtchn::send(channel.port).is_err() {
                        send_errors += 1;
                    }
                    *sent += 1;
                }
            }
        }
    }
    // Let anything extra show before counting.
    common::pause(50_000_000);
    upcall::mask_vcpu();
    check!(!stalled, "d{me}: no wait for an answer or a request stalls");
    check_eq!(send_errors, 0, "d{me}: every send is rc 0");
    let mut wrong_requests = 0;
    let mut wrong_answers = 0;
    for channel in channels.clone() {
        if channel.is_request {
            if load(&ARRIVED, channel.port) != target(&channel)
                || sent.get(channel.port as usize).copied() != Some(rounds)
            {
                println!(
                    "# d{me} port {} to d{}: sent {:?} requests, {} events arrived",
                    channel.port,
                    channel.peer,
                    sent.get(channel.port as usize),
                    load(&ARRIVED, channel.port)
                );
                wrong_requests += 1;
            }
        } else if load(&ANSWERED, channel.port) != rounds
            || upcall::port_events(channel.port) != rounds
        {
            println!(
                "# d{me} port {} from d{}: answered {}",
                channel.port,
                channel.peer,
                load(&ANSWERED, channel.port)
            );
            wrong_answers += 1;
        }
    }
    check_eq!(
        wrong_requests,
        0,
        "d{me}: each of its {} request channels carried exactly {rounds} requests and {rounds} answers",
        domains - 1
    );
    check_eq!(
        wrong_answers,
        0,
        "d{me}: each of its {} answer channels saw exactly {rounds} requests, each answered once",
        domains - 1
    );
    check_eq!(
        WRONG_VCPU.load(Ordering::SeqCst),
        0,
        "d{me}: requests ran on vcpu 1 and answers on vcpu 0, as bind_vcpu said"
    );
}
