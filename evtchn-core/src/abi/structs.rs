//! The argument structs of EVTCHNOP 0..=14 (event_channel.h, spec §1.2).
//!
//! Each struct is `#[repr(C)]` with its padding written out, and carries
//! compile-time checks of its size and of every field offset, typed in from
//! the spec's table (checked there against gcc). A struct becomes bytes and
//! back only through its `from_bytes` / `to_bytes`, which spell out the
//! little-endian encoding field by field: the hypervisor copies the bytes
//! from guest memory and never forms a reference into it.

use core::mem::{offset_of, size_of};

use super::ids::{DomId, Port, VcpuId};

fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    let mut raw = [0; 2];
    if let Some(source) = bytes.get(offset..offset + 2) {
        raw.copy_from_slice(source);
    }
    u16::from_le_bytes(raw)
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut raw = [0; 4];
    if let Some(source) = bytes.get(offset..offset + 4) {
        raw.copy_from_slice(source);
    }
    u32::from_le_bytes(raw)
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut raw = [0; 8];
    if let Some(source) = bytes.get(offset..offset + 8) {
        raw.copy_from_slice(source);
    }
    u64::from_le_bytes(raw)
}

fn put(bytes: &mut [u8], offset: usize, value: &[u8]) {
    if let Some(target) = bytes.get_mut(offset..offset + value.len()) {
        target.copy_from_slice(value);
    }
}

/// Implements `SIZE`, `from_bytes` and `to_bytes` from one list of
/// `field: kind @ offset` entries, so decoding and encoding cannot disagree.
macro_rules! abi_bytes {
    ($name:ident, $size:literal { $($field:ident : $kind:ident @ $offset:literal),* $(,)? }) => {
        const _: () = assert!(size_of::<$name>() == $size);
        $(const _: () = assert!(offset_of!($name, $field) == $offset);)*

        impl $name {
            /// Size of the struct in guest memory, in bytes.
            pub const SIZE: usize = $size;

            /// Decode from the bytes the guest passed (little-endian).
            pub fn from_bytes(bytes: &[u8; $size]) -> Self {
                let mut value = Self::default();
                $(value.$field = abi_bytes!(@get $kind, bytes, $offset);)*
                value
            }

            /// Encode for copying back to the guest (little-endian); padding
            /// bytes are zero.
            pub fn to_bytes(&self) -> [u8; $size] {
                let mut bytes = [0u8; $size];
                $(abi_bytes!(@put $kind, &mut bytes, $offset, self.$field);)*
                bytes
            }
        }
    };
    (@get domid, $bytes:expr, $offset:literal) => { DomId(u16_at($bytes, $offset)) };
    (@get port, $bytes:expr, $offset:literal) => { Port(u32_at($bytes, $offset)) };
    (@get vcpu, $bytes:expr, $offset:literal) => { VcpuId(u32_at($bytes, $offset)) };
    (@get u8, $bytes:expr, $offset:literal) => { $bytes.get($offset).copied().unwrap_or(0) };
    (@get u32, $bytes:expr, $offset:literal) => { u32_at($bytes, $offset) };
    (@get u64, $bytes:expr, $offset:literal) => { u64_at($bytes, $offset) };
    (@get raw8, $bytes:expr, $offset:literal) => { u64_at($bytes, $offset).to_le_bytes() };
    (@put domid, $bytes:expr, $offset:literal, $value:expr) => { put($bytes, $offset, &$value.0.to_le_bytes()) };
    (@put port, $bytes:expr, $offset:literal, $value:expr) => { put($bytes, $offset, &$value.0.to_le_bytes()) };
    (@put vcpu, $bytes:expr, $offset:literal, $value:expr) => { put($bytes, $offset, &$value.0.to_le_bytes()) };
    (@put u8, $bytes:expr, $offset:literal, $value:expr) => { put($bytes, $offset, &[$value]) };
    (@put u32, $bytes:expr, $offset:literal, $value:expr) => { put($bytes, $offset, &$value.to_le_bytes()) };
    (@put u64, $bytes:expr, $offset:literal, $value:expr) => { put($bytes, $offset, &$value.to_le_bytes()) };
    (@put raw8, $bytes:expr, $offset:literal, $value:expr) => { put($bytes, $offset, &$value) };
}

/// `struct evtchn_alloc_unbound` (EVTCHNOP_alloc_unbound, 8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnAllocUnbound {
    /// IN: domain in which to allocate (DOMID_SELF allowed).
    pub dom: DomId,
    /// IN: domain allowed to bind to the port (DOMID_SELF = the caller).
    pub remote_dom: DomId,
    /// OUT: the allocated port.
    pub port: Port,
}
abi_bytes!(EvtchnAllocUnbound, 8 { dom: domid @ 0, remote_dom: domid @ 2, port: port @ 4 });

/// `struct evtchn_bind_interdomain` (EVTCHNOP_bind_interdomain, 12 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindInterdomain {
    /// IN: domain owning the unbound port (DOMID_SELF = loopback).
    pub remote_dom: DomId,
    /// Padding.
    pub _pad: [u8; 2],
    /// IN: the remote domain's unbound port.
    pub remote_port: Port,
    /// OUT: the new local port.
    pub local_port: Port,
}
abi_bytes!(EvtchnBindInterdomain, 12 {
    remote_dom: domid @ 0, remote_port: port @ 4, local_port: port @ 8,
});
const _: () = assert!(offset_of!(EvtchnBindInterdomain, _pad) == 2);

/// `struct evtchn_bind_virq` (EVTCHNOP_bind_virq, 12 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindVirq {
    /// IN: VIRQ number (read as a signed int by the op).
    pub virq: u32,
    /// IN: vcpu to bind on.
    pub vcpu: VcpuId,
    /// OUT: the new port.
    pub port: Port,
}
abi_bytes!(EvtchnBindVirq, 12 { virq: u32 @ 0, vcpu: vcpu @ 4, port: port @ 8 });

/// `struct evtchn_bind_pirq` (EVTCHNOP_bind_pirq, 12 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindPirq {
    /// IN: the physical IRQ as numbered for this domain.
    pub pirq: u32,
    /// IN: [`EvtchnBindPirq::WILL_SHARE`] or 0.
    pub flags: u32,
    /// OUT: the new port.
    pub port: Port,
}
abi_bytes!(EvtchnBindPirq, 12 { pirq: u32 @ 0, flags: u32 @ 4, port: port @ 8 });

impl EvtchnBindPirq {
    /// BIND_PIRQ__WILL_SHARE: the binder accepts sharing the line.
    pub const WILL_SHARE: u32 = 1;
}

/// `struct evtchn_bind_ipi` (EVTCHNOP_bind_ipi, 8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindIpi {
    /// IN: the vcpu the port notifies, forever.
    pub vcpu: VcpuId,
    /// OUT: the new port.
    pub port: Port,
}
abi_bytes!(EvtchnBindIpi, 8 { vcpu: vcpu @ 0, port: port @ 4 });

/// `struct evtchn_close` (EVTCHNOP_close, 4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnClose {
    /// IN: the port to close.
    pub port: Port,
}
abi_bytes!(EvtchnClose, 4 { port: port @ 0 });

/// `struct evtchn_send` (EVTCHNOP_send, 4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnSend {
    /// IN: the local port to send on.
    pub port: Port,
}
abi_bytes!(EvtchnSend, 4 { port: port @ 0 });

/// `struct evtchn_status` (EVTCHNOP_status, 24 bytes). The union `u` is kept
/// as its 8 raw bytes: Xen writes only the member matching the state and
/// hands the rest back as the guest passed it (spec §1.2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnStatus {
    /// IN: domain to query (DOMID_SELF allowed).
    pub dom: DomId,
    /// Padding.
    pub _pad: [u8; 2],
    /// IN: port to query.
    pub port: Port,
    /// OUT: an [`crate::abi::EvtchnStat`] value.
    pub status: u32,
    /// OUT: the notify vcpu.
    pub vcpu: VcpuId,
    /// IN/OUT: the union `u` (unbound.dom / interdomain.{dom,port} / pirq /
    /// virq), raw.
    pub u: [u8; 8],
}
abi_bytes!(EvtchnStatus, 24 {
    dom: domid @ 0, port: port @ 4, status: u32 @ 8, vcpu: vcpu @ 12, u: raw8 @ 16,
});
const _: () = assert!(offset_of!(EvtchnStatus, _pad) == 2);

impl EvtchnStatus {
    /// `u.unbound.dom` (offset 16).
    pub fn unbound_dom(&self) -> DomId {
        DomId(u16_at(&self.u, 0))
    }
    /// Write `u.unbound.dom`; the other union bytes stay as they are.
    pub fn set_unbound_dom(&mut self, dom: DomId) {
        put(&mut self.u, 0, &dom.0.to_le_bytes());
    }
    /// `u.interdomain.dom` (offset 16).
    pub fn interdomain_dom(&self) -> DomId {
        DomId(u16_at(&self.u, 0))
    }
    /// `u.interdomain.port` (offset 20).
    pub fn interdomain_port(&self) -> Port {
        Port(u32_at(&self.u, 4))
    }
    /// Write `u.interdomain`; bytes 18..20 (its padding) stay as they are.
    pub fn set_interdomain(&mut self, dom: DomId, port: Port) {
        put(&mut self.u, 0, &dom.0.to_le_bytes());
        put(&mut self.u, 4, &port.0.to_le_bytes());
    }
    /// `u.pirq` (offset 16).
    pub fn pirq(&self) -> u32 {
        u32_at(&self.u, 0)
    }
    /// Write `u.pirq`.
    pub fn set_pirq(&mut self, pirq: u32) {
        put(&mut self.u, 0, &pirq.to_le_bytes());
    }
    /// `u.virq` (offset 16).
    pub fn virq(&self) -> u32 {
        u32_at(&self.u, 0)
    }
    /// Write `u.virq`.
    pub fn set_virq(&mut self, virq: u32) {
        put(&mut self.u, 0, &virq.to_le_bytes());
    }
}

/// `struct evtchn_bind_vcpu` (EVTCHNOP_bind_vcpu, 8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindVcpu {
    /// IN: the port to retarget.
    pub port: Port,
    /// IN: the new notify vcpu.
    pub vcpu: VcpuId,
}
abi_bytes!(EvtchnBindVcpu, 8 { port: port @ 0, vcpu: vcpu @ 4 });

/// `struct evtchn_unmask` (EVTCHNOP_unmask, 4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnUnmask {
    /// IN: the port to unmask.
    pub port: Port,
}
abi_bytes!(EvtchnUnmask, 4 { port: port @ 0 });

/// `struct evtchn_reset` (EVTCHNOP_reset and EVTCHNOP_reset_cont, 2 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnReset {
    /// IN: domain to reset (DOMID_SELF allowed).
    pub dom: DomId,
}
abi_bytes!(EvtchnReset, 2 { dom: domid @ 0 });

/// `struct evtchn_init_control` (EVTCHNOP_init_control, 24 bytes, 8-aligned).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnInitControl {
    /// IN: guest frame holding the FIFO control block.
    pub control_gfn: u64,
    /// IN: byte offset of the control block in that frame.
    pub offset: u32,
    /// IN: the vcpu the control block belongs to.
    pub vcpu: VcpuId,
    /// OUT: number of LINK bits in an event word (always 17).
    pub link_bits: u8,
    /// Padding.
    pub _pad: [u8; 7],
}
abi_bytes!(EvtchnInitControl, 24 {
    control_gfn: u64 @ 0, offset: u32 @ 8, vcpu: vcpu @ 12, link_bits: u8 @ 16,
});
const _: () = assert!(offset_of!(EvtchnInitControl, _pad) == 17);

/// `struct evtchn_expand_array` (EVTCHNOP_expand_array, 8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnExpandArray {
    /// IN: guest frame of the next event-array page.
    pub array_gfn: u64,
}
abi_bytes!(EvtchnExpandArray, 8 { array_gfn: u64 @ 0 });

/// `struct evtchn_set_priority` (EVTCHNOP_set_priority, 8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnSetPriority {
    /// IN: the port.
    pub port: Port,
    /// IN: FIFO priority, 0 (highest) ..= 15 (lowest).
    pub priority: u32,
}
abi_bytes!(EvtchnSetPriority, 8 { port: port @ 0, priority: u32 @ 4 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_and_keeps_union_bytes() {
        let mut bytes = [0u8; 24];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = index as u8;
        }
        let status = EvtchnStatus::from_bytes(&bytes);
        assert_eq!(status.dom, DomId(0x0100));
        assert_eq!(status.port, Port(0x0706_0504));
        assert_eq!(status.u, [16, 17, 18, 19, 20, 21, 22, 23]);
        let back = status.to_bytes();
        // Padding goes back as zero; every field byte survives.
        assert_eq!(&back[4..], &bytes[4..]);
        assert_eq!(&back[..2], &bytes[..2]);
    }

    #[test]
    fn init_control_link_bits_is_byte_16() {
        let reply = EvtchnInitControl {
            link_bits: 17,
            ..EvtchnInitControl::default()
        }
        .to_bytes();
        assert_eq!(reply[16], 17);
        assert_eq!(EvtchnInitControl::from_bytes(&reply).link_bits, 17);
    }

    #[test]
    fn interdomain_setter_leaves_union_padding_alone() {
        let mut status = EvtchnStatus {
            u: [0xAA; 8],
            ..EvtchnStatus::default()
        };
        status.set_interdomain(DomId(3), Port(9));
        assert_eq!(status.u, [3, 0, 0xAA, 0xAA, 9, 0, 0, 0]);
        assert_eq!(status.interdomain_dom(), DomId(3));
        assert_eq!(status.interdomain_port(), Port(9));
    }
}
