//! `selftest=syscall-probe`: enter ring 3 once, run `syscall`, and report
//! that it reached the hypervisor's entry. xtask boots this under KVM to
//! find hosts where a PV guest's `syscall` never arrives (it then uses TCG).

use arch::gdt::{FLAT_RING3_CS64, FLAT_RING3_DS};
use arch::guest_entry::{GuestHooks, VcpuStack};
use arch::idt::InterruptFrame;
use arch::paging::PageTables;
use arch::qemu::ExitCode;

use crate::memory::guest_frames::GuestFrame;
use crate::memory::{frames, space};

/// Where the probe's code runs (a PV kernel's usual VIRT_BASE).
pub(super) const CODE_VIRT: u64 = 0xffff_ffff_8000_0000;
/// `syscall; jmp .`
const CODE: [u8; 4] = [0x0f, 0x05, 0xeb, 0xfe];
const PTE_TABLE: u64 = 0x067;
const PTE_CODE: u64 = 0x065;
const PTE_DATA: u64 = 0x067;

extern "C" fn on_syscall(frame: &mut InterruptFrame) {
    log::info!(
        "selftest syscall-probe: syscall from rip {:#x} (rcx {:#x}) reached the hypervisor",
        frame.rip,
        frame.rcx
    );
    log::info!("selftest syscall-probe: ok");
    arch::qemu::exit(ExitCode::Pass)
}

fn on_exception(frame: &mut InterruptFrame) {
    log::error!(
        "selftest syscall-probe: exception {} ({}) at {:#x} instead of the syscall",
        frame.vector,
        arch::idt::exception_name(frame.vector),
        frame.rip
    );
    arch::qemu::exit(ExitCode::Fail)
}

fn on_return(_frame: &mut InterruptFrame) {}

fn frame() -> Option<GuestFrame> {
    frames::allocate().and_then(GuestFrame::from_allocator)
}

/// Runs the probe; returns only on failure to set it up.
pub fn run() -> ExitCode {
    enter_ring3(
        "syscall-probe",
        &CODE,
        GuestHooks {
            hypercall: on_syscall,
            exception: on_exception,
            before_return: on_return,
        },
    )
}

/// Maps `code` (at most a page) at [`CODE_VIRT`] with a one-page stack
/// above it, installs `hooks` and enters ring 3 at its first byte.
/// Returns only on failure to set it up.
pub(super) fn enter_ring3(name: &str, code: &[u8], hooks: GuestHooks) -> ExitCode {
    let layout = Ring3Layout {
        code_page: CODE_VIRT,
        code_offset: 0,
        stack_page: CODE_VIRT + 4096,
    };
    enter_ring3_at(name, &layout, code, hooks)
}

/// Where [`enter_ring3_at`] maps the code page and the stack page (both in
/// the same 2 MiB region), and where in the code page it starts.
pub(super) struct Ring3Layout {
    /// The code page's address.
    pub code_page: u64,
    /// Where `code` goes in it, and ring 3 starts.
    pub code_offset: usize,
    /// The stack page's address (rsp starts at its end).
    pub stack_page: u64,
}

/// [`enter_ring3`] with the pages where `layout` puts them.
pub(super) fn enter_ring3_at(
    name: &str,
    layout: &Ring3Layout,
    code: &[u8],
    hooks: GuestHooks,
) -> ExitCode {
    let (Some(l4), Some(l3), Some(l2), Some(l1), Some(code_frame), Some(stack)) =
        (frame(), frame(), frame(), frame(), frame(), frame())
    else {
        log::error!("selftest {name}: out of memory");
        return ExitCode::Fail;
    };
    let code_virt = layout.code_page;
    let index = |virt: u64, level: u32| ((virt >> (12 + 9 * level)) & 0x1ff) as usize;
    l4.write_word(index(code_virt, 3), l3.phys() | PTE_TABLE);
    l3.write_word(index(code_virt, 2), l2.phys() | PTE_TABLE);
    l2.write_word(index(code_virt, 1), l1.phys() | PTE_TABLE);
    l1.write_word(index(code_virt, 0), code_frame.phys() | PTE_CODE);
    l1.write_word(index(layout.stack_page, 0), stack.phys() | PTE_DATA);
    code_frame.write(layout.code_offset, code);
    PageTables::from_root(l4.phys()).share_hypervisor_slots(&PageTables::current());
    let Ok(hypervisor_stack) = space::allocate_stack(4) else {
        log::error!("selftest {name}: no stack");
        return ExitCode::Fail;
    };
    arch::guest_entry::set_hooks(hooks);
    let start = code_virt + layout.code_offset as u64;
    let entry = InterruptFrame {
        rip: start,
        cs: u64::from(FLAT_RING3_CS64),
        rflags: 0x202,
        rsp: layout.stack_page + 4096,
        ss: u64::from(FLAT_RING3_DS),
        ..InterruptFrame::default()
    };
    log::info!("selftest {name}: entering ring 3 at {start:#x}");
    let error =
        arch::guest_entry::enter_guest(&entry, &VcpuStack::new(hypervisor_stack), l4.phys());
    log::error!("selftest {name}: cannot enter ring 3: {error:?}");
    ExitCode::Fail
}
