//! The Xen ELF notes that make the image loadable as a PV guest (spec §7.8;
//! public/elfnote.h). They sit in `.note.Xen`, which the linker script puts
//! in a PT_NOTE segment.
//!
//! Xen loads a PV image only if LOADER starts with "generic" (or GUEST_OS
//! with "linux") and XEN_VERSION starts with "xen-3.0". The numeric notes are
//! 8 bytes.

use core::arch::global_asm;

/// XEN_ELFNOTE_ENTRY: virtual address of the entry point.
pub const XEN_ELFNOTE_ENTRY: u32 = 1;
/// XEN_ELFNOTE_HYPERCALL_PAGE: virtual address of the hypercall page.
pub const XEN_ELFNOTE_HYPERCALL_PAGE: u32 = 2;
/// XEN_ELFNOTE_VIRT_BASE: where the image is mapped.
pub const XEN_ELFNOTE_VIRT_BASE: u32 = 3;
/// XEN_ELFNOTE_PADDR_OFFSET: subtracted from p_paddr, then VIRT_BASE added.
pub const XEN_ELFNOTE_PADDR_OFFSET: u32 = 4;
/// XEN_ELFNOTE_XEN_VERSION: "xen-3.0".
pub const XEN_ELFNOTE_XEN_VERSION: u32 = 5;
/// XEN_ELFNOTE_GUEST_OS: the guest's name.
pub const XEN_ELFNOTE_GUEST_OS: u32 = 6;
/// XEN_ELFNOTE_GUEST_VERSION: the guest's version.
pub const XEN_ELFNOTE_GUEST_VERSION: u32 = 7;
/// XEN_ELFNOTE_LOADER: "generic".
pub const XEN_ELFNOTE_LOADER: u32 = 8;
/// XEN_ELFNOTE_FEATURES: "|"-separated XENFEAT names, "!" = required.
pub const XEN_ELFNOTE_FEATURES: u32 = 10;

/// The image's link address (kept equal to `link.ld`'s first address).
pub const VIRT_BASE: u64 = 0xffff_ffff_8000_0000;

// `sluice_xen_notes` names the notes so that link.ld can force them in.
// One note: namesz 4 ("Xen\0"), descsz, type, name, desc, each padded to 4.
// The image has p_paddr == p_vaddr, so PADDR_OFFSET = VIRT_BASE makes Xen's
// virt_offset (VIRT_BASE - PADDR_OFFSET) zero. The guest needs no XENFEAT
// and claims only that it can run as dom0 (the Xen oracle boots it so).
global_asm!(
    r#"
    .pushsection .note.Xen, "a", @note
    .globl sluice_xen_notes
sluice_xen_notes:

    .macro SLUICE_XEN_NOTE type, desc_start, desc_end
    .balign 4
    .long 4
    .long \desc_end - \desc_start
    .long \type
    .asciz "Xen"
    .balign 4
    .endm

    SLUICE_XEN_NOTE {guest_os}, 1f, 2f
1:  .asciz "Sluice-test"
2:
    SLUICE_XEN_NOTE {guest_version}, 1f, 2f
1:  .asciz "0.1"
2:
    SLUICE_XEN_NOTE {xen_version}, 1f, 2f
1:  .asciz "xen-3.0"
2:
    SLUICE_XEN_NOTE {loader}, 1f, 2f
1:  .asciz "generic"
2:
    SLUICE_XEN_NOTE {virt_base_type}, 1f, 2f
1:  .quad {virt_base}
2:
    SLUICE_XEN_NOTE {paddr_offset}, 1f, 2f
1:  .quad {virt_base}
2:
    SLUICE_XEN_NOTE {entry}, 1f, 2f
1:  .quad _start
2:
    SLUICE_XEN_NOTE {hypercall_page}, 1f, 2f
1:  .quad sluice_hypercall_page
2:
    SLUICE_XEN_NOTE {features}, 1f, 2f
1:  .asciz "dom0"
2:
    .balign 4
    .popsection
    "#,
    guest_os = const XEN_ELFNOTE_GUEST_OS,
    guest_version = const XEN_ELFNOTE_GUEST_VERSION,
    xen_version = const XEN_ELFNOTE_XEN_VERSION,
    loader = const XEN_ELFNOTE_LOADER,
    virt_base_type = const XEN_ELFNOTE_VIRT_BASE,
    paddr_offset = const XEN_ELFNOTE_PADDR_OFFSET,
    virt_base = const VIRT_BASE,
    entry = const XEN_ELFNOTE_ENTRY,
    hypercall_page = const XEN_ELFNOTE_HYPERCALL_PAGE,
    features = const XEN_ELFNOTE_FEATURES,
);
