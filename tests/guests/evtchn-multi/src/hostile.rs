//! A hostile domain cannot stop others (spec §8: XSA-332, XSA-391; "guests
//! are hostile").
//!
//! The victim (d1) plays round trips with its partner (d2) over port 1
//! with SCHEDOP_block, and has allocated port 2 for the hostile domain
//! (d3), which shares its pCPU. The hostile domain binds to it and then, a
//! bounded number of times, sends a burst on it (each one an upcall for the
//! victim) and makes one hypercall with random arguments from a
//! deterministic PRNG: every number 0..=70, numbers past the hypercall page
//! through a raw `syscall`, bad pointers (null, unmapped, non-canonical,
//! Sluice's own range), huge ports and lengths, and argument structs full
//! of random bytes. The victim must still count every round exactly; the
//! hostile domain must get an answer to every call and end; the hypervisor
//! must not panic.
//!
//! Random calls that could only end or wedge the hostile domain itself are
//! steered to a harmless form (listed in `steer`): the test is about what it
//! can do to others.

use core::arch::asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, Ordering};

use sluice_guest::evtchn::{self, DOMID_SELF, DomId};
use sluice_guest::hypercall::{hypercall5, nr};
use sluice_guest::notes::VIRT_BASE;
use sluice_guest::{StartInfo, check, check_eq, println, upcall, version};

use crate::common::{self, Prng, Wait};
use crate::pingpong::{self, Role};

const VICTIM: DomId = 1;
const PARTNER: DomId = 2;
const HOSTILE: DomId = 3;

/// The hypercalls Sluice serves (spec §7.1), drawn half of the time so
/// that most calls get past the number check.
const SERVED: [u64; 10] = [4, 14, 15, 17, 18, 24, 29, 30, 32, 33];

/// Flood events the victim's handler saw.
static FLOOD_EVENTS: AtomicU32 = AtomicU32::new(0);

fn on_flood(_port: u32) {
    FLOOD_EVENTS.fetch_add(1, Ordering::SeqCst);
}

pub fn main(start_info: &'static StartInfo) {
    let rounds = common::arg_u32(start_info, "rounds", 300);
    match start_info.arg_value("role") {
        Some("victim") => victim(rounds),
        Some("partner") => partner(rounds),
        Some("hostile") => hostile(
            common::arg_u32(start_info, "calls", 20000),
            u64::from(common::arg_u32(start_info, "seed", 1)),
        ),
        _ => {
            check!(
                false,
                "the command line says role=victim, partner or hostile"
            );
        }
    }
}

fn victim(rounds: u32) {
    println!(
        "# hostile: victim d{VICTIM} plays {rounds} rounds with d{PARTNER} while d{HOSTILE} attacks"
    );
    let Some(port) = pingpong::connect(Role::A, PARTNER) else {
        return;
    };
    let flood = evtchn::alloc_unbound(DOMID_SELF, HOSTILE);
    check_eq!(
        flood,
        Ok(2),
        "the victim allocates port 2 for the hostile domain"
    );
    if let Ok(flood) = flood {
        upcall::set_handler(flood, on_flood);
    }
    let played = pingpong::play(Role::A, port, Wait::Block, rounds, "under attack: ");
    check!(
        played,
        "the victim finishes every round exactly while flooded"
    );
    check!(
        FLOOD_EVENTS.load(Ordering::SeqCst) > 0,
        "the flood reached the victim as upcalls ({} handled)",
        FLOOD_EVENTS.load(Ordering::SeqCst)
    );
    if let Ok(flood) = flood {
        check_eq!(
            evtchn::close(flood),
            Ok(()),
            "the victim closes the hostile domain's port"
        );
    }
    pingpong::disconnect(Role::A, port, PARTNER);
}

fn partner(rounds: u32) {
    let Some(port) = pingpong::connect(Role::B, VICTIM) else {
        return;
    };
    pingpong::play(Role::B, port, Wait::Block, rounds, "partner: ");
    pingpong::disconnect(Role::B, port, VICTIM);
}

/// Memory the random calls may name: the hypervisor may read or write it.
#[repr(C, align(4096))]
struct Scratch(UnsafeCell<[u8; 8192]>);
// SAFETY: only the hostile domain's vcpu 0 touches it.
unsafe impl Sync for Scratch {}
static SCRATCH: Scratch = Scratch(UnsafeCell::new([0; 8192]));

fn scratch() -> u64 {
    SCRATCH.0.get() as u64
}

fn fill_scratch(prng: &mut Prng) {
    for offset in (0..8192).step_by(8) {
        let value = prng.next();
        // SAFETY: an aligned u64 inside SCRATCH, which only this vcpu uses;
        // the hypervisor writes it only during our own hypercalls.
        unsafe { core::ptr::write_volatile((scratch() + offset) as *mut u64, value) };
    }
}

fn write_scratch_u32(offset: u64, value: u32) {
    // SAFETY: as in `fill_scratch`; callers keep `offset` < 8188.
    unsafe { core::ptr::write_volatile((scratch() + offset) as *mut u32, value) };
}

/// A random argument: mostly interesting values, sometimes any 64 bits.
fn random_argument(prng: &mut Prng) -> u64 {
    match prng.below(12) {
        0 => 0,
        1 => prng.below(16),
        2 => prng.below(4200),
        3 => scratch() + prng.below(4096),
        4 => scratch(),
        5 => 0xffff_8000_0000_0000 + prng.below(1 << 20) * 8,
        6 => 0x8000_0000_0000_0000 | prng.next(),
        7 => u64::MAX - prng.below(16),
        8 => 0x1000 * prng.below(512),
        9 => u64::from(u32::MAX) - prng.below(4),
        10 => 0x7ff0 + prng.below(16),
        _ => prng.next(),
    }
}

/// What a call may do to its own domain, and how the hostile domain avoids
/// it. Returns the (possibly changed) arguments, or `None` to skip.
fn steer(number: u64, mut args: [u64; 5]) -> Option<[u64; 5]> {
    let own_image = VIRT_BASE..u64::MAX;
    let into_scratch = |pointer: u64| (scratch()..scratch() + 8192).contains(&pointer);
    match number {
        // HYPERVISOR_iret pops a frame off our stack: it would jump anywhere.
        23 => return None,
        // update_va_mapping inside our own image would unmap our code.
        14 if own_image.contains(&args[0]) => args[0] ^= 1 << 46,
        // console_io write from our memory would print our memory: the
        // count is kept within the scratch page, which is zeroed (nothing
        // printable).
        18 if args[0] == 0 && into_scratch(args[2]) => {
            args[1] %= 4096;
            args[2] = scratch();
            // SAFETY: zeroing our own scratch page.
            unsafe { core::ptr::write_bytes(SCRATCH.0.get().cast::<u8>(), 0, 8192) };
        }
        // vcpu_op down of our only vcpu would power us off.
        24 if args[0] == 2 => args[0] = 3,
        // sched_op: block with nothing bound would sleep forever; shutdown,
        // remote_shutdown and shutdown_code get an invalid reason; poll
        // gets a deadline 1 ms away.
        // A struct at the very end of scratch cannot be steered: skip.
        29 if into_scratch(args[1]) && args[1] >= scratch() + 8160 => return None,
        29 => match args[0] {
            1 => args[0] = 0,
            2 | 5 if into_scratch(args[1]) && args[1] < scratch() + 8188 => {
                write_scratch_u32(args[1] - scratch(), 0xdead);
            }
            4 if into_scratch(args[1]) && args[1] < scratch() + 8184 => {
                write_scratch_u32(args[1] - scratch() + 4, 0xdead);
            }
            3 if into_scratch(args[1]) && args[1] < scratch() + 8168 => {
                let deadline = common::after(1_000_000);
                write_scratch_u32(args[1] - scratch() + 16, deadline as u32);
                write_scratch_u32(args[1] - scratch() + 20, (deadline >> 32) as u32);
            }
            _ => {}
        },
        _ => {}
    }
    Some(args)
}

/// A raw `syscall` with any number in rax (the page has stubs for 0..128).
fn raw_syscall(number: u64, args: [u64; 5]) -> i64 {
    let result: i64;
    // SAFETY: the hypervisor treats it as a hypercall; its arguments were
    // steered like the others, and a number it does not serve changes no
    // memory. rcx and r11 are clobbered by `syscall`.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") number as i64 => result,
            inlateout("rdi") args[0] => _,
            inlateout("rsi") args[1] => _,
            inlateout("rdx") args[2] => _,
            inlateout("r10") args[3] => _,
            inlateout("r8") args[4] => _,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    result
}

fn hostile(calls: u32, seed: u64) {
    println!(
        "# hostile: d{HOSTILE} floods d{VICTIM} and makes {calls} random hypercalls (seed {seed})"
    );
    let mut flood = common::bind_when_offered(VICTIM, 2);
    check!(
        flood.is_ok(),
        "the hostile domain binds to the port the victim offered ({flood:?})"
    );
    let mut prng = Prng::new(seed);
    let mut sends = 0u64;
    let mut rebinds = 0u32;
    let mut by_result = [0u32; 4]; // ok, ENOSYS, EFAULT, other error
    let mut skipped = 0u32;
    for _ in 0..calls {
        for _ in 0..8 {
            let sent = flood.map(evtchn::send);
            if sent == Ok(Ok(())) {
                sends += 1;
            } else {
                // Our own random calls closed or reset it: bind again.
                flood = evtchn::bind_interdomain(VICTIM, 2);
                rebinds += 1;
            }
        }
        let number = match prng.below(10) {
            0..=4 => SERVED
                .get(prng.below(SERVED.len() as u64) as usize)
                .copied()
                .unwrap_or(0),
            5..=7 => prng.below(71),
            8 => 71 + prng.below(57),
            _ => prng.next(),
        };
        fill_scratch(&mut prng);
        let args = [
            random_argument(&mut prng),
            random_argument(&mut prng),
            random_argument(&mut prng),
            random_argument(&mut prng),
            random_argument(&mut prng),
        ];
        let Some(args) = steer(number, args) else {
            skipped += 1;
            continue;
        };
        let rc = if number < 128 {
            // SAFETY: the arguments point nowhere, at scratch, or at
            // memory the hypervisor must refuse; steering keeps the calls
            // that could rewrite our own image or stack away.
            unsafe { hypercall5(number as u32, args[0], args[1], args[2], args[3], args[4]) }
        } else {
            raw_syscall(number, args)
        };
        // Callbacks may have been re-registered at random addresses: put
        // ours back (our upcalls stay masked anyway).
        if number == u64::from(nr::SET_CALLBACKS) || number == u64::from(nr::CALLBACK_OP) {
            let _ = upcall::register_callbacks();
        }
        let class = match rc {
            0.. => 0,
            -38 => 1,
            -14 => 2,
            _ => 3,
        };
        if let Some(count) = by_result.get_mut(class) {
            *count += 1;
        }
    }
    upcall::mask_vcpu();
    println!(
        "# hostile: {} calls answered: {} succeeded, {} -ENOSYS, {} -EFAULT, {} other errors; {skipped} skipped (iret, unsteerable sched_op); {sends} flood sends, {rebinds} rebinds",
        by_result.iter().sum::<u32>(),
        by_result[0],
        by_result[1],
        by_result[2],
        by_result[3]
    );
    check_eq!(
        by_result.iter().sum::<u32>() + skipped,
        calls,
        "every random hypercall returned to the hostile domain"
    );
    check!(
        sends > 0,
        "the flood sends reached the hypervisor ({sends} returned 0)"
    );
    check_eq!(
        version::version().0,
        4,
        "the hypervisor still answers xen_version after the attack"
    );
}
