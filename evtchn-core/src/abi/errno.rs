//! Xen's errno values (xen/include/public/errno.h, spec §0).

/// An error an event-channel op returns; the hypervisor's dispatcher puts
/// `-(errno as i32)` in `rax`. The discriminants are Xen's numbers and there is
/// no zero variant: success is `Ok`.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Errno {
    /// Operation not permitted.
    EPERM = 1,
    /// No such entry (e.g. no such vcpu).
    ENOENT = 2,
    /// No such domain.
    ESRCH = 3,
    /// No such device or address.
    ENXIO = 6,
    /// Argument list too long.
    E2BIG = 7,
    /// Try again.
    EAGAIN = 11,
    /// Out of memory.
    ENOMEM = 12,
    /// Permission denied (e.g. a Xen-attached channel).
    EACCES = 13,
    /// Bad guest address.
    EFAULT = 14,
    /// Resource busy.
    EBUSY = 16,
    /// Already exists (e.g. a VIRQ bound twice).
    EEXIST = 17,
    /// Invalid argument.
    EINVAL = 22,
    /// No space left (no free port).
    ENOSPC = 28,
    /// Function not implemented (unknown op).
    ENOSYS = 38,
    /// Timer expired.
    ETIME = 62,
    /// Internal only: the op must be continued (never reaches a guest; the
    /// dispatcher turns it into a continuation).
    ERESTART = 85,
    /// Operation not supported.
    EOPNOTSUPP = 95,
}

impl Errno {
    /// Xen's positive errno number.
    pub const fn number(self) -> i32 {
        self as i32
    }

    /// The value a hypercall returns in `rax` for this error (`-errno`).
    pub const fn to_return_value(self) -> i64 {
        -(self as i64)
    }

    /// The errno with Xen's number `number`, if it is one Sluice uses.
    pub const fn from_number(number: i32) -> Option<Self> {
        Some(match number {
            1 => Self::EPERM,
            2 => Self::ENOENT,
            3 => Self::ESRCH,
            6 => Self::ENXIO,
            7 => Self::E2BIG,
            11 => Self::EAGAIN,
            12 => Self::ENOMEM,
            13 => Self::EACCES,
            14 => Self::EFAULT,
            16 => Self::EBUSY,
            17 => Self::EEXIST,
            22 => Self::EINVAL,
            28 => Self::ENOSPC,
            38 => Self::ENOSYS,
            62 => Self::ETIME,
            85 => Self::ERESTART,
            95 => Self::EOPNOTSUPP,
            _ => return None,
        })
    }
}

impl core::fmt::Display for Errno {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(formatter, "-{:?} ({})", self, self.to_return_value())
    }
}
