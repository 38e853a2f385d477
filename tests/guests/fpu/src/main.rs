//! `fpu`: a vcpu's x87/SSE state is its own. Sluice switches it eagerly
//! (a per-vcpu FXSAVE area), so whatever else runs on the pCPU in between,
//! a guest finds its registers exactly as it left them, and a vcpu starts
//! from the reset state, never from what the previous occupant of the
//! pCPU left.
//!
//! Checked: at entry the state is the reset one (FCW 0x37f, FSW 0, every
//! x87 register empty, MXCSR 0x1f80, xmm0-xmm15 zero); then, `rounds=N`
//! times each, after SCHEDOP_yield and after SCHEDOP_poll with a timeout
//! (the vcpu blocks), with a fresh pattern before each (the x87 control
//! word, eight values on the x87 stack, MXCSR with its rounding, flush and
//! sticky flag bits, xmm0-xmm15; all derived from `seed=` and the round),
//! the whole FXSAVE image (x87, MXCSR, xmm) is the one taken before the
//! call. With `vcpu1`, vcpu 1 is started (VCPUOP_initialise + VCPUOP_up)
//! while vcpu 0's pattern is loaded, its context's `fpu_ctxt` holding that
//! pattern but VGCF_i387_valid clear, and must see the reset state. With
//! `i387` (needs `vcpus=3`), vcpu 2 is started with VGCF_i387_valid and a
//! pattern's image, and must see that image's x87 control, status and tag
//! words, x87 registers, MXCSR and xmm0-xmm15 at its first instruction.
//! With `bad-mxcsr` (needs `vcpus=4`), vcpu 3 gets such an image whose
//! MXCSR also sets bit 16 (reserved): it must start with the x87 and SSE
//! registers reset and the MXCSR's other bits, what Xen 4.17's recovery
//! from the #GP of loading that image leaves (xstate.c: xrstor()). With
//! `moves`, rounds alternating yield and block go on, each checked the
//! same way, until the vcpu has been seen (CPUID's initial APIC ID) on one
//! pCPU, another and the first again, so that on two pCPUs it has moved
//! both ways. The first of several such domains to stop has moved both
//! ways while every other one still competed; the later ones, left two on
//! two pCPUs, may never move again, so the wait ends after 10 s (some
//! thirty times what it takes on an idle host) rather than with a failed
//! check: the scenario checks the hypervisor's log of the moves.
//!
//! Sluice's scenarios pin two domains with different seeds to one pCPU
//! (`cpus=0`), so every yield or block lets the other one run. The guest
//! itself is built soft-float: its Rust code never touches these
//! registers, only the inline assembly here does (through memory).
#![no_std]
#![no_main]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use sluice_guest::{StartInfo, check, check_eq, println, sched, smp, time};

sluice_guest::entry!(main);

/// An FXSAVE image (64-bit layout).
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct FxImage([u8; 512]);

/// Bytes of the image that hold architectural state: the x87 header,
/// MXCSR, the eight x87 registers and xmm0-xmm15 (the rest is reserved
/// or available to software).
const STATE_BYTES: usize = 416;

impl FxImage {
    /// This vcpu's x87/SSE state now.
    fn take() -> Self {
        let mut image = Self([0; 512]);
        // SAFETY: fxsave64 writes exactly 512 bytes at a 16-byte aligned
        // address: the local image.
        unsafe {
            core::arch::asm!(
                "fxsave64 [{0}]",
                in(reg) image.0.as_mut_ptr(),
                options(nostack, preserves_flags),
            );
        }
        image
    }

    /// The reset state as `fxsave64` shows it: FCW 0x37f, MXCSR 0x1f80,
    /// everything else 0 (MXCSR_MASK, not compared, left 0).
    fn reset() -> Self {
        let mut image = Self([0; 512]);
        image.0[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        image.0[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        image
    }

    /// `N` bytes at `offset` (zeros past the end, which no caller reaches).
    fn bytes<const N: usize>(&self, offset: usize) -> [u8; N] {
        let mut bytes = [0u8; N];
        if let Some(source) = self.0.get(offset..offset + N) {
            bytes.copy_from_slice(source);
        }
        bytes
    }

    fn u16_at(&self, offset: usize) -> u16 {
        u16::from_le_bytes(self.bytes(offset))
    }

    fn u32_at(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.bytes(offset))
    }

    fn fcw(&self) -> u16 {
        self.u16_at(0)
    }

    fn fsw(&self) -> u16 {
        self.u16_at(2)
    }

    /// The abridged tag word (a bit per register, 1 = valid).
    fn ftw(&self) -> u8 {
        self.0[4]
    }

    fn mxcsr(&self) -> u32 {
        self.u32_at(24)
    }

    fn xmm(&self, index: usize) -> u128 {
        u128::from_le_bytes(self.bytes(160 + 16 * index))
    }

    /// Whether this is the reset state.
    fn is_reset(&self) -> bool {
        self.fcw() == 0x037f
            && self.fsw() == 0
            && self.ftw() == 0
            && self.mxcsr() == 0x1f80
            && (0..16).all(|index| self.xmm(index) == 0)
    }

    /// The first byte of architectural state where `self` and `other`
    /// differ.
    fn first_difference(&self, other: &Self) -> Option<usize> {
        (0..STATE_BYTES).find(|&index| self.0.get(index) != other.0.get(index))
    }
}

/// One round's pattern.
struct Pattern {
    fcw: u16,
    mxcsr: u32,
    x87: [i64; 8],
    xmm: [u128; 16],
}

impl Pattern {
    fn new(seed: u64, round: u64) -> Self {
        let mix = seed.wrapping_mul(7).wrapping_add(round);
        // Every x87 exception masked (bits 0-5, and bit 6 that reads as
        // 1), then precision control (bits 8-9) and rounding (10-11).
        let fcw = 0x007f | (((mix & 3) as u16) << 8) | ((((mix >> 2) & 3) as u16) << 10);
        // Every SIMD exception masked (bits 7-12), then rounding (13-14),
        // flush-to-zero (15) and a few sticky flags (0-5).
        let mxcsr = 0x1f80
            | (((mix & 3) as u32) << 13)
            | ((((mix >> 2) & 1) as u32) << 15)
            | ((mix as u32) & 0x3f);
        let x87 = core::array::from_fn(|index| {
            (seed as i64) * 1_000_000_000 + (round as i64) * 100 + index as i64
        });
        let xmm = core::array::from_fn(|index| {
            let low = seed
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(round << 8)
                .wrapping_add(index as u64);
            let high = !low ^ (seed << 48);
            (u128::from(high) << 64) | u128::from(low)
        });
        Self {
            fcw,
            mxcsr,
            x87,
            xmm,
        }
    }

    /// Loads it into the registers: fninit, FCW, eight pushes, MXCSR,
    /// xmm0-xmm15.
    fn load(&self) {
        let fcw = self.fcw;
        let mxcsr = self.mxcsr;
        // SAFETY: every operand is a pointer to a live, readable local of
        // the size the instruction reads (2 bytes, 8 bytes each, 4 bytes,
        // 16 bytes each, unaligned loads). The instructions change only
        // x87/SSE registers, which no Rust code of this guest uses. With
        // every exception masked, none of them raises one.
        unsafe {
            core::arch::asm!(
                "fninit",
                "fldcw [{fcw}]",
                "fild qword ptr [{x87}]",
                "fild qword ptr [{x87} + 8]",
                "fild qword ptr [{x87} + 16]",
                "fild qword ptr [{x87} + 24]",
                "fild qword ptr [{x87} + 32]",
                "fild qword ptr [{x87} + 40]",
                "fild qword ptr [{x87} + 48]",
                "fild qword ptr [{x87} + 56]",
                "ldmxcsr [{mxcsr}]",
                "movdqu xmm0, [{xmm}]",
                "movdqu xmm1, [{xmm} + 16]",
                "movdqu xmm2, [{xmm} + 32]",
                "movdqu xmm3, [{xmm} + 48]",
                "movdqu xmm4, [{xmm} + 64]",
                "movdqu xmm5, [{xmm} + 80]",
                "movdqu xmm6, [{xmm} + 96]",
                "movdqu xmm7, [{xmm} + 112]",
                "movdqu xmm8, [{xmm} + 128]",
                "movdqu xmm9, [{xmm} + 144]",
                "movdqu xmm10, [{xmm} + 160]",
                "movdqu xmm11, [{xmm} + 176]",
                "movdqu xmm12, [{xmm} + 192]",
                "movdqu xmm13, [{xmm} + 208]",
                "movdqu xmm14, [{xmm} + 224]",
                "movdqu xmm15, [{xmm} + 240]",
                fcw = in(reg) &raw const fcw,
                x87 = in(reg) self.x87.as_ptr(),
                mxcsr = in(reg) &raw const mxcsr,
                xmm = in(reg) self.xmm.as_ptr(),
                options(nostack, readonly, preserves_flags),
            );
        }
    }

    /// Whether `image` holds this pattern (checked field by field, so a
    /// save that wrote nothing cannot pass as a match).
    fn matches(&self, image: &FxImage) -> bool {
        image.fcw() == self.fcw
            && image.mxcsr() == self.mxcsr
            && image.ftw() == 0xff
            && self
                .xmm
                .iter()
                .enumerate()
                .all(|(index, &value)| image.xmm(index) == value)
    }
}

/// How a round gives up the pCPU.
#[derive(Clone, Copy, Debug)]
enum Switch {
    Yield,
    Block,
}

impl Switch {
    /// Whether the call answered 0.
    fn run(self) -> bool {
        match self {
            Self::Yield => sched::yield_now().is_ok(),
            Self::Block => {
                // No port is named: the vcpu blocks until the timeout,
                // 200 us from now.
                let deadline = time::now_ns().unwrap_or(0) + 200_000;
                sched::poll(&[], deadline).is_ok()
            }
        }
    }
}

/// The initial APIC ID of the pCPU running this vcpu now (CPUID leaf 1,
/// EBX bits 24-31; a PV guest's CPUID is the processor's own).
fn apic_id() -> u8 {
    let leaf = core::arch::x86_64::__cpuid(1);
    (leaf.ebx >> 24) as u8
}

/// The pCPUs this vcpu has been seen on, in order, counting changes.
#[derive(Default)]
struct Moves {
    last: Option<u8>,
    changes: u64,
}

impl Moves {
    fn see(&mut self) {
        let now = apic_id();
        if self.last.is_some_and(|last| last != now) {
            self.changes += 1;
        }
        self.last = Some(now);
    }
}

/// `rounds` rounds of: load a fresh pattern, snapshot, give up the pCPU,
/// compare. Returns how many rounds came back with another state, and
/// how many calls failed.
fn rounds(seed: u64, rounds: u64, switch: Switch, first_round: u64) -> (u64, u64) {
    let mut bad = 0;
    let mut failed = 0;
    for round in first_round..first_round + rounds {
        let (is_same, is_ok) = one_round(seed, round, switch, bad == 0, &mut Moves::default());
        failed += u64::from(!is_ok);
        bad += u64::from(!is_same);
    }
    (bad, failed)
}

/// One round (see [`rounds`]), noting the pCPU before and after the call
/// in `moves`; prints the first difference if `is_first`. Returns whether
/// the state was kept and whether the call answered 0.
fn one_round(
    seed: u64,
    round: u64,
    switch: Switch,
    is_first: bool,
    moves: &mut Moves,
) -> (bool, bool) {
    let pattern = Pattern::new(seed, round);
    pattern.load();
    let before = FxImage::take();
    moves.see();
    let is_ok = switch.run();
    moves.see();
    let after = FxImage::take();
    let is_same = after.first_difference(&before).is_none() && pattern.matches(&after);
    if !is_same && is_first {
        println!(
            "# {switch:?} round {round}: first byte off {:?}; fcw {:#x} want {:#x}, mxcsr {:#x} want {:#x}, ftw {:#x}, xmm0 {:#x} want {:#x}",
            after.first_difference(&before),
            after.fcw(),
            pattern.fcw,
            after.mxcsr(),
            pattern.mxcsr,
            after.ftw(),
            after.xmm(0),
            pattern.xmm[0]
        );
    }
    (is_same, is_ok)
}

/// Most time [`until_moved`] spends waiting for the moves.
const MOVE_LIMIT_NS: u64 = 10_000_000_000;

/// Rounds alternating yield and block, from `first_round` on, until this
/// vcpu has run on one pCPU, another and the first again (two changes: on
/// two pCPUs, a move each way) or [`MOVE_LIMIT_NS`] passed. Returns the
/// rounds done, how many came back with another state, how many calls
/// failed, and the changes seen.
fn until_moved(seed: u64, first_round: u64) -> (u64, u64, u64, u64) {
    let limit = time::now_ns().unwrap_or(0) + MOVE_LIMIT_NS;
    let mut moves = Moves::default();
    let (mut done, mut bad, mut failed) = (0, 0, 0);
    while moves.changes < 2 && time::now_ns().is_some_and(|now| now < limit) {
        let switch = if done % 2 == 0 {
            Switch::Yield
        } else {
            Switch::Block
        };
        let (is_same, is_ok) = one_round(seed, first_round + done, switch, bad == 0, &mut moves);
        failed += u64::from(!is_ok);
        bad += u64::from(!is_same);
        done += 1;
    }
    (done, bad, failed, moves.changes)
}

/// What a started vcpu saw at its first instruction, handed to vcpu 0.
struct Seen {
    image: UnsafeCell<FxImage>,
    /// Set once `image` holds it.
    done: AtomicBool,
}

// SAFETY: each slot's image is written once, by the vcpu it belongs to,
// before that vcpu sets `done` (SeqCst), and read only by vcpu 0 after it
// saw `done` set (SeqCst): never at the same time.
unsafe impl Sync for Seen {}

/// [`Seen`] by vcpu (`i387` uses vcpu 2, `bad-mxcsr` vcpu 3).
static SEEN: [Seen; 4] = [const {
    Seen {
        image: UnsafeCell::new(FxImage([0; 512])),
        done: AtomicBool::new(false),
    }
}; 4];

/// Entry of vcpus 2 and 3: record the state found at the first
/// instruction.
fn record_entry(vcpu: u32) {
    let image = FxImage::take();
    if let Some(seen) = SEEN.get(vcpu as usize) {
        // SAFETY: only this vcpu writes its slot's image, and vcpu 0 reads
        // it only after `done` is set (`Seen`).
        unsafe { *seen.image.get() = image };
        seen.done.store(true, Ordering::SeqCst);
    }
}

/// Starts `vcpu` at [`record_entry`] with `edit` applied to its context,
/// and waits (yielding) until it recorded what it saw.
fn start_and_record(
    vcpu: u32,
    edit: impl FnOnce(&mut smp::VcpuGuestContext),
) -> Result<FxImage, sluice_guest::Errno> {
    let seen = SEEN.get(vcpu as usize).ok_or(sluice_guest::Errno::EINVAL)?;
    smp::start_with(vcpu, record_entry, edit)?;
    let mut waited = 0u32;
    while !seen.done.load(Ordering::SeqCst) && waited < 100_000 {
        let _ = sched::yield_now();
        waited += 1;
    }
    if !seen.done.load(Ordering::SeqCst) {
        return Err(sluice_guest::Errno::EAGAIN);
    }
    // SAFETY: `done` is set: vcpu `vcpu` wrote its image and no longer
    // touches it (`Seen`).
    Ok(unsafe { *seen.image.get() })
}

/// Whether `seen` holds the architectural state of `given`: the x87
/// control, status and abridged tag words, MXCSR, the eight x87
/// registers and xmm0-xmm15 (the last-instruction pointers and opcode are
/// left out: they describe vcpu 0's last x87 instruction).
fn same_registers(seen: &FxImage, given: &FxImage) -> bool {
    seen.0[0..5] == given.0[0..5]
        && seen.mxcsr() == given.mxcsr()
        && seen.0[32..STATE_BYTES] == given.0[32..STATE_BYTES]
}

/// An x87/SSE image to give a vcpu: a fresh pattern, loaded here and
/// saved.
fn image_to_give(seed: u64) -> FxImage {
    Pattern::new(seed, u64::MAX / 3).load();
    FxImage::take()
}

/// The VCPUOP_initialise check of `i387`: vcpu 2 gets an x87/SSE image
/// with VGCF_i387_valid.
fn check_initialise_i387(seed: u64) {
    let given = image_to_give(seed);
    let seen = start_and_record(2, |context| {
        context.fpu_ctxt = given.0;
        context.flags |= smp::VGCF_I387_VALID;
    });
    check!(
        seen.as_ref().is_ok_and(|seen| same_registers(seen, &given)),
        "vcpu 2, started with VGCF_i387_valid, sees the given x87 control word, x87 stack, MXCSR and xmm0-xmm15 (fcw {:#x} want {:#x}, mxcsr {:#x} want {:#x}, xmm0 {:#x} want {:#x})",
        seen.as_ref().map_or(0, FxImage::fcw),
        given.fcw(),
        seen.as_ref().map_or(0, FxImage::mxcsr),
        given.mxcsr(),
        seen.as_ref().map_or(0, |seen| seen.xmm(0)),
        given.xmm(0)
    );
}

/// The VCPUOP_initialise check of `bad-mxcsr`: vcpu 3 gets an image with
/// VGCF_i387_valid whose MXCSR sets bit 16, reserved on every CPU (so
/// fxrstor/xrstor refuse it with #GP).
fn check_initialise_bad_mxcsr(seed: u64) {
    let given = image_to_give(seed);
    let mut bad = given;
    let bad_mxcsr = given.mxcsr() | 1 << 16;
    bad.0[24..28].copy_from_slice(&bad_mxcsr.to_le_bytes());
    let seen = start_and_record(3, |context| {
        context.fpu_ctxt = bad.0;
        context.flags |= smp::VGCF_I387_VALID;
    });
    let mut expected = FxImage::reset();
    expected.0[24..28].copy_from_slice(&given.mxcsr().to_le_bytes());
    check!(
        seen.as_ref()
            .is_ok_and(|seen| same_registers(seen, &expected)),
        "vcpu 3, started with VGCF_i387_valid and a reserved MXCSR bit, starts with x87 and xmm0-xmm15 reset and only the given MXCSR's valid bits (fcw {:#x} ftw {:#x} mxcsr {:#x} want {:#x}, xmm0 {:#x})",
        seen.as_ref().map_or(0, FxImage::fcw),
        seen.as_ref().map_or(0, FxImage::ftw),
        seen.as_ref().map_or(0, FxImage::mxcsr),
        given.mxcsr(),
        seen.as_ref().map_or(0, |seen| seen.xmm(0))
    );
}

/// What vcpu 1 saw at its first instruction: 1 = reset, 2 = other.
static VCPU1_VERDICT: AtomicU32 = AtomicU32::new(0);
/// vcpu 1's FCW and MXCSR at start, for the message.
static VCPU1_FCW: AtomicU32 = AtomicU32::new(0);
static VCPU1_MXCSR: AtomicU32 = AtomicU32::new(0);
static VCPU1_DONE: AtomicBool = AtomicBool::new(false);

fn vcpu1_entry(_vcpu: u32) {
    let image = FxImage::take();
    VCPU1_FCW.store(u32::from(image.fcw()), Ordering::SeqCst);
    VCPU1_MXCSR.store(image.mxcsr(), Ordering::SeqCst);
    VCPU1_VERDICT.store(if image.is_reset() { 1 } else { 2 }, Ordering::SeqCst);
    VCPU1_DONE.store(true, Ordering::SeqCst);
}

fn main(start_info: &'static StartInfo) {
    // First, before anything could touch the registers.
    let initial = FxImage::take();
    let seed: u64 = start_info
        .arg_value("seed")
        .and_then(|value| value.parse().ok())
        .unwrap_or(1);
    let count: u64 = start_info
        .arg_value("rounds")
        .and_then(|value| value.parse().ok())
        .unwrap_or(200);
    check!(
        initial.is_reset(),
        "vcpu 0 starts in the reset state (fcw {:#x} fsw {:#x} ftw {:#x} mxcsr {:#x} xmm0 {:#x} xmm15 {:#x})",
        initial.fcw(),
        initial.fsw(),
        initial.ftw(),
        initial.mxcsr(),
        initial.xmm(0),
        initial.xmm(15)
    );

    let (bad, failed) = rounds(seed, count, Switch::Yield, 0);
    check_eq!(failed, 0, "{count} SCHEDOP_yield calls answer 0");
    check_eq!(
        bad,
        0,
        "x87, MXCSR and xmm0-xmm15 kept across {count} SCHEDOP_yield calls"
    );
    let (bad, failed) = rounds(seed, count, Switch::Block, count);
    check_eq!(
        failed,
        0,
        "{count} SCHEDOP_poll calls with no port and a timeout answer 0"
    );
    check_eq!(
        bad,
        0,
        "x87, MXCSR and xmm0-xmm15 kept across {count} blocking SCHEDOP_poll calls"
    );

    if start_info.has_arg("moves") {
        let (done, bad, failed, changes) = until_moved(seed, 2 * count);
        println!("# {done} more rounds; this vcpu changed pCPU {changes} time(s) in them");
        check_eq!(
            failed,
            0,
            "{done} more SCHEDOP_yield/SCHEDOP_poll calls answer 0"
        );
        check_eq!(
            bad,
            0,
            "x87, MXCSR and xmm0-xmm15 kept across {done} more calls while waiting to move both ways"
        );
    }

    if start_info.has_arg("vcpu1") {
        // vcpu 0's own pattern is live while vcpu 1 starts.
        let pattern = Pattern::new(seed, u64::MAX / 2);
        pattern.load();
        let before = FxImage::take();
        // Its context carries vcpu 0's image without VGCF_i387_valid:
        // the flag, not the field, decides.
        check_eq!(
            smp::start_with(1, vcpu1_entry, |context| context.fpu_ctxt = before.0),
            Ok(()),
            "VCPUOP_initialise + VCPUOP_up start vcpu 1"
        );
        let mut waited = 0u32;
        while !VCPU1_DONE.load(Ordering::SeqCst) && waited < 100_000 {
            let _ = sched::yield_now();
            waited += 1;
        }
        check_eq!(
            VCPU1_VERDICT.load(Ordering::SeqCst),
            1,
            "vcpu 1 starts in the reset state, not vcpu 0's nor the image in its context without VGCF_i387_valid (fcw {:#x} mxcsr {:#x})",
            VCPU1_FCW.load(Ordering::SeqCst),
            VCPU1_MXCSR.load(Ordering::SeqCst)
        );
        let after = FxImage::take();
        check!(
            after.first_difference(&before).is_none() && pattern.matches(&after),
            "vcpu 0's state is its own after vcpu 1 started"
        );
    }
    if start_info.has_arg("i387") {
        check_initialise_i387(seed);
    }
    if start_info.has_arg("bad-mxcsr") {
        check_initialise_bad_mxcsr(seed);
    }
    println!("# seed {seed}: {count} rounds of each");
}
