//! No lost wake-ups: thousands of sends racing a receiver's SCHEDOP_block
//! on another pCPU (spec §3.3 "mark events pending", §3.4, §7.10 block).
//!
//! The receiver (end a of the channel) clears its flag, answers, spins a
//! random while with upcalls on, then masks upcalls, checks the flag and
//! blocks. The sender waits for each answer with SCHEDOP_poll and then
//! spins a random while before sending again. The two random delays put the
//! send everywhere around the receiver's block: before the check, between
//! the check and the block, during the block. A lost wake-up would leave
//! the receiver asleep: its watchdog timer then ends the wait and the round
//! is reported, instead of a hang.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use sluice_guest::evtchn::{self, Port};
use sluice_guest::{StartInfo, check, check_eq, println, shared_info, smp, upcall};

use crate::common::{self, Prng, STEP_LIMIT_NS};
use crate::pingpong::{self, Role};

/// Set by the handler when a request arrived; cleared by the receiver.
static FLAG: AtomicBool = AtomicBool::new(false);
/// Requests the handler saw.
static REQUESTS: AtomicU32 = AtomicU32::new(0);

fn on_request(_port: u32) {
    REQUESTS.fetch_add(1, Ordering::SeqCst);
    FLAG.store(true, Ordering::SeqCst);
}

/// Spins for a random number of iterations below `bound`.
fn random_delay(prng: &mut Prng, bound: u64) {
    for _ in 0..prng.below(bound) {
        core::hint::spin_loop();
    }
}

pub fn main(start_info: &'static StartInfo) {
    let rounds = common::arg_u32(start_info, "rounds", 3000);
    let spread = u64::from(common::arg_u32(start_info, "spread", 4000));
    if start_info.arg_value("role") == Some("vcpus") {
        return between_vcpus(rounds, spread);
    }
    let Some(peer) = common::peer(start_info) else {
        check!(false, "the command line names peer=<domid>");
        return;
    };
    let role = match start_info.arg_value("role") {
        Some("receiver") => Role::A,
        Some("sender") => Role::B,
        _ => {
            check!(false, "the command line says role=receiver or role=sender");
            return;
        }
    };
    println!(
        "# race: {role:?} (a receives and blocks, b sends), peer d{peer}, {rounds} rounds, delays below {spread} spins"
    );
    let Some(port) = pingpong::connect(role, peer) else {
        return;
    };
    match role {
        Role::A => receive(port, port, rounds, spread),
        Role::B => check_sent(rounds, send(port, port, rounds, spread)),
    }
    pingpong::disconnect(role, port, peer);
}

/// Receives `rounds` requests on `port` with SCHEDOP_block and answers each
/// on `answer`.
fn receive(port: Port, answer: Port, rounds: u32, spread: u64) {
    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped");
        return;
    };
    let timer = common::prepare_blocking();
    check!(
        timer.is_ok(),
        "the receiver binds its watchdog VIRQ_TIMER ({timer:?})"
    );
    let mut prng = Prng::new(0x5eed_0001);
    upcall::set_handler(port, on_request);
    shared.clear_mask(port);
    let mut answered = 0u32;
    let mut lost_at = None;
    let mut found_before_block = 0u32;
    for round in 0..rounds {
        random_delay(&mut prng, spread);
        // The request may already have been handled during the delay.
        upcall::mask_vcpu();
        if FLAG.load(Ordering::SeqCst) {
            found_before_block += 1;
        }
        upcall::unmask_vcpu();
        if !common::block_until(
            &|| FLAG.load(Ordering::SeqCst),
            common::after(STEP_LIMIT_NS),
        ) {
            lost_at = Some(round);
            break;
        }
        FLAG.store(false, Ordering::SeqCst);
        if evtchn::send(answer).is_err() {
            break;
        }
        answered += 1;
    }
    common::pause(20_000_000);
    upcall::mask_vcpu();
    shared.mask(port);
    upcall::clear_handler(port);
    if let Ok(timer) = timer {
        let _ = sluice_guest::vcpu::stop_singleshot_timer(sluice_guest::smp::current_vcpu());
        let _ = evtchn::close(timer);
    }
    check_eq!(
        lost_at,
        None,
        "no wake-up is lost: every block ends with the request that was sent"
    );
    check_eq!(
        (answered, REQUESTS.load(Ordering::SeqCst)),
        (rounds, rounds),
        "the receiver saw exactly {rounds} requests and answered each"
    );
    println!(
        "# race: {found_before_block} of {rounds} requests were handled before the receiver's check, the rest woke SCHEDOP_block"
    );
}

/// What the sender saw: answers received, sends that failed, and whether
/// an answer was still pending at the end (`None`: no shared_info).
type Sent = Option<(u32, u32, bool)>;

/// Sends `rounds` requests on `port`, each after the answer to the last
/// arrived on the masked `answer` port (SCHEDOP_poll); [`check_sent`]
/// judges the outcome.
fn send(port: Port, answer: Port, rounds: u32, spread: u64) -> Sent {
    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped");
        return None;
    };
    shared.mask(answer);
    let mut prng = Prng::new(0x5eed_0002);
    let mut answers = 0u32;
    let mut send_failures = 0u32;
    for _ in 0..rounds {
        random_delay(&mut prng, spread);
        if evtchn::send(port).is_err() {
            send_failures += 1;
        }
        if !common::poll_receive(answer, common::after(STEP_LIMIT_NS)) {
            break;
        }
        answers += 1;
    }
    common::pause(20_000_000);
    Some((answers, send_failures, shared.is_pending(answer)))
}

/// The sender's check on what [`send`] saw.
fn check_sent(rounds: u32, sent: Sent) {
    if let Some(sent) = sent {
        check_eq!(
            sent,
            (rounds, 0, false),
            "the sender sent {rounds} requests and got exactly {rounds} answers, nothing after"
        );
    }
}

/// The receiver's ports when both ends are vcpus of this domain: requests
/// on vcpu 1's IPI port, answers on vcpu 0's.
static VCPU_PORTS: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
static VCPU1_DONE: AtomicBool = AtomicBool::new(false);
/// Set by vcpu 0 once it has printed its "vcpu 1 starts" line, so that the
/// TAP numbers of both vcpus come out in the same order on every run (the
/// Xen oracle compares them by number).
static VCPU1_MAY_CHECK: AtomicBool = AtomicBool::new(false);
static ROUNDS: AtomicU32 = AtomicU32::new(0);
static SPREAD: AtomicU32 = AtomicU32::new(0);

fn vcpu1_receives(_vcpu: u32) {
    let limit = common::after(STEP_LIMIT_NS);
    while !VCPU1_MAY_CHECK.load(Ordering::SeqCst) && common::now() < limit {
        core::hint::spin_loop();
    }
    let [answer, request] = &VCPU_PORTS;
    receive(
        request.load(Ordering::SeqCst),
        answer.load(Ordering::SeqCst),
        ROUNDS.load(Ordering::SeqCst),
        u64::from(SPREAD.load(Ordering::SeqCst)),
    );
    VCPU1_DONE.store(true, Ordering::SeqCst);
}

/// The same race between two vcpus of one domain on two pCPUs, over IPI
/// ports: vcpu 1 receives and blocks, vcpu 0 sends.
fn between_vcpus(rounds: u32, spread: u64) {
    println!("# race: vcpu 1 receives and blocks, vcpu 0 sends, {rounds} rounds over IPIs");
    let ports = (evtchn::bind_ipi(0), evtchn::bind_ipi(1));
    check_eq!(
        ports,
        (Ok(1), Ok(2)),
        "bind_ipi for vcpus 0 and 1 get ports 1 and 2"
    );
    let (Ok(answer), Ok(request)) = ports else {
        return;
    };
    let [answer_slot, request_slot] = &VCPU_PORTS;
    answer_slot.store(answer, Ordering::SeqCst);
    request_slot.store(request, Ordering::SeqCst);
    ROUNDS.store(rounds, Ordering::SeqCst);
    SPREAD.store(spread as u32, Ordering::SeqCst);
    check_eq!(smp::start(1, vcpu1_receives), Ok(()), "vcpu 1 starts");
    VCPU1_MAY_CHECK.store(true, Ordering::SeqCst);
    // vcpu 1 unmasks its request port once its handler is in place; a
    // request sent before then would only wait, pending, so start sending
    // once vcpu 1 has bound its watchdog (port 3).
    let limit = common::after(STEP_LIMIT_NS);
    while evtchn::status(evtchn::DOMID_SELF, 3).map(|s| s.status) != Ok(evtchn::stat::VIRQ)
        && common::now() < limit
    {
        core::hint::spin_loop();
    }
    let sent = send(request, answer, rounds, spread);
    // The sender's check comes after vcpu 1's (printed before it says it
    // is done), so that the TAP numbers are the same on every run.
    check!(
        common::spin_until(
            &|| VCPU1_DONE.load(Ordering::SeqCst),
            common::after(STEP_LIMIT_NS)
        ),
        "vcpu 1 finishes"
    );
    check_sent(rounds, sent);
    let _ = evtchn::close(request);
    let _ = evtchn::close(answer);
}
