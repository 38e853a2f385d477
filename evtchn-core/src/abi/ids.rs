//! Identifier newtypes of the ABI: `domid_t`, `evtchn_port_t` and vcpu ids.

/// A domain id (`domid_t`, u16). Real domains have ids below
/// [`DomId::FIRST_RESERVED`]; the ids from there up are special (spec §0).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomId(pub u16);

impl DomId {
    /// DOMID_FIRST_RESERVED: the first id that is not a real domain.
    pub const FIRST_RESERVED: Self = Self(0x7FF0);
    /// DOMID_SELF: "the calling domain" in an op argument.
    pub const SELF: Self = Self(0x7FF0);
    /// DOMID_IO.
    pub const IO: Self = Self(0x7FF1);
    /// DOMID_XEN: the hypervisor itself.
    pub const XEN: Self = Self(0x7FF2);
    /// DOMID_COW.
    pub const COW: Self = Self(0x7FF3);
    /// DOMID_INVALID.
    pub const INVALID: Self = Self(0x7FF4);
    /// DOMID_IDLE.
    pub const IDLE: Self = Self(0x7FFF);
    /// DOMID_MASK.
    pub const MASK: u16 = 0x7FFF;

    /// Whether this id names a real domain (below the reserved range).
    pub const fn is_real(self) -> bool {
        self.0 < Self::FIRST_RESERVED.0
    }
}

impl core::fmt::Display for DomId {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(formatter, "d{}", self.0)
    }
}

/// An event-channel port number (`evtchn_port_t`, u32). Port 0 is never a
/// usable channel (it is reserved in every domain).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(pub u32);

impl Port {
    /// Port 0, reserved at domain creation; as a stored value it means "none"
    /// (e.g. an unbound slot of `virq_to_evtchn`).
    pub const RESERVED: Self = Self(0);
}

impl core::fmt::Display for Port {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(formatter, "port {}", self.0)
    }
}

/// A virtual CPU of a domain, numbered from 0.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VcpuId(pub u32);

impl core::fmt::Display for VcpuId {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(formatter, "v{}", self.0)
    }
}
