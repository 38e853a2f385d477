//! The PV domain builder: from a boot module (an ELF image with Xen's
//! notes and a command line) to a domain ready to run, laid out as Xen's PV
//! builder does (spec §7.9).
//!
//! The bootstrap region starts at the image's VIRT_BASE and holds, in
//! order: the kernel at its virtual addresses, the p2m list (`nr_pages`
//! u64s, pfn = (va − VIRT_BASE) / 4096), start_info, the bootstrap page
//! tables (L4, L3, L2, then one L1 per 2 MiB, mapped read-only), one stack
//! page, and at least 512 KiB of slack up to a 4 MiB boundary. Everything
//! is mapped with 4 KiB pages, user-accessible (a PV kernel runs in ring 3),
//! read-write except the page tables. L4 slot 0 stays empty; slots
//! 256..=271 are the hypervisor's, copied supervisor-only. The shared_info
//! page is the hypervisor's own frame, not mapped: the guest maps it with
//! update_va_mapping.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use arch::gdt::{FLAT_RING3_CS64, FLAT_RING3_DS};
use arch::idt::InterruptFrame;
use arch::layout::PAGE_SIZE;
use arch::paging::PageTables;
use evtchn_core::{DomId, DomainConfig, FifoSupport, Privilege};

use super::config::{self, ArgsError, BuildStage, CpuSet, DomainArgs};
use super::elf::{self, GuestImage, ImageError};
use super::{Domain, DomainParts, VcpuState};
use crate::bootinfo::Module;
use crate::memory::guest_frames::GuestFrame;
use crate::memory::{frames, space};

/// Page-table entry bits the builder writes: present, writable, user,
/// accessed, dirty (Xen's `…067`), and for L1 entries software bit 52
/// (`_PAGE_GUEST_KERNEL`).
const PTE_TABLE: u64 = 0x067;
const PTE_PAGE: u64 = 0x067 | (1 << 52);
const PTE_PAGE_READ_ONLY: u64 = 0x065 | (1 << 52);
/// Slack after the stack page (spec §7.9).
const SLACK: u64 = 512 * 1024;
const FOUR_MIB: u64 = 4 << 20;
const TWO_MIB: u64 = 2 << 20;
/// Hypervisor stack per vcpu, in pages.
const VCPU_STACK_PAGES: u64 = 8;
/// pirqs a domain can name (none is mapped: Sluice routes no host IRQ to
/// guests yet).
pub const NR_PIRQS: u32 = 256;
/// Largest module accepted.
const MAX_IMAGE_BYTES: u64 = 64 << 20;

/// start_info field offsets (spec §7.7).
mod start_info {
    pub const SIZE: usize = 1168;
    pub const MAGIC: usize = 0;
    pub const NR_PAGES: usize = 32;
    pub const SHARED_INFO: usize = 40;
    pub const FLAGS: usize = 48;
    pub const PT_BASE: usize = 88;
    pub const NR_PT_FRAMES: usize = 96;
    pub const MFN_LIST: usize = 104;
    pub const CMD_LINE: usize = 128;
    pub const CMD_LINE_SIZE: usize = 1024;
    pub const FIRST_P2M_PFN: usize = 1152;
    pub const SIF_PRIVILEGED: u32 = 1 << 0;
    pub const SIF_INITDOMAIN: u32 = 1 << 1;
}

/// Why a module did not become a domain.
#[derive(Debug)]
pub enum BuildError {
    /// The module line.
    Args(ArgsError),
    /// The image.
    Image(ImageError),
    /// The image does not fit the bootstrap layout.
    Layout(&'static str),
    /// Out of memory.
    Memory,
    /// The domain id is taken or too large.
    DomainId,
    /// `cpus=` names no pCPU that is online.
    NoOnlineCpu(CpuSet),
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Args(error) => write!(formatter, "module line: {error}"),
            Self::Image(error) => write!(formatter, "image: {error}"),
            Self::Layout(why) => write!(formatter, "layout: {why}"),
            Self::Memory => formatter.write_str("out of memory"),
            Self::DomainId => formatter.write_str("domain id taken or too large"),
            Self::NoOnlineCpu(requested) => write!(
                formatter,
                "cpus={requested} names no online pCPU (online: {})",
                online_cpus()
            ),
        }
    }
}

/// vcpus placed so far: the round-robin position of the next one (a
/// domain's vcpu k goes to entry (position + k) mod n of its n-pCPU
/// affinity set).
static NEXT_PCPU: AtomicU32 = AtomicU32::new(0);

/// The pCPUs that came up.
fn online_cpus() -> CpuSet {
    let mut set = CpuSet::default();
    for index in 0..arch::percpu::count() {
        if arch::percpu::by_index(index).is_some_and(|cpu| cpu.is_online()) {
            set.insert(index);
        }
    }
    set
}

/// Where the vcpus of the domain built from module `index` may run: its
/// `cpus=` set without the pCPUs that are not online (warned about), or
/// every online pCPU.
fn affinity(index: usize, args: &DomainArgs) -> Result<CpuSet, BuildError> {
    let online = online_cpus();
    let Some(requested) = args.cpus else {
        return Ok(online);
    };
    let usable = requested.intersection(online);
    if usable.is_empty() {
        return Err(BuildError::NoOnlineCpu(requested));
    }
    let missing = requested.difference(online);
    if !missing.is_empty() {
        log::warn!(
            "module {index} (d{}): cpus={requested}: pCPU(s) {missing} not online (online: {online}); ignored",
            args.domid
        );
    }
    Ok(usable)
}

/// Where everything goes, as guest virtual addresses.
struct Layout {
    base: u64,
    p2m: u64,
    start_info: u64,
    page_tables: u64,
    l1_count: u64,
    stack: u64,
    end: u64,
}

impl Layout {
    fn compute(image: &GuestImage, nr_pages: u64) -> Result<Self, BuildError> {
        let base = if image.virt_base != 0 {
            image.virt_base
        } else {
            image.virt_start
        };
        if !base.is_multiple_of(TWO_MIB) || base > image.virt_start {
            return Err(BuildError::Layout(
                "VIRT_BASE is not 2 MiB aligned or lies above the image",
            ));
        }
        let kernel_end = image
            .virt_end
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(BuildError::Layout("image end overflows"))?;
        const OVERFLOW: &str = "the bootstrap region overflows the address space";
        let page_offset = |base: u64, pages: u64| {
            pages
                .checked_mul(PAGE_SIZE)
                .and_then(|bytes| base.checked_add(bytes))
                .ok_or(BuildError::Layout(OVERFLOW))
        };
        let p2m = kernel_end;
        let start_info = page_offset(p2m, (nr_pages * 8).div_ceil(PAGE_SIZE))?;
        let page_tables = page_offset(start_info, 1)?;
        let mut l1_count = 1;
        loop {
            let stack = page_offset(page_tables, 3 + l1_count)?;
            let end = page_offset(stack, 1)?
                .checked_add(SLACK)
                .and_then(|end| end.checked_next_multiple_of(FOUR_MIB))
                .ok_or(BuildError::Layout(OVERFLOW))?;
            let needed = (end - base).div_ceil(TWO_MIB);
            if needed <= l1_count {
                if !arch::guest_copy::is_guest_range(base, (end - base) as usize) {
                    return Err(BuildError::Layout(
                        "the bootstrap region is not canonical or overlaps the hypervisor's range",
                    ));
                }
                if (base >> 30) != ((end - 1) >> 30) {
                    return Err(BuildError::Layout(
                        "the bootstrap region crosses a 1 GiB boundary",
                    ));
                }
                if (end - base) / PAGE_SIZE > nr_pages {
                    return Err(BuildError::Layout("mem= is too small for the image"));
                }
                return Ok(Self {
                    base,
                    p2m,
                    start_info,
                    page_tables,
                    l1_count,
                    stack,
                    end,
                });
            }
            l1_count = needed;
        }
    }

    fn pfn(&self, virt: u64) -> usize {
        ((virt - self.base) / PAGE_SIZE) as usize
    }
}

/// Builds and registers the domain module `index` describes; logs and
/// returns the error if it cannot.
pub fn build(index: usize, module: &Module) -> Result<Arc<Domain>, BuildError> {
    let args = config::parse(&module.string).map_err(BuildError::Args)?;
    if usize::from(args.domid) >= super::MAX_DOMAINS || super::exists(DomId(args.domid)) {
        return Err(BuildError::DomainId);
    }
    let size = module.end.saturating_sub(module.start);
    if size > MAX_IMAGE_BYTES {
        return Err(BuildError::Image(ImageError::NotElf));
    }
    let mut bytes = vec![0u8; size as usize];
    if !crate::physmem::copy_from_phys(module.start, &mut bytes) {
        return Err(BuildError::Image(ImageError::NotElf));
    }
    let image = elf::parse(&bytes).map_err(BuildError::Image)?;
    let nr_pages = args.memory_mib * (1 << 20) / PAGE_SIZE;
    let layout = Layout::compute(&image, nr_pages)?;

    let affinity = affinity(index, &args)?;

    // What the build takes from the frame allocator, less the vmap area's
    // own tables (the hypervisor's, kept), is what destroying the domain
    // must give back (domain::reaper checks it). Builds run one at a time
    // before any pCPU runs a vcpu, so nothing else allocates meanwhile.
    super::reaper::note_baseline();
    let free_before = frames::stats().free_frames;
    let vmap_tables_before = space::vmap_table_frames();

    // Everything the build takes is held in `taken` until the domain owns
    // it: a build that fails gives it all back (no CPU has used any of it).
    let mut taken = Taken::default();
    let (page_table_frames, root, shared_info_frame) =
        match fill(&mut taken, &image, &bytes, &layout, &args, affinity) {
            Ok(filled) => filled,
            Err(error) => {
                let given_back = super::reaper::free_unused_build(taken);
                let kept = space::vmap_table_frames() - vmap_tables_before;
                super::reaper::check_failed_build(index, given_back, free_before - kept);
                return Err(error);
            }
        };
    let Taken {
        memory,
        stacks: vcpu_homes,
        ..
    } = taken;

    let vmap_tables_grown = space::vmap_table_frames() - vmap_tables_before;
    let frames_taken =
        (free_before - frames::stats().free_frames).saturating_sub(vmap_tables_grown);

    let privilege = if args.is_privileged {
        Privilege::Privileged
    } else {
        Privilege::Unprivileged
    };
    let domain = Arc::new(Domain::new(DomainParts {
        id: DomId(args.domid),
        privilege,
        frames: memory,
        page_table_frames,
        root,
        shared_info_frame,
        affinity,
        vcpu_homes,
        frames_taken,
    }));
    let events_config = DomainConfig {
        domid: domain.id,
        vcpus: args.vcpus,
        privilege,
        max_evtchn_port: if args.is_privileged {
            i32::MAX as u32
        } else {
            1023
        },
        nr_pirqs: NR_PIRQS,
        fifo: if args.fifo {
            FifoSupport::Enabled
        } else {
            FifoSupport::Disabled
        },
    };
    // From here on a failure leaves an assembled domain that nothing has
    // run or looked up yet: the reaper frees it as a destroyed one (its
    // frames counted back). Nothing keyed by its id is undone but what
    // this build did under it: the id may be another domain's.
    crate::pirq::new_domain(domain.id);
    let view = crate::events::shared_view(&domain);
    domain.shared_view.call_once(|| Arc::downgrade(&view));
    if crate::events::domains()
        .create_domain(events_config, view)
        .is_err()
    {
        super::reaper::bury(domain);
        return Err(BuildError::DomainId);
    }
    if let Some(handle) = crate::events::domains().handle(domain.id) {
        domain.events.call_once(|| handle);
    }
    if !super::register(domain.clone()) {
        if let Err(errno) = crate::events::domains().destroy_domain(domain.id) {
            log::warn!("d{}: event channels: destroy gave {errno}", domain.id.0);
        }
        super::reaper::bury(domain);
        return Err(BuildError::DomainId);
    }

    let entry = InterruptFrame {
        rip: image.entry,
        cs: u64::from(FLAT_RING3_CS64),
        rflags: 0x202,
        rsp: layout.stack + PAGE_SIZE,
        ss: u64::from(FLAT_RING3_DS),
        rsi: layout.start_info,
        ..InterruptFrame::default()
    };
    if let Some(vcpu0) = domain.vcpus.first() {
        *vcpu0.initial_frame.lock() = Some(entry);
        vcpu0
            .is_initialised
            .store(true, core::sync::atomic::Ordering::Release);
        vcpu0.set_state(VcpuState::Running);
    }
    for vcpu in domain.vcpus.iter() {
        crate::timers::start_default_periodic(vcpu);
        crate::sched::host(&domain, vcpu);
    }
    #[cfg(feature = "selftest")]
    if args.is_spoiled_at_resume {
        crate::selftest::spoiled_tables::arm(domain.id);
    }
    log_placement(&domain);
    log::info!(
        "d{}: built from module {index}: {} vcpu(s) on pCPUs {affinity}, {} MiB ({frames_taken} frames), entry {:#x}, {}",
        args.domid,
        args.vcpus,
        args.memory_mib,
        image.entry,
        if args.is_privileged {
            "privileged"
        } else {
            "unprivileged"
        }
    );
    Ok(domain)
}

/// Whether the module asked (`build_fail=`, self-test builds) for its
/// build to fail at `stage`: the scenario `build-fail-frees` checks that
/// such a build gives back what it took, without depending on how many
/// frames the machine has free.
#[cfg(feature = "selftest")]
fn is_failure_injected(args: &DomainArgs, stage: BuildStage) -> bool {
    args.build_fail == Some(stage)
}

/// Without self-tests no build failure is injected.
#[cfg(not(feature = "selftest"))]
fn is_failure_injected(_args: &DomainArgs, _stage: BuildStage) -> bool {
    false
}

/// What a build has taken from the allocator and not yet handed to its
/// domain: given back by `reaper::free_unused_build` if the build fails.
#[derive(Default)]
pub struct Taken {
    /// The domain's memory (its bootstrap page tables among it).
    pub memory: Vec<GuestFrame>,
    /// The shared_info frame, once allocated.
    pub shared_info: Option<GuestFrame>,
    /// (pCPU, hypervisor stack) per vcpu, as far as allocated.
    pub stacks: Vec<(u32, arch::guest_entry::VcpuStack)>,
}

/// Takes the domain's memory, shared_info frame and vcpu stacks into
/// `taken` and lays out the image, the p2m, the page tables and
/// start_info; returns the page-table frames (the L4 first), the root's
/// address and the shared_info frame. On an error `taken` holds whatever
/// was allocated so far.
fn fill(
    taken: &mut Taken,
    image: &GuestImage,
    bytes: &[u8],
    layout: &Layout,
    args: &DomainArgs,
    affinity: CpuSet,
) -> Result<(Vec<GuestFrame>, u64, GuestFrame), BuildError> {
    let nr_pages = args.memory_mib * (1 << 20) / PAGE_SIZE;
    // Memory: nr_pages fresh zeroed frames.
    taken.memory.reserve_exact(nr_pages as usize);
    for page in 0..nr_pages {
        if page == nr_pages / 2 && is_failure_injected(args, BuildStage::Memory) {
            return Err(BuildError::Memory);
        }
        let frame = frames::allocate()
            .and_then(GuestFrame::from_allocator)
            .ok_or(BuildError::Memory)?;
        taken.memory.push(frame);
    }
    let memory = &taken.memory;
    let frame_at = |virt: u64| memory.get(layout.pfn(virt)).copied();

    load_segments(image, bytes, &frame_at)?;
    if let Some(page) = image.hypercall_page {
        let frame = frame_at(page).ok_or(BuildError::Layout("hypercall page"))?;
        frame.write(0, &hypercall_page());
    }
    // The p2m list.
    for (pfn, frame) in memory.iter().enumerate() {
        let virt = layout.p2m + pfn as u64 * 8;
        let target = frame_at(virt).ok_or(BuildError::Layout("p2m"))?;
        target.write_word(((virt % PAGE_SIZE) / 8) as usize, frame.mfn());
    }

    let shared_info_frame = frames::allocate()
        .and_then(GuestFrame::from_allocator)
        .ok_or(BuildError::Memory)?;
    taken.shared_info = Some(shared_info_frame);
    init_shared_info(shared_info_frame);

    let page_table_frames = build_page_tables(layout, &taken.memory)?;
    let root = page_table_frames
        .first()
        .map(|frame| frame.phys())
        .ok_or(BuildError::Memory)?;
    write_start_info(layout, args, &taken.memory, shared_info_frame)?;

    // vcpus are spread over the affinity set, round-robin across domains
    // (with no cpus=, vcpu k of all domains lands on pCPU k mod n).
    let first_pcpu = NEXT_PCPU.fetch_add(args.vcpus, Ordering::Relaxed);
    for vcpu in 0..args.vcpus {
        let pcpu = (first_pcpu + vcpu)
            .checked_rem(affinity.count())
            .and_then(|entry| affinity.nth(entry))
            .ok_or(BuildError::NoOnlineCpu(affinity))?;
        if vcpu + 1 == args.vcpus && is_failure_injected(args, BuildStage::Stacks) {
            return Err(BuildError::Memory);
        }
        let stack = space::allocate_stack(VCPU_STACK_PAGES).map_err(|_| BuildError::Memory)?;
        taken
            .stacks
            .push((pcpu, arch::guest_entry::VcpuStack::new(stack)));
    }
    Ok((page_table_frames, root, shared_info_frame))
}

/// One line saying where each vcpu runs: `d1: placement: d1v0 on pCPU 1,
/// d1v1 on pCPU 1` (split over several lines for many vcpus).
fn log_placement(domain: &Domain) {
    use core::fmt::Write;
    for chunk in domain.vcpus.chunks(8) {
        let mut line = arrayvec::ArrayString::<200>::new();
        for (number, vcpu) in chunk.iter().enumerate() {
            let separator = if number == 0 { "" } else { ", " };
            let _ = write!(
                line,
                "{separator}d{}v{} on pCPU {}",
                domain.id.0,
                vcpu.id.0,
                vcpu.pcpu()
            );
        }
        log::info!("d{}: placement: {line}", domain.id.0);
    }
}

fn load_segments(
    image: &GuestImage,
    bytes: &[u8],
    frame_at: &dyn Fn(u64) -> Option<GuestFrame>,
) -> Result<(), BuildError> {
    for segment in &image.segments {
        let contents = bytes
            .get(segment.file_offset..segment.file_offset + segment.file_size)
            .ok_or(BuildError::Image(ImageError::BadSegment))?;
        let mut done = 0usize;
        while done < contents.len() {
            let virt = segment.virt + done as u64;
            let in_page = (virt % PAGE_SIZE) as usize;
            let chunk = (PAGE_SIZE as usize - in_page).min(contents.len() - done);
            let frame = frame_at(virt).ok_or(BuildError::Layout("segment outside memory"))?;
            frame.write(in_page, contents.get(done..done + chunk).unwrap_or(&[]));
            done += chunk;
        }
    }
    Ok(())
}

/// Xen's hypercall page (spec §7.3): 0xCC, then 128 stubs of 32 bytes;
/// stub 23 (iret) pushes rax too and never returns.
fn hypercall_page() -> [u8; 4096] {
    let mut page = [0xccu8; 4096];
    for (number, stub) in page.chunks_exact_mut(32).enumerate() {
        let number = number as u32;
        let [b0, b1, b2, b3] = number.to_le_bytes();
        let code: &[u8] = if number == 23 {
            &[
                0x51, 0x41, 0x53, 0x50, 0xb8, 0x17, 0x00, 0x00, 0x00, 0x0f, 0x05,
            ]
        } else {
            &[
                0x51, 0x41, 0x53, 0xb8, b0, b1, b2, b3, 0x0f, 0x05, 0x41, 0x5b, 0x59, 0xc3,
            ]
        };
        if let Some(target) = stub.get_mut(..code.len()) {
            target.copy_from_slice(code);
        }
    }
    page
}

/// Zeroed (done by the allocator wrapper), every vcpu_info masked, time
/// and wall clock published.
fn init_shared_info(frame: GuestFrame) {
    let shared = frame.as_shared_info();
    for info in &shared.vcpu_info {
        info.evtchn_upcall_mask.store(1, Ordering::SeqCst);
        crate::time::publish_vcpu_time(info);
    }
    crate::time::publish_wallclock(shared);
}

/// L4, L3, L2 and the L1s in the bootstrap region; returns their frames
/// (the L4 first).
fn build_page_tables(
    layout: &Layout,
    memory: &[GuestFrame],
) -> Result<Vec<GuestFrame>, BuildError> {
    let table_count = 3 + layout.l1_count as usize;
    let first = layout.pfn(layout.page_tables);
    let tables = memory
        .get(first..first + table_count)
        .ok_or(BuildError::Layout("page tables outside memory"))?;
    let (&l4, rest) = tables.split_first().ok_or(BuildError::Memory)?;
    let (&l3, rest) = rest.split_first().ok_or(BuildError::Memory)?;
    let (&l2, l1s) = rest.split_first().ok_or(BuildError::Memory)?;
    let index = |virt: u64, level: u32| ((virt >> (12 + 9 * level)) & 0x1ff) as usize;
    l4.write_word(index(layout.base, 3), l3.phys() | PTE_TABLE);
    l3.write_word(index(layout.base, 2), l2.phys() | PTE_TABLE);
    let pt_start = layout.page_tables;
    let pt_end = pt_start + table_count as u64 * PAGE_SIZE;
    let mut virt = layout.base;
    while virt < layout.end {
        let chunk = ((virt - layout.base) / TWO_MIB) as usize;
        let l1 = *l1s.get(chunk).ok_or(BuildError::Layout("L1 tables"))?;
        if virt.is_multiple_of(TWO_MIB) {
            l2.write_word(index(virt, 1), l1.phys() | PTE_TABLE);
        }
        let frame = memory
            .get(layout.pfn(virt))
            .ok_or(BuildError::Layout("region outside memory"))?;
        let flags = if (pt_start..pt_end).contains(&virt) {
            PTE_PAGE_READ_ONLY
        } else {
            PTE_PAGE
        };
        l1.write_word(index(virt, 0), frame.phys() | flags);
        virt += PAGE_SIZE;
    }
    let mut guest_tables = PageTables::from_root(l4.phys());
    guest_tables.share_hypervisor_slots(&PageTables::current());
    Ok(tables.to_vec())
}

fn write_start_info(
    layout: &Layout,
    args: &DomainArgs,
    memory: &[GuestFrame],
    shared_info: GuestFrame,
) -> Result<(), BuildError> {
    use start_info::*;
    let mut page = [0u8; SIZE];
    let mut put = |offset: usize, value: &[u8]| {
        if let Some(target) = page.get_mut(offset..offset + value.len()) {
            target.copy_from_slice(value);
        }
    };
    put(MAGIC, b"xen-3.0-x86_64\0");
    put(NR_PAGES, &(memory.len() as u64).to_le_bytes());
    put(SHARED_INFO, &shared_info.phys().to_le_bytes());
    let flags = if args.is_privileged {
        SIF_PRIVILEGED | SIF_INITDOMAIN
    } else {
        0
    };
    put(FLAGS, &flags.to_le_bytes());
    put(PT_BASE, &layout.page_tables.to_le_bytes());
    put(NR_PT_FRAMES, &(3 + layout.l1_count).to_le_bytes());
    put(MFN_LIST, &layout.p2m.to_le_bytes());
    let cmdline = args.guest_cmdline.as_bytes();
    let length = cmdline.len().min(CMD_LINE_SIZE - 1);
    put(CMD_LINE, cmdline.get(..length).unwrap_or(&[]));
    let mapped_pages = (layout.end - layout.base) / PAGE_SIZE;
    put(FIRST_P2M_PFN, &mapped_pages.to_le_bytes());
    let frame = memory
        .get(layout.pfn(layout.start_info))
        .ok_or(BuildError::Layout("start_info"))?;
    frame.write(0, &page);
    Ok(())
}
