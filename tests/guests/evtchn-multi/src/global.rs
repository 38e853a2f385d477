//! Global mappings do not leak between domains (isolation).
//!
//! Both domains run this image, so the static [`WINDOW`] page sits at the
//! same virtual address in each, backed by a frame of its own. Each end
//! remaps the window onto that frame with the global bit (G, bit 8) set,
//! which Xen's ABI lets a PV guest do, and writes its own marker there.
//! The scenario pins both domains' single vcpus to one pCPU; they then
//! play strict round trips over an interdomain channel, each blocking
//! until the other answers, so every round switches that pCPU from one
//! domain's page tables to the other's. Right after each wake-up an end
//! reads the window before anything else: a global TLB entry of the other
//! domain for that address, kept across the CR3 load, would show the
//! other domain's marker (and a write would land in the other domain's
//! frame). The hypervisor must drop global entries when it switches a
//! pCPU between domains. Each end also reads its L1 entry back: the G bit
//! it asked for is still there, as on Xen (Sluice keeps it; isolation
//! comes from the flush, not from refusing or stripping the bit).
//!
//! `test=global role=a|b peer=<domid> rounds=N`.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, Ordering};

use sluice_guest::hypercall::{UVMF_INVLPG, update_va_mapping};
use sluice_guest::notes::VIRT_BASE;
use sluice_guest::{StartInfo, check, check_eq, println, shared_info, smp, start_info, upcall};

use crate::common::{self, STEP_LIMIT_NS};
use crate::pingpong::{self, Role};

/// Present, writable, accessed, dirty, global.
const PTE_FLAGS: u64 = 0x1 | 0x2 | 0x20 | 0x40 | GLOBAL;
/// The global bit of a page-table entry.
const GLOBAL: u64 = 1 << 8;
/// The machine-address bits of a page-table entry.
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;

/// The page both domains map at the same address, each onto its own frame.
#[repr(C, align(4096))]
struct Window(UnsafeCell<[u64; 512]>);

// SAFETY: only this module's single vcpu touches it, through volatile
// accesses.
unsafe impl Sync for Window {}

static WINDOW: Window = Window(UnsafeCell::new([0; 512]));

/// Events the upcall handler saw on the channel port.
static RECEIVED: AtomicU32 = AtomicU32::new(0);

fn count_event(_port: u32) {
    RECEIVED.fetch_add(1, Ordering::SeqCst);
}

fn window() -> *mut u64 {
    WINDOW.0.get().cast::<u64>()
}

fn read_window() -> u64 {
    // SAFETY: the window is a static page of this image, mapped (onto its
    // own frame) for the guest's whole life; word 0 is in bounds.
    unsafe { core::ptr::read_volatile(window()) }
}

fn write_window(value: u64) {
    // SAFETY: as in `read_window`; only this vcpu writes it.
    unsafe { core::ptr::write_volatile(window(), value) }
}

pub fn main(start_info: &'static StartInfo) {
    let Some(role) = Role::from_arg(start_info) else {
        return;
    };
    let (Some(peer), Some(me)) = (common::peer(start_info), common::own_domid(start_info)) else {
        check!(false, "the command line names peer=<domid> and dom=<domid>");
        return;
    };
    let rounds = common::arg_u32(start_info, "rounds", 200);
    let marker = 0x5107_0000_0000_0000 | u64::from(me);
    let va = window() as u64;
    println!("# global: end {role:?} (d{me}), peer d{peer}, {rounds} rounds, window at {va:#x}");
    if !map_window_global(va) {
        return;
    }
    write_window(marker);
    check_eq!(
        read_window(),
        marker,
        "end {role:?}: the window reads back this domain's marker through the global mapping"
    );
    let Some(port) = pingpong::connect(role, peer) else {
        return;
    };
    play(role, port, rounds, marker);
    pingpong::disconnect(role, port, peer);
}

/// Remaps the window onto its own frame with G set, and checks the entry
/// reads back with G.
fn map_window_global(va: u64) -> bool {
    let Some(mfn) = smp::machine_frame(va) else {
        return check!(false, "the window's frame is in the p2m list");
    };
    let pte = (mfn << 12) | PTE_FLAGS;
    // SAFETY: the window maps the same frame afterwards (only the G bit
    // is new), so nothing that used it sees anything else.
    let rc = unsafe { update_va_mapping(va, pte, UVMF_INVLPG) };
    if !check_eq!(
        rc,
        0,
        "update_va_mapping of the window with the global bit (pte {pte:#x}) is rc 0"
    ) {
        return false;
    }
    let entry = l1_entry(va);
    check!(
        entry.is_some_and(|entry| entry & GLOBAL != 0 && entry & ADDRESS == mfn << 12),
        "the window's L1 entry reads back with G set and its own frame (got {entry:x?})"
    )
}

/// The L1 entry that maps `va`, read through the read-only mappings of the
/// bootstrap page tables (each table's machine frame found in the p2m).
fn l1_entry(va: u64) -> Option<u64> {
    let start_info = start_info::get()?;
    let mut table = start_info.pt_base;
    for level in (0..4).rev() {
        let index = (va >> (12 + 9 * level)) & 0x1ff;
        // SAFETY: `table` is the virtual address of one of the domain's
        // page tables, mapped readable for its life; index < 512.
        let entry = unsafe { core::ptr::read_volatile((table + index * 8) as *const u64) };
        if level == 0 || entry & 1 == 0 {
            return (entry & 1 != 0).then_some(entry);
        }
        table = virt_of(start_info, (entry & ADDRESS) >> 12)?;
    }
    None
}

/// Where the bootstrap region maps machine frame `mfn`.
fn virt_of(start_info: &StartInfo, mfn: u64) -> Option<u64> {
    (0..start_info.nr_pages).find_map(|pfn| {
        // SAFETY: mfn_list holds nr_pages u64 entries mapped for the
        // domain's life; pfn < nr_pages.
        let entry =
            unsafe { core::ptr::read_volatile((start_info.mfn_list + pfn * 8) as *const u64) };
        (entry == mfn).then_some(VIRT_BASE + pfn * 4096)
    })
}

/// `rounds` strict round trips, b first, each end blocking between them;
/// the window is read first thing after every wake-up.
fn play(role: Role, port: u32, rounds: u32, marker: u64) {
    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped");
        return;
    };
    let timer = match common::prepare_blocking() {
        Ok(timer) => timer,
        Err(errno) => {
            check!(
                false,
                "the vcpu can block with a watchdog timer ({errno:?})"
            );
            return;
        }
    };
    upcall::set_handler(port, count_event);
    shared.clear_mask(port);
    let mut received = 0u32;
    let mut foreign = 0u32;
    let mut first_foreign = None;
    for _ in 0..rounds {
        if role == Role::B {
            write_window(marker);
            let _ = sluice_guest::evtchn::send(port);
        }
        if !common::block_until(
            &|| RECEIVED.load(Ordering::SeqCst) > received,
            common::after(STEP_LIMIT_NS),
        ) {
            break;
        }
        received += 1;
        // The peer ran on this pCPU since our last access: look first.
        let seen = read_window();
        if seen != marker {
            foreign += 1;
            first_foreign.get_or_insert(seen);
        }
        if role == Role::A {
            write_window(marker);
            let _ = sluice_guest::evtchn::send(port);
        }
    }
    common::pause(20_000_000);
    upcall::mask_vcpu();
    shared.mask(port);
    upcall::clear_handler(port);
    let _ = sluice_guest::vcpu::stop_singleshot_timer(smp::current_vcpu());
    let _ = sluice_guest::evtchn::close(timer);
    check_eq!(
        received,
        rounds,
        "end {role:?}: {rounds} round trips, each a switch to the peer and back"
    );
    check_eq!(
        (foreign, first_foreign),
        (0, None),
        "end {role:?}: after every switch the window read this domain's own marker, never the peer's"
    );
    check_eq!(
        read_window(),
        marker,
        "end {role:?}: the window still holds this domain's marker at the end"
    );
}
