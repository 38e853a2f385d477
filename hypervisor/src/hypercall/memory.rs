//! update_va_mapping (hypercall 14, spec §7.1, §7.9): change one L1 entry
//! of the caller's page tables. Only the domain's own frames and its
//! shared_info frame may be mapped, its page-table frames only read-only;
//! present entries get USER and software bit 52 (`_PAGE_GUEST_KERNEL`) as
//! Xen's `adjust_guest_l1e()` gives them.
//!
//! The global bit (G, bit 8) is the guest's to set, as on Xen, and is kept
//! as written. A global TLB entry survives a plain CR3 load, so it is the
//! page-table switch that keeps domains apart: whenever a pCPU loads
//! another domain's tables, every TLB entry goes, global ones included
//! (`arch::paging::switch_root`, the equivalent of what Xen's
//! `write_ptbase()` → `switch_cr3_cr4()` does with CR4.PGE set). Stripping
//! G here instead would also close the gap, but would change the entries
//! a guest reads back. Likewise a full flush the guest asks for
//! (UVMF_TLB_FLUSH, and the flush of the other vcpus) drops global entries
//! too, as Xen's does.

use core::sync::atomic::Ordering;

use evtchn_core::Errno;

use super::Call;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const HUGE: u64 = 1 << 7;
const GUEST_KERNEL: u64 = 1 << 52;
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
/// L1 bits a guest may set: P RW US PWT PCD A D PAT G, the three available
/// bits, bit 52 and NX.
const ALLOWED: u64 = 0x1ff | 0xe00 | GUEST_KERNEL | (1 << 63);

const UVMF_FLUSHTYPE_MASK: u64 = 3;
const UVMF_TLB_FLUSH: u64 = 1;
const UVMF_INVLPG: u64 = 2;
const UVMF_ALL: u64 = 4;

/// `update_va_mapping(va, new_pte, flags)`.
pub fn update_va_mapping(call: &mut Call<'_>) -> Result<u64, Errno> {
    let (virt, new_pte, flags) = (call.argument(0), call.argument(1), call.argument(2));
    let domain = call.domain;
    if !arch::guest_entry::is_canonical(virt)
        || (arch::layout::HYPERVISOR_VIRT_START..arch::layout::HYPERVISOR_VIRT_END).contains(&virt)
    {
        return Err(Errno::EINVAL);
    }
    let entry = if new_pte & PRESENT != 0 {
        if new_pte & !ADDRESS & !ALLOWED != 0 {
            return Err(Errno::EINVAL);
        }
        let frame = new_pte & ADDRESS;
        let is_shared_info = frame == domain.shared_info_frame.phys();
        if !is_shared_info && !domain.owns_frame(frame) {
            return Err(Errno::EINVAL);
        }
        if new_pte & WRITABLE != 0 && domain.is_page_table_frame(frame) {
            return Err(Errno::EINVAL);
        }
        new_pte | USER | GUEST_KERNEL
    } else {
        0
    };
    {
        let _guard = domain.mm_lock.lock();
        let mut table = domain.root;
        for level in (1..4).rev() {
            let index = ((virt >> (12 + 9 * level)) & 0x1ff) as usize;
            let next = domain
                .page_table(table)
                .ok_or(Errno::EINVAL)?
                .read_word(index);
            if next & PRESENT == 0 || next & HUGE != 0 {
                return Err(Errno::EINVAL);
            }
            table = next & ADDRESS;
        }
        let index = ((virt >> 12) & 0x1ff) as usize;
        let l1 = domain.page_table(table).ok_or(Errno::EINVAL)?;
        let old = l1.read_word(index);
        l1.write_word(index, entry);
        // Other vcpus may cache the old entry: have them flush (they do so
        // on their way back to the guest; the kick brings them there).
        if flags & UVMF_ALL != 0 || old & PRESENT != 0 {
            domain.tlb_generation.fetch_add(1, Ordering::AcqRel);
            for other in domain.vcpus.iter().filter(|other| other.id != call.vcpu.id) {
                crate::sched::kick(other);
            }
        }
    }
    match flags & UVMF_FLUSHTYPE_MASK {
        UVMF_TLB_FLUSH => arch::paging::flush_everything(),
        UVMF_INVLPG => arch::paging::flush(virt & !0xfff),
        _ => {}
    }
    Ok(0)
}
