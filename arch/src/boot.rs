//! The boot entry: multiboot1 header, 32-bit entry, the switch to long mode
//! and the boot page tables.
//!
//! QEMU's `-kernel` loads a multiboot1 image whose header has the a.out
//! kludge flag set: it copies the file image to the header's `load_addr`
//! and enters `entry_addr` in 32-bit protected mode with paging off,
//! `eax` = 0x2BADB002 and `ebx` = the physical address of the multiboot info.
//!
//! The 32-bit code runs at physical addresses, so every absolute reference
//! it makes is `symbol - IMAGE_OFFSET` (written `symbol + {to_phys}` with the
//! two's complement, so the linker computes the physical address). It loads
//! static page tables that map the first 4 GiB three times (identity, the
//! image window at `IMAGE_OFFSET`, and the start of the direct map), turns on
//! PAE, long mode and NX, and jumps to the image's virtual address. The
//! identity mapping is dropped when the hypervisor installs its own tables.
//!
//! The Rust entry is `sluice_main(magic: u32, mbi_phys: u32) -> !`, defined
//! by the hypervisor crate, called on the boot stack below, with GS based
//! at the bootstrap CPU's per-CPU block (`percpu`).

use crate::layout::{IMAGE_OFFSET, pdpt_index, pml4_index};

/// Multiboot1 header magic.
const MULTIBOOT_MAGIC: u32 = 0x1BAD_B002;
/// Header flags: page-align modules (bit 0), provide memory info (bit 1),
/// use the load addresses in the header (bit 16, the a.out kludge).
const MULTIBOOT_FLAGS: u32 = (1 << 0) | (1 << 1) | (1 << 16);
/// Header checksum: magic + flags + checksum == 0 (mod 2^32).
const MULTIBOOT_CHECKSUM: u32 = 0u32.wrapping_sub(MULTIBOOT_MAGIC.wrapping_add(MULTIBOOT_FLAGS));

/// The value `eax` holds at entry when a multiboot1 loader started us.
pub const MULTIBOOT_BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;

/// Size of the boot stack in the image's `.bss` (used until the bootstrap
/// processor switches to its guarded stack). The boot page tables map the
/// image with 2 MiB pages, so this stack has no guard page: it is sized for
/// unoptimised builds (which need about 100 KiB) and checked afterwards by
/// `boot_stack_high_water`.
pub const BOOT_STACK_SIZE: usize = 256 * 1024;

core::arch::global_asm!(
    r#"
    .section .multiboot_header, "a"
    .balign 4
sluice_multiboot_header:
    .long {mb_magic}
    .long {mb_flags}
    .long {mb_checksum}
    .long sluice_multiboot_header + {to_phys}
    .long __image_start + {to_phys}
    .long __load_end + {to_phys}
    .long __bss_end + {to_phys}
    .long sluice_start32 + {to_phys}

    .section .text.sluice_boot, "ax"
    .code32
    .global sluice_start32
sluice_start32:
    cli
    cld
    mov %eax, %edi
    mov %ebx, %esi
    mov $(sluice_boot_pml4 + {to_phys}), %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $0xc0000080, %ecx
    rdmsr
    or $0x900, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax
    mov %eax, %cr0
    lgdt (sluice_boot_gdt_ptr + {to_phys})
    ljmp $0x08, $(sluice_start64_low + {to_phys})

    .code64
sluice_start64_low:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    movabs $sluice_start64_high, %rax
    jmp *%rax
sluice_start64_high:
    movabs $sluice_boot_stack_top, %rsp
    xor %ebp, %ebp
    // GS base = the bootstrap CPU's per-CPU block, whose first word is its
    // own address: `percpu::current` works from the first Rust instruction.
    movabs ${bsp}, %rax
    mov %rax, (%rax)
    mov %rax, %rdx
    shr $32, %rdx
    mov $0xc0000101, %ecx
    wrmsr
    movabs $sluice_main, %rax
    call *%rax
1:  cli
    hlt
    jmp 1b

    .section .rodata.sluice_boot_gdt, "a"
    .balign 16
sluice_boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
sluice_boot_gdt_ptr:
    .word 23
    .long sluice_boot_gdt + {to_phys}

    .section .data.sluice_boot_page_tables, "aw"
    .balign 4096
    .global sluice_boot_pml4
sluice_boot_pml4:
    .quad sluice_boot_pdpt_low + {to_phys} + 0x3
    .fill {image_pml4} - 1, 8, 0
    .quad sluice_boot_pdpt_image + {to_phys} + 0x3
    .quad sluice_boot_pdpt_direct + {to_phys} + 0x3
    .fill 512 - {image_pml4} - 2, 8, 0
sluice_boot_pdpt_low:
    .quad sluice_boot_pd + {to_phys} + 0x3
    .quad sluice_boot_pd + 0x1000 + {to_phys} + 0x3
    .quad sluice_boot_pd + 0x2000 + {to_phys} + 0x3
    .quad sluice_boot_pd + 0x3000 + {to_phys} + 0x3
    .fill 508, 8, 0
sluice_boot_pdpt_image:
    .fill {image_pdpt}, 8, 0
    .quad sluice_boot_pd + {to_phys} + 0x3
    .fill 511 - {image_pdpt}, 8, 0
sluice_boot_pdpt_direct:
    .quad sluice_boot_pd + {to_phys} + 0x3
    .quad sluice_boot_pd + 0x1000 + {to_phys} + 0x3
    .quad sluice_boot_pd + 0x2000 + {to_phys} + 0x3
    .quad sluice_boot_pd + 0x3000 + {to_phys} + 0x3
    .fill 508, 8, 0
sluice_boot_pd:
    .set sluice_boot_pd_index, 0
    .rept 2048
    .quad (sluice_boot_pd_index << 21) | 0x83
    .set sluice_boot_pd_index, sluice_boot_pd_index + 1
    .endr

    .section .bss.sluice_boot_stack, "aw", @nobits
    .balign 4096
    .global sluice_boot_stack_bottom
sluice_boot_stack_bottom:
    .skip {stack_size}
    .global sluice_boot_stack_top
sluice_boot_stack_top:
    .balign 4096
    .global sluice_early_ist_stacks
sluice_early_ist_stacks:
    .skip 3 * {ist_size}
sluice_early_ist_stacks_end:
    .text
"#,
    mb_magic = const MULTIBOOT_MAGIC,
    mb_flags = const MULTIBOOT_FLAGS,
    mb_checksum = const MULTIBOOT_CHECKSUM,
    to_phys = const IMAGE_OFFSET.wrapping_neg(),
    bsp = sym crate::percpu::BSP,
    image_pml4 = const pml4_index(IMAGE_OFFSET),
    image_pdpt = const pdpt_index(IMAGE_OFFSET),
    stack_size = const BOOT_STACK_SIZE,
    ist_size = const EARLY_IST_STACK_SIZE,
    options(att_syntax)
);

unsafe extern "C" {
    static sluice_early_ist_stacks: u8;
    static sluice_boot_stack_bottom: u8;
    static sluice_boot_stack_top: u8;
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __bss_end: u8;
}

/// Size of each of the bootstrap CPU's early IST stacks (#DF, NMI, #MC),
/// used until it has guarded ones.
pub const EARLY_IST_STACK_SIZE: usize = 16 * 1024;

static EARLY_IST_TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The bootstrap CPU's early IST stacks (#DF, NMI, #MC) in `.bss`; `None`
/// after the first call.
pub fn take_early_ist_stacks() -> Option<[crate::stack::Stack; 3]> {
    if EARLY_IST_TAKEN.swap(true, core::sync::atomic::Ordering::AcqRel) {
        return None;
    }
    let base = (&raw const sluice_early_ist_stacks) as u64;
    let size = EARLY_IST_STACK_SIZE as u64;
    Some([0, 1, 2].map(|index| {
        let range = crate::percpu::StackRange {
            bottom: base + index * size,
            top: base + (index + 1) * size,
        };
        // SAFETY: the three stacks are disjoint 16 KiB pieces of the
        // image's `.bss` (mapped writable for good, page aligned), referred
        // to by nothing but this function, which hands them out once.
        unsafe { crate::stack::Stack::assume_exclusive(range) }
    }))
}

/// How many bytes of the boot stack were ever written (the loader zeroed
/// it; the deepest non-zero byte marks the high-water mark). Only
/// meaningful once no CPU runs on the boot stack any more.
pub fn boot_stack_high_water() -> usize {
    let bottom = (&raw const sluice_boot_stack_bottom) as u64;
    let top = (&raw const sluice_boot_stack_top) as u64;
    let mut address = bottom;
    while address < top {
        // SAFETY: the address lies inside the boot stack in the image's
        // `.bss`, mapped for good; no CPU runs on it any more (caller's
        // contract, checked by nothing that could fault), and an aligned
        // u64 read of it has no side effect.
        let word = unsafe { core::ptr::read_volatile(address as *const u64) };
        if word != 0 {
            break;
        }
        address += 8;
    }
    (top - address) as usize
}

/// The image's sections, as virtual address ranges (page aligned).
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    /// Start of the image (the multiboot header and code).
    pub start: u64,
    /// End of code, start of read-only data.
    pub text_end: u64,
    /// End of read-only data, start of writable data.
    pub rodata_end: u64,
    /// End of the image including `.bss`.
    pub end: u64,
    /// The boot stack, `[bottom, top)`.
    pub boot_stack: (u64, u64),
}

/// Where the linker put the image's sections.
pub fn image_layout() -> ImageLayout {
    ImageLayout {
        start: (&raw const __image_start) as u64,
        text_end: (&raw const __text_end) as u64,
        rodata_end: (&raw const __rodata_end) as u64,
        end: (&raw const __bss_end) as u64,
        boot_stack: (
            (&raw const sluice_boot_stack_bottom) as u64,
            (&raw const sluice_boot_stack_top) as u64,
        ),
    }
}
