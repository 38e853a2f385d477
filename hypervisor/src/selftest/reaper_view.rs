//! `selftest=reaper-view`: the reaper's check that a destroyed domain's
//! shared_info view was released. A view still held (as if evtchn-core
//! had kept it) must be reported as a leak; once its last holder lets go,
//! the same check must pass.

use alloc::sync::Arc;

use arch::qemu::ExitCode;
use evtchn_core::abi::SharedInfo;
use evtchn_core::{DomId, SharedInfoView};

use crate::domain::reaper;
use crate::memory::frames;
use crate::memory::guest_frames::GuestFrame;

/// A view over one frame, as the builder's is.
struct View(&'static SharedInfo);

impl SharedInfoView for View {
    fn shared_info(&self) -> &SharedInfo {
        self.0
    }
}

/// Runs the check on a held and on a released view.
pub fn run() -> ExitCode {
    let Some(frame) = frames::allocate().and_then(GuestFrame::from_allocator) else {
        log::error!("selftest reaper-view: FAILED: no frame");
        return ExitCode::Fail;
    };
    let view: Arc<dyn SharedInfoView> = Arc::new(View(frame.as_shared_info()));
    let watched = Arc::downgrade(&view);
    let is_released_while_held = reaper::is_shared_view_released(DomId(7), Some(&watched));
    let was_reported = reaper::has_leak();
    drop(view);
    let is_released_after = reaper::is_shared_view_released(DomId(7), Some(&watched));
    let is_released_without_view = reaper::is_shared_view_released(DomId(8), None);
    log::info!(
        "selftest reaper-view: held: released={is_released_while_held} leak reported={was_reported}; dropped: released={is_released_after}; none: released={is_released_without_view}"
    );
    if !is_released_while_held && was_reported && is_released_after && is_released_without_view {
        log::info!(
            "selftest reaper-view: a held shared_info view is reported as a leak, a released one passes"
        );
        ExitCode::Pass
    } else {
        log::error!("selftest reaper-view: FAILED");
        ExitCode::Fail
    }
}
