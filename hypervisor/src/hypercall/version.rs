//! xen_version (spec §7.12): Sluice answers as Xen 4.17 does, since it
//! follows that release's ABI.

use evtchn_core::Errno;

use super::{Call, GuestOut};

const XENVER_VERSION: u64 = 0;
const XENVER_EXTRAVERSION: u64 = 1;
const XENVER_COMPILE_INFO: u64 = 2;
const XENVER_CAPABILITIES: u64 = 3;
const XENVER_CHANGESET: u64 = 4;
const XENVER_PLATFORM_PARAMETERS: u64 = 5;
const XENVER_GET_FEATURES: u64 = 6;
const XENVER_PAGESIZE: u64 = 7;
const XENVER_GUEST_HANDLE: u64 = 8;
const XENVER_COMMANDLINE: u64 = 9;

/// 4.17.
const VERSION: u64 = (4 << 16) | 17;
/// The release Sluice follows, and that it is Sluice.
const EXTRAVERSION: &[u8] = b".7-sluice";
const CAPABILITIES: &[u8] = b"xen-3.0-x86_64 ";
/// HYPERVISOR_VIRT_START for 64-bit PV guests.
const VIRT_START: u64 = 0xffff_8000_0000_0000;

/// XENFEAT bits of submap 0 for an x86 PV guest (spec §7.12):
/// mmu_pt_update_preserve_ad 5, highmem_assist 6, gnttab_map_avail_bits 7,
/// memory_op_vnode_supported 13, direct_mapped 17; dom0 11 for the
/// privileged domain.
const FEATURES_PV: u32 = (1 << 5) | (1 << 6) | (1 << 7) | (1 << 13) | (1 << 17);
const FEATURE_DOM0: u32 = 1 << 11;

/// Out of line: its 1 KiB buffer would otherwise sit in the frame of every
/// xen_version call, XENVER_version's (the null hypercall) included.
#[inline(never)]
fn copy_string(address: GuestOut, text: &[u8], size: usize) -> Result<u64, Errno> {
    let mut buffer = [0u8; 1024];
    let length = text.len().min(size.saturating_sub(1));
    if let (Some(target), Some(source)) = (buffer.get_mut(..length), text.get(..length)) {
        target.copy_from_slice(source);
    }
    address.write(buffer.get(..size).unwrap_or(&[]))?;
    Ok(0)
}

/// `xen_version(cmd, arg)`.
#[inline]
pub fn xen_version(call: &mut Call<'_>) -> Result<u64, Errno> {
    let (argument, output) = (call.guest_in_out(1), call.guest_out(1));
    match call.argument(0) {
        XENVER_VERSION => Ok(VERSION),
        XENVER_EXTRAVERSION => copy_string(output, EXTRAVERSION, 16),
        XENVER_COMPILE_INFO => copy_string(output, b"sluice", 140),
        XENVER_CAPABILITIES => copy_string(output, CAPABILITIES, 1024),
        XENVER_CHANGESET => copy_string(output, b"sluice", 64),
        XENVER_PLATFORM_PARAMETERS => {
            output.write(&VIRT_START.to_le_bytes())?;
            Ok(0)
        }
        XENVER_GET_FEATURES => {
            let mut info = [0u8; 8];
            argument.read(&mut info)?;
            let index = u32::from_le_bytes([info[0], info[1], info[2], info[3]]);
            let submap = match index {
                0 if call.domain.is_privileged() => FEATURES_PV | FEATURE_DOM0,
                0 => FEATURES_PV,
                1.. => return Err(Errno::EINVAL),
            };
            info[4..8].copy_from_slice(&submap.to_le_bytes());
            argument.write(&info)?;
            Ok(0)
        }
        XENVER_PAGESIZE => Ok(4096),
        XENVER_GUEST_HANDLE => copy_string(output, &[], 16),
        XENVER_COMMANDLINE => copy_string(output, &[], 1024),
        _ => Err(Errno::ENOSYS),
    }
}
