//! The one checked accessor for guest memory.
//!
//! Every byte the hypervisor reads from or writes to a guest address goes
//! through [`copy_from_guest`] / [`copy_to_guest`]. An address range is
//! accepted only if it is canonical, lies wholly outside the hypervisor's
//! reserved range, and every page of it is mapped user-accessible in the
//! live (guest) page tables. The copy itself is one `rep movsb` with SMAP
//! opened (`stac`/`clac`) when the CPU has SMAP; if it faults anyway (the
//! guest changed its mapping from another vcpu), the page-fault handler finds
//! the instruction in the exception table below and resumes at its fix-up,
//! and the copy returns [`GuestFault`] instead of bringing the hypervisor
//! down.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::idt::InterruptFrame;
use crate::layout::{HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START, PAGE_SIZE};
use crate::paging;

/// A guest address range could not be accessed (the hypercall answers
/// -EFAULT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestFault {
    /// The first guest address that could not be accessed.
    pub address: u64,
}

static HAS_SMAP: AtomicBool = AtomicBool::new(false);

/// Records whether SMAP is on (so the copy opens it with `stac`).
pub fn init(smap_enabled: bool) {
    HAS_SMAP.store(smap_enabled, Ordering::Relaxed);
}

// Two copy routines, with and without stac/clac (those are #UD on CPUs
// without SMAP). rdi = destination, rsi = source, rdx = length; returns the
// bytes not copied (0 on success). A fault at the `rep movsb` resumes at the
// label after it with rcx = bytes left.
core::arch::global_asm!(
    r#"
    .section .text.sluice_guest_copy, "ax"
    .balign 16
    .global sluice_guest_copy_smap
sluice_guest_copy_smap:
    mov rcx, rdx
    stac
    .global sluice_guest_copy_smap_insn
sluice_guest_copy_smap_insn:
    rep movsb
    .global sluice_guest_copy_smap_fixup
sluice_guest_copy_smap_fixup:
    clac
    mov rax, rcx
    ret

    .balign 16
    .global sluice_guest_copy_plain
sluice_guest_copy_plain:
    mov rcx, rdx
    .global sluice_guest_copy_plain_insn
sluice_guest_copy_plain_insn:
    rep movsb
    .global sluice_guest_copy_plain_fixup
sluice_guest_copy_plain_fixup:
    mov rax, rcx
    ret
    .text
"#
);

unsafe extern "C" {
    fn sluice_guest_copy_smap(destination: *mut u8, source: *const u8, length: u64) -> u64;
    fn sluice_guest_copy_plain(destination: *mut u8, source: *const u8, length: u64) -> u64;
    static sluice_guest_copy_smap_insn: u8;
    static sluice_guest_copy_smap_fixup: u8;
    static sluice_guest_copy_plain_insn: u8;
    static sluice_guest_copy_plain_fixup: u8;
}

/// The exception table: if a page fault in ring 0 hit one of the copy
/// instructions, move the frame to its fix-up and say so.
pub(crate) fn fixup_page_fault(frame: &mut InterruptFrame) -> bool {
    let table = [
        (
            (&raw const sluice_guest_copy_smap_insn) as u64,
            (&raw const sluice_guest_copy_smap_fixup) as u64,
        ),
        (
            (&raw const sluice_guest_copy_plain_insn) as u64,
            (&raw const sluice_guest_copy_plain_fixup) as u64,
        ),
    ];
    match table.iter().find(|(fault, _)| *fault == frame.rip) {
        Some(&(_, fixup)) => {
            frame.rip = fixup;
            true
        }
        None => false,
    }
}

/// Which access the range must allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// Checks `[address, address + length)`: canonical, outside the
/// hypervisor's range, each page mapped for ring 3 (and writable for
/// writes).
fn check_range(address: u64, length: usize, access: Access) -> Result<(), GuestFault> {
    if length == 0 {
        return Ok(());
    }
    let fault = GuestFault { address };
    let last = address.checked_add(length as u64 - 1).ok_or(fault)?;
    let is_lower_half = |a: u64| a < 0x0000_8000_0000_0000;
    let is_upper_half = |a: u64| a >= 0xffff_8000_0000_0000;
    let same_half = (is_lower_half(address) && is_lower_half(last))
        || (is_upper_half(address) && is_upper_half(last));
    if !same_half {
        return Err(fault);
    }
    if address < HYPERVISOR_VIRT_END && last >= HYPERVISOR_VIRT_START {
        return Err(fault);
    }
    let mut page = address & !(PAGE_SIZE - 1);
    loop {
        let allowed = paging::access(page)
            .is_some_and(|rights| rights.is_user && (access == Access::Read || rights.is_writable));
        if !allowed {
            return Err(GuestFault {
                address: page.max(address),
            });
        }
        match page.checked_add(PAGE_SIZE) {
            Some(next) if next <= last => page = next,
            _ => return Ok(()),
        }
    }
}

fn raw_copy(destination: *mut u8, source: *const u8, length: usize) -> u64 {
    if HAS_SMAP.load(Ordering::Relaxed) {
        // SAFETY: the caller checked the guest side (user pages, outside the
        // hypervisor) and owns the hypervisor side (a live exclusive or
        // shared slice of `length` bytes); a fault on the guest side is
        // recovered by the exception table and reported by the return value.
        unsafe { sluice_guest_copy_smap(destination, source, length as u64) }
    } else {
        // SAFETY: as above, on a CPU without SMAP.
        unsafe { sluice_guest_copy_plain(destination, source, length as u64) }
    }
}

/// Copies `destination.len()` bytes from guest address `source`.
pub fn copy_from_guest(destination: &mut [u8], source: u64) -> Result<(), GuestFault> {
    check_range(source, destination.len(), Access::Read)?;
    let left = raw_copy(
        destination.as_mut_ptr(),
        source as *const u8,
        destination.len(),
    );
    if left == 0 {
        Ok(())
    } else {
        Err(GuestFault {
            address: source + (destination.len() as u64 - left),
        })
    }
}

/// Copies `source` to guest address `destination`.
pub fn copy_to_guest(destination: u64, source: &[u8]) -> Result<(), GuestFault> {
    check_range(destination, source.len(), Access::Write)?;
    let left = raw_copy(destination as *mut u8, source.as_ptr(), source.len());
    if left == 0 {
        Ok(())
    } else {
        Err(GuestFault {
            address: destination + (source.len() as u64 - left),
        })
    }
}

/// Reads a little-endian u64 from guest memory.
pub fn read_u64(address: u64) -> Result<u64, GuestFault> {
    let mut bytes = [0u8; 8];
    copy_from_guest(&mut bytes, address)?;
    Ok(u64::from_le_bytes(bytes))
}

/// Writes a little-endian u64 to guest memory.
pub fn write_u64(address: u64, value: u64) -> Result<(), GuestFault> {
    copy_to_guest(address, &value.to_le_bytes())
}
