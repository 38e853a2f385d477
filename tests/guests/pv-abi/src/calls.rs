//! Hypercalls checked by their return values: xen_version, console_io,
//! callback_op, sched_op, vcpu_op, physdev_op and unknown numbers (spec §6,
//! §7.1, §7.6, §7.10–§7.12).

use sluice_guest::errno::Errno;
use sluice_guest::hypercall::hypercall5;
use sluice_guest::sched::{self, ShutdownReason};
use sluice_guest::upcall::{self, CALLBACKTYPE_EVENT, CALLBACKTYPE_FAILSAFE};
use sluice_guest::{StartInfo, check, check_eq, console, physdev, tap, vcpu, version};

use crate::{NO_SUCH_DOMAIN, NO_SUCH_VCPU, NON_CANONICAL};

/// Callback type: syscall.
const CALLBACKTYPE_SYSCALL: u16 = 2;
/// Callback type: NMI.
const CALLBACKTYPE_NMI: u16 = 4;
/// A callback type no Xen defines.
const CALLBACKTYPE_UNKNOWN: u16 = 100;

/// xen_version: page size and the feature bitmap.
pub fn xen_version(start_info: &StartInfo) {
    check_eq!(version::page_size(), 4096, "XENVER_pagesize is 4096");
    // 4.17, x86 PV: mmu_pt_update_preserve_ad 5, highmem_assist 6,
    // gnttab_map_avail_bits 7, memory_op_vnode_supported 13,
    // direct_mapped 17, and dom0 11 for the hardware domain.
    let common = (1 << 5) | (1 << 6) | (1 << 7) | (1 << 13) | (1 << 17);
    let expected = if start_info.is_initial_domain() {
        common | (1 << 11)
    } else {
        common
    };
    check_eq!(
        version::features(0),
        Ok(expected),
        "XENVER_get_features word 0 lists exactly the x86 PV features of 4.17"
    );
    check_eq!(
        Errno::result(version::raw(0x1000)),
        Err(Errno::ENOSYS),
        "xen_version with an unknown command fails -ENOSYS"
    );
}

/// console_io with other commands and counts.
pub fn console_io() {
    let mut empty = [0u8; 0];
    check_eq!(
        console::raw(console::CONSOLEIO_WRITE, &mut empty),
        0,
        "CONSOLEIO_write of 0 bytes is rc 0"
    );
    let mut buffer = [0u8; 8];
    check_eq!(
        Errno::result(console::raw(2, &mut buffer)),
        Err(Errno::ENOSYS),
        "console_io with command 2 fails -ENOSYS"
    );
}

/// callback_op and set_callbacks (spec §7.6).
pub fn callback_op() {
    check_eq!(
        upcall::callback_register(CALLBACKTYPE_EVENT, 0, NON_CANONICAL),
        Err(Errno::EINVAL),
        "CALLBACKOP_register with a non-canonical address fails -EINVAL"
    );
    check_eq!(
        upcall::callback_register(CALLBACKTYPE_UNKNOWN, 0, 0xffff_ffff_8000_0000),
        Err(Errno::ENOSYS),
        "CALLBACKOP_register of an unknown type fails -ENOSYS"
    );
    check_eq!(
        upcall::callback_register(CALLBACKTYPE_UNKNOWN, 0, NON_CANONICAL),
        Err(Errno::EINVAL),
        "CALLBACKOP_register checks the address (-EINVAL) before the type"
    );
    check_eq!(
        upcall::callback_unregister(CALLBACKTYPE_EVENT),
        Err(Errno::EINVAL),
        "CALLBACKOP_unregister of the event callback fails -EINVAL"
    );
    check_eq!(
        upcall::callback_unregister(CALLBACKTYPE_FAILSAFE),
        Err(Errno::EINVAL),
        "CALLBACKOP_unregister of the failsafe callback fails -EINVAL"
    );
    check_eq!(
        upcall::callback_unregister(CALLBACKTYPE_SYSCALL),
        Err(Errno::EINVAL),
        "CALLBACKOP_unregister of the syscall callback fails -EINVAL"
    );
    check_eq!(
        upcall::callback_unregister(CALLBACKTYPE_NMI),
        Ok(()),
        "CALLBACKOP_unregister of the NMI callback is rc 0"
    );
    check_eq!(
        upcall::callback_unregister(CALLBACKTYPE_UNKNOWN),
        Err(Errno::ENOSYS),
        "CALLBACKOP_unregister of an unknown type fails -ENOSYS"
    );
    let mut scratch = [0u64; 2];
    check_eq!(
        Errno::result(upcall::callback_op_raw(2, &mut scratch)),
        Err(Errno::ENOSYS),
        "callback_op command 2 fails -ENOSYS"
    );
    // SAFETY: set_callbacks reads no guest memory; the non-canonical
    // addresses are never used because the vcpu is still masked and the
    // runtime's callbacks are registered again right after.
    let rc = unsafe { hypercall5(4, NON_CANONICAL, NON_CANONICAL, 0, 0, 0) };
    check_eq!(
        rc,
        0,
        "set_callbacks ignores errors: non-canonical addresses still return 0"
    );
    check_eq!(
        upcall::set_callbacks(),
        Ok(()),
        "set_callbacks(event, failsafe, 0) is rc 0"
    );
    check_eq!(
        upcall::register_callbacks(),
        Ok(()),
        "CALLBACKOP_register of the event and failsafe callbacks is rc 0"
    );
}

/// sched_op commands other than block, poll and shutdown.
pub fn sched_op() {
    check_eq!(sched::yield_now(), Ok(()), "SCHEDOP_yield is rc 0");
    let mut scratch = [0u64; 4];
    check_eq!(
        Errno::result(sched::op_raw(100, &mut scratch)),
        Err(Errno::ENOSYS),
        "sched_op command 100 fails -ENOSYS"
    );
    check_eq!(
        sched::remote_shutdown(NO_SUCH_DOMAIN, ShutdownReason::Poweroff),
        Err(Errno::ESRCH),
        "SCHEDOP_remote_shutdown of a domain that does not exist fails -ESRCH"
    );
}

/// vcpu_op (spec §7.11).
pub fn vcpu_op(has_vcpu1: bool) {
    check_eq!(vcpu::is_up(0), Ok(true), "VCPUOP_is_up(0) is 1");
    check_eq!(
        vcpu::is_up(NO_SUCH_VCPU),
        Err(Errno::ENOENT),
        "VCPUOP_is_up of a vcpu that does not exist fails -ENOENT"
    );
    if has_vcpu1 {
        check_eq!(
            vcpu::is_up(1),
            Ok(false),
            "vcpu 1 starts down: VCPUOP_is_up(1) is 0"
        );
        check_eq!(
            vcpu::up(1),
            Err(Errno::EINVAL),
            "VCPUOP_up of a vcpu never initialised fails -EINVAL"
        );
        check_eq!(
            vcpu::set_singleshot_timer(1, 1),
            Err(Errno::EINVAL),
            "VCPUOP_set_singleshot_timer for another vcpu fails -EINVAL"
        );
        check_eq!(
            vcpu::stop_singleshot_timer(1),
            Err(Errno::EINVAL),
            "VCPUOP_stop_singleshot_timer for another vcpu fails -EINVAL"
        );
    } else {
        tap::skip(
            format_args!("vcpu 1 starts down; vcpu_op on another vcpu"),
            "the domain has no vcpu 1",
        );
    }
    // Both checks come before the argument is copied (spec §7.11).
    // SAFETY: the argument pointer is unmapped; the hypervisor must refuse
    // before reading it, and a read would fault into -EFAULT, never a write.
    let unmapped = |target: u32| unsafe { hypercall5(24, 8, u64::from(target), 0x1000, 0, 0) };
    if has_vcpu1 {
        check_eq!(
            Errno::result(unmapped(1)),
            Err(Errno::EINVAL),
            "set_singleshot_timer for another vcpu fails -EINVAL before reading its argument"
        );
    }
    check_eq!(
        Errno::result(unmapped(NO_SUCH_VCPU)),
        Err(Errno::ENOENT),
        "vcpu_op on a vcpu that does not exist fails -ENOENT before reading its argument"
    );
    check_eq!(
        vcpu::up(NO_SUCH_VCPU),
        Err(Errno::ENOENT),
        "VCPUOP_up of a vcpu that does not exist fails -ENOENT"
    );
    check_eq!(
        vcpu::set_singleshot_timer(NO_SUCH_VCPU, 1),
        Err(Errno::ENOENT),
        "VCPUOP_set_singleshot_timer of a vcpu that does not exist fails -ENOENT"
    );
    check_eq!(
        vcpu::stop_singleshot_timer(0),
        Ok(()),
        "VCPUOP_stop_singleshot_timer(0) is rc 0"
    );
    check_eq!(
        vcpu::set_periodic_timer(0, 999_999),
        Err(Errno::EINVAL),
        "VCPUOP_set_periodic_timer below 1 ms fails -EINVAL"
    );
    check_eq!(
        vcpu::set_periodic_timer(0, 10_000_000),
        Ok(()),
        "VCPUOP_set_periodic_timer of 10 ms is rc 0"
    );
    // SAFETY: VCPUOP 14 and 100 name no argument the hypervisor could use
    // on 4.17 (they are unknown); the null pointer is never written.
    let unknown =
        [14u64, 100].map(|command| Errno::result(unsafe { hypercall5(24, command, 0, 0, 0, 0) }));
    check_eq!(
        unknown,
        [Err(Errno::ENOSYS), Err(Errno::ENOSYS)],
        "vcpu_op commands 14 (4.18's register_runstate_phys_area) and 100 fail -ENOSYS"
    );
}

/// physdev_op: eoi, irq_status_query, set_iopl (spec §6.2).
pub fn physdev_op() {
    check_eq!(
        physdev::set_iopl(4),
        Err(Errno::EINVAL),
        "PHYSDEVOP_set_iopl(4) fails -EINVAL"
    );
    check_eq!(
        physdev::set_iopl(0),
        Ok(()),
        "PHYSDEVOP_set_iopl(0) is rc 0"
    );
    check_eq!(
        physdev::irq_status_query(1_000_000),
        Err(Errno::EINVAL),
        "PHYSDEVOP_irq_status_query past nr_pirqs fails -EINVAL"
    );
    let flags = physdev::irq_status_query(1);
    check!(
        flags.is_ok_and(|f| f & physdev::XENIRQSTAT_NEEDS_EOI != 0),
        "PHYSDEVOP_irq_status_query(1) reports needs_eoi, always set for PV ({flags:?})"
    );
    check_eq!(
        physdev::eoi(1_000_000),
        Err(Errno::EINVAL),
        "PHYSDEVOP_eoi past nr_pirqs fails -EINVAL"
    );
    let mut scratch = [0u64; 4];
    check_eq!(
        Errno::result(physdev::op(1000, &mut scratch)),
        Err(Errno::ENOSYS),
        "physdev_op command 1000 fails -ENOSYS"
    );
}

/// Hypercall numbers nothing serves.
pub fn unknown_hypercalls() {
    for number in [63u32, 127] {
        // SAFETY: an unknown hypercall reads no memory; the arguments are 0.
        let rc = unsafe { hypercall5(number, 0, 0, 0, 0, 0) };
        check_eq!(
            Errno::result(rc),
            Err(Errno::ENOSYS),
            "hypercall {number} (unknown) fails -ENOSYS"
        );
    }
}
