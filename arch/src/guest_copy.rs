//! Copying to and from guest memory: the one place the hypervisor touches
//! guest addresses.
//!
//! A guest address must be canonical and outside the hypervisor's range
//! (Xen's reserved PML4 slots), and the copy stops at the first page that
//! is mapped but not user-accessible; the copy runs with SMAP opened (`stac` ...
//! `clac`) where the CPU has SMAP, and a fault during it is recovered
//! through an exception-table entry: the fault handler resumes at a fixup
//! that closes SMAP again and reports how much was left, so a bad guest
//! pointer becomes `Err(CopyError::Fault)`, never a hypervisor fault.
//!
//! The stop at supervisor pages needs a page-table walk. While this CPU
//! runs on page tables the hypervisor vouched for with [`trust_user_only`]
//! (a guest's, whose guest range maps nothing else), the walk is skipped:
//! every mapped page there is the guest's own.
//!
//! Besides the byte copies there are three shapes the hot paths use:
//! [`read_u32_from_guest`] (the port that send, unmask and close pass: one
//! guarded load where the tables are vouched for),
//! [`read_words_from_guest`] (a frame read whole, as HYPERVISOR_iret's,
//! without filling a buffer first) and [`write_words_to_guest`] (a frame
//! written whole); the last two are one inline `rep movsq` where the
//! tables are vouched for. Two frames have their own guarded loads and
//! stores: HYPERVISOR_iret's ([`read_nine_words_from_guest`]) and the
//! event bounce frame ([`write_bounce_frame_to_guest`]). All give the
//! byte copy's answers.
//!
//! The exception table is the `.sluice_extable` section (pairs of faulting
//! instruction and continuation addresses) that `linker.ld` gathers between
//! `__extable_start` and `__extable_end`.

use core::sync::atomic::{AtomicU8, Ordering};

use crate::idt::InterruptFrame;
use crate::layout::{HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START};

/// Why a guest copy failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyError {
    /// The range is not canonical, wraps, or touches the hypervisor's range.
    NotGuestAddress,
    /// A page of the range is not mapped (or not accessible) for the guest;
    /// `copied` bytes were copied before it.
    Fault {
        /// Bytes copied before the fault.
        copied: usize,
    },
}

/// 1 once SMAP is on: the copy routine and interrupt entry then use
/// `stac`/`clac` (which are invalid opcodes on CPUs without SMAP).
#[unsafe(no_mangle)]
static SLUICE_SMAP_ENABLED: AtomicU8 = AtomicU8::new(0);

// SMAP_FLAGS_NOTE: the inline guarded accesses below test
// SLUICE_SMAP_ENABLED once, before their `stac`, and close SMAP again on
// the ZF of that test: nothing in between writes the flags (`stac` writes
// AC only; `mov`, `rep movsq` and the fixups' `mov` and `jmp` none), and a
// fault or interrupt taken in between returns with the flags it
// interrupted (`iretq`; a fixup only moves rip).

/// Records that CR4.SMAP is on (from `cpu::enable_protections`).
pub(crate) fn note_smap_enabled() {
    // Relaxed: every CPU sets CR4.SMAP itself before it runs the copy
    // routine; the flag only tells the routine that `stac` exists.
    SLUICE_SMAP_ENABLED.store(1, Ordering::Relaxed);
}

core::arch::global_asm!(
    r#"
    .section .text.sluice_guest_copy, "ax"
    .code64
    // rdi = destination, rsi = source, rdx = length.
    // Returns in rax the number of bytes not copied (0 on success).
    // Whole quadwords first, then the tail bytes; a fault among the
    // quadwords goes on byte by byte from the faulting one, so the count
    // stays exact to the byte.
    .global sluice_guest_copy
sluice_guest_copy:
    mov %rdx, %rcx
    shr $3, %rcx
    and $7, %edx
    testb $1, SLUICE_SMAP_ENABLED(%rip)
    jz 1f
    stac
1:
sluice_guest_copy_quads:
    rep movsq
    mov %rdx, %rcx
sluice_guest_copy_move:
    rep movsb
    testb $1, SLUICE_SMAP_ENABLED(%rip)
    jz 2f
    clac
2:
    mov %rcx, %rax
    ret
sluice_guest_copy_quads_fixup:
    // rcx quadwords (the faulting one included) and rdx bytes are left;
    // rsi and rdi point at the faulting quadword; AC is still set.
    lea (%rdx,%rcx,8), %rcx
    jmp sluice_guest_copy_move
sluice_guest_copy_fixup:
    testb $1, SLUICE_SMAP_ENABLED(%rip)
    jz 3f
    clac
3:
    mov %rcx, %rax
    ret

    .section .sluice_extable, "a"
    .balign 8
    .quad sluice_guest_copy_quads, sluice_guest_copy_quads_fixup
    .quad sluice_guest_copy_move, sluice_guest_copy_fixup
    .text
"#,
    options(att_syntax)
);

unsafe extern "C" {
    fn sluice_guest_copy(destination: *mut u8, source: *const u8, length: usize) -> usize;
    static __extable_start: u64;
    static __extable_end: u64;
}

/// Where to resume after a fault at `rip` in ring 0, if `rip` is a
/// guarded guest access.
pub fn fixup_for(rip: u64) -> Option<u64> {
    let start = (&raw const __extable_start) as u64;
    let end = (&raw const __extable_end) as u64;
    let mut entry = start;
    while entry + 16 <= end {
        // SAFETY: the table lies in the image's read-only data between the
        // two linker symbols, as 8-aligned pairs of u64 (`.quad`).
        let fault = unsafe { core::ptr::read(entry as *const u64) };
        // SAFETY: as above, the second word of the pair.
        let fixup = unsafe { core::ptr::read((entry + 8) as *const u64) };
        if fault == rip {
            return Some(fixup);
        }
        entry += 16;
    }
    None
}

/// Whether `[address, address + length)` is a guest range: canonical, not
/// wrapping, and disjoint from the hypervisor's range.
#[inline]
pub fn is_guest_range(address: u64, length: usize) -> bool {
    // The hypervisor's range opens the upper canonical half, so a guest
    // range ends below the lower half's end or starts at or above the
    // hypervisor's end (and then, not wrapping, stays canonical).
    const LOWER_HALF_END: u64 = 0x0000_8000_0000_0000;
    const _: () = assert!(HYPERVISOR_VIRT_START == 0xffff_8000_0000_0000);
    let Some(end) = address.checked_add(length as u64) else {
        return false;
    };
    let last = if length == 0 { address } else { end - 1 };
    last < LOWER_HALF_END || address >= HYPERVISOR_VIRT_END
}

/// Vouches that the page tables at physical `root` map, in the guest range
/// (outside the hypervisor's slots), only pages the guest may access,
/// user-accessible at every level: guest copies on this CPU then skip the
/// page-table walk while CR3 holds `root`. Replaces any earlier vouch of
/// this CPU; [`trust_no_tables`] withdraws it.
///
/// # Safety
/// Until this CPU vouches again or withdraws, every present mapping of a
/// guest-range address in the tables at `root` must be a page its guest
/// may access as mapped (a read-only mapping stays read-only for the copy
/// routines: CR0.WP is on), present with USER in every level's entry (a PV
/// guest's tables: the hypervisor builds them so and forces USER on every
/// entry a guest installs).
#[inline]
pub unsafe fn trust_user_only(root: u64) {
    // Relaxed: only this CPU reads its own vouch.
    crate::percpu::current()
        .user_only_root
        .store(root & !0xfff, Ordering::Relaxed);
}

/// Withdraws this CPU's [`trust_user_only`] vouch.
#[inline]
pub fn trust_no_tables() {
    // Relaxed: as in `trust_user_only`.
    crate::percpu::current()
        .user_only_root
        .store(u64::MAX, Ordering::Relaxed);
}

/// Whether the live tables are the ones this CPU vouched for with
/// [`trust_user_only`] (every mapped guest-range page is the guest's).
///
/// CR3 is compared whole, not masked to its address: the vouch holds a
/// page-aligned address with no flag bits, so an equal CR3 names exactly
/// those tables, and a CR3 with flag or PCID bits set only never matches
/// (the copy then walks the tables: slower, with the same answers).
/// Sluice loads a guest's root into CR3 as it is (`paging::switch_root`),
/// so on its guest paths the two are equal; one compare with the vouch in
/// memory and no mask keep this short (and needing one scratch register),
/// as every guarded guest access asks it.
#[inline(always)]
fn live_tables_trusted() -> bool {
    // Relaxed (the read): only this CPU writes its own vouch.
    crate::percpu::is_cr3_user_only_root()
}

/// How many bytes from `address` lie before the first page that is mapped
/// but not user-accessible in the live tables (`length` if none is). Such a
/// page is never the guest's: copying stops there as if it had faulted.
/// Unmapped pages are left to the exception table.
#[inline]
fn user_prefix(address: u64, length: usize) -> usize {
    if live_tables_trusted() {
        return length;
    }
    walked_user_prefix(address, length)
}

#[inline(never)]
fn walked_user_prefix(address: u64, length: usize) -> usize {
    let mut page = address & !0xfff;
    let end = address.saturating_add(length as u64);
    while page < end {
        if crate::paging::access(page).is_some_and(|rights| !rights.is_user) {
            return page.saturating_sub(address) as usize;
        }
        match page.checked_add(4096) {
            Some(next) => page = next,
            None => break,
        }
    }
    length
}

/// Copies `destination.len()` bytes from guest address `source`.
#[inline]
pub fn copy_from_guest(destination: &mut [u8], source: u64) -> Result<(), CopyError> {
    if !is_guest_range(source, destination.len()) {
        return Err(CopyError::NotGuestAddress);
    }
    let allowed = user_prefix(source, destination.len());
    // SAFETY: `destination` is a valid, exclusive hypervisor buffer of at
    // least `allowed` bytes; `source` is a guest range (checked above), so
    // it overlaps no hypervisor object, and any fault reading it is caught
    // by the exception table entry and turned into a short count.
    let left = unsafe { sluice_guest_copy(destination.as_mut_ptr(), source as *const u8, allowed) };
    match left + (destination.len() - allowed) {
        0 => Ok(()),
        left => Err(CopyError::Fault {
            copied: destination.len().saturating_sub(left),
        }),
    }
}

/// Copies `source` to guest address `destination`.
#[inline]
pub fn copy_to_guest(destination: u64, source: &[u8]) -> Result<(), CopyError> {
    if !is_guest_range(destination, source.len()) {
        return Err(CopyError::NotGuestAddress);
    }
    let allowed = user_prefix(destination, source.len());
    // SAFETY: `source` is a valid hypervisor buffer of at least `allowed`
    // bytes; `destination` is a guest range (checked above), so writing it
    // cannot touch hypervisor memory, and any fault is caught by the
    // exception table entry.
    let left = unsafe { sluice_guest_copy(destination as *mut u8, source.as_ptr(), allowed) };
    match left + (source.len() - allowed) {
        0 => Ok(()),
        left => Err(CopyError::Fault {
            copied: source.len().saturating_sub(left),
        }),
    }
}

/// Reads the little-endian `u32` at guest address `source`: the same
/// checks and answers as [`copy_from_guest`] of four bytes, as one guarded
/// load where the live tables are vouched for (the hot hypercalls pass
/// one port this way), through [`copy_from_guest`] otherwise.
#[inline]
pub fn read_u32_from_guest(source: u64) -> Result<u32, CopyError> {
    if !is_guest_range(source, 4) {
        return Err(CopyError::NotGuestAddress);
    }
    if !live_tables_trusted() {
        let mut bytes = [0u8; 4];
        copy_from_guest(&mut bytes, source)?;
        return Ok(u32::from_le_bytes(bytes));
    }
    let loaded: u64;
    // SAFETY: `source` is a guest range (checked above), so the load reads
    // no hypervisor object, and every mapped guest-range page of the live
    // tables is the guest's (`live_tables_trusted`). The load zero-extends
    // the u32 into the 64-bit register; a fault at it (label 3) resumes at
    // its exception-table fixup (label 6), which sets the register to all
    // ones instead (a value no load gives: the sign says which) and
    // rejoins the path that closes SMAP again (`mov` leaves ZF alone:
    // SMAP_FLAGS_NOTE); `stac`/`clac` run only where SMAP is on (they are
    // invalid opcodes elsewhere). Numeric labels 2..9 only: 0 and 1 read
    // as binary in Intel syntax.
    unsafe {
        core::arch::asm!(
            "test byte ptr [rip + {smap}], 1",
            "jz 2f",
            "stac",
            "2:",
            "3:",
            "mov {value:e}, dword ptr [{source}]",
            "4:",
            // ZF: still the SMAP test's (SMAP_FLAGS_NOTE).
            "jz 5f",
            "clac",
            "5:",
            ".pushsection .text.sluice_guest_copy_fixups, \"ax\"",
            "6:",
            "mov {value}, -1",
            "jmp 4b",
            ".popsection",
            ".pushsection .sluice_extable, \"a\"",
            ".balign 8",
            ".quad 3b, 6b",
            ".popsection",
            source = in(reg) source,
            value = out(reg) loaded,
            smap = sym SLUICE_SMAP_ENABLED,
            options(nostack, readonly),
        );
    }
    if (loaded as i64) < 0 {
        return Err(CopyError::Fault { copied: 0 });
    }
    Ok(loaded as u32)
}

/// Copies `quads` quadwords from `source` to `destination` with one
/// inline `rep movsq`, SMAP opened around it; returns the bytes not
/// copied, as [`sluice_guest_copy`] does. A fault at the `rep movsq`
/// resumes right after it (its exception-table entry) with `rcx` the
/// quadwords left, the faulting one included; those then go through
/// [`sluice_guest_copy`], which stops at the exact faulting byte.
///
/// # Safety
/// One of the two ranges (`quads * 8` bytes each) is a hypervisor buffer
/// valid for that access; the other is a guest range ([`is_guest_range`])
/// whose mapped pages the copy may access ([`user_prefix`] said so for all
/// of it).
#[inline(always)]
unsafe fn copy_quads(destination: u64, source: u64, quads: usize) -> usize {
    let left: usize;
    // SAFETY: the caller vouches for both ranges; a fault on the guest one
    // at the `rep movsq` (label 3) resumes after it (label 4), where SMAP
    // is closed again: the CPU leaves rcx, rsi and rdi at the faulting
    // quadword. `stac`/`clac` run only where SMAP is on (invalid opcodes
    // elsewhere); DF is clear (Rust's asm contract). Numeric labels 2..9
    // only: 0 and 1 read as binary in Intel syntax.
    unsafe {
        core::arch::asm!(
            "test byte ptr [rip + {smap}], 1",
            "jz 2f",
            "stac",
            "2:",
            "3:",
            "rep movsq",
            "4:",
            // ZF: still the SMAP test's (SMAP_FLAGS_NOTE).
            "jz 5f",
            "clac",
            "5:",
            ".pushsection .sluice_extable, \"a\"",
            ".balign 8",
            ".quad 3b, 4b",
            ".popsection",
            smap = sym SLUICE_SMAP_ENABLED,
            inout("rcx") quads => left,
            inout("rdi") destination => _,
            inout("rsi") source => _,
            options(nostack),
        );
    }
    if left == 0 {
        return 0;
    }
    // SAFETY: the same ranges, as the caller vouched for them.
    unsafe { copy_quads_rest(destination, source, quads, left) }
}

/// The bytes [`copy_quads`] left after a fault, byte-exact.
///
/// # Safety
/// As for [`copy_quads`].
#[cold]
#[inline(never)]
unsafe fn copy_quads_rest(destination: u64, source: u64, quads: usize, left: usize) -> usize {
    let done = (quads.saturating_sub(left) * 8) as u64;
    // SAFETY: the rest of the ranges the caller vouched for.
    unsafe {
        sluice_guest_copy(
            destination.wrapping_add(done) as *mut u8,
            source.wrapping_add(done) as *const u8,
            left * 8,
        )
    }
}

/// Reads `N` little-endian quadwords from guest address `source`: the
/// checks and answers of [`copy_from_guest`] of `N * 8` bytes, copied
/// with one inline `rep movsq` where the live tables are vouched for,
/// without first filling a buffer the copy overwrites anyway (a frame the
/// hypervisor reads whole, as HYPERVISOR_iret's).
#[inline]
pub fn read_words_from_guest<const N: usize>(source: u64) -> Result<[u64; N], CopyError> {
    let length = N * 8;
    if !is_guest_range(source, length) {
        return Err(CopyError::NotGuestAddress);
    }
    let mut words = core::mem::MaybeUninit::<[u64; N]>::uninit();
    let buffer = words.as_mut_ptr() as u64;
    let left = if live_tables_trusted() {
        // SAFETY: `words` is a hypervisor buffer of `length` bytes;
        // `source` is a guest range (checked above) whose every mapped
        // page is the guest's (`live_tables_trusted`).
        unsafe { copy_quads(buffer, source, N) }
    } else {
        let allowed = walked_user_prefix(source, length);
        // SAFETY: `words` is a hypervisor buffer of `length` bytes, at
        // least `allowed`; `source` is a guest range (checked above), so
        // it overlaps no hypervisor object, and a fault reading it is
        // caught by the exception table and turned into a short count.
        let left = unsafe { sluice_guest_copy(buffer as *mut u8, source as *const u8, allowed) };
        left + (length - allowed)
    };
    match left {
        // SAFETY: nothing was left: the copy wrote all `length` bytes, so
        // every quadword is initialized (x86 is little-endian).
        0 => Ok(unsafe { words.assume_init() }),
        left => Err(CopyError::Fault {
            copied: length.saturating_sub(left),
        }),
    }
}

/// Reads the nine quadwords at guest address `source`: the checks and
/// answers of [`read_words_from_guest`], as nine guarded loads straight
/// into registers where the live tables are vouched for, so the words are
/// neither copied to a buffer nor loaded back from it (HYPERVISOR_iret's
/// frame, read at the end of every upcall). One difference: there, a fault
/// gives back the count of the quadwords read whole before it, which is
/// the exact byte count when `source` is 8-aligned (an aligned quadword
/// never crosses a page) and may fall short of it by the bytes of a
/// quadword that straddles a page otherwise.
#[inline(always)]
pub fn read_nine_words_from_guest(source: u64) -> Result<[u64; 9], CopyError> {
    const LENGTH: u32 = 72;
    if !is_guest_range(source, LENGTH as usize) {
        return Err(CopyError::NotGuestAddress);
    }
    if !live_tables_trusted() {
        return read_nine_words_staged(source);
    }
    let (w0, w1, w2, w3, w4, w5, w6, w7, w8): (u64, u64, u64, u64, u64, u64, u64, u64, u64);
    let copied: u32;
    // SAFETY: `source` is a guest range of 72 bytes (checked above), so
    // the loads read no hypervisor object, and every mapped guest-range
    // page of the live tables is the guest's (`live_tables_trusted`). A
    // fault at a load (each label 2) resumes at its own exception-table
    // fixup (the label 3 after it), which records the bytes read before
    // it in `copied` and rejoins at label 4, where SMAP is closed again
    // (ZF: SMAP_FLAGS_NOTE); the words are not used then. `copied` is
    // written only once no load is left to read `source` (after the last
    // one, or in a fixup), so it may share its register (`lateout`).
    // `stac`/`clac` run only where SMAP is on (invalid opcodes
    // elsewhere). Numeric labels 2..9 only: 0 and 1 read as binary in
    // Intel syntax.
    unsafe {
        core::arch::asm!(
            "test byte ptr [rip + {smap}], 1",
            "jz 5f",
            "stac",
            "5:",
            // One guarded load, with `offset` bytes read before it.
            ".macro sluice_guarded_load offset, word",
            "2:",
            "mov \\word, qword ptr [{source} + \\offset]",
            ".pushsection .text.sluice_guest_copy_fixups, \"ax\"",
            "3:",
            "mov {copied:e}, \\offset",
            "jmp 4f",
            ".popsection",
            ".pushsection .sluice_extable, \"a\"",
            ".balign 8",
            ".quad 2b, 3b",
            ".popsection",
            ".endm",
            "sluice_guarded_load 0, {w0}",
            "sluice_guarded_load 8, {w1}",
            "sluice_guarded_load 16, {w2}",
            "sluice_guarded_load 24, {w3}",
            "sluice_guarded_load 32, {w4}",
            "sluice_guarded_load 40, {w5}",
            "sluice_guarded_load 48, {w6}",
            "sluice_guarded_load 56, {w7}",
            "sluice_guarded_load 64, {w8}",
            // The asm may be instantiated more than once in a unit.
            ".purgem sluice_guarded_load",
            "mov {copied:e}, 72",
            "4:",
            // ZF: still the SMAP test's (SMAP_FLAGS_NOTE).
            "jz 6f",
            "clac",
            "6:",
            smap = sym SLUICE_SMAP_ENABLED,
            source = in(reg) source,
            w0 = out(reg) w0,
            w1 = out(reg) w1,
            w2 = out(reg) w2,
            w3 = out(reg) w3,
            w4 = out(reg) w4,
            w5 = out(reg) w5,
            w6 = out(reg) w6,
            w7 = out(reg) w7,
            w8 = out(reg) w8,
            copied = lateout(reg) copied,
            options(nostack, readonly),
        );
    }
    if copied != LENGTH {
        return Err(CopyError::Fault {
            copied: copied as usize,
        });
    }
    Ok([w0, w1, w2, w3, w4, w5, w6, w7, w8])
}

/// [`read_nine_words_from_guest`] where the loads cannot be used, out of
/// line.
#[cold]
#[inline(never)]
fn read_nine_words_staged(source: u64) -> Result<[u64; 9], CopyError> {
    read_words_from_guest(source)
}

/// Writes `words` (little-endian) to guest address `destination`: the
/// checks and answers of [`copy_to_guest`] of their bytes, copied with one
/// inline `rep movsq` where the live tables are vouched for (a frame the
/// hypervisor writes whole, as the event bounce frame).
#[inline]
pub fn write_words_to_guest<const N: usize>(
    destination: u64,
    words: &[u64; N],
) -> Result<(), CopyError> {
    let length = N * 8;
    if !is_guest_range(destination, length) {
        return Err(CopyError::NotGuestAddress);
    }
    let buffer = words.as_ptr() as u64;
    let left = if live_tables_trusted() {
        // SAFETY: `words` is a hypervisor buffer of `length` bytes;
        // `destination` is a guest range (checked above) whose every
        // mapped page is the guest's (`live_tables_trusted`; a read-only
        // one faults, CR0.WP holding in ring 0).
        unsafe { copy_quads(destination, buffer, N) }
    } else {
        let allowed = walked_user_prefix(destination, length);
        // SAFETY: `words` is a hypervisor buffer of `length` bytes, at
        // least `allowed`; `destination` is a guest range (checked above),
        // so writing it cannot touch hypervisor memory, and any fault is
        // caught by the exception table entry.
        let left =
            unsafe { sluice_guest_copy(destination as *mut u8, buffer as *const u8, allowed) };
        left + (length - allowed)
    };
    match left {
        0 => Ok(()),
        left => Err(CopyError::Fault {
            copied: length.saturating_sub(left),
        }),
    }
}

/// The bits of a saved cs that [`write_bounce_frame_to_guest`] keeps: the
/// selector without its RPL (bits 32..40 would carry the saved upcall
/// mask: 0, as the frame is written only while the mask is clear).
const BOUNCE_CS_KEPT: u32 = 0xfffc;
/// RFLAGS.IF, set in the bounce frame's rflags: events were unmasked (the
/// saved mask, 0) when the guest was interrupted.
const BOUNCE_RFLAGS_IF: u32 = 1 << 9;

/// Writes the event bounce frame of `frame` (the guest state an upcall
/// interrupts) to the guest address `destination`: seven quadwords
/// `[rcx, r11, rip, cs, rflags, rsp, ss]` with the saved upcall mask 0
/// (cs keeps only its selector without RPL, rflags gets IF), with the
/// checks and answers of [`write_words_to_guest`] of those words: by
/// [`write_bounce_frame_direct`] where it can, through
/// [`write_words_to_guest`] otherwise.
pub fn write_bounce_frame_to_guest(
    destination: u64,
    frame: &InterruptFrame,
) -> Result<(), CopyError> {
    match write_bounce_frame_direct(destination, frame) {
        Some(written) => written,
        None => write_bounce_frame_staged(destination, frame),
    }
}

/// [`write_bounce_frame_to_guest`] where the live tables are vouched for
/// and `destination` is 8-aligned (`None`, with nothing written,
/// otherwise): the words go from `frame` to the guest by loads and seven
/// guarded stores, with no buffer, two scratch registers and no call, so
/// that a caller keeps nothing live across it in callee-saved registers
/// (the event bounce, on every upcall). An aligned quadword never crosses
/// a page, so the count a fault gives back stays exact to the byte.
#[inline(always)]
pub fn write_bounce_frame_direct(
    destination: u64,
    frame: &InterruptFrame,
) -> Option<Result<(), CopyError>> {
    const LENGTH: usize = 56;
    if !is_guest_range(destination, LENGTH) {
        return Some(Err(CopyError::NotGuestAddress));
    }
    if destination & 7 != 0 || !live_tables_trusted() {
        return None;
    }
    // SAFETY: `destination` is a guest range of 56 bytes (checked above),
    // so the stores touch no hypervisor object, and every mapped
    // guest-range page of the live tables is the guest's
    // (`live_tables_trusted`; a read-only one faults, CR0.WP holding in
    // ring 0); the loads read `frame`, a live reference. The cs and rflags
    // slots are computed before the SMAP test (`and` and `or` write the
    // flags that close SMAP again). A fault at a store (each label 2)
    // resumes, through its exception-table entry, at the label block that
    // says how many bytes were stored before it (`fault_0` .. `fault_48`),
    // with the registers and the stack as the asm left them (as a jump
    // from the asm would), and SMAP still open: that block closes it
    // ([`bounce_frame_fault`]) and gives the count back, with no call.
    // The way through stores all seven and closes SMAP itself, with no
    // count to test. `stac`/`clac` run only where SMAP is on (invalid
    // opcodes elsewhere). Numeric labels 2..9 only: 0 and 1 read as binary
    // in Intel syntax.
    unsafe {
        core::arch::asm!(
            "mov {cs:e}, dword ptr [{frame} + {at_cs}]",
            "and {cs:e}, {cs_kept}",
            "mov {rflags}, qword ptr [{frame} + {at_rflags}]",
            "or {rflags}, {rflags_if}",
            "test byte ptr [rip + {smap}], 1",
            "jz 5f",
            "stac",
            "5:",
            // One guarded store, resumed at `fault` if it faults.
            ".macro sluice_guarded_store offset, word, fault",
            "2:",
            "mov qword ptr [{destination} + \\offset], \\word",
            ".pushsection .sluice_extable, \"a\"",
            ".balign 8",
            ".quad 2b, \\fault",
            ".popsection",
            ".endm",
            // `mov` leaves the flags alone (SMAP_FLAGS_NOTE).
            "mov {word}, qword ptr [{frame} + {at_rcx}]",
            "sluice_guarded_store 0, {word}, {fault_0}",
            "mov {word}, qword ptr [{frame} + {at_r11}]",
            "sluice_guarded_store 8, {word}, {fault_8}",
            "mov {word}, qword ptr [{frame} + {at_rip}]",
            "sluice_guarded_store 16, {word}, {fault_16}",
            "sluice_guarded_store 24, {cs}, {fault_24}",
            "sluice_guarded_store 32, {rflags}, {fault_32}",
            "mov {word}, qword ptr [{frame} + {at_rsp}]",
            "sluice_guarded_store 40, {word}, {fault_40}",
            "mov {word}, qword ptr [{frame} + {at_ss}]",
            "sluice_guarded_store 48, {word}, {fault_48}",
            // The asm may be instantiated more than once in a unit.
            ".purgem sluice_guarded_store",
            // ZF: still the SMAP test's (SMAP_FLAGS_NOTE).
            "jz 6f",
            "clac",
            "6:",
            smap = sym SLUICE_SMAP_ENABLED,
            destination = in(reg) destination,
            frame = in(reg) frame,
            word = out(reg) _,
            cs = out(reg) _,
            rflags = out(reg) _,
            at_rcx = const core::mem::offset_of!(InterruptFrame, rcx),
            at_r11 = const core::mem::offset_of!(InterruptFrame, r11),
            at_rip = const core::mem::offset_of!(InterruptFrame, rip),
            at_cs = const core::mem::offset_of!(InterruptFrame, cs),
            at_rflags = const core::mem::offset_of!(InterruptFrame, rflags),
            at_rsp = const core::mem::offset_of!(InterruptFrame, rsp),
            at_ss = const core::mem::offset_of!(InterruptFrame, ss),
            cs_kept = const BOUNCE_CS_KEPT,
            rflags_if = const BOUNCE_RFLAGS_IF,
            fault_0 = label { return Some(bounce_frame_fault(0)) },
            fault_8 = label { return Some(bounce_frame_fault(8)) },
            fault_16 = label { return Some(bounce_frame_fault(16)) },
            fault_24 = label { return Some(bounce_frame_fault(24)) },
            fault_32 = label { return Some(bounce_frame_fault(32)) },
            fault_40 = label { return Some(bounce_frame_fault(40)) },
            fault_48 = label { return Some(bounce_frame_fault(48)) },
            options(nostack),
        );
    }
    Some(Ok(()))
}

/// The answer of [`write_bounce_frame_direct`] whose store after `copied`
/// bytes faulted: closes SMAP, which the faulting store left open. Inline
/// in each fault block, so the direct write makes no call on any path.
#[inline(always)]
fn bounce_frame_fault(copied: usize) -> Result<(), CopyError> {
    // SAFETY: `clac` only clears RFLAGS.AC (SMAP closed again), and runs
    // only where SMAP is on (it is an invalid opcode elsewhere).
    unsafe {
        core::arch::asm!(
            "test byte ptr [rip + {smap}], 1",
            "jz 2f",
            "clac",
            "2:",
            smap = sym SLUICE_SMAP_ENABLED,
            options(nostack),
        );
    }
    Err(CopyError::Fault { copied })
}

/// [`write_bounce_frame_to_guest`] where the stores cannot be used:
/// through [`write_words_to_guest`], out of line, so that the buffer it
/// needs is filled only on this path.
#[cold]
#[inline(never)]
fn write_bounce_frame_staged(destination: u64, frame: &InterruptFrame) -> Result<(), CopyError> {
    let words = [
        frame.rcx,
        frame.r11,
        frame.rip,
        frame.cs & u64::from(BOUNCE_CS_KEPT),
        frame.rflags | u64::from(BOUNCE_RFLAGS_IF),
        frame.rsp,
        frame.ss,
    ];
    write_words_to_guest(destination, &words)
}
