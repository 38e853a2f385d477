//! How evtchn-core reaches a domain's guest-visible pages: the shared_info
//! page and vcpu_info areas (2-level) and, for the FIFO ABI, guest frames the
//! domain hands over with init_control and expand_array.

use alloc::boxed::Box;

use crate::abi::{Errno, SharedInfo, VcpuId, VcpuInfo};
use crate::sync::AtomicU32;

/// Words in one 4 KiB guest frame.
pub const WORDS_PER_FRAME: usize = 1024;

/// A domain's shared_info page and its vcpus' vcpu_info areas, supplied by
/// the hypervisor (which maps the guest frames) or, in host tests, by a
/// [`SharedInfo`] on the heap; and the way to map further guest frames for
/// the FIFO ABI.
///
/// Implementations return references to atomics only: the guest writes the
/// same memory concurrently, so nothing else may be formed over it.
pub trait SharedInfoView: Send + Sync {
    /// The shared_info page (its 2-level bitmaps and legacy vcpu_info slots).
    fn shared_info(&self) -> &SharedInfo;

    /// The vcpu_info currently in use by `vcpu`: the registered area if the
    /// guest moved it (VCPUOP_register_vcpu_info), else the legacy slot in
    /// shared_info; `None` for a vcpu ≥ 32 that registered nothing (events
    /// then set pending bits but raise no upcall).
    ///
    /// A view whose vcpu_infos can move must say so first, per vcpu, with
    /// [`crate::DomainHandle::vcpu_info_moves`]: until then evtchn-core may
    /// take the legacy slot of [`SharedInfoView::shared_info`] without
    /// asking. The move then goes as on Xen: announce, copy the old
    /// vcpu_info into the new area, publish it (from then on this method
    /// returns it), store `evtchn_pending_sel = ~0` in it, and call
    /// [`crate::Domains::vcpu_mark_events_pending`]. evtchn-core looks a
    /// vcpu_info up only after its locked operation on the port (pending
    /// test-and-set, mask test-and-clear); the publication and this
    /// method's read of it must be SeqCst (in the single order with those
    /// operations and the `~0` store), so that a lookup that still finds
    /// the old slot came before the `~0` store, which makes the guest
    /// rescan every pending word.
    fn vcpu_info(&self, vcpu: VcpuId) -> Option<&VcpuInfo> {
        self.shared_info().vcpu_info.get(vcpu.0 as usize)
    }

    /// The shared_info page, if it stays at this address for good
    /// (`'static`: the hypervisor's guest frames stay mapped for the life
    /// of the hypervisor). evtchn-core asks once, when the domain is
    /// created, keeps the reference, and then reaches the page on its hot
    /// paths (a send) with plain loads instead of a dynamic call. The page
    /// must be the one [`SharedInfoView::shared_info`] returns, always.
    /// The default is `None`: every access goes through the view.
    fn fixed_shared_info(&self) -> Option<&'static SharedInfo> {
        None
    }

    /// `vcpu`'s vcpu_info if it will never move again (`'static`), else
    /// `None`: on Xen a vcpu_info moves at most once, when the guest
    /// registers one (VCPUOP_register_vcpu_info), so a registered area is
    /// settled, while a legacy slot in shared_info is not (it may still
    /// be replaced). evtchn-core asks when the domain is created and on
    /// every [`crate::Domains::vcpu_mark_events_pending`] of that vcpu
    /// (which a hypervisor calls right after moving a vcpu_info, for the
    /// upcall Xen raises then), and keeps the first answer that is
    /// `Some`; from then on it must be what [`SharedInfoView::vcpu_info`]
    /// returns. Senders use it only once the vcpu's move was announced
    /// ([`crate::DomainHandle::vcpu_info_moves`]); before, they use the
    /// legacy slot. Only used when [`SharedInfoView::fixed_shared_info`] is
    /// `Some`. evtchn-core calls this with the domain's event lock held (it
    /// only tries the lock where it may be in interrupt context): it must
    /// not call back in. The default is `None`.
    fn settled_vcpu_info(&self, vcpu: VcpuId) -> Option<&'static VcpuInfo> {
        let _ = vcpu;
        None
    }

    /// Map guest frame `gfn` of this domain writable for the FIFO ABI (a
    /// control block or an event-array page; Xen: `map_guest_page()`), until
    /// the returned [`GuestFrame`] is dropped.
    ///
    /// -EINVAL if the domain does not own the frame or it cannot become a
    /// writable page, -ENOMEM if it cannot be mapped. evtchn-core calls this
    /// with the domain's event lock held: it must not call back in.
    ///
    /// The default maps nothing and answers -EOPNOTSUPP: a domain whose view
    /// cannot map frames has no FIFO ABI (init_control fails with that
    /// errno and the domain stays 2-level).
    fn map_frame(&self, gfn: u64) -> Result<Box<dyn GuestFrame>, Errno> {
        let _ = gfn;
        Err(Errno::EOPNOTSUPP)
    }
}

impl SharedInfoView for SharedInfo {
    #[inline]
    fn shared_info(&self) -> &SharedInfo {
        self
    }
}

/// A page that lives for good: fixed, and every vcpu_info is its legacy
/// slot, settled from the start (a view for host tests and benchmarks
/// that leak their page, or a hypervisor that never moves vcpu_info).
impl SharedInfoView for &'static SharedInfo {
    #[inline]
    fn shared_info(&self) -> &SharedInfo {
        self
    }

    fn fixed_shared_info(&self) -> Option<&'static SharedInfo> {
        Some(self)
    }

    fn settled_vcpu_info(&self, vcpu: VcpuId) -> Option<&'static VcpuInfo> {
        self.vcpu_info.get(vcpu.0 as usize)
    }
}

/// One guest frame mapped for the FIFO ABI, seen as atomic 32-bit words.
///
/// Dropping it releases the mapping (Xen: `unmap_guest_page()`). evtchn-core
/// drops frames on EVTCHNOP_reset, on domain destruction and when an
/// init_control fails after mapping; never in interrupt context and never
/// with a channel lock held, but possibly with the domain's event lock
/// (and ABI lock) held, so the drop must not call back into evtchn-core.
pub trait GuestFrame: Send + Sync {
    /// The frame's words, normally [`WORDS_PER_FRAME`] of them (word i at
    /// byte 4·i). A shorter slice leaves the missing words unusable: ports
    /// there read as masked and their events wait as if the page were
    /// absent.
    fn words(&self) -> &[AtomicU32];
}
