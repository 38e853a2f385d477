//! `vcpu-bringup`: what a vcpu sees as it is brought up. `part=` on the
//! module line picks what runs:
//!
//! - `init-race` (at least 4 vcpus, two pCPUs; vcpus 0 and 1 on different
//!   ones): for each vcpu from 2 on, one round: vcpus 0 and 1 meet at a
//!   barrier and call VCPUOP_initialise on that vcpu at once, each with a
//!   context of its own (every general-purpose register, the x87 control
//!   word, MXCSR and xmm0-xmm15 distinct). Vcpu 0 then brings the vcpu up;
//!   its first instructions store every register and FXSAVE the x87/SSE
//!   state. Checked: each round exactly one call returns 0 and the other
//!   -EEXIST (Xen 4.17 serialises VCPUOP_initialise under the domain lock
//!   and refuses an initialised vcpu so), and the vcpu starts with the
//!   successful call's context whole, nothing of the other's. Then:
//!   VCPUOP_initialise of an initialised vcpu gets -EEXIST, and with an
//!   unreadable context -EFAULT (Xen copies the context in before it
//!   looks at the vcpu). How many rounds had the two calls overlap (by
//!   the TSC) is printed, not checked: it tells whether the race was run.
//! - `first-upcall` (4 vcpus): vcpu 0 binds an IPI port to vcpu 2, clears
//!   vcpu 2's `evtchn_upcall_mask` (the domain builder leaves every vcpu's
//!   set) and sends on the port before bringing vcpu 2 up; then the same
//!   for vcpu 3 with its mask left set. Each new vcpu starts at an entry
//!   of this guest that first records that it ran. Checked: vcpu 2's event
//!   callback runs before its first instruction (the bounce frame holds
//!   the entry point, with a saved mask of 0), as Xen enters a PV vcpu
//!   through the same event check as every return to the guest; vcpu 3's
//!   runs only after its first instruction, once it clears its mask.
//!   In between, vcpu 2 takes itself down, vcpu 0 sends it another IPI
//!   while it is down and brings it up again: its callback runs before
//!   the instruction after its VCPUOP_down (the same event check on the
//!   way back in).
//! - `first-upcall-bad-stack` (4 vcpus): as vcpu 2 of `first-upcall`, but
//!   started with its stack pointer on an unmapped address: the upcall's
//!   bounce frame cannot be written, and the hypervisor crashes the
//!   domain (the scenario checks it says so and runs on).
//! - `online` (4 vcpus): VGCF_online in VCPUOP_initialise. Xen 4.17 marks
//!   a vcpu initialised with it up (clears its down flag) and wakes
//!   nothing; VCPUOP_up wakes only a vcpu it brings up. Vcpu 2,
//!   initialised with the flag: VCPUOP_is_up answers 1 at once, yet it
//!   does not run, nor after VCPUOP_up (which answers 0); VCPUOP_down
//!   then VCPUOP_up starts it. Vcpu 3, without the flag: is_up answers 0
//!   and it does not run until VCPUOP_up, which starts it. Vcpu 1, with
//!   the flag: vcpu 0 stopping its periodic timer does not start it
//!   either (Xen 4.17 changes another vcpu's periodic timer under a lock
//!   of its own, with no pause and unpause that would wake it).
#![no_std]
#![no_main]

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};

use sluice_guest::hypercall::{hypercall3, nr};
use sluice_guest::smp::{self, VGCF_I387_VALID, VGCF_IN_KERNEL, VGCF_ONLINE, VcpuGuestContext};
use sluice_guest::{
    Errno, StartInfo, check, check_eq, evtchn, println, sched, shared_info, time, upcall, vcpu,
};

sluice_guest::entry!(main);

/// The first vcpu a round of `init-race` initialises.
const FIRST_TARGET: u32 = 2;
/// Most rounds of `init-race` (vcpus 2..32).
const MAX_ROUNDS: usize = 30;
/// How long any wait of this guest lasts at most (system time, ns).
const WAIT_LIMIT_NS: u64 = 10_000_000_000;
/// FXSAVE image offsets: FCW, MXCSR, MXCSR_MASK, xmm0.
const FX_FCW: usize = 0;
const FX_MXCSR: usize = 24;
const FX_MXCSR_MASK: usize = 28;
const FX_XMM: usize = 160;
/// Bytes of xmm0-xmm15.
const XMM_BYTES: usize = 16 * 16;

/// A 16-byte aligned FXSAVE area the new vcpu stores its state in.
#[repr(C, align(16))]
struct FxArea(UnsafeCell<[u8; 512]>);

// SAFETY: written only by a new vcpu's first instructions (one vcpu at a
// time: each round's), read by vcpu 0 only after that vcpu set
// `REPORTED` (SeqCst) and before the next round's vcpu is brought up.
unsafe impl Sync for FxArea {}

/// The 15 general-purpose registers a new vcpu found, in `cpu_user_regs`
/// order (r15 .. rdi).
#[repr(C, align(16))]
struct Registers(UnsafeCell<[u64; 15]>);

// SAFETY: as for `FxArea`.
unsafe impl Sync for Registers {}

/// A stack for one `init-race` vcpu (it stores its state and takes itself
/// down: little stack needed).
#[repr(C, align(4096))]
struct Stack(UnsafeCell<[u8; 4096]>);

// SAFETY: each stack is used by the one vcpu whose round it belongs to;
// the guest itself only takes its address.
unsafe impl Sync for Stack {}

static REPORT_REGS: Registers = Registers(UnsafeCell::new([0; 15]));
static REPORT_FX: FxArea = FxArea(UnsafeCell::new([0; 512]));
/// Set by a new vcpu once its report is stored.
static REPORTED: AtomicBool = AtomicBool::new(false);
/// The vcpu of the current round (it takes itself down by this id).
static RACE_TARGET: AtomicU32 = AtomicU32::new(0);
static RACE_STACKS: [Stack; MAX_ROUNDS] = [const { Stack(UnsafeCell::new([0; 4096])) }; MAX_ROUNDS];

/// Rounds of `init-race`, set by vcpu 0 before it starts vcpu 1.
static ROUNDS: AtomicU32 = AtomicU32::new(0);
/// The round vcpu 0 opened (round + 1; 0 = none yet).
static GO: AtomicU32 = AtomicU32::new(0);
/// Arrivals at the rounds' barriers (two per round).
static ARRIVED: AtomicU32 = AtomicU32::new(0);
/// Vcpu 1's answer in the round it last finished (round + 1 in
/// `SIDE1_DONE`), and the TSC around its call.
static SIDE1_RC: AtomicI64 = AtomicI64::new(0);
static SIDE1_DONE: AtomicU32 = AtomicU32::new(0);
static SIDE1_TSC: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
/// Set when a wait ran out of time: both sides stop.
static ABORT: AtomicBool = AtomicBool::new(false);

// The `init-race` vcpu's entry: every register and the x87/SSE state go
// to the report before anything changes them; then it takes itself down.
global_asm!(
    r#"
    .pushsection .text.bringup_race, "ax"
    .globl bringup_race_entry
bringup_race_entry:
    mov qword ptr [rip + {regs}], r15
    mov qword ptr [rip + {regs} + 8], r14
    mov qword ptr [rip + {regs} + 16], r13
    mov qword ptr [rip + {regs} + 24], r12
    mov qword ptr [rip + {regs} + 32], rbp
    mov qword ptr [rip + {regs} + 40], rbx
    mov qword ptr [rip + {regs} + 48], r11
    mov qword ptr [rip + {regs} + 56], r10
    mov qword ptr [rip + {regs} + 64], r9
    mov qword ptr [rip + {regs} + 72], r8
    mov qword ptr [rip + {regs} + 80], rax
    mov qword ptr [rip + {regs} + 88], rcx
    mov qword ptr [rip + {regs} + 96], rdx
    mov qword ptr [rip + {regs} + 104], rsi
    mov qword ptr [rip + {regs} + 112], rdi
    fxsave64 [rip + {fx}]
    and rsp, -16
    call {reported}
2:  ud2
    jmp 2b

    .globl bringup_first_a
bringup_first_a:
    mov byte ptr [rip + {first_a}], 1
    jmp sluice_secondary_entry

    .globl bringup_first_b
bringup_first_b:
    mov byte ptr [rip + {first_b}], 1
    jmp sluice_secondary_entry
    .popsection
    "#,
    regs = sym REPORT_REGS,
    fx = sym REPORT_FX,
    reported = sym race_reported,
    first_a = sym FIRST_A,
    first_b = sym FIRST_B,
);

unsafe extern "C" {
    /// The first instruction of an `init-race` vcpu (assembly above).
    fn bringup_race_entry();
    /// The first instruction of `first-upcall`'s vcpu 2.
    fn bringup_first_a();
    /// The first instruction of `first-upcall`'s vcpu 3.
    fn bringup_first_b();
}

fn entry_address(entry: unsafe extern "C" fn()) -> u64 {
    entry as usize as u64
}

/// After the report of an `init-race` vcpu: publish it, then stay down.
extern "C" fn race_reported() -> ! {
    REPORTED.store(true, Ordering::SeqCst);
    let me = RACE_TARGET.load(Ordering::SeqCst);
    loop {
        let _ = vcpu::down(me);
    }
}

fn now() -> u64 {
    time::now_ns().unwrap_or(0)
}

/// Spins until `done` holds or [`WAIT_LIMIT_NS`] passed (then sets
/// [`ABORT`]); `polite` yields the pCPU between looks.
fn wait_until(polite: bool, done: impl Fn() -> bool) -> bool {
    let end = now() + WAIT_LIMIT_NS;
    loop {
        if done() {
            return true;
        }
        if ABORT.load(Ordering::SeqCst) || now() > end {
            ABORT.store(true, Ordering::SeqCst);
            return false;
        }
        if polite {
            let _ = sched::yield_now();
        } else {
            core::hint::spin_loop();
        }
    }
}

/// The x87 control word of `side`'s contexts (side 0: vcpu 0's call,
/// side 1: vcpu 1's): the precision control differs.
fn fcw(side: usize) -> u16 {
    if side == 0 { 0x037f } else { 0x027f }
}

/// The MXCSR of `side`'s contexts: the rounding mode differs.
fn mxcsr(side: usize) -> u32 {
    if side == 0 { 0x1f80 } else { 0x3f80 }
}

/// Register `index` (cpu_user_regs order) of `side`'s context in `round`.
fn register_pattern(side: usize, round: u32, index: usize) -> u64 {
    let tag: u64 = if side == 0 { 0xa } else { 0xb };
    (tag << 60) | (u64::from(round) << 32) | ((index as u64) << 8) | 0x5a
}

/// Byte `index` of xmm0-xmm15 of `side`'s context in `round`.
fn xmm_pattern(side: usize, round: u32, index: usize) -> u8 {
    let tag: u8 = if side == 0 { 0x00 } else { 0x80 };
    tag ^ ((index as u8) & 0x7f) ^ (round as u8).wrapping_mul(3) & 0x7f
}

/// `side`'s context for the vcpu of `round`.
fn race_context(side: usize, round: u32) -> Option<VcpuGuestContext> {
    let mut context = smp::context_for(1)?;
    let stack = RACE_STACKS.get(round as usize)?;
    let top = stack.0.get() as u64 + 4096;
    let regs = &mut context.user_regs;
    let values: [&mut u64; 15] = [
        &mut regs.r15,
        &mut regs.r14,
        &mut regs.r13,
        &mut regs.r12,
        &mut regs.rbp,
        &mut regs.rbx,
        &mut regs.r11,
        &mut regs.r10,
        &mut regs.r9,
        &mut regs.r8,
        &mut regs.rax,
        &mut regs.rcx,
        &mut regs.rdx,
        &mut regs.rsi,
        &mut regs.rdi,
    ];
    for (index, value) in values.into_iter().enumerate() {
        *value = register_pattern(side, round, index);
    }
    regs.rip = entry_address(bringup_race_entry);
    regs.rsp = top;
    context.kernel_sp = top;
    context.flags = VGCF_IN_KERNEL | VGCF_I387_VALID;
    let image = &mut context.fpu_ctxt;
    image[FX_FCW..FX_FCW + 2].copy_from_slice(&fcw(side).to_le_bytes());
    image[FX_MXCSR..FX_MXCSR + 4].copy_from_slice(&mxcsr(side).to_le_bytes());
    image[FX_MXCSR_MASK..FX_MXCSR_MASK + 4].copy_from_slice(&0xffffu32.to_le_bytes());
    for (index, byte) in image[FX_XMM..FX_XMM + XMM_BYTES].iter_mut().enumerate() {
        *byte = xmm_pattern(side, round, index);
    }
    Some(context)
}

/// VCPUOP_initialise of `target` with the context at `address`: the raw
/// answer.
fn initialise_raw(target: u32, address: u64) -> i64 {
    // SAFETY: the hypervisor only reads the 5168 bytes at `address` (a
    // live context, or an address it must refuse).
    unsafe {
        hypercall3(
            nr::VCPU_OP,
            smp::VCPUOP_INITIALISE,
            u64::from(target),
            address,
        )
    }
}

fn initialise_with(target: u32, context: &VcpuGuestContext) -> i64 {
    initialise_raw(target, (context as *const VcpuGuestContext) as u64)
}

/// Vcpu 1's side of `init-race`.
fn racer(_vcpu: u32) {
    let rounds = ROUNDS.load(Ordering::SeqCst);
    for round in 0..rounds {
        let Some(context) = race_context(1, round) else {
            ABORT.store(true, Ordering::SeqCst);
            return;
        };
        if !wait_until(false, || GO.load(Ordering::SeqCst) > round) {
            return;
        }
        ARRIVED.fetch_add(1, Ordering::SeqCst);
        if !wait_until(false, || ARRIVED.load(Ordering::SeqCst) >= 2 * (round + 1)) {
            return;
        }
        let start = time::rdtsc();
        let rc = initialise_with(FIRST_TARGET + round, &context);
        let end = time::rdtsc();
        SIDE1_RC.store(rc, Ordering::SeqCst);
        SIDE1_TSC[0].store(start, Ordering::SeqCst);
        SIDE1_TSC[1].store(end, Ordering::SeqCst);
        SIDE1_DONE.store(round + 1, Ordering::SeqCst);
    }
}

/// Whether the report matches `side`'s context of `round` whole.
fn report_is(side: usize, round: u32) -> bool {
    // SAFETY: the round's vcpu wrote the report before it set `REPORTED`
    // (SeqCst, seen by the caller), and no other vcpu writes it until the
    // next round's vcpu is brought up, after this read.
    let regs = unsafe { &*REPORT_REGS.0.get() };
    // SAFETY: as above.
    let fx = unsafe { &*REPORT_FX.0.get() };
    let regs_match = regs
        .iter()
        .enumerate()
        .all(|(index, &value)| value == register_pattern(side, round, index));
    let found_fcw = u16::from_le_bytes([fx[FX_FCW], fx[FX_FCW + 1]]);
    let found_mxcsr = u32::from_le_bytes([
        fx[FX_MXCSR],
        fx[FX_MXCSR + 1],
        fx[FX_MXCSR + 2],
        fx[FX_MXCSR + 3],
    ]);
    let xmm_match = fx[FX_XMM..FX_XMM + XMM_BYTES]
        .iter()
        .enumerate()
        .all(|(index, &byte)| byte == xmm_pattern(side, round, index));
    regs_match && found_fcw == fcw(side) && found_mxcsr == mxcsr(side) && xmm_match
}

/// `init-race`, on vcpu 0.
fn init_race(vcpus: u32) {
    let rounds = (vcpus - FIRST_TARGET).min(MAX_ROUNDS as u32);
    ROUNDS.store(rounds, Ordering::SeqCst);
    check_eq!(smp::start(1, racer), Ok(()), "vcpu 1 starts");
    let eexist = -Errno::EEXIST.0;
    let (mut answers_wrong, mut contexts_wrong, mut overlaps, mut finished) = (0, 0, 0, 0);
    for round in 0..rounds {
        let target = FIRST_TARGET + round;
        let Some(context) = race_context(0, round) else {
            break;
        };
        REPORTED.store(false, Ordering::SeqCst);
        RACE_TARGET.store(target, Ordering::SeqCst);
        GO.store(round + 1, Ordering::SeqCst);
        ARRIVED.fetch_add(1, Ordering::SeqCst);
        if !wait_until(false, || ARRIVED.load(Ordering::SeqCst) >= 2 * (round + 1)) {
            break;
        }
        let start = time::rdtsc();
        let own = initialise_with(target, &context);
        let end = time::rdtsc();
        if !wait_until(false, || SIDE1_DONE.load(Ordering::SeqCst) > round) {
            break;
        }
        let other = SIDE1_RC.load(Ordering::SeqCst);
        let (other_start, other_end) = (
            SIDE1_TSC[0].load(Ordering::SeqCst),
            SIDE1_TSC[1].load(Ordering::SeqCst),
        );
        if start.max(other_start) < end.min(other_end) {
            overlaps += 1;
        }
        let winner = match (own, other) {
            (0, rc) if rc == eexist => Some(0),
            (rc, 0) if rc == eexist => Some(1),
            _ => {
                answers_wrong += 1;
                println!("# round {round} (vcpu {target}): vcpu 0 got {own}, vcpu 1 got {other}");
                None
            }
        };
        if own != 0 && other != 0 {
            finished += 1;
            continue;
        }
        if vcpu::up(target).is_err() || !wait_until(true, || REPORTED.load(Ordering::SeqCst)) {
            contexts_wrong += 1;
            println!("# round {round} (vcpu {target}): no report from the new vcpu");
            break;
        }
        let whole = match winner {
            Some(side) => report_is(side, round),
            // Both calls succeeded: the vcpu should at least have one
            // context whole.
            None => report_is(0, round) || report_is(1, round),
        };
        if !whole {
            contexts_wrong += 1;
            println!(
                "# round {round} (vcpu {target}): the vcpu started with neither call's context whole (winner {winner:?})"
            );
        }
        finished += 1;
    }
    println!("# {overlaps} of {rounds} rounds had the two VCPUOP_initialise calls overlap (TSC)");
    check_eq!(finished, rounds, "all {rounds} rounds ran");
    check!(
        answers_wrong == 0,
        "{rounds} rounds of vcpus 0 and 1 racing VCPUOP_initialise on a new vcpu: exactly one call succeeds each round, the other gets -EEXIST ({answers_wrong} rounds otherwise)"
    );
    check!(
        contexts_wrong == 0,
        "each new vcpu starts with the successful call's context whole: 15 registers, FCW, MXCSR, xmm0-xmm15 ({contexts_wrong} rounds otherwise)"
    );
    if let Some(context) = race_context(0, 0) {
        check_eq!(
            initialise_with(FIRST_TARGET, &context),
            eexist,
            "VCPUOP_initialise of an initialised vcpu gets -EEXIST"
        );
    }
    check_eq!(
        initialise_raw(FIRST_TARGET, 0xffff_8000_0000_0000),
        -Errno::EFAULT.0,
        "VCPUOP_initialise of an initialised vcpu with an unreadable context gets -EFAULT (the context is read first)"
    );
}

/// `first-upcall`: vcpu 2's and vcpu 3's first instruction ran.
static FIRST_A: AtomicU8 = AtomicU8::new(0);
static FIRST_B: AtomicU8 = AtomicU8::new(0);
/// IPIs handled on vcpu 2 and 3, and what the handler saw.
static HANDLED_A: AtomicU32 = AtomicU32::new(0);
static HANDLED_B: AtomicU32 = AtomicU32::new(0);
static A_BEFORE_FIRST: AtomicBool = AtomicBool::new(false);
static A_RIP: AtomicU64 = AtomicU64::new(0);
static A_SAVED_MASK: AtomicU32 = AtomicU32::new(u32::MAX);
static B_AFTER_FIRST: AtomicBool = AtomicBool::new(false);
/// Handled counts when each new vcpu's entry function began, and that it
/// did.
static A_HANDLED_AT_ENTRY: AtomicU32 = AtomicU32::new(u32::MAX);
static B_HANDLED_AT_ENTRY: AtomicU32 = AtomicU32::new(u32::MAX);
static A_ENTERED: AtomicBool = AtomicBool::new(false);
/// Vcpu 2's IPI port; vcpu 0's word to vcpu 2 to take itself down; what
/// vcpu 2 saw when VCPUOP_down returned (handled count, its answer), and
/// that it got there.
static PORT_A: AtomicU32 = AtomicU32::new(0);
static A_GO_DOWN: AtomicBool = AtomicBool::new(false);
static A_HANDLED_AT_RESUME: AtomicU32 = AtomicU32::new(u32::MAX);
static A_DOWN_OK: AtomicBool = AtomicBool::new(false);
static A_RESUMED: AtomicBool = AtomicBool::new(false);
static B_ENTERED: AtomicBool = AtomicBool::new(false);

fn on_ipi_a(_port: u32) {
    HANDLED_A.fetch_add(1, Ordering::SeqCst);
    A_BEFORE_FIRST.store(FIRST_A.load(Ordering::SeqCst) == 0, Ordering::SeqCst);
    let frame = upcall::last_upcall();
    A_RIP.store(frame.rip, Ordering::SeqCst);
    A_SAVED_MASK.store(u32::from(frame.saved_mask()), Ordering::SeqCst);
}

fn on_ipi_b(_port: u32) {
    HANDLED_B.fetch_add(1, Ordering::SeqCst);
    B_AFTER_FIRST.store(FIRST_B.load(Ordering::SeqCst) != 0, Ordering::SeqCst);
}

fn entry_a(vcpu: u32) {
    A_HANDLED_AT_ENTRY.store(HANDLED_A.load(Ordering::SeqCst), Ordering::SeqCst);
    A_ENTERED.store(true, Ordering::SeqCst);
    if !wait_until(true, || A_GO_DOWN.load(Ordering::SeqCst)) {
        return;
    }
    let taken_down = vcpu::down(vcpu);
    // The first thing after VCPUOP_down returns (once vcpu 0 brought this
    // vcpu up again): how many IPIs were handled by now.
    A_HANDLED_AT_RESUME.store(HANDLED_A.load(Ordering::SeqCst), Ordering::SeqCst);
    A_DOWN_OK.store(taken_down.is_ok(), Ordering::SeqCst);
    A_RESUMED.store(true, Ordering::SeqCst);
}

fn entry_b(_vcpu: u32) {
    B_HANDLED_AT_ENTRY.store(HANDLED_B.load(Ordering::SeqCst), Ordering::SeqCst);
    // The runtime's secondaries unmask themselves when they are ready.
    upcall::unmask_vcpu();
    B_ENTERED.store(true, Ordering::SeqCst);
}

/// Binds an IPI port to `target` with `handler`, unmasks the port, sets
/// `target`'s upcall mask to `mask` and sends on the port; says whether
/// the send left `target` with an upcall pending.
fn send_before_up(target: u32, handler: upcall::Handler, mask: u8) -> bool {
    let Some(info) = shared_info::vcpu_info(target) else {
        return false;
    };
    let Ok(port) = evtchn::bind_ipi(target) else {
        return false;
    };
    if target == 2 {
        PORT_A.store(port, Ordering::SeqCst);
    }
    upcall::set_handler(port, handler);
    if evtchn::unmask(port).is_err() {
        return false;
    }
    info.evtchn_upcall_mask.store(mask, Ordering::SeqCst);
    evtchn::send(port).is_ok() && info.upcall_pending()
}

/// `first-upcall`, on vcpu 0.
fn first_upcall() {
    let masked = |vcpu| shared_info::vcpu_info(vcpu).is_some_and(|info| info.upcall_masked());
    check!(
        masked(2) && masked(3),
        "vcpus 2 and 3 start with evtchn_upcall_mask set"
    );

    check!(
        send_before_up(2, on_ipi_a, 0),
        "an IPI sent to vcpu 2 before it is up, its upcall mask cleared, leaves it an upcall pending"
    );
    let entry = entry_address(bringup_first_a);
    check_eq!(
        smp::start_with(2, entry_a, |context| context.user_regs.rip = entry),
        Ok(()),
        "vcpu 2 is initialised and up"
    );
    check!(
        wait_until(true, || A_ENTERED.load(Ordering::SeqCst)),
        "vcpu 2 runs"
    );
    check!(
        A_BEFORE_FIRST.load(Ordering::SeqCst) && A_HANDLED_AT_ENTRY.load(Ordering::SeqCst) == 1,
        "vcpu 2's event callback runs before its first instruction (the IPI is handled before the entry records that it ran)"
    );
    check_eq!(
        A_RIP.load(Ordering::SeqCst),
        entry,
        "the bounce frame of vcpu 2's first upcall holds its entry point"
    );
    check_eq!(
        A_SAVED_MASK.load(Ordering::SeqCst),
        0,
        "and the upcall mask it had (0)"
    );
    check_eq!(
        HANDLED_A.load(Ordering::SeqCst),
        1,
        "vcpu 2's IPI is handled once"
    );

    // Vcpu 2 takes itself down, an IPI comes while it is down, and vcpu
    // 0 brings it up again: it resumes where its VCPUOP_down returns, and
    // the upcall runs before that.
    A_GO_DOWN.store(true, Ordering::SeqCst);
    check!(
        wait_until(true, || vcpu::is_up(2) == Ok(false)),
        "vcpu 2 takes itself down"
    );
    let pending_while_down = evtchn::send(PORT_A.load(Ordering::SeqCst)).is_ok()
        && shared_info::vcpu_info(2).is_some_and(|info| info.upcall_pending());
    check!(
        pending_while_down,
        "an IPI sent to vcpu 2 while it is down leaves it an upcall pending"
    );
    check_eq!(vcpu::up(2), Ok(()), "vcpu 2 is up again");
    check!(
        wait_until(true, || A_RESUMED.load(Ordering::SeqCst)),
        "vcpu 2 resumes after its VCPUOP_down"
    );
    check!(
        A_DOWN_OK.load(Ordering::SeqCst),
        "vcpu 2's VCPUOP_down answers 0"
    );
    check_eq!(
        A_HANDLED_AT_RESUME.load(Ordering::SeqCst),
        2,
        "vcpu 2's event callback runs before the instruction after its VCPUOP_down, once it is up again"
    );

    check!(
        send_before_up(3, on_ipi_b, 1),
        "an IPI sent to vcpu 3 before it is up, its upcall mask left set, leaves it an upcall pending"
    );
    let entry = entry_address(bringup_first_b);
    check_eq!(
        smp::start_with(3, entry_b, |context| context.user_regs.rip = entry),
        Ok(()),
        "vcpu 3 is initialised and up"
    );
    check!(
        wait_until(true, || B_ENTERED.load(Ordering::SeqCst)
            && HANDLED_B.load(Ordering::SeqCst) > 0),
        "vcpu 3 runs and handles its IPI"
    );
    check_eq!(
        B_HANDLED_AT_ENTRY.load(Ordering::SeqCst),
        0,
        "with its upcall mask set, vcpu 3 starts at its entry point with no upcall before it"
    );
    check!(
        B_AFTER_FIRST.load(Ordering::SeqCst) && HANDLED_B.load(Ordering::SeqCst) == 1,
        "vcpu 3's IPI is handled once, after its first instruction, when it clears its mask"
    );
}

/// `first-upcall-bad-stack`, on vcpu 0: as vcpu 2 of `first-upcall`,
/// but its context's stack pointer is an address with nothing mapped, so
/// the bounce frame of the upcall due at its first entry cannot be
/// written. The hypervisor must crash this domain (as it does for any
/// bounce frame it cannot write) and carry on; the scenario checks that.
fn first_upcall_bad_stack() {
    check!(
        send_before_up(2, on_ipi_a, 0),
        "an IPI sent to vcpu 2 before it is up, its upcall mask cleared, leaves it an upcall pending"
    );
    let entry = entry_address(bringup_first_a);
    check_eq!(
        smp::start_with(2, entry_a, |context| {
            context.user_regs.rip = entry;
            context.user_regs.rsp = UNMAPPED_STACK;
        }),
        Ok(()),
        "vcpu 2 is initialised (its stack pointer at {UNMAPPED_STACK:#x}) and up"
    );
    // The domain crashes now; vcpu 0 is stopped while it waits.
    check!(
        !wait_until(true, || A_ENTERED.load(Ordering::SeqCst)),
        "vcpu 2 never runs"
    );
}

/// Per vcpu: its `online` entry ran.
static RAN: [AtomicBool; 4] = [const { AtomicBool::new(false) }; 4];
/// How long `online` watches a vcpu that must not run (ns).
const NOT_RUN_NS: u64 = 30_000_000;

fn ran(vcpu: u32) -> bool {
    RAN.get(vcpu as usize)
        .is_some_and(|ran| ran.load(Ordering::SeqCst))
}

/// The entry of `online`'s vcpus: records that it ran (then the runtime
/// parks it in SCHEDOP_block).
fn online_entry(vcpu: u32) {
    if let Some(ran) = RAN.get(vcpu as usize) {
        ran.store(true, Ordering::SeqCst);
    }
}

/// Whether `vcpu` stays off for [`NOT_RUN_NS`] (vcpu 0 yields meanwhile,
/// so a woken vcpu would get a pCPU).
fn stays_off(vcpu: u32) -> bool {
    let end = now() + NOT_RUN_NS;
    while now() < end {
        if ran(vcpu) {
            return false;
        }
        let _ = sched::yield_now();
    }
    !ran(vcpu)
}

fn initialise_online(vcpu: u32, online: bool) -> Result<(), Errno> {
    smp::initialise_for(vcpu, online_entry, |context| {
        if online {
            context.flags |= VGCF_ONLINE;
        }
    })
}

/// `online`, on vcpu 0.
fn online() {
    check_eq!(
        initialise_online(2, true),
        Ok(()),
        "VCPUOP_initialise of vcpu 2 with VGCF_online answers 0"
    );
    check_eq!(
        vcpu::is_up(2),
        Ok(true),
        "VCPUOP_is_up answers 1 for vcpu 2 once it is initialised with VGCF_online"
    );
    check!(
        stays_off(2),
        "vcpu 2, initialised with VGCF_online, does not run (nothing woke it)"
    );
    check_eq!(vcpu::up(2), Ok(()), "VCPUOP_up of vcpu 2 answers 0");
    check!(
        stays_off(2) && vcpu::is_up(2) == Ok(true),
        "VCPUOP_up does not start vcpu 2 (up already: it wakes only a vcpu it brings up)"
    );
    check_eq!(
        (vcpu::down(2), vcpu::is_up(2)),
        (Ok(()), Ok(false)),
        "VCPUOP_down of vcpu 2 answers 0, and is_up then 0"
    );
    check_eq!(vcpu::up(2), Ok(()), "VCPUOP_up of vcpu 2 answers 0 again");
    check!(
        wait_until(true, || ran(2)),
        "vcpu 2 runs once taken down and brought up"
    );

    check_eq!(
        initialise_online(3, false),
        Ok(()),
        "VCPUOP_initialise of vcpu 3 without VGCF_online answers 0"
    );
    check_eq!(
        vcpu::is_up(3),
        Ok(false),
        "VCPUOP_is_up answers 0 for vcpu 3 initialised without VGCF_online"
    );
    check!(stays_off(3), "vcpu 3 does not run before VCPUOP_up");
    check_eq!(vcpu::up(3), Ok(()), "VCPUOP_up of vcpu 3 answers 0");
    check!(
        wait_until(true, || ran(3)) && vcpu::is_up(3) == Ok(true),
        "vcpu 3 runs once brought up, and is up"
    );

    check_eq!(
        initialise_online(1, true),
        Ok(()),
        "VCPUOP_initialise of vcpu 1 with VGCF_online answers 0"
    );
    check!(
        stays_off(1) && vcpu::is_up(1) == Ok(true),
        "vcpu 1, initialised with VGCF_online, is up and does not run"
    );
    check_eq!(
        vcpu::stop_periodic_timer(1),
        Ok(()),
        "vcpu 0 stops vcpu 1's periodic timer"
    );
    check!(
        stays_off(1) && vcpu::is_up(1) == Ok(true),
        "vcpu 1 still does not run (a change to its periodic timer wakes nothing)"
    );
}

/// A canonical guest address below the image, with nothing mapped.
const UNMAPPED_STACK: u64 = 0x10_0000;

fn main(start_info: &'static StartInfo) {
    let vcpus = (0..32).take_while(|&vcpu| vcpu::exists(vcpu)).count() as u32;
    check!(
        time::now_ns().is_some(),
        "vcpu 0's time record is published"
    );
    check_eq!(
        upcall::register_callbacks(),
        Ok(()),
        "callback_op registers the event and failsafe callbacks"
    );
    let stopped = (0..vcpus).all(|vcpu| vcpu::stop_periodic_timer(vcpu).is_ok());
    check!(stopped, "every vcpu's periodic timer stops");
    match start_info.arg_value("part") {
        Some("init-race") if vcpus >= 4 => init_race(vcpus),
        Some("first-upcall") if vcpus >= 4 => first_upcall(),
        Some("first-upcall-bad-stack") if vcpus >= 4 => first_upcall_bad_stack(),
        Some("online") if vcpus >= 4 => online(),
        other => {
            check!(
                false,
                "part= names init-race, first-upcall, first-upcall-bad-stack or online, with at least 4 vcpus (got {other:?}, {vcpus} vcpus)"
            );
        }
    }
}
