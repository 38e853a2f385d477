//! Guest-memory access from the hypervisor:
//! - `selftest=guestcopy`: copies to and from a guest page work, a copy
//!   running into an unmapped page stops there with `Fault` and the bytes
//!   copied so far, and hypervisor or non-canonical addresses are refused;
//!   the quadword reads and writes give the same answers with the page
//!   tables walked and with them vouched for (their inline `rep movsq`,
//!   and its recovery from a fault in the middle), as do the bounce
//!   frame's seven guarded stores from an interrupt frame, the nine guarded loads of
//!   HYPERVISOR_iret's frame and the one of a port, which close SMAP
//!   again on both ways out;
//! - `selftest=smap`: reading a guest page directly (without the copy
//!   routine opening SMAP) faults, ending the run with the panic code;
//! - `selftest=smep`: calling into a guest page faults likewise.

use arch::guest_copy::{
    CopyError, copy_from_guest, copy_to_guest, read_nine_words_from_guest, read_u32_from_guest,
    read_words_from_guest, write_bounce_frame_to_guest, write_words_to_guest,
};
use arch::qemu::ExitCode;

/// A guest address below the hypervisor's range, mapped for the tests.
const TEST_PAGE: u64 = 0x0000_0000_4000_0000;

fn map_test_page(test: &str) -> Result<(), ExitCode> {
    crate::memory::space::map_guest_test_page(TEST_PAGE).map_err(|error| {
        log::error!("selftest {test}: FAILED: cannot map the guest test page: {error:?}");
        ExitCode::Fail
    })
}

fn check(name: &str, is_ok: bool, failures: &mut u32) {
    if is_ok {
        log::info!("selftest guestcopy: ok - {name}");
    } else {
        log::error!("selftest guestcopy: not ok - {name}");
        *failures += 1;
    }
}

/// `selftest=guestcopy`.
pub fn run_copies() -> ExitCode {
    if let Err(code) = map_test_page("guestcopy") {
        return code;
    }
    let pattern: [u8; 64] = core::array::from_fn(|index| (index as u8) ^ 0x5a);
    let mut failures = 0;

    let written = copy_to_guest(TEST_PAGE + 100, &pattern);
    let mut back = [0u8; 64];
    let read = copy_from_guest(&mut back, TEST_PAGE + 100);
    check(
        "a copy to a guest page and back returns the same bytes",
        written.is_ok() && read.is_ok() && back == pattern,
        &mut failures,
    );

    let straddling = copy_to_guest(TEST_PAGE + 4096 - 16, &pattern);
    check(
        "a copy running into an unmapped page stops there (16 of 64 bytes)",
        straddling == Err(CopyError::Fault { copied: 16 }),
        &mut failures,
    );

    // Unaligned: the fault hits inside a quadword, and the copy still
    // stops at the exact byte.
    let straddling_unaligned = copy_to_guest(TEST_PAGE + 4096 - 13, &pattern);
    check(
        "an unaligned copy running into an unmapped page stops at its first byte (13 of 64)",
        straddling_unaligned == Err(CopyError::Fault { copied: 13 }),
        &mut failures,
    );

    let unmapped = copy_from_guest(&mut back, TEST_PAGE + 2 * 4096);
    check(
        "a copy from an unmapped guest page faults without copying",
        unmapped == Err(CopyError::Fault { copied: 0 }),
        &mut failures,
    );

    let hypervisor = copy_from_guest(
        &mut back,
        arch::layout::IMAGE_OFFSET + arch::layout::IMAGE_LOAD_PHYS,
    );
    check(
        "a copy from the hypervisor's range is refused",
        hypervisor == Err(CopyError::NotGuestAddress),
        &mut failures,
    );

    let straddling_hypervisor = copy_to_guest(arch::layout::HYPERVISOR_VIRT_END - 8, &pattern);
    check(
        "a copy straddling the end of the hypervisor's range is refused",
        straddling_hypervisor == Err(CopyError::NotGuestAddress),
        &mut failures,
    );

    let non_canonical = copy_from_guest(&mut back, 0x0000_8000_0000_0000);
    check(
        "a copy from a non-canonical address is refused",
        non_canonical == Err(CopyError::NotGuestAddress),
        &mut failures,
    );

    let word = read_u32_from_guest(TEST_PAGE + 100 + 5);
    check(
        "a u32 read from a guest page returns its bytes",
        word == Ok(u32::from_le_bytes([
            pattern[5], pattern[6], pattern[7], pattern[8],
        ])),
        &mut failures,
    );

    let word_unmapped = read_u32_from_guest(TEST_PAGE + 4096 - 2);
    check(
        "a u32 read running into an unmapped page faults",
        matches!(word_unmapped, Err(CopyError::Fault { .. })),
        &mut failures,
    );

    let word_hypervisor = read_u32_from_guest(arch::layout::HYPERVISOR_VIRT_END - 2);
    check(
        "a u32 read straddling the end of the hypervisor's range is refused",
        word_hypervisor == Err(CopyError::NotGuestAddress),
        &mut failures,
    );

    let words = read_words_from_guest::<2>(TEST_PAGE + 100 + 3);
    let expected: [u64; 2] = core::array::from_fn(|word| {
        u64::from_le_bytes(core::array::from_fn(|byte| {
            pattern.get(3 + 8 * word + byte).copied().unwrap_or(0)
        }))
    });
    check(
        "a read of two quadwords from a guest page returns its bytes",
        words == Ok(expected),
        &mut failures,
    );

    let words_straddling = read_words_from_guest::<2>(TEST_PAGE + 4096 - 12);
    check(
        "a quadword read running into an unmapped page stops there (12 of 16 bytes)",
        words_straddling == Err(CopyError::Fault { copied: 12 }),
        &mut failures,
    );

    check_words("walked", &mut failures);
    crate::memory::space::with_own_tables_vouched(|| check_words("vouched", &mut failures));

    let (_, _, smap) = arch::cpu::protections_enabled();
    if failures == 0 {
        log::info!("selftest guestcopy: all {CHECKS} checks passed (SMAP on: {smap})");
        ExitCode::Pass
    } else {
        log::error!("selftest guestcopy: FAILED: {failures} of {CHECKS} checks");
        ExitCode::Fail
    }
}

/// The checks of `selftest=guestcopy`: 12, then [`check_words`] twice.
const CHECKS: u32 = 12 + 2 * 11;

/// RFLAGS.AC: set while a guest copy has SMAP opened.
const RFLAGS_AC: u64 = 1 << 18;

/// The quadword reads and writes, with the page tables `tables` (walked,
/// or vouched for: then the copies are one inline `rep movsq`).
fn check_words(tables: &str, failures: &mut u32) {
    let words: [u64; 3] =
        core::array::from_fn(|index| 0x0123_4567_89ab_cdef_u64.rotate_left(8 * index as u32));
    let written = write_words_to_guest(TEST_PAGE + 200 + 5, &words);
    let back = read_words_from_guest::<3>(TEST_PAGE + 200 + 5);
    check(
        &alloc::format!(
            "tables {tables}: three quadwords written to a guest page read back the same"
        ),
        written.is_ok() && back == Ok(words),
        failures,
    );

    // The fault hits inside the second quadword: the inline copy resumes
    // after it and finishes byte by byte, to the exact byte.
    let cleared = copy_to_guest(TEST_PAGE + 4096 - 12, &[0u8; 12]);
    let straddling = write_words_to_guest(TEST_PAGE + 4096 - 12, &words);
    check(
        &alloc::format!(
            "tables {tables}: a quadword write running into an unmapped page stops there (12 of 24 bytes)"
        ),
        cleared.is_ok() && straddling == Err(CopyError::Fault { copied: 12 }),
        failures,
    );
    let mut kept = [0u8; 12];
    let read = copy_from_guest(&mut kept, TEST_PAGE + 4096 - 12);
    let expected: [u8; 12] = core::array::from_fn(|byte| {
        let word = words.get(byte / 8).copied().unwrap_or(0);
        word.to_le_bytes().get(byte % 8).copied().unwrap_or(0)
    });
    check(
        &alloc::format!("tables {tables}: the 12 bytes before the fault were written"),
        read.is_ok() && kept == expected,
        failures,
    );

    let read_straddling = read_words_from_guest::<3>(TEST_PAGE + 4096 - 20);
    check(
        &alloc::format!(
            "tables {tables}: a quadword read running into an unmapped page stops there (20 of 24 bytes)"
        ),
        read_straddling == Err(CopyError::Fault { copied: 20 }),
        failures,
    );

    // The bounce frame, written from an interrupt frame (seven guarded
    // stores straight from the frame where the tables are vouched for):
    // cs loses its RPL and bits 16.., rflags gains IF.
    let frame = arch::idt::InterruptFrame {
        rcx: 0x1111_1111_1111_1111,
        r11: 0x2222_2222_2222_2222,
        rip: 0x3333_3333_3333_3333,
        cs: 0x4444_4444_4444_e033,
        rflags: 0x5555_5555_5555_5c55,
        rsp: 0x6666_6666_6666_6666,
        ss: 0x7777_7777_7777_7777,
        ..arch::idt::InterruptFrame::default()
    };
    let seven: [u64; 7] = [
        frame.rcx,
        frame.r11,
        frame.rip,
        0xe030,
        frame.rflags | 0x200,
        frame.rsp,
        frame.ss,
    ];
    let written = write_bounce_frame_to_guest(TEST_PAGE + 512, &frame);
    let back = read_words_from_guest::<7>(TEST_PAGE + 512);
    check(
        &alloc::format!(
            "tables {tables}: a bounce frame written to a guest page reads back as its seven slots, SMAP closed after"
        ),
        written.is_ok() && back == Ok(seven) && arch::cpu::rflags() & RFLAGS_AC == 0,
        failures,
    );
    let cleared = copy_to_guest(TEST_PAGE + 4096 - 24, &[0u8; 24]);
    let straddling = write_bounce_frame_to_guest(TEST_PAGE + 4096 - 24, &frame);
    let kept = read_words_from_guest::<3>(TEST_PAGE + 4096 - 24);
    let expected: [u64; 3] = core::array::from_fn(|index| seven.get(index).copied().unwrap_or(0));
    check(
        &alloc::format!(
            "tables {tables}: a bounce frame running into an unmapped page stops there (24 of 56 bytes written), SMAP closed after"
        ),
        cleared.is_ok()
            && straddling == Err(CopyError::Fault { copied: 24 })
            && kept == Ok(expected)
            && arch::cpu::rflags() & RFLAGS_AC == 0,
        failures,
    );

    // The one guarded load of a port (its own inline load where the
    // tables are vouched for; a fault there gives all ones in 64 bits,
    // which no u32 load gives, all ones in 32 included).
    let ones = copy_to_guest(TEST_PAGE + 768, &[0xff; 4]);
    let word = read_u32_from_guest(TEST_PAGE + 768);
    check(
        &alloc::format!("tables {tables}: a u32 of all ones read from a guest page is all ones"),
        ones.is_ok() && word == Ok(u32::MAX),
        failures,
    );
    let word_unmapped = read_u32_from_guest(TEST_PAGE + 4096);
    check(
        &alloc::format!(
            "tables {tables}: a u32 read from an unmapped page faults, SMAP closed after"
        ),
        word_unmapped == Err(CopyError::Fault { copied: 0 })
            && arch::cpu::rflags() & RFLAGS_AC == 0,
        failures,
    );

    // The nine guarded loads of HYPERVISOR_iret's frame (their own inline
    // loads where the tables are vouched for).
    let nine: [u64; 9] = core::array::from_fn(|index| 0x0202_0202_0202_0202 * (index as u64 + 1));
    let written = write_words_to_guest(TEST_PAGE + 1024, &nine);
    let read = read_nine_words_from_guest(TEST_PAGE + 1024);
    check(
        &alloc::format!(
            "tables {tables}: nine quadwords read from a guest page are the ones written, SMAP closed after"
        ),
        written.is_ok() && read == Ok(nine) && arch::cpu::rflags() & RFLAGS_AC == 0,
        failures,
    );
    let straddling = read_nine_words_from_guest(TEST_PAGE + 4096 - 32);
    check(
        &alloc::format!(
            "tables {tables}: nine quadwords read running into an unmapped page stop there (32 of 72 bytes), SMAP closed after"
        ),
        straddling == Err(CopyError::Fault { copied: 32 }) && arch::cpu::rflags() & RFLAGS_AC == 0,
        failures,
    );

    let hypervisor = write_words_to_guest(arch::layout::HYPERVISOR_VIRT_END - 16, &words);
    check(
        &alloc::format!(
            "tables {tables}: a quadword write straddling the end of the hypervisor's range is refused"
        ),
        hypervisor == Err(CopyError::NotGuestAddress),
        failures,
    );
}

/// `selftest=smap`.
pub fn run_smap() -> ExitCode {
    if let Err(code) = map_test_page("smap") {
        return code;
    }
    log::info!("selftest smap: reading guest page {TEST_PAGE:#x} without opening SMAP");
    match arch::fatal::read_user_directly(TEST_PAGE) {
        Err(error) => {
            log::error!("selftest smap: FAILED: {error:?}: SMAP is off or the read went through");
            ExitCode::Fail
        }
    }
}

/// `selftest=smep`.
pub fn run_smep() -> ExitCode {
    if let Err(code) = map_test_page("smep") {
        return code;
    }
    // A `ret`: if SMEP did not hold, the call would return.
    if copy_to_guest(TEST_PAGE, &[0xc3]).is_err() {
        log::error!("selftest smep: FAILED: cannot write the guest test page");
        return ExitCode::Fail;
    }
    log::info!("selftest smep: calling guest page {TEST_PAGE:#x}");
    match arch::fatal::execute_user(TEST_PAGE) {
        Err(error) => {
            log::error!("selftest smep: FAILED: {error:?}: SMEP is off or the call returned");
            ExitCode::Fail
        }
    }
}
